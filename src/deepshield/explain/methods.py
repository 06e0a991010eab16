"""Explanation methods by name: each is `fn(model, x, target) -> map`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from deepshield.errors import ConfigError
from deepshield.explain.grad_cam import grad_cam
from deepshield.explain.saliency import saliency, smoothgrad

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

METHODS: dict[str, Method] = {
    "saliency": saliency,
    "smoothgrad": smoothgrad,
    "grad_cam": grad_cam,
}


def method_fn(method: str | Method) -> Method:
    """A method name (saliency, smoothgrad, grad_cam) or a callable -> the callable."""
    if callable(method):
        return method
    if method not in METHODS:
        raise ConfigError(
            f"unknown explanation method {method!r}: use one of {', '.join(METHODS)} "
            "or a function (model, x, target) -> map"
        )
    return METHODS[method]
