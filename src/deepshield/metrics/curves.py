"""ROC, DET and AUC of a fake-vs-real score: scikit-learn's functions behind checked inputs.

y_true: [N] in {0, 1}, 1 = fake/spoof (the positive class); scores: [N] finite, growing with "fake".
scikit-learn is imported on first use (sklearn.metrics takes ~2 s to import).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepshield.metrics import inputs


def roc(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) exactly as `sklearn.metrics.roc_curve` with its defaults
    (drop_intermediate=True: collinear points are dropped; thresholds[0] = inf)."""
    from sklearn import metrics as sk

    y, s = inputs.labelled_scores(y_true, scores)
    fpr, tpr, thresholds = sk.roc_curve(y, s)
    return fpr, tpr, thresholds


def det(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, fnr, thresholds) exactly as `sklearn.metrics.det_curve` with its defaults
    (no point dropped: drop_intermediate=False, its default). fpr: real flagged as fake at
    score >= threshold; fnr: fakes with score < threshold."""
    from sklearn import metrics as sk

    y, s = inputs.labelled_scores(y_true, scores)
    fpr, fnr, thresholds = sk.det_curve(y, s)
    return fpr, fnr, thresholds


def auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve, exactly `sklearn.metrics.roc_auc_score` (ties count 1/2)."""
    from sklearn import metrics as sk

    y, s = inputs.labelled_scores(y_true, scores)
    return float(sk.roc_auc_score(y, s))
