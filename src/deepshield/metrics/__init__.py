"""Detector metrics: accuracy, balanced accuracy, per-class rates, the collapse flag, confusion,
ROC, DET, AUC, EER (ASVspoof definition), min t-DCF, the `detector_metrics` bundle, ASVspoof
score files; average precision, TPR at FPR and other operating points, calibration (Brier, ECE,
Cllr, minCllr, `Calibrator`), the ASVspoof 5 metrics (`asvspoof5`) and score files of any system
(`read_trials`, `score_summary`).

Conventions: y_true [N] in {0, 1} with 1 = fake/spoof; scores [N] grow with "fake" (P(fake));
a sample is called fake when score >= threshold.
"""

from deepshield.metrics import asvspoof5
from deepshield.metrics.calibration import (
    Calibrator,
    Reliability,
    brier,
    cllr,
    ece,
    min_cllr,
    reliability,
)
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
from deepshield.metrics.decision import (
    UNSURE_BAND,
    OperatingPoint,
    average_precision,
    fpr_at_tpr,
    operating_threshold,
    rates_at,
    tpr_at_fpr,
    verdict,
)
from deepshield.metrics.detector import detector_metrics
from deepshield.metrics.eer import eer
from deepshield.metrics.score_files import Trials, read_trials, write_pfake_scores
from deepshield.metrics.scorefile import ScoreRows, read_scores, write_scores
from deepshield.metrics.summary import score_summary
from deepshield.metrics.tdcf import (
    AsvErrorRates,
    CostModel,
    LegacyCostModel,
    asv_error_rates,
    min_tdcf,
)
from deepshield.metrics.video import video_metrics

__all__ = [
    "COLLAPSE_SHARE",
    "UNSURE_BAND",
    "AsvErrorRates",
    "Calibrator",
    "CostModel",
    "LegacyCostModel",
    "OperatingPoint",
    "Reliability",
    "ScoreRows",
    "Trials",
    "accuracy",
    "asv_error_rates",
    "asvspoof5",
    "auc",
    "average_precision",
    "balanced_accuracy",
    "brier",
    "class_rates",
    "cllr",
    "collapse_note",
    "collapsed",
    "confusion",
    "det",
    "detector_metrics",
    "ece",
    "eer",
    "fpr_at_tpr",
    "min_cllr",
    "min_tdcf",
    "operating_threshold",
    "per_class_recall",
    "rates_at",
    "read_scores",
    "read_trials",
    "reliability",
    "roc",
    "score_summary",
    "tpr_at_fpr",
    "verdict",
    "video_metrics",
    "write_pfake_scores",
    "write_scores",
]
