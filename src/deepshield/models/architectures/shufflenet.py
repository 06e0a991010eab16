"""ShuffleNetV2 (x1.0) with torchvision's state-dict layout and numerics.

Same keys, shapes, order and outputs as `torchvision.models.shufflenet_v2_x1_0`, so its weight
files load with strict=True.

@inproceedings{ma2018shufflenetv2,
  title     = {ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design},
  author    = {Ma, Ningning and Zhang, Xiangyu and Zheng, Hai-Tao and Sun, Jian},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages     = {116--131},
  year      = {2018}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.models.registry import IMAGENET_MEAN, IMAGENET_STD, register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x: [B, C, H, W] -> [B, C, H, W] with channels interleaved across `groups`."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)  # [B, g, C/g, H, W]
    x = x.transpose(1, 2).contiguous()  # [B, C/g, g, H, W]
    return x.view(b, c, h, w)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits channels in half; stride 2 runs two branches."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_ch // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_ch, stride),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_ch if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise(half, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, out_ch, H/stride, W/stride]."""
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)  # 2 x [B, C/2, H, W]
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: stem, three stages of InvertedResiduals, 1x1 conv5, global mean, fc."""

    cam_layer = "conv5"

    def __init__(
        self,
        stages_repeats: tuple[int, int, int] = (4, 8, 4),
        stages_out_channels: tuple[int, ...] = (24, 116, 232, 464, 1024),
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        stem = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = stem
        for i, (repeats, out_ch) in enumerate(
            zip(stages_repeats, stages_out_channels[1:4], strict=True)
        ):
            units = [InvertedResidual(in_ch, out_ch, 2)]
            units += [InvertedResidual(out_ch, out_ch, 1) for _ in range(repeats - 1)]
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
            in_ch = out_ch
        self.num_features = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(in_ch, self.num_features, 1, bias=False),
            nn.BatchNorm2d(self.num_features),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> pooled features [B, 1024]."""
        x = self.maxpool(self.conv1(x))  # [B, 24, H/4, W/4]
        x = self.stage2(x)  # [B, 116, H/8, W/8]
        x = self.stage3(x)  # [B, 232, H/16, W/16]
        x = self.stage4(x)  # [B, 464, H/32, W/32]
        x = self.conv5(x)  # [B, 1024, H/32, W/32]
        return x.mean([2, 3])  # [B, 1024]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.fc(self.forward_features(x))


@register("shufflenet_v2_x1_0", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 64, 64))
def shufflenet_v2_x1_0(num_classes: int = 2, **kw) -> ShuffleNetV2:
    """ShuffleNetV2 x1.0, torchvision layout; 1,255,654 params at 2 classes."""
    return ShuffleNetV2(num_classes=num_classes, **kw)
