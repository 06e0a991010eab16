"""The Deep Image Prior "skip" encoder-decoder (Ulyanov et al.), sized for small images, as G
independent networks in one module (grouped convolutions).

One network is `DipSkip(groups=1)`; `groups=G` holds G networks whose parameters never mix: every
convolution has groups=G, every normalisation is per channel, and the concatenation of a skip
branch with the deeper branch keeps each network's channels together. Its input is the noise of
G images stacked along channels, z: [1, G*depth, H, W], and its output [1, G*3, H, W] in [0, 1].
With `init_dip(net, generators)` group g is initialised exactly as a one-network DipSkip seeded
with generators[g], so G networks fitted at once follow the G one-network trajectories.

Scale i (of len(channels)) is: deeper = conv3x3/2 -> BN -> LeakyReLU -> conv3x3 -> BN -> LeakyReLU
-> [scale i+1] -> bilinear x2; skip = conv1x1 -> BN -> LeakyReLU; then BN(concat(skip, deeper))
-> conv3x3 -> BN -> LeakyReLU -> conv1x1 -> BN -> LeakyReLU. A final conv1x1 + sigmoid gives RGB.
Padding is by reflection, as in the reference implementation.

@inproceedings{ulyanov2018dip,
  title     = {Deep Image Prior},
  author    = {Ulyanov, Dmitry and Vedaldi, Andrea and Lempitsky, Victor},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {9446--9454},
  year      = {2018}
}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope of the reference implementation


def conv(
    in_ch: int, out_ch: int, kernel: int, groups: int, stride: int = 1, bias: bool = True
) -> nn.Sequential:
    """Reflection-padded convolution of `groups` networks: in_ch/out_ch are per network."""
    pad = (kernel - 1) // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if pad else []
    layers.append(
        nn.Conv2d(in_ch * groups, out_ch * groups, kernel, stride, groups=groups, bias=bias)
    )
    return nn.Sequential(*layers)


def conv_bn_act(
    in_ch: int, out_ch: int, kernel: int, groups: int, stride: int = 1
) -> nn.Sequential:
    """conv (no bias: the BN removes it) -> BN (per channel, i.e. per network) -> LeakyReLU."""
    return nn.Sequential(
        conv(in_ch, out_ch, kernel, groups, stride, bias=False),
        nn.BatchNorm2d(out_ch * groups),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


class GroupedConcat(nn.Module):
    """Concatenate two branches network by network: [N, G*a, H, W], [N, G*b, H, W] -> [N, G*(a+b), H, W]."""

    def __init__(self, skip: nn.Module, deeper: nn.Module, groups: int) -> None:
        super().__init__()
        self.skip = skip
        self.deeper = deeper
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, d = self.skip(x), self.deeper(x)  # [N, G*a, H, W], [N, G*b, H, W]
        n, _, h, w = s.shape
        s = s.view(n, self.groups, -1, h, w)  # [N, G, a, H, W]
        d = d.view(n, self.groups, -1, h, w)  # [N, G, b, H, W]
        return torch.cat([s, d], dim=2).view(n, -1, h, w)  # [N, G*(a+b), H, W]


class DipSkip(nn.Module):
    """G independent DIP skip networks: z [1, G*depth, H, W] -> images [1, G*3, H, W] in [0,1].

    H and W must be divisible by 2**len(channels). groups=1 with a batch [B, depth, H, W] is one
    network shared by B images (its batch norm then pools the B images).
    """

    def __init__(
        self,
        depth: int = 32,
        channels: Sequence[int] = (16, 32, 64, 128),
        skip: Sequence[int] = (0, 0, 4, 4),
        out_ch: int = 3,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if len(channels) != len(skip):
            raise ValueError(f"channels {channels} and skip {skip} need one entry per scale")
        self.depth, self.out_ch, self.groups = depth, out_ch, groups
        self.scales = len(channels)
        inner: nn.Module | None = None
        for i in reversed(range(self.scales)):  # build from the deepest scale outwards
            in_ch = depth if i == 0 else channels[i - 1]
            below = channels[i] if i == self.scales - 1 else channels[i + 1]
            deeper = [
                conv_bn_act(in_ch, channels[i], 3, groups, stride=2),
                conv_bn_act(channels[i], channels[i], 3, groups),
            ]
            if inner is not None:
                deeper.append(inner)
            deeper.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            layers: list[nn.Module] = []
            if skip[i]:
                branch = conv_bn_act(in_ch, skip[i], 1, groups)
                layers.append(GroupedConcat(branch, nn.Sequential(*deeper), groups))
            else:
                layers.extend(deeper)
            layers += [
                nn.BatchNorm2d((skip[i] + below) * groups),
                conv_bn_act(skip[i] + below, channels[i], 3, groups),
                conv_bn_act(channels[i], channels[i], 1, groups),
            ]
            inner = nn.Sequential(*layers)
        assert inner is not None
        self.body = inner
        self.head = nn.Sequential(conv(channels[0], out_ch, 1, groups), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, G*depth, H, W] -> [N, G*out_ch, H, W] in [0, 1]."""
        return self.head(self.body(z))


@torch.no_grad()
def init_dip(net: DipSkip, generators: Sequence[torch.Generator]) -> DipSkip:
    """Initialise group g of `net` from generators[g] (one per group), layer by layer in order.

    Convolutions get PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    (drawn on each generator's device: a CUDA generator fills a CUDA network without a copy),
    batch norms weight 1 and bias 0. Group g then equals a DipSkip(groups=1) initialised from a
    generator in the same state.
    """
    if len(generators) != net.groups:
        raise ValueError(f"init_dip: {len(generators)} generators for {net.groups} groups")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1.0 / math.sqrt(m.weight[0].numel())  # fan_in = in_ch/G * k * k
            per_group = m.out_channels // net.groups
            for g, gen in enumerate(generators):
                rows = slice(g * per_group, (g + 1) * per_group)
                w = torch.rand(m.weight[rows].shape, generator=gen, device=gen.device) * 2 - 1
                m.weight[rows] = (w * bound).to(m.weight)
                if m.bias is not None:
                    b = torch.rand(per_group, generator=gen, device=gen.device) * 2 - 1
                    m.bias[rows] = (b * bound).to(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net
