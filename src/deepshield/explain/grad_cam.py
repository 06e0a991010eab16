"""Grad-CAM (Selvaraju et al., 2017) at any conv layer of an image or speech detector.

@inproceedings{selvaraju2017gradcam, title={Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization}, author={Selvaraju, R. R. and Cogswell, M. and Das, A. and
  Vedantam, R. and Parikh, D. and Batra, D.}, booktitle={ICCV}, year={2017}}
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from deepshield.errors import InputError
from deepshield.explain.context import (
    Target,
    check_input,
    explaining,
    logits_of,
    target_indices,
    target_logits,
)
from deepshield.explain.layers import recorded, resolve_layer

_UPSAMPLE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def frontend_module(model: nn.Module) -> nn.Module | None:
    """The time-frequency front end of a speech model: the module at the dotted path
    `model.frontend_layer`, else a child module named `frontend`, else None."""
    path = getattr(model, "frontend_layer", None)
    if isinstance(path, str):
        return resolve_layer(model, path)[1]
    child = getattr(model, "frontend", None)
    return child if isinstance(child, nn.Module) else None


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | nn.Module | None = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM map of `target` at `layer` (dotted path, submodule, or None: `model.cam_layer`).

    cam = ReLU(sum_c mean_s(d logit_target / d A_c) * A_c) for the layer's output A [B,C,*S],
    upsampled (bilinear; linear for a 1-d layer) and, with `normalize`, divided per sample by its
    maximum so that it lies in [0,1]. A map with no positive evidence stays all zero.
      images   x [B,C,H,W] in [0,1] -> [B,H,W], the input's size;
      speech   x [B,T] in [-1,1]    -> the front end's time-frequency size [B,F,T'] (not the
               waveform's) when the model declares `frontend_layer` or has a `frontend` child,
               else the layer's own size [B,*S].
    Before normalising it equals captum's `LayerGradCam(model, layer).attribute(x, target,
    relu_attributions=True)` interpolated with `LayerAttribution.interpolate(.., "bilinear")`.
    target: int, int64 [B], or None for each sample's predicted class.
    """
    x = check_input(x)
    name, module = resolve_layer(model, layer)
    frontend = frontend_module(model) if x.ndim == 2 else None
    with explaining(model), ExitStack() as stack:
        acts = stack.enter_context(recorded(module))
        spec = stack.enter_context(recorded(frontend)) if frontend is not None else None
        logits = logits_of(model, x.detach().clone().requires_grad_(True))  # [B, K]
        t = target_indices(target, logits)  # [B]
        if len(acts) != 1:
            raise InputError(
                f"layer {name!r} ran {len(acts)} times in one forward pass: Grad-CAM needs a "
                "layer that runs once (pick a layer inside the shared branch's single use)"
            )
        a = acts[0]  # [B, C, *S]
        if a.ndim < 3 or a.shape[0] != x.shape[0] or not a.requires_grad:
            raise InputError(
                f"layer {name!r} outputs shape {tuple(a.shape)}: Grad-CAM needs a feature map "
                "[B,C,*S] that depends on x (choose a conv layer or block)"
            )
        (g,) = torch.autograd.grad(target_logits(logits, t).sum(), a)  # [B, C, *S]
    spatial = tuple(range(2, a.ndim))
    weights = g.mean(dim=spatial, keepdim=True)  # [B, C, 1, ...]
    cam = F.relu((weights * a).sum(dim=1, keepdim=True)).detach()  # [B, 1, *S]
    size = _map_size(x, a, spec, name)
    if tuple(cam.shape[2:]) != size:
        cam = F.interpolate(cam, size=size, mode=_UPSAMPLE[len(size)])  # [B, 1, *size]
    cam = cam[:, 0]  # [B, *size]
    if normalize:
        peak = cam.flatten(1).amax(dim=1).view(-1, *([1] * len(size)))  # [B, 1, ...]
        cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)
    return cam


def _map_size(
    x: torch.Tensor, a: torch.Tensor, spec: list[torch.Tensor] | None, name: str
) -> tuple[int, ...]:
    """The size the map is returned at: the image's (H,W), the front end's (F,T'), or the layer's."""
    layer_size = tuple(a.shape[2:])
    if x.ndim == 4:
        size = tuple(x.shape[2:])
    elif spec:
        size = tuple(spec[-1].shape[-len(layer_size) :])
    else:
        size = layer_size
    if len(size) != len(layer_size) or len(size) not in _UPSAMPLE:
        raise InputError(
            f"layer {name!r} has {len(layer_size)} spatial dims but the input has {len(size)}: "
            "choose a layer whose map matches the input (a Conv2d block for images)"
        )
    return size
