"""pix2pix U-Net generator: an encoder-decoder with skip connections between mirrored levels.

G(x): x [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1] (tanh); unconditional. `depth`
stride-2 4x4 convs halve the size down to H / 2^depth (H, W must be divisible by 2^depth);
level i has ngf * min(2^i, 8) channels; each up-sampling 4x4 transposed conv sees its level's
down features concatenated to the level below's output. Down path: LeakyReLU(0.2), conv, norm;
up path: ReLU, transposed conv, norm; dropout(0.5) on the 8 ngf -> 8 ngf middle levels when
`dropout` is on (the official pix2pix default).

The module tree and state-dict keys are those of the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, `UnetGenerator` / `UnetSkipConnectionBlock`:
`model.model.0.weight`, `model.model.1.model.1.weight`, ...), so its `latest_net_G.pth` files
(`unet_256` = depth 8, `unet_128` = depth 7, ngf 64, norm "batch") load strictly; counters
missing from pre-0.4.1 files are added by `remap_state_dict`. unet_256 with 3 -> 3 channels
has 54,413,955 parameters. CPU-fast variant for 64 px: ngf=16, depth=5.

@inproceedings{isola2017pix2pix,
  title     = {Image-to-Image Translation with Conditional Adversarial Networks},
  author    = {Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A.},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {1125--1134},
  year      = {2017}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.errors import ConfigError, InputError
from deepshield.models.norm_buffers import fit_norm_buffers
from deepshield.models.registry import HALF, register


def norm_layer(norm: str, channels: int) -> nn.Module:
    """ "batch": BatchNorm2d; "instance": InstanceNorm2d without affine or running statistics."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    raise ConfigError(f"norm={norm!r} is not a norm layer; use 'batch' or 'instance'")


class UnetBlock(nn.Module):
    """One U-Net level: down-sample, the inner levels (`submodule`), up-sample, skip-concatenate.

    [B, outer, H, W] -> [B, 2 outer, H, W] (skip + up) for inner levels; the outermost level maps
    [B, in, H, W] -> [B, outer, H, W] through tanh and has no skip.
    """

    def __init__(
        self,
        outer: int,
        inner: int,
        *,
        in_channels: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        norm: str = "batch",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = norm == "instance"  # a conv followed by BatchNorm needs no bias
        down_conv = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up_conv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers = [down_conv, submodule, nn.ReLU(True), up_conv, nn.Tanh()]
        elif submodule is None:  # innermost: no norm on the bottleneck, no concatenated input
            up_conv = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv]
            layers += [nn.ReLU(True), up_conv, norm_layer(norm, outer)]
        else:
            up_conv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, norm_layer(norm, inner), submodule]
            layers += [nn.ReLU(True), up_conv, norm_layer(norm, outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> outermost: [B, outer, H, W]; else [B, C + outer, H, W]."""
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(nn.Module):
    """G(x): x [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1]; H, W divisible by 2^depth."""

    bounds = (-1.0, 1.0)

    def __init__(
        self,
        ngf: int = 64,
        depth: int = 8,
        norm: str = "batch",
        dropout: bool = True,
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ConfigError(f"pix2pix depth={depth}: a U-Net needs depth >= 2")
        self.depth = depth
        widths = [ngf * min(2**i, 8) for i in range(depth)]  # inner channels of level i
        block = UnetBlock(widths[-2], widths[-1], norm=norm)  # innermost level, depth - 1
        for i in range(depth - 2, 0, -1):  # level i: widths[i - 1] -> widths[i] channels
            middle = widths[i - 1] == widths[i] == ngf * 8
            block = UnetBlock(
                widths[i - 1], widths[i], submodule=block, norm=norm, dropout=dropout and middle
            )
        self.model = UnetBlock(
            out_channels, widths[0], in_channels=in_channels, submodule=block, outermost=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1] -> [B, 3, H, W] in [-1, 1]."""
        step = 2**self.depth
        if x.dim() != 4 or x.shape[2] % step or x.shape[3] % step:
            raise InputError(
                f"pix2pix: input shape {tuple(x.shape)}; pass [B, C, H, W] with H and W "
                f"divisible by 2^depth = {step}, or build it with a smaller depth"
            )
        return self.model(x)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reference checkpoints: norm buffers fitted to this model (counters, legacy stats)."""
        return fit_norm_buffers(self, sd)


@register("pix2pix", kind="generator", mean=HALF, std=HALF, input_size=(3, 256, 256))
def pix2pix(
    num_classes: int = 2,
    ngf: int = 64,
    depth: int = 8,
    norm: str = "batch",
    dropout: bool = True,
) -> UnetGenerator:
    """pix2pix U-Net generator G(x), [-1, 1] images; defaults = official unet_256.

    `num_classes` is unused (a generator has no classes); CPU-fast variant: ngf=16, depth=5.
    """
    return UnetGenerator(ngf, depth, norm, dropout)
