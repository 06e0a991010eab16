"""Average precision against scikit-learn; operating points against a brute-force search over
scikit-learn's full ROC; accuracy and balanced accuracy at a threshold; the operating-point rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from deepshield.errors import ConfigError, InputError
from deepshield.metrics import (
    asvspoof5,
    average_precision,
    eer,
    fpr_at_tpr,
    operating_threshold,
    rates_at,
    tpr_at_fpr,
)
from deepshield.metrics.decision import min_cost_point, verdict


def _data(seed: int, n: int = 400, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = rng.normal(size=n) + 1.2 * y
    return y, s if decimals is None else np.round(s, decimals)


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 1), (2, 0), (3, None)])
def test_average_precision_equals_sklearn(seed: int, decimals: int | None) -> None:
    y, s = _data(seed, decimals=decimals)
    assert abs(average_precision(y, s) - sk.average_precision_score(y, s)) <= 1e-12


def _full_roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr, tpr, thr = sk.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_fpr", [0.0, 0.001, 0.01, 0.1])
def test_tpr_at_fpr_is_the_best_point_within_the_budget(seed: int, max_fpr: float) -> None:
    y, s = _data(seed, n=3000, decimals=2 if seed % 2 else None)
    fpr, tpr, _ = _full_roc(y, s)
    point = tpr_at_fpr(y, s, max_fpr)
    assert point.tpr == pytest.approx(tpr[fpr <= max_fpr].max(), abs=1e-15)
    assert point.fpr <= max_fpr
    flagged = s >= point.threshold  # the threshold reproduces the point
    assert np.mean(flagged[y == 1]) == point.tpr and np.mean(flagged[y == 0]) == point.fpr


@pytest.mark.parametrize("seed", range(4))
def test_fpr_at_tpr_is_the_cheapest_point_reaching_it(seed: int) -> None:
    y, s = _data(seed, n=2000, decimals=1 if seed % 2 else None)
    fpr, tpr, _ = _full_roc(y, s)
    point = fpr_at_tpr(y, s, 0.95)
    assert point.fpr == pytest.approx(fpr[tpr >= 0.95].min(), abs=1e-15)
    flagged = s >= point.threshold
    assert np.mean(flagged[y == 1]) == point.tpr >= 0.95 and np.mean(flagged[y == 0]) == point.fpr


def test_rates_at_threshold_equal_sklearn() -> None:
    y, s = _data(5)
    r = rates_at(y, s, 0.4)
    pred = (s >= 0.4).astype(int)
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-15)
    assert r["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-15)
    assert r["tpr"] + r["fnr"] == 1


def test_operating_threshold_rules() -> None:
    y, s = _data(7, n=1000)
    assert operating_threshold(y, s, "eer") == eer(y, s)[1]
    t = operating_threshold(y, s, "fpr=0.01")
    assert np.mean(s[y == 0] >= t) <= 0.01 < np.mean(s[y == 0] >= np.max(s[(y == 0) & (s < t)]))
    # cost: no other threshold at a score gives a lower ASVspoof 5 detection cost
    costs = asvspoof5.ASVSPOOF5_DCF
    best = min_cost_point(y, s)
    assert operating_threshold(y, s, "cost") == best.threshold
    for thr in np.unique(s):
        other = costs.normalized(np.mean(s[y == 0] >= thr), np.mean(s[y == 1] < thr))
        assert other >= costs.normalized(best.fpr, 1 - best.tpr) - 1e-15
    for bad in ("fpr=2", "fpr=x", "tpr=0.9", "best"):
        with pytest.raises(ConfigError, match="operating-point rule"):
            operating_threshold(y, s, bad)


def test_single_class_and_mismatched_lengths_are_refused() -> None:
    with pytest.raises(InputError, match="only fake"):
        average_precision([1, 1], [0.2, 0.3])
    with pytest.raises(InputError, match="3 samples but scores has 2"):
        tpr_at_fpr([0, 1, 1], [0.2, 0.3])
    with pytest.raises(InputError, match="NaN/inf"):
        fpr_at_tpr([0, 1], [0.2, np.nan])
    with pytest.raises(InputError, match=r"max_fpr=-0\.1"):
        tpr_at_fpr([0, 1], [0.2, 0.3], -0.1)
    with pytest.raises(InputError, match="min_tpr=95"):
        fpr_at_tpr([0, 1], [0.2, 0.3], 95)


@pytest.mark.parametrize(
    ("p", "threshold", "band", "expected"),
    [
        (0.55, 0.5, 0.05, "fake"),  # the band's upper edge belongs to "fake"
        (0.5499, 0.5, 0.05, "unsure"),
        (0.45, 0.5, 0.05, "unsure"),  # the lower edge is still unsure
        (0.4499, 0.5, 0.05, "real"),
        (0.5, 0.5, 0.0, "fake"),  # no band: the bare threshold, fake at >= t
        (0.4999, 0.5, 0.0, "real"),
        (1.0, float("inf"), 0.05, "real"),  # an infinite threshold flags nothing
    ],
)
def test_verdict_is_fake_at_or_above_t_plus_band_real_below_t_minus_band(
    p, threshold, band, expected
):
    shown, why = verdict(p, threshold, band)
    assert shown == expected
    assert (why is None) == (expected != "unsure")
    if why:
        assert f"{p:.3f}" in why and f"{threshold - band:.3f}" in why
