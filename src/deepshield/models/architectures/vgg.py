"""VGG-11 with batch norm: torchvision's `vgg11_bn` layout, and a quarter-width CPU variant.

`vgg11_bn` equals `torchvision.models.vgg11_bn` (keys, shapes, order; 132,868,840 params at
1000 classes): 8 conv3x3+BN+ReLU, 5 max-pools, AdaptiveAvgPool2d((7, 7)), a 4096-4096 MLP.
`vgg11_bn_small` keeps the layer pattern (same `features.N` / `classifier.N` indices) at 1/4
channel width, pools globally and uses a 256-256 classifier, so it trains on CPU at 32-128 px.

@inproceedings{simonyan2015vgg,
  title     = {Very Deep Convolutional Networks for Large-Scale Image Recognition},
  author    = {Simonyan, Karen and Zisserman, Andrew},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2015}
}
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

from deepshield.models.registry import IMAGENET_MEAN, IMAGENET_STD, register

# Configuration "A" of the paper: conv widths, "M" = 2x2 max-pool.
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def make_features(
    cfg: tuple[int | str, ...], width_div: int = 1, in_chans: int = 3
) -> nn.Sequential:
    """conv3x3(bias)+BN+ReLU per width, MaxPool2d(2) per "M"; widths divided by `width_div`."""
    layers: list[nn.Module] = []
    c = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = int(v) // width_div
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """features -> avgpool to `pool_size` -> Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear."""

    cam_layer = "features"

    def __init__(
        self,
        num_classes: int = 1000,
        width_div: int = 1,
        pool_size: int = 7,
        hidden: int = 4096,
        dropout: float = 0.5,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.features = make_features(VGG11, width_div, in_chans)
        channels = 512 // width_div
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.num_features = hidden
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> input of the last Linear [B, hidden]."""
        x = self.features(x)  # [B, 512/width_div, H/32, W/32]
        x = torch.flatten(self.avgpool(x), 1)  # [B, C * pool_size^2]
        return self.classifier[:-1](x)  # [B, hidden]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] normalised -> logits [B, num_classes]."""
        return self.classifier[-1](self.forward_features(x))


@register("vgg11_bn", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 64, 64))
def vgg11_bn(num_classes: int = 2, **kw) -> VGG:
    """VGG-11 with BN, torchvision layout; 128,780,034 params at 2 classes."""
    return VGG(num_classes=num_classes, **kw)


@register("vgg11_bn_small", mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 64, 64))
def vgg11_bn_small(num_classes: int = 2, **kw) -> VGG:
    """VGG-11-BN at 1/4 width, global pooling and a 256-wide classifier, for CPU training."""
    return VGG(num_classes=num_classes, width_div=4, pool_size=1, hidden=256, **kw)
