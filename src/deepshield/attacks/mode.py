"""The model state during an attack: eval mode and frozen parameters, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every submodule to eval and stop gradients to parameters; restore both on exit."""
    training = [(m, m.training) for m in model.modules()]
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in trainable:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, flag in training:
            m.training = flag
        for p, flag in trainable:
            p.requires_grad_(flag)
