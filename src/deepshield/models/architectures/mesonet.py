"""MesoNet: Meso-4 and MesoInception-4 (Afchar et al., WIFS 2018), loading the authors' Keras weights.

A port of `Meso4` and `MesoInception4` from the authors' `classifiers.py` (DariusAf/MesoNet):
256x256 RGB in [0, 1] (the authors rescale 8-bit pixels by 1/255, so no other normalisation),
Conv2D 'same' + ReLU, BatchNormalization (Keras defaults: epsilon 1e-3, momentum 0.99, here
torch momentum 0.01), MaxPooling2D with stride = pool size, Flatten, Dropout(0.5), Dense(16),
LeakyReLU(0.1), Dropout(0.5), Dense(1) + sigmoid. Keras flattens NHWC, so the features are
permuted to [B, H, W, C] before the flatten and the Dense kernels are only transposed.

Output convention. The authors' sigmoid is P(real): their generators read the class folders
alphabetically, `df` = 0 and `real` = 1. With z the logit of that unit, the model returns
logits [B, 2] = [0, -z], so softmax[:, 1] = sigmoid(-z) = 1 - sigmoid(z) = P(fake) exactly,
and label 1 = fake as everywhere in deepshield (argmax = fake when the authors' output < 0.5).
With num_classes > 2 the head is a plain Dense(16, num_classes) (no published weights).

Weights: `load_weights(create("meso4"), "Meso4_DF.h5")` reads the Keras HDF5 file with h5py and
maps every weight explicitly (`remap_state_dict`, by the file's layer order as Keras does);
anything that does not fit is listed in one ModelError. A state dict saved by deepshield loads
unchanged. Parameters: meso4 27,977, mesoinception4 28,615 (as the Keras models).

@inproceedings{afchar2018mesonet,
  title     = {MesoNet: a Compact Facial Video Forgery Detection Network},
  author    = {Afchar, Darius and Nozick, Vincent and Yamagishi, Junichi and Echizen, Isao},
  booktitle = {IEEE International Workshop on Information Forensics and Security (WIFS)},
  pages     = {1--7},
  year      = {2018}
}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepshield.errors import ConfigError, InputError
from deepshield.models.registry import register
from deepshield.models.weights import keras_state_dict

SIZE = 256
ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)


def _conv(in_ch: int, out_ch: int, k: int, dilation: int = 1) -> nn.Conv2d:
    """Keras Conv2D(padding='same', strides=1) for an odd kernel."""
    return nn.Conv2d(in_ch, out_ch, k, padding=dilation * (k // 2), dilation=dilation)


def _bn(ch: int) -> nn.BatchNorm2d:
    """Keras BatchNormalization() defaults: epsilon 1e-3, moving average momentum 0.99."""
    return nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01)


class Inception(nn.Module):
    """The authors' InceptionLayer(a, b, c, d): four ReLU branches concatenated on channels.

    1x1 (a) | 1x1 -> 3x3 (b) | 1x1 -> 3x3 dilation 2 (c) | 1x1 -> 3x3 dilation 3 (d).
    """

    # Keras's load order (topological, deepest first) of the seven convs, as in the files.
    keras_order = ("b2a", "b3a", "b4a", "b1", "b2b", "b3b", "b4b")

    def __init__(self, in_ch: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.b1 = _conv(in_ch, a, 1)
        self.b2a, self.b2b = _conv(in_ch, b, 1), _conv(b, b, 3)
        self.b3a, self.b3b = _conv(in_ch, c, 1), _conv(c, c, 3, dilation=2)
        self.b4a, self.b4b = _conv(in_ch, d, 1), _conv(d, d, 3, dilation=3)
        self.out_ch = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, a+b+c+d, H, W]."""
        y1 = F.relu(self.b1(x))  # [B, a, H, W]
        y2 = F.relu(self.b2b(F.relu(self.b2a(x))))  # [B, b, H, W]
        y3 = F.relu(self.b3b(F.relu(self.b3a(x))))  # [B, c, H, W]
        y4 = F.relu(self.b4b(F.relu(self.b4a(x))))  # [B, d, H, W]
        return torch.cat([y1, y2, y3, y4], dim=1)


class MesoNet(nn.Module):
    """Four (features -> BN -> max-pool) stages and a 1024-16-1 head; `inception` picks the variant.

    Meso-4: convs 3x3x8, 5x5x8, 5x5x16, 5x5x16. MesoInception-4: Inception(1,4,4,2),
    Inception(2,4,4,2), then the same two 5x5x16 convs. Pools 2, 2, 2, 4: 256 -> 8.
    """

    cam_layer = "bn4"  # the last feature map: conv4 + ReLU + BN, [B, 16, 32, 32]
    num_features = 16

    def __init__(self, num_classes: int = 2, inception: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"MesoNet needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.inception = inception
        if inception:
            self.conv1: nn.Module = Inception(3, 1, 4, 4, 2)
            self.conv2: nn.Module = Inception(11, 2, 4, 4, 2)
            widths = (11, 12)
        else:
            self.conv1, self.conv2 = _conv(3, 8, 3), _conv(8, 8, 5)
            widths = (8, 8)
        self.bn1, self.bn2 = _bn(widths[0]), _bn(widths[1])
        self.conv3, self.bn3 = _conv(widths[1], 16, 5), _bn(16)
        self.conv4, self.bn4 = _conv(16, 16, 5), _bn(16)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(16 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, 1 if num_classes == 2 else num_classes)  # 2: the authors' unit

    @property
    def keras_layers(self) -> tuple[str, ...]:
        """Dotted paths of the weighted modules in the Keras files' layer order."""

        def stage(i: int) -> tuple[str, ...]:
            if self.inception and i <= 2:
                return (*(f"conv{i}.{b}" for b in Inception.keras_order), f"bn{i}")
            return (f"conv{i}", f"bn{i}")

        return (*stage(1), *stage(2), *stage(3), *stage(4), "fc1", "fc2")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, 256, 256] in [0, 1] -> the Dense(16) + LeakyReLU embedding [B, 16]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, SIZE, SIZE):
            raise InputError(
                f"MesoNet expects face crops [B, 3, {SIZE}, {SIZE}] in [0, 1], got "
                f"{tuple(x.shape)}; resize the crops to {SIZE}x{SIZE}"
            )
        stages = ((self.conv1, self.bn1, 2), (self.conv2, self.bn2, 2))
        stages += ((self.conv3, self.bn3, 2), (self.conv4, self.bn4, 4))
        for conv, bn, pool in stages:
            y = conv(x)
            y = y if isinstance(conv, Inception) else F.relu(y)  # Inception applies its ReLUs
            x = F.max_pool2d(bn(y), pool)  # [B, C, 128|64|32|8, ...]
        x = x.permute(0, 2, 3, 1).flatten(1)  # [B, 8*8*16] in Keras's (H, W, C) order
        return F.leaky_relu(self.fc1(self.dropout(x)), 0.1)  # [B, 16]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, 256, 256] in [0, 1] -> logits [B, 2] = [0, -z]; softmax[:, 1] = P(fake)."""
        z = self.fc2(self.dropout(self.forward_features(x)))  # [B, 1]; sigmoid(z) = P(real)
        if self.num_classes != 2:
            return z  # [B, num_classes]: a plain head, not the authors'
        return torch.cat([torch.zeros_like(z), -z], dim=1)  # [B, 2]

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The authors' Keras weights (keys `<layer>/<weight>`) -> this module's; others unchanged."""
        if not sd or not all("/" in k for k in sd):
            return sd
        return keras_state_dict(self, sd, self.keras_layers)


@register("meso4", mean=ZERO, std=ONE, input_size=(3, SIZE, SIZE))
def meso4(num_classes: int = 2, **kw) -> MesoNet:
    """Meso-4 (Afchar et al., WIFS 2018), 27,977 params; loads the authors' Keras .h5 weights."""
    return MesoNet(num_classes=num_classes, inception=False, **kw)


@register("mesoinception4", mean=ZERO, std=ONE, input_size=(3, SIZE, SIZE))
def mesoinception4(num_classes: int = 2, **kw) -> MesoNet:
    """MesoInception-4 (Afchar et al., WIFS 2018), 28,615 params; loads the authors' Keras .h5."""
    return MesoNet(num_classes=num_classes, inception=True, **kw)
