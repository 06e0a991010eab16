"""The one bundle of detector numbers every command reports."""

from __future__ import annotations

from typing import Any

from deepshield.metrics import inputs
from deepshield.metrics.classification import class_rates
from deepshield.metrics.curves import auc
from deepshield.metrics.eer import eer


def detector_metrics(y_true: Any, scores: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Detector numbers for y_true [N] in {0, 1} (1 = fake) and scores [N] = P(fake) (or any score
    growing with "fake"); a sample is called fake when score >= threshold.

    Keys: n, n_real, n_fake, threshold, accuracy (at threshold), balanced_accuracy (mean of the
    two class recalls), fake_passed_as_real (share of fakes with score < threshold),
    real_flagged_as_fake (share of reals with score >= threshold), predicted_fake_share,
    collapsed / collapsed_to (one class called for >= 95 % of the split, see
    `classification.collapsed`), auc, eer, eer_threshold. Values are plain floats/ints/bools
    (JSON-ready); with only one class present, the rate of the absent class and auc / eer /
    eer_threshold are None, and `undefined` {key: reason} says why.
    """
    y, s = inputs.binary_labels(y_true), inputs.scores(scores)
    inputs.same_length(y, s, ("y_true", "scores"))
    both = bool((y == 0).any() and (y == 1).any())
    rate, rate_threshold = eer(y, s) if both else (None, None)
    out = {
        "n": int(y.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        **class_rates(y, (s >= threshold).astype(int)),
        "auc": auc(y, s) if both else None,
        "eer": rate,
        "eer_threshold": rate_threshold,
    }
    if not both:
        only = "fake" if (y == 1).any() else "real"
        why = f"only {only} samples ({y.size}): a ranking metric needs both classes"
        out["undefined"] = {k: why for k in ("auc", "eer", "eer_threshold")}
        absent = "real_flagged_as_fake" if only == "fake" else "fake_passed_as_real"
        out["undefined"][absent] = f"no {'real' if only == 'fake' else 'fake'} samples"
    return out
