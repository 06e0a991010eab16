"""The conditions every explanation runs under: eval mode, frozen parameters, checked input/target."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from deepshield.errors import InputError, ModelError
from deepshield.models.frozen import frozen_eval

Target = int | Sequence[int] | torch.Tensor | None


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode with parameters frozen; restore every module's mode and every
    parameter's `requires_grad` afterwards. Explanations differentiate only with respect to the
    input or an activation, so no parameter `.grad` is ever written."""
    with frozen_eval(model), torch.enable_grad():
        yield model


def check_input(x: torch.Tensor) -> torch.Tensor:
    """x: images [B,C,H,W] in [0,1] or waveforms [B,T] in [-1,1]; InputError otherwise."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = type(x).__name__ if not isinstance(x, torch.Tensor) else f"tensor of {x.dtype}"
        raise InputError(f"x is a {kind}: pass a float tensor (images [B,C,H,W], speech [B,T])")
    if x.ndim not in (2, 4) or x.shape[0] == 0 or x.numel() == 0:
        raise InputError(
            f"x has shape {tuple(x.shape)}: pass a non-empty batch of images [B,C,H,W] or "
            "waveforms [B,T] (one sample: x.unsqueeze(0))"
        )
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or inf: clean the input before explaining it")
    lo, hi = (0.0, 1.0) if x.ndim == 4 else (-1.0, 1.0)
    if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
        what = "images must be in [0,1]" if x.ndim == 4 else "waveforms must be in [-1,1]"
        raise InputError(
            f"x spans [{x.min().item():.3g}, {x.max().item():.3g}]: {what} "
            "(the model normalises inside itself; pass raw pixels / samples)"
        )
    return x


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model(x) as logits [B,K] ([B] single-logit outputs become [B,1]); InputError when the
    model cannot take `x`."""
    try:
        out = model(x)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"{type(model).__name__} cannot take x of shape {tuple(x.shape)} ({first}): "
            "pass the input size the model was built for"
        ) from e
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{type(model).__name__} returned {shape} for a batch of {x.shape[0]}: "
            "explanations need a classifier returning logits [B,K]"
        )
    return out.unsqueeze(1) if out.ndim == 1 else out


def target_indices(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """target: int, [B] ints or None (the predicted class) -> int64 [B] checked against K."""
    b, k = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"target has dtype {t.dtype}: pass class indices (int or int64 [B])")
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise InputError(
            f"target has shape {tuple(t.shape)} for a batch of {b}: pass an int or one index per sample"
        )
    if (t < 0).any() or (t >= k).any():
        bad = t[(t < 0) | (t >= k)][0].item()
        raise InputError(
            f"target {bad} is out of range for a model with {k} outputs: use 0..{k - 1}"
        )
    return t.long()


def target_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits [B,K], target int64 [B] -> the target logit of each sample [B]."""
    return logits.gather(1, target.view(-1, 1)).squeeze(1)  # [B]
