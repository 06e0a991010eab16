"""SimpleNet: a small, fast CNN detector for CPU training (deepshield's default model).

Four conv3x3-BN-ReLU stages (widths 16-32-64-128 by default) with 2x2 max-pools between them,
global average pooling and one Linear: about 98k parameters, ~16 MMAC per 64x64 image, any input
of at least 32 px. Not to be confused with Hasanpour et al.'s 13-layer "SimpNet"; this is the
plain conv-BN-ReLU-pool pattern of VGG with batch norm, kept small.

@inproceedings{ioffe2015batchnorm,
  title     = {Batch Normalization: Accelerating Deep Network Training by Reducing Internal
               Covariate Shift},
  author    = {Ioffe, Sergey and Szegedy, Christian},
  booktitle = {International Conference on Machine Learning (ICML)},
  pages     = {448--456},
  year      = {2015}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.models.registry import HALF, register


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv (no bias, BN follows) + BN + ReLU; keeps H, W."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SimpleNet(nn.Module):
    """stage1 -> pool -> stage2 -> pool -> ... -> last stage -> global mean -> fc."""

    cam_layer = "features"

    def __init__(
        self,
        num_classes: int = 2,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers.append(conv_bn_relu(c, w))
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> pooled features [B, widths[-1]]."""
        x = self.features(x)  # [B, 128, H/8, W/8]
        return x.mean([2, 3])  # [B, 128]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.fc(self.forward_features(x))


@register("simplenet", mean=HALF, std=HALF, input_size=(3, 64, 64))
def simplenet(num_classes: int = 2, **kw) -> SimpleNet:
    """Small fast CNN (4 conv-BN-ReLU stages, ~98k params) for CPU training at 32-128 px."""
    return SimpleNet(num_classes=num_classes, **kw)
