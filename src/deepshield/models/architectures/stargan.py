"""StarGAN generator: one network translates a face to any attribute vector c.

G(x, c): c [B, c_dim] is tiled to [B, c_dim, H, W] and concatenated to x [B, 3, H, W]; a 7x7
conv (conv_dim channels), two stride-2 4x4 convs (x2 channels each), `n_res` residual blocks,
two stride-2 4x4 transposed convs and a 7x7 conv to 3 channels with tanh. Every conv is
bias-free and followed by InstanceNorm(affine=True, track_running_stats=True) as in the
official code. Input and output are in [-1, 1] (`bounds`).

The state dict is the official CelebA checkpoint's (yunjey/stargan, `200000-G.ckpt`):
`main.0.weight`, `main.1.{weight,bias,running_mean,running_var,num_batches_tracked}`, ...,
residual blocks at `main.9`..`main.14` (`main.<i>.main.{0,1,3,4}.*`), last conv `main.21`.
With conv_dim 64, c_dim 5, n_res 6 it has exactly 8,430,528 parameters, and such a file loads
with `deepshield.models.load_weights(G, path)` (strict); files from PyTorch < 0.4.1 lack the
`num_batches_tracked` counters, which `remap_state_dict` adds.

Normalisation at test time: with track_running_stats=True, `eval()` normalises with the running
averages stored in the file. The official test script never calls `eval()`, so it normalises
each image with its own statistics; `create("stargan", track_running_stats=False)` reproduces
that in eval mode (loading then drops the file's running statistics).

@inproceedings{choi2018stargan,
  title     = {StarGAN: Unified Generative Adversarial Networks for Multi-Domain
               Image-to-Image Translation},
  author    = {Choi, Yunjey and Choi, Minje and Kim, Munyoung and Ha, Jung-Woo and
               Kim, Sunghun and Choo, Jaegul},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {8789--8797},
  year      = {2018}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.errors import InputError
from deepshield.models.norm_buffers import fit_norm_buffers
from deepshield.models.registry import HALF, register


def _norm(channels: int, track_running_stats: bool) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=track_running_stats)


class ResidualBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))); channels and size unchanged."""

    def __init__(self, channels: int, track_running_stats: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False),
            _norm(channels, track_running_stats),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False),
            _norm(channels, track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        return x + self.main(x)


def encoder_decoder(
    in_channels: int, conv_dim: int, n_res: int, track_running_stats: bool
) -> list[nn.Module]:
    """StarGAN's trunk up to the last up-sampling ReLU: [B, in, H, W] -> [B, conv_dim, H, W]."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, conv_dim, 7, stride=1, padding=3, bias=False),
        _norm(conv_dim, track_running_stats),
        nn.ReLU(inplace=True),
    ]
    dim = conv_dim
    for _ in range(2):  # down-sampling: [B, dim, H, W] -> [B, 2 dim, H/2, W/2]
        layers += [
            nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1, bias=False),
            _norm(dim * 2, track_running_stats),
            nn.ReLU(inplace=True),
        ]
        dim *= 2
    layers += [ResidualBlock(dim, track_running_stats) for _ in range(n_res)]
    for _ in range(2):  # up-sampling: [B, dim, h, w] -> [B, dim / 2, 2h, 2w]
        layers += [
            nn.ConvTranspose2d(dim, dim // 2, 4, stride=2, padding=1, bias=False),
            _norm(dim // 2, track_running_stats),
            nn.ReLU(inplace=True),
        ]
        dim //= 2
    return layers


def check_conditional_input(x: torch.Tensor, c: torch.Tensor, c_dim: int, name: str) -> None:
    """InputError unless x is [B, 3, H, W] with H, W divisible by 4 and c is [B, c_dim]."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"{name}: x has shape {tuple(x.shape)}; pass images as [B, 3, H, W]")
    if x.shape[2] % 4 or x.shape[3] % 4:
        raise InputError(
            f"{name}: image size {tuple(x.shape[2:])} is not divisible by 4; crop or resize it"
        )
    if c.dim() != 2 or c.shape != (x.shape[0], c_dim):
        raise InputError(
            f"{name}: c has shape {tuple(c.shape)}; pass one attribute vector per image, "
            f"[{x.shape[0]}, {c_dim}]"
        )


def tile_condition(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, H, W], c: [B, c_dim] -> [B, 3 + c_dim, H, W] (c repeated at every pixel)."""
    c_map = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, c_map], dim=1)


class StarGANGenerator(nn.Module):
    """G(x, c): x [B, 3, H, W] in [-1, 1], c [B, c_dim] -> image [B, 3, H, W] in [-1, 1]."""

    bounds = (-1.0, 1.0)

    def __init__(
        self, conv_dim: int = 64, c_dim: int = 5, n_res: int = 6, track_running_stats: bool = True
    ) -> None:
        super().__init__()
        self.c_dim = c_dim
        layers = encoder_decoder(3 + c_dim, conv_dim, n_res, track_running_stats)
        layers += [nn.Conv2d(conv_dim, 3, 7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1], c: [B, c_dim] -> [B, 3, H, W] in [-1, 1]."""
        check_conditional_input(x, c, self.c_dim, "stargan")
        return self.main(tile_condition(x, c))

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official checkpoints: add counters missing in pre-0.4.1 files (see module doc)."""
        return fit_norm_buffers(self, sd)


@register("stargan", kind="generator", mean=HALF, std=HALF, input_size=(3, 128, 128))
def stargan(
    num_classes: int = 2,
    conv_dim: int = 64,
    c_dim: int = 5,
    n_res: int = 6,
    track_running_stats: bool = True,
) -> StarGANGenerator:
    """StarGAN generator G(x, c), [-1, 1] images; defaults = official CelebA (8.43 M params).

    `num_classes` is unused (a generator has no classes); CPU-fast variant: conv_dim=16, n_res=2.
    """
    return StarGANGenerator(conv_dim, c_dim, n_res, track_running_stats)
