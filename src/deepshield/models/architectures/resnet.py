"""ResNet-18 with torchvision's state-dict layout and numerics, and a CIFAR stem variant.

`resnet18` equals `torchvision.models.resnet18` (v1.5: the stride sits on the 3x3 conv):
same keys, shapes, order and outputs, so torchvision weight files load with strict=True.
`resnet18_cifar` swaps the stem for a 3x3 stride-1 conv without max-pool (for 32 px inputs);
its keys are the same, only `conv1.weight` is [64, 3, 3, 3] instead of [64, 3, 7, 7].

@inproceedings{he2016resnet,
  title     = {Deep Residual Learning for Image Recognition},
  author    = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {770--778},
  year      = {2016}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.models.registry import IMAGENET_MEAN, IMAGENET_STD, register


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; the block's stride is on `conv1`."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, planes, H/stride, W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet with BasicBlocks; `stem="imagenet"` (7x7/2 conv + max-pool) or `"cifar"` (3x3/1)."""

    cam_layer = "layer4"

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 1000,
        stem: str = "imagenet",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        widths = (64, 128, 256, 512)
        in_planes = 64
        for i, (width, n) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_planes, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = widths[-1]
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> pooled features [B, 512]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4] (cifar: H, W)
        x = self.layer1(x)  # [B, 64, H/4, W/4]
        x = self.layer2(x)  # [B, 128, H/8, W/8]
        x = self.layer3(x)  # [B, 256, H/16, W/16]
        x = self.layer4(x)  # [B, 512, H/32, W/32]
        return torch.flatten(self.avgpool(x), 1)  # [B, 512]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.fc(self.forward_features(x))


@register("resnet18", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 64, 64))
def resnet18(num_classes: int = 2, **kw) -> ResNet:
    """ResNet-18, torchvision layout (ImageNet stem); 11,177,538 params at 2 classes."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, stem="imagenet", **kw)


@register("resnet18_cifar", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 32, 32))
def resnet18_cifar(num_classes: int = 2, **kw) -> ResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32 px inputs."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, stem="cifar", **kw)
