"""Decisions at a threshold: average precision, TPR at a fixed FPR, FPR at a fixed TPR, error rates
and (balanced) accuracy at a chosen threshold, and the rule that picks a run's operating threshold.

Orientation: y_true [N] in {0, 1} with 1 = fake (the positive class); scores [N] grow with
"fake"; a sample is flagged fake when score >= threshold. TPR = fakes flagged, FPR = reals
flagged. Only thresholds a detector can use are considered (one at each distinct score, plus
+inf, flagging none): no interpolation between points.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from deepshield.errors import ConfigError, InputError
from deepshield.metrics import inputs
from deepshield.metrics.asvspoof5 import ASVSPOOF5_DCF, DcfCosts
from deepshield.metrics.eer import eer


class OperatingPoint(NamedTuple):
    """A threshold (flag fake when score >= it) and its FPR and TPR."""

    threshold: float
    fpr: float
    tpr: float


def _counts(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(distinct scores [P] descending, fakes [P] and reals [P] with score >= each, n_fake,
    n_real)."""
    y, s = inputs.labelled_scores(y_true, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    n_fake = int(y.sum())
    return s[last], tps, (last + 1) - tps, n_fake, y.size - n_fake


def _points(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds [P+1] descending from +inf, fpr [P+1], tpr [P+1]) at every distinct score."""
    thresholds, tps, fps, n_fake, n_real = _counts(y_true, scores)
    return np.r_[np.inf, thresholds], np.r_[0, fps] / n_real, np.r_[0, tps] / n_fake


def average_precision(y_true: Any, scores: Any) -> float:
    """Area under the precision-recall curve of the fake class as a step sum,
    sum_k (recall_k - recall_k-1) * precision_k over distinct thresholds (scikit-learn's AP)."""
    _, tps, fps, n_fake, _ = _counts(y_true, scores)
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0, tps]) / n_fake * precision))


def _check_rate(rate: float, name: str) -> None:
    if not 0 <= rate <= 1:
        raise InputError(f"{name}={rate}; pass a rate in [0, 1] (0.01 for 1 %)")


def tpr_at_fpr(y_true: Any, scores: Any, max_fpr: float = 0.01) -> OperatingPoint:
    """The point with the most fakes caught whose FPR <= max_fpr (the lowest such threshold);
    with fewer than 1 / max_fpr reals only FPR = 0 may qualify."""
    _check_rate(max_fpr, "max_fpr")
    thresholds, fpr, tpr = _points(y_true, scores)
    i = int(np.flatnonzero(fpr <= max_fpr)[-1])
    return OperatingPoint(float(thresholds[i]), float(fpr[i]), float(tpr[i]))


def fpr_at_tpr(y_true: Any, scores: Any, min_tpr: float = 0.95) -> OperatingPoint:
    """The point with the fewest reals flagged whose TPR >= min_tpr (the highest such threshold)."""
    _check_rate(min_tpr, "min_tpr")
    thresholds, fpr, tpr = _points(y_true, scores)
    i = int(np.flatnonzero(tpr >= min_tpr)[0])
    return OperatingPoint(float(thresholds[i]), float(fpr[i]), float(tpr[i]))


def rates_at(y_true: Any, scores: Any, threshold: float) -> dict[str, float]:
    """At one threshold: accuracy, balanced_accuracy (mean of TPR and TNR), tpr (fakes flagged),
    fpr (reals flagged), fnr (fakes passed as real); each in [0, 1]."""
    y, s = inputs.labelled_scores(y_true, scores)
    flagged = s >= threshold
    tpr, fpr = float(np.mean(flagged[y == 1])), float(np.mean(flagged[y == 0]))
    return {
        "accuracy": float(np.mean(flagged == (y == 1))),
        "balanced_accuracy": (tpr + 1 - fpr) / 2,
        "tpr": tpr,
        "fpr": fpr,
        "fnr": 1 - tpr,
    }


def min_cost_point(y_true: Any, scores: Any, costs: DcfCosts = ASVSPOOF5_DCF) -> OperatingPoint:
    """The point minimising the detection cost Cmiss (1 - Pspoof) FPR + Cfa Pspoof FNR (a real
    flagged is a "miss" of a bona fide trial; defaults: the ASVspoof 5 costs)."""
    thresholds, fpr, tpr = _points(y_true, scores)
    i = int(np.argmin(costs.normalized(fpr, 1 - tpr)))
    return OperatingPoint(float(thresholds[i]), float(fpr[i]), float(tpr[i]))


UNSURE_BAND = 0.05  # default half-width, in calibrated P(fake), of the band around a threshold


def verdict(p: float, threshold: float, band: float = UNSURE_BAND) -> tuple[str, str | None]:
    """(verdict, why unsure) of one P(fake) in [0, 1]: "fake" when p >= threshold + band, "real"
    when p < threshold - band, else "unsure" with the band named. The one verdict rule of every
    command (scan, evaluate's per-file scores, the service)."""
    if p >= threshold + band:
        return "fake", None
    if p < threshold - band:
        return "real", None
    lo, hi = max(0.0, threshold - band), min(1.0, threshold + band)
    return "unsure", f"P(fake) {p:.3f} inside the unsure band [{lo:.3f}, {hi:.3f}) of the threshold"


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a rate k/n (95 % for the default z); (0, 1) when n is 0. Unlike
    k/n +- z*se it stays in [0, 1] and is not empty at k = 0 (0 errors in 10 is not a 0 % rate:
    the upper end is z^2/(n + z^2) = 0.278)."""
    if not 0 <= k <= n:
        raise ConfigError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


MIN_PER_CLASS = 20  # fewer samples of a class than this: a threshold fitted on them is rough


def few_per_class(n_real: int, n_fake: int, what: str = "validation samples") -> str | None:
    """The warning for a threshold fitted on fewer than MIN_PER_CLASS samples of a class (None
    when both classes have enough): the counts, so a reader can weigh the error rates."""
    if min(n_real, n_fake) >= MIN_PER_CLASS:
        return None
    return (
        f"threshold fitted on only {n_real} real and {n_fake} fake {what} (fewer than "
        f"{MIN_PER_CLASS} of a class): its error rates are rough"
    )


def operating_threshold(y_true: Any, scores: Any, rule: str = "eer") -> float:
    """The threshold a run uses, chosen on validation scores by a stated rule: "eer" (the EER
    point), "fpr=F" (most fakes caught with FPR <= F, e.g. fpr=0.01), "cost" (the ASVspoof 5
    detection cost minimised). May be +inf (flag nothing) when no finite one fits the rule."""
    if rule == "eer":
        return eer(y_true, scores)[1]
    if rule == "cost":
        return min_cost_point(y_true, scores).threshold
    name, sep, value = rule.partition("=")
    if name == "fpr" and sep:
        try:
            target = float(value)
        except ValueError:
            target = -1.0
        if 0 <= target <= 1:
            return tpr_at_fpr(y_true, scores, target).threshold
    raise ConfigError(
        f"operating-point rule {rule!r}; use 'eer', 'cost' or 'fpr=F' with F in [0, 1]"
    )
