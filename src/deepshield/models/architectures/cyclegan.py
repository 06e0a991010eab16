"""CycleGAN ResNet generator (Johnson et al.'s style-transfer network), unconditional.

G(x): x [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1] (tanh). Reflection pad 3 + 7x7 conv
(ngf), two stride-2 3x3 convs (x2 channels each), `n_blocks` residual blocks (reflection pad 1,
3x3 conv, norm, ReLU, [dropout], reflection pad 1, 3x3 conv, norm), two stride-2 3x3 transposed
convs, reflection pad 3 + 7x7 conv to 3 channels. H, W must be divisible by 4.

The module tree and state-dict keys are those of the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, `ResnetGenerator`: `model.1.weight`,
`model.10.conv_block.1.weight`, ...), so its `latest_net_G_A.pth` files (`resnet_9blocks`,
ngf 64, norm "instance", no dropout) load strictly; running statistics that files from
PyTorch < 0.4 carry for InstanceNorm are dropped by `remap_state_dict`. resnet_9blocks has
11,378,179 parameters. CPU-fast variant for 64 px: ngf=16, n_blocks=2.

@inproceedings{zhu2017cyclegan,
  title     = {Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks},
  author    = {Zhu, Jun-Yan and Park, Taesung and Isola, Phillip and Efros, Alexei A.},
  booktitle = {IEEE International Conference on Computer Vision (ICCV)},
  pages     = {2223--2232},
  year      = {2017}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.errors import InputError
from deepshield.models.architectures.pix2pix import norm_layer
from deepshield.models.norm_buffers import fit_norm_buffers
from deepshield.models.registry import HALF, register


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x); shape unchanged."""

    def __init__(self, channels: int, norm: str, dropout: bool, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
            nn.ReLU(True),
        ]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """G(x): x [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1]; H, W divisible by 4."""

    bounds = (-1.0, 1.0)

    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        bias = norm == "instance"  # a conv followed by BatchNorm needs no bias
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        dim = ngf
        for _ in range(2):  # [B, dim, H, W] -> [B, 2 dim, H/2, W/2]
            layers += [
                nn.Conv2d(dim, dim * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, dim * 2),
                nn.ReLU(True),
            ]
            dim *= 2
        layers += [ResnetBlock(dim, norm, dropout, bias) for _ in range(n_blocks)]
        for _ in range(2):  # [B, dim, h, w] -> [B, dim / 2, 2h, 2w]
            layers += [
                nn.ConvTranspose2d(
                    dim, dim // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                norm_layer(norm, dim // 2),
                nn.ReLU(True),
            ]
            dim //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1]."""
        if x.dim() != 4 or x.shape[2] % 4 or x.shape[3] % 4:
            raise InputError(
                f"cyclegan: input shape {tuple(x.shape)}; pass [B, C, H, W] with H and W "
                "divisible by 4"
            )
        return self.model(x)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reference checkpoints: drop InstanceNorm statistics of pre-0.4 files (module doc)."""
        return fit_norm_buffers(self, sd)


@register("cyclegan", kind="generator", mean=HALF, std=HALF, input_size=(3, 256, 256))
def cyclegan(
    num_classes: int = 2,
    ngf: int = 64,
    n_blocks: int = 9,
    norm: str = "instance",
    dropout: bool = False,
) -> ResnetGenerator:
    """CycleGAN ResNet generator G(x), [-1, 1] images; defaults = official resnet_9blocks.

    `num_classes` is unused (a generator has no classes); CPU-fast variant: ngf=16, n_blocks=2.
    """
    return ResnetGenerator(ngf, n_blocks, norm, dropout)
