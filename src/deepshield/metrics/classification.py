"""Accuracy, confusion matrix and class-balanced numbers of predicted class labels.

On an imbalanced split plain accuracy rewards a detector that calls everything the majority
class (600 reals and 200 fakes: "all real" scores 0.75). Balanced accuracy (mean per-class
recall) gives that detector 0.5, and `collapsed` flags it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.errors import InputError
from deepshield.metrics import inputs

COLLAPSE_SHARE = 0.95  # a detector predicting one class for >= this share of a split is collapsed


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


def per_class_recall(y_true: Any, y_pred: Any) -> dict[int, float]:
    """{class: share of its samples predicted as it} for every class present in y_true [N]."""
    y, p = inputs.labels(y_true), inputs.labels(y_pred, "y_pred")
    inputs.same_length(y, p, ("y_true", "y_pred"))
    return {int(c): float(np.mean(p[y == c] == c)) for c in np.unique(y)}


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean over the classes present in y_true [N] of their recall (sklearn's definition)."""
    return float(np.mean(list(per_class_recall(y_true, y_pred).values())))


def majority_share(y_pred: Any) -> tuple[int, float]:
    """(the most predicted class, its share of y_pred [N])."""
    p = inputs.labels(y_pred, "y_pred")
    counts = np.bincount(p)
    top = int(np.argmax(counts))
    return top, float(counts[top] / p.size)


def collapsed(y_true: Any, y_pred: Any, share: float = COLLAPSE_SHARE) -> bool:
    """True when a model predicts one class for >= `share` of a split that holds several classes
    (y_true, y_pred: [N]); a split of one class cannot tell and gives False."""
    y = inputs.labels(y_true)
    if np.unique(y).size < 2:
        return False
    return majority_share(y_pred)[1] >= share


def class_rates(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Detector numbers of hard predictions, y_true/y_pred [N] in {0, 1} (1 = fake): accuracy,
    balanced_accuracy, fake_passed_as_real (FNR on fakes), real_flagged_as_fake (FPR on reals),
    predicted_fake_share, collapsed (bool) and collapsed_to ("real"/"fake"/None). A rate of a
    class absent from y_true is None; balanced accuracy is then the present class's recall."""
    y, p = inputs.binary_labels(y_true), inputs.binary_labels(y_pred, "y_pred")
    inputs.same_length(y, p, ("y_true", "y_pred"))
    real, fake = y == 0, y == 1
    top, _ = majority_share(p)
    is_collapsed = collapsed(y, p)
    return {
        "accuracy": float(np.mean(y == p)),
        "balanced_accuracy": balanced_accuracy(y, p),
        "fake_passed_as_real": float(np.mean(p[fake] == 0)) if fake.any() else None,
        "real_flagged_as_fake": float(np.mean(p[real] == 1)) if real.any() else None,
        "predicted_fake_share": float(np.mean(p == 1)),
        "collapsed": is_collapsed,
        "collapsed_to": ("fake" if top == 1 else "real") if is_collapsed else None,
    }


def collapse_note(rates: dict[str, Any]) -> str | None:
    """One line saying a detector collapsed (from `class_rates` / `detector_metrics` keys), or
    None when it did not."""
    if not rates.get("collapsed"):
        return None
    share = rates["predicted_fake_share"]
    if rates["collapsed_to"] == "real":
        share = 1 - share
    return (
        f"COLLAPSED: calls {share:.0%} of the split {rates['collapsed_to']} (balanced accuracy "
        f"{rates['balanced_accuracy']:.3f}); its accuracy only reflects the class balance"
    )
