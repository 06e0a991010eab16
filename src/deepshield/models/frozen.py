"""The one model state for inference, attacks and explanations: frozen, eval, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every submodule to eval and stop gradients to parameters; on exit restore each
    submodule's own train flag and each parameter's requires_grad exactly (mixed modes kept).
    Flags already as wanted are not set again (a model in eval is not walked by eval())."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    if any(modes):
        model.eval()
    for p, flag in flags:
        if flag:
            p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in zip(modules, modes, strict=True):
            if m.training != mode:
                m.training = mode
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
