"""Validation of attack arguments: every bad value raises InputError before any work is done."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from deepshield.attacks.norms import NORMS
from deepshield.errors import InputError


def check_number(name: str, value: float, *, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number >= minimum (> minimum when strict), as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name}={value!r} is not a finite number: pass e.g. {name}=0.03")
    if value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        raise InputError(f"{name}={value} must be {sign} {minimum}: pass a value {sign} {minimum}")
    return float(value)


def check_count(name: str, value: int) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r} must be an integer >= 1: pass e.g. {name}=10")
    return value


def check_norm(norm: str) -> str:
    """One of NORMS."""
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")
    return norm


def model_bounds(model: nn.Module) -> tuple[float, float]:
    """The input range a model works in: its `bounds` attribute, else (0, 1)."""
    lo, hi = getattr(model, "bounds", (0.0, 1.0))
    if not lo < hi:
        raise InputError(
            f"model.bounds={(lo, hi)} is empty: set bounds = (low, high) with low < high"
        )
    return float(lo), float(hi)


def check_images(x: Tensor, bounds: tuple[float, float]) -> None:
    """x: floating [B,...] with B >= 1, finite, inside bounds."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x {shape} must be a float tensor [B,...] with B >= 1: pass a batch")
    lo, hi = bounds
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()  # one read-back per call
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError("x contains NaN or inf: clean the input batch before attacking it")
    if low < lo or high > hi:
        raise InputError(
            f"x spans [{low:.4g}, {high:.4g}], outside the model's range [{lo:g}, {hi:g}]: "
            f"pass un-normalised inputs (x.clamp({lo:g}, {hi:g}))"
        )


def check_model_device(model: nn.Module, x: Tensor) -> None:
    """The model's parameters live on x's device."""
    p = next(model.parameters(), None)
    if p is not None and p.device != x.device:
        raise InputError(f"model is on {p.device} but x is on {x.device}: call model.to(x.device)")


def check_batch(y: object, x: Tensor) -> None:
    """y (when a tensor) has x's batch size."""
    if isinstance(y, Tensor) and (y.dim() == 0 or len(y) != len(x)):
        raise InputError(
            f"y has shape {tuple(y.shape)} but x has batch size {len(x)}: pass one label per sample"
        )


def check_label_tensor(y: object) -> None:
    """y: an integer tensor [B] (its range is checked against the model output later)."""
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise InputError(f"y {shape} must be integer class labels [B]: pass y.long()")


def check_labels(output: Tensor, y: Tensor) -> None:
    """y: integer [B] in range for the model's output (logits [B,C], or one logit [B]/[B,1])."""
    check_label_tensor(y)
    if output.dim() == 2 and output.shape[1] >= 2:
        classes = output.shape[1]
    elif output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
        classes = 2
    else:
        raise InputError(
            f"model output {tuple(output.shape)} is not logits [B,C] or [B]: "
            "pass loss_fn(output, y) -> per-sample loss"
        )
    low, high = torch.stack(torch.aminmax(y)).tolist()  # one read-back per call
    if low < 0 or high >= classes:
        raise InputError(
            f"labels span [{low}, {high}] but the model has {classes} "
            f"classes: pass labels in 0..{classes - 1}"
        )


def check_mask(mask: Tensor, x: Tensor) -> Tensor:
    """mask: [B or 1, 1 or C, ...x's other dims] in {0, 1} -> float mask on x's device."""
    ok = (
        isinstance(mask, Tensor)
        and mask.dim() == x.dim()
        and mask.shape[0] in (1, len(x))
        and mask.shape[1] in (1, x.shape[1])
        and mask.shape[2:] == x.shape[2:]
    )
    if not ok:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        want = (len(x), 1, *x.shape[2:])
        raise InputError(f"mask {shape} does not fit x {tuple(x.shape)}: pass a mask {want}")
    if not ((mask == 0) | (mask == 1)).all():
        raise InputError("mask has values other than 0 and 1: pass (mask > 0.5).float()")
    return mask.to(device=x.device, dtype=x.dtype)


def checking_labels(
    objective: Callable[[Tensor, Tensor], Tensor],
) -> Callable[[Tensor, Tensor], Tensor]:
    """`objective` that first checks y against the model output (check_labels) on its first
    call: labels are validated by the attack's own first forward pass, not by a probe pass."""
    checked = False

    def wrapped(output: Tensor, y: Tensor) -> Tensor:
        nonlocal checked
        if not checked:
            check_labels(output, y)
            checked = True
        return objective(output, y)

    return wrapped


def check_attack(
    model: nn.Module, x: Tensor, y: object, *, mask: Tensor | None = None, labels: bool = True
) -> tuple[tuple[float, float], object, Tensor | None]:
    """Validate x, y (labels: an integer tensor [B]), mask -> (bounds, y, mask); no forward pass.

    y and mask come back on x's device. The label range needs the model's output: each attack
    checks it on its own first forward pass (`check_labels`, `checking_labels`).
    """
    bounds = model_bounds(model)
    check_images(x, bounds)
    check_model_device(model, x)
    check_batch(y, x)
    if isinstance(y, Tensor):
        y = y.to(x.device)
    if mask is not None:
        mask = check_mask(mask, x)
    if labels:
        check_label_tensor(y)
    return bounds, y, mask
