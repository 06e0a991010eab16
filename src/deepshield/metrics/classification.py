"""Accuracy and confusion matrix of predicted class labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.errors import InputError
from deepshield.metrics import inputs


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of samples whose predicted label equals the true one; y_true, y_pred: [N] labels."""
    y, p = inputs.labels(y_true), inputs.labels(y_pred, "y_pred")
    inputs.same_length(y, p, ("y_true", "y_pred"))
    return float(np.mean(y == p))


def confusion(y_true: Any, y_pred: Any, num_classes: int = 2) -> np.ndarray:
    """Counts int64 [num_classes, num_classes]: row = true class, column = predicted class."""
    y, p = inputs.labels(y_true), inputs.labels(y_pred, "y_pred")
    inputs.same_length(y, p, ("y_true", "y_pred"))
    top = max(int(y.max()), int(p.max()))
    if top >= num_classes:
        raise InputError(f"label {top} does not fit num_classes={num_classes}; raise num_classes")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)  # [K*K]
    return flat.reshape(num_classes, num_classes)
