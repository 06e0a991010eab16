"""Find the layer an explanation hooks: by dotted path, by module, or the model's `cam_layer`."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from deepshield.errors import InputError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted paths of the conv layers and of the blocks that contain one, in forward order."""
    return [
        name
        for name, m in model.named_modules()
        if name and any(isinstance(s, _CONV) for s in m.modules())
    ]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    """layer: dotted path, a submodule, or None (the model's declared `cam_layer`) -> (path, module).

    InputError naming close matches and the model's conv layers when the layer is unknown.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, m in modules.items():
            if m is layer:
                return name, m
        raise InputError(
            f"layer {type(layer).__name__} is not a submodule of {type(model).__name__}: "
            "pass one of the model's own modules or its dotted path"
        )
    if layer is None:
        layer = getattr(model, "cam_layer", None)
        if layer is None:
            raise InputError(
                f"{type(model).__name__} declares no `cam_layer`: pass layer= one of "
                f"{_candidates(model, '')}"
            )
    if layer not in modules or layer == "":
        raise InputError(
            f"unknown layer {layer!r} in {type(model).__name__}: use one of "
            f"{_candidates(model, layer)}"
        )
    return layer, modules[layer]


def _candidates(model: nn.Module, wanted: str) -> str:
    convs = conv_layer_names(model)
    close = difflib.get_close_matches(wanted, convs, n=4, cutoff=0.5) if wanted else []
    shown = close or convs[-8:]
    more = (
        f" (+{len(convs) - len(shown)} more in model.named_modules())"
        if len(convs) > len(shown)
        else ""
    )
    return (", ".join(shown) or "(no conv layers)") + more


@contextmanager
def recorded(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record each output of `module` during the block. The module passes on a clone, so in-place
    ops after it (e.g. ReLU(inplace=True)) cannot overwrite the recorded activation."""
    outputs: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inputs: tuple, out: object) -> object:
        if not isinstance(out, torch.Tensor):
            raise InputError(
                f"layer {type(_m).__name__} returns {type(out).__name__}, not a tensor: "
                "choose a layer whose output is one feature map"
            )
        outputs.append(out)
        return out.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()
