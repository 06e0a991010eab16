"""Normalize inside the model, so attacks and defences work in pixel space [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepshield.errors import InputError


class Normalize(nn.Module):
    """x: [B,C,H,W] in [0,1] -> (x - mean) / std, per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        # Non-persistent: state dicts stay equal to the bare architecture's under `net.`;
        # the values are stored in the run's config.
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise InputError(
                f"model expects images [B,{self.mean.shape[1]},H,W] in [0,1], got shape "
                f"{tuple(x.shape)}; convert grayscale/RGBA inputs to RGB first"
            )
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """An image model that takes pixels in [0, 1]: `net(Normalize(x))`.

    State-dict keys are the bare architecture's prefixed with `net.`. Attributes the bare
    architecture declares (`cam_layer`, `num_features`) are forwarded.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    @property
    def cam_layer(self) -> str | None:
        """Dotted path (from this module) of the layer Grad-CAM uses by default (None: no conv)."""
        inner = getattr(self.net, "cam_layer", None)
        return None if inner is None else "net." + inner

    @property
    def num_features(self) -> int:
        return self.net.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,C,H,W] in [0,1] -> pooled embedding [B, num_features]."""
        return self.net.forward_features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,C,H,W] in [0,1] -> logits [B, num_classes]."""
        return self.net(self.normalize(x))
