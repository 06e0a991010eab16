"""Detector metrics: accuracy, balanced accuracy, per-class rates, the collapse flag, confusion,
ROC, DET, AUC, EER (ASVspoof definition), min t-DCF, the `detector_metrics` bundle, and ASVspoof
score files.

Conventions: y_true [N] in {0, 1} with 1 = fake/spoof; scores [N] grow with "fake" (P(fake));
a sample is called fake when score >= threshold.
"""

from deepshield.metrics.classification import (
    COLLAPSE_SHARE,
    accuracy,
    balanced_accuracy,
    class_rates,
    collapse_note,
    collapsed,
    confusion,
    per_class_recall,
)
from deepshield.metrics.curves import auc, det, roc
from deepshield.metrics.detector import detector_metrics
from deepshield.metrics.eer import eer
from deepshield.metrics.scorefile import ScoreRows, read_scores, write_scores
from deepshield.metrics.tdcf import (
    AsvErrorRates,
    CostModel,
    LegacyCostModel,
    asv_error_rates,
    min_tdcf,
)

__all__ = [
    "COLLAPSE_SHARE",
    "AsvErrorRates",
    "CostModel",
    "LegacyCostModel",
    "ScoreRows",
    "accuracy",
    "asv_error_rates",
    "auc",
    "balanced_accuracy",
    "class_rates",
    "collapse_note",
    "collapsed",
    "confusion",
    "det",
    "detector_metrics",
    "eer",
    "min_tdcf",
    "per_class_recall",
    "read_scores",
    "roc",
    "write_scores",
]
