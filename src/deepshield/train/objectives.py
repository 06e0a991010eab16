"""What the Trainer minimises: an objective (loss + logits) plus optional penalty terms.

Later capabilities plug in here instead of copying the loop: a Siamese pair loss is an
objective, the Lipschitz input-gradient penalty is a penalty, adversarial training is a
batch transform (see Trainer).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Objective(Protocol):
    """(model, x, y) -> (scalar loss, logits [B,K]) for one training batch."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class Penalty(Protocol):
    """A named extra term added to the objective's loss: (model, x, y, logits) -> scalar."""

    name: str

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor: ...


class BatchTransform(Protocol):
    """Replace a training batch before the step, e.g. by adversarial examples: -> (x, y)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class CrossEntropy:
    """Plain (optionally class-weighted) cross-entropy on the model's logits."""

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        self.weight = weight

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)  # [B, K]
        w = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits, y, weight=w), logits


def balanced_class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights N / (K * count_k) per class (scikit-learn's 'balanced')."""
    counts = torch.bincount(y, minlength=num_classes).float().clamp_min(1)
    return len(y) / (num_classes * counts)
