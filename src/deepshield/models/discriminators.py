"""PatchGAN discriminator: a conv net scoring every overlapping patch of an image as real / fake.

D(z): z [B, in_channels, H, W] -> patch scores [B, 1, H / 2^n_layers - 2, W / 2^n_layers - 2]
(raw scores, no sigmoid; used with a least-squares loss). 4x4 convs: one stride-2 conv
(LeakyReLU 0.2), n_layers - 1 stride-2 convs with norm, one stride-1 conv with norm, one
stride-1 conv to 1 channel; channels ndf * min(2^i, 8). With n_layers 3 each score sees a
70x70 patch. A conditional discriminator gets its condition concatenated on the channels
(pix2pix: source and output image, in_channels = 6).

Layout and parameter count are those of the reference `NLayerDiscriminator`
(junyanz/pytorch-CycleGAN-and-pix2pix; keys `model.0.weight`, ...): ndf 64, n_layers 3, norm
"batch" has 2,765,633 parameters on 3 channels and 2,768,705 on 6.

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

from deepshield.models.architectures.pix2pix import norm_layer


class PatchDiscriminator(nn.Module):
    """z: [B, in_channels, H, W] -> patch scores [B, 1, h, w] (real: high, fake: low)."""

    def __init__(
        self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        bias = norm == "instance"  # a conv followed by BatchNorm needs no bias
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last norm conv keeps the size
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=bias),
                norm_layer(norm, out),
                nn.LeakyReLU(0.2, True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, in_channels, H, W] -> [B, 1, h, w] raw patch scores."""
        return self.model(z)
