"""The one bundle of detector numbers every command reports."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.metrics import inputs
from deepshield.metrics.curves import auc
from deepshield.metrics.eer import eer


def detector_metrics(y_true: Any, scores: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Detector numbers for y_true [N] in {0, 1} (1 = fake) and scores [N] = P(fake) (or any score
    growing with "fake"); a sample is called fake when score >= threshold.

    Keys: n, n_real, n_fake, threshold, accuracy (at threshold), fake_passed_as_real (share of fakes
    with score < threshold), real_flagged_as_fake (share of reals with score >= threshold), auc, eer,
    eer_threshold. Values are plain floats/ints (JSON-ready); with only one class present, the
    rate of the absent class and auc / eer / eer_threshold are None.
    """
    y, s = inputs.binary_labels(y_true), inputs.scores(scores)
    inputs.same_length(y, s, ("y_true", "scores"))
    called_fake = s >= threshold  # [N]
    real, fake = y == 0, y == 1
    both = bool(real.any() and fake.any())
    rate, rate_threshold = eer(y, s) if both else (None, None)
    return {
        "n": int(y.size),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "threshold": float(threshold),
        "accuracy": float(np.mean(called_fake == fake)),
        "fake_passed_as_real": float(np.mean(~called_fake[fake])) if fake.any() else None,
        "real_flagged_as_fake": float(np.mean(called_fake[real])) if real.any() else None,
        "auc": auc(y, s) if both else None,
        "eer": rate,
        "eer_threshold": rate_threshold,
    }
