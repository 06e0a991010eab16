"""Detector metrics: accuracy, confusion, ROC, DET, AUC, EER (ASVspoof definition), min t-DCF,
the `detector_metrics` bundle, and ASVspoof score files.

Conventions: y_true [N] in {0, 1} with 1 = fake/spoof; scores [N] grow with "fake" (P(fake));
a sample is called fake when score >= threshold.
"""

from deepshield.metrics.classification import accuracy, confusion
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
    "AsvErrorRates",
    "CostModel",
    "LegacyCostModel",
    "ScoreRows",
    "accuracy",
    "asv_error_rates",
    "auc",
    "confusion",
    "det",
    "detector_metrics",
    "eer",
    "min_tdcf",
    "read_scores",
    "roc",
    "write_scores",
]
