"""Three-layer MLP on flattened pixels: the seed study's baseline for CIFAR-size images.

Flatten -> Linear(C*H*W, h1) -> ReLU -> Linear(h1, h2) -> ReLU -> Linear(h2, num_classes).
It has no convolution, so Grad-CAM does not apply (`cam_layer = None`); use saliency instead.

@article{rumelhart1986backprop,
  title   = {Learning Representations by Back-Propagating Errors},
  author  = {Rumelhart, David E. and Hinton, Geoffrey E. and Williams, Ronald J.},
  journal = {Nature},
  volume  = {323},
  number  = {6088},
  pages   = {533--536},
  year    = {1986}
}
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepshield.models.registry import HALF, register


class MLP3(nn.Module):
    """x: [B, C, H, W] -> logits [B, num_classes] through two ReLU hidden layers."""

    cam_layer = None

    def __init__(
        self,
        num_classes: int = 10,
        input_size: tuple[int, int, int] = (3, 32, 32),
        hidden: tuple[int, int] = (512, 256),
    ) -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.num_features = hidden[1]
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(math.prod(self.input_size), hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.relu = nn.ReLU()
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] normalised (C, H, W = input_size) -> 2nd hidden layer [B, h2]."""
        x = self.flatten(x)  # [B, C*H*W]
        x = self.relu(self.fc1(x))  # [B, h1]
        return self.relu(self.fc2(x))  # [B, h2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] normalised -> logits [B, num_classes]."""
        return self.fc3(self.forward_features(x))


@register("mlp3", mean=HALF, std=HALF, input_size=(3, 32, 32))
def mlp3(num_classes: int = 2, **kw) -> MLP3:
    """Three-layer MLP (3072-512-256-num_classes at 32 px); `input_size` sets in_features."""
    return MLP3(num_classes=num_classes, **kw)
