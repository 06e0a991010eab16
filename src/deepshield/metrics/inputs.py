"""Checked conversion of metric inputs (lists, numpy arrays, torch tensors) to 1-D numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.errors import InputError


def as_array(x: Any, name: str) -> np.ndarray:
    """Any array-like (list, numpy, torch tensor on any device) as a 1-D numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} has shape {a.shape}; pass a 1-D array with one value per sample")
    if a.size == 0:
        raise InputError(f"{name} is empty; pass at least one sample")
    return a


def labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Integer class labels >= 0 as int64 [N]."""
    a = as_array(y, name)
    if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise InputError(f"{name} holds non-integer values; pass class labels 0, 1, ...")
    if a.min() < 0:
        raise InputError(f"{name} holds {a.min()}; class labels start at 0")
    return a.astype(np.int64)


def binary_labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Labels in {0, 1} (1 = fake/spoof) as int64 [N]."""
    a = labels(y, name)
    bad = np.setdiff1d(np.unique(a), [0, 1])
    if bad.size:
        raise InputError(f"{name} holds {bad.tolist()}; labels must be 0 (real) or 1 (fake)")
    return a


def scores(s: Any, name: str = "scores") -> np.ndarray:
    """Finite real scores as float64 [N] (float32 values convert exactly)."""
    a = as_array(s, name)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {a.dtype}; pass real-valued scores")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        n = int(np.sum(~np.isfinite(a)))
        raise InputError(f"{name} holds {n} NaN/inf values; drop or fix those samples first")
    return a


def same_length(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """InputError unless a and b have one entry per sample each."""
    if len(a) != len(b):
        raise InputError(
            f"{names[0]} has {len(a)} samples but {names[1]} has {len(b)}; pass one per sample"
        )


def labelled_scores(y_true: Any, s: Any) -> tuple[np.ndarray, np.ndarray]:
    """(labels in {0,1} [N], finite scores [N]) with both classes present."""
    y, x = binary_labels(y_true), scores(s)
    same_length(y, x, ("y_true", "scores"))
    if y.min() == y.max():
        only = "fake (1)" if y[0] == 1 else "real (0)"
        raise InputError(
            f"y_true holds only {only} samples; this metric needs both real and fake samples"
        )
    return y, x
