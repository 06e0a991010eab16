"""Calibration metrics and the Calibrator against scikit-learn and scipy peers and closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import isotonic_regression
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from deepshield.errors import ConfigError, InputError
from deepshield.metrics import Calibrator, brier, cllr, ece, min_cllr, reliability
from deepshield.metrics.calibration import pav


def _overconfident(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, logits, P(fake)): a detector whose logits are 3x too large."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    logit = 3 * (rng.normal(size=n) + 1.5 * y - 0.75)
    return y, logit, 1 / (1 + np.exp(-logit))


def test_brier_equals_sklearn() -> None:
    y, _, p = _overconfident(0)
    assert abs(brier(y, p) - brier_score_loss(y, p)) <= 1e-15


@pytest.mark.parametrize("n_bins", [5, 15])
def test_reliability_bins_equal_sklearn_and_ece_is_their_weighted_gap(n_bins: int) -> None:
    y, _, p = _overconfident(1)
    p = np.r_[p, 0.0, 1.0, 0.2]  # the ends and an edge value
    y = np.r_[y, 0, 1, 1]
    r = reliability(y, p, n_bins)
    frac, mean_p = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    full = r.counts > 0
    np.testing.assert_allclose(r.fraction_fake[full], frac, atol=1e-12)
    np.testing.assert_allclose(r.mean_p_fake[full], mean_p, atol=1e-12)
    assert r.counts.sum() == y.size
    expected = np.sum(r.counts[full] / y.size * np.abs(frac - mean_p))
    assert ece(y, p, n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_closed_form() -> None:
    # bin (0.6, 0.7]: four samples at 0.65, one fake -> gap |0.25 - 0.65| = 0.4, weight 4/5
    # bin (0.0, 0.1]: one real at 0.05 -> gap 0.05, weight 1/5
    y, p = [1, 0, 0, 0, 0], [0.65, 0.65, 0.65, 0.65, 0.05]
    assert ece(y, p, 10) == pytest.approx(0.8 * 0.4 + 0.2 * 0.05, abs=1e-15)


def test_cllr_closed_forms() -> None:
    y = [0, 1, 0, 1]
    assert cllr(y, [0.0] * 4) == pytest.approx(1.0, abs=1e-15)  # uninformative LLR = 0
    perfect = cllr(y, [-40.0, 40.0, -40.0, 40.0])
    assert 0 < perfect < 1e-15
    wrong = cllr(y, [2.0, -2.0, 2.0, -2.0])
    assert wrong == pytest.approx(np.log1p(np.exp(2)) / np.log(2), abs=1e-14)


@pytest.mark.parametrize("seed", range(3))
def test_pav_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values, weights = rng.normal(size=200), rng.integers(1, 5, 200).astype(float)
    expected = isotonic_regression(values, weights=weights).x
    np.testing.assert_allclose(pav(values, weights), expected, atol=1e-12)


def test_min_cllr_never_exceeds_cllr_and_ignores_monotone_maps() -> None:
    y, logit, p = _overconfident(2)
    llr = logit - np.log(y.mean() / (1 - y.mean()))
    assert min_cllr(y, llr) <= cllr(y, llr)
    assert min_cllr(y, p) == pytest.approx(min_cllr(y, llr), abs=1e-12)  # ranking only
    assert min_cllr(y, np.r_[np.zeros(y.size)]) == pytest.approx(1.0, abs=1e-12)  # no ranking


def test_platt_equals_sklearn_sigmoid_calibration() -> None:
    from sklearn.calibration import _sigmoid_calibration

    y, logit, _ = _overconfident(3)
    c = Calibrator("platt").fit(logit, y)
    a, b = _sigmoid_calibration(logit, y)  # sklearn: P = 1 / (1 + exp(a s + b))
    probe = np.linspace(-8, 8, 9)
    np.testing.assert_allclose(c.apply(probe), 1 / (1 + np.exp(a * probe + b)), atol=1e-6)


def test_isotonic_equals_sklearn() -> None:
    y, logit, _ = _overconfident(4, n=500)
    s = np.round(logit, 1)  # with ties
    c = Calibrator("isotonic").fit(s, y)
    peer = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    probe = np.r_[np.linspace(-20, 20, 101), s]
    np.testing.assert_allclose(c.apply(probe), peer.predict(probe), atol=1e-12)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrator_fixes_overconfidence_on_held_out_data(method: str) -> None:
    y_val, logit_val, _ = _overconfident(5)
    y_test, logit_test, p_test = _overconfident(6)
    c = Calibrator(method).fit(logit_val, y_val)
    calibrated = c.apply(logit_test)
    assert ece(y_test, calibrated) < ece(y_test, p_test) / 2
    llr = c.llr(logit_test)
    assert np.array_equal(np.isinf(llr), (calibrated == 0) | (calibrated == 1))
    if method == "platt":  # isotonic may make certain calls (LLR +-inf), so its Cllr can be inf
        assert cllr(y_test, llr) < cllr(y_test, logit_test)
    again = Calibrator.from_dict(json.loads(json.dumps(c.to_dict())))
    np.testing.assert_array_equal(again.apply(logit_test), calibrated)


def test_calibrator_and_probability_errors() -> None:
    with pytest.raises(ConfigError, match="calibration method"):
        Calibrator("beta")
    with pytest.raises(InputError, match="not fitted"):
        Calibrator().apply([0.1])
    with pytest.raises(ConfigError, match="calibrator dict"):
        Calibrator.from_dict({"method": "platt", "a": 1.0})
    with pytest.raises(ConfigError, match="x increasing"):
        Calibrator.from_dict({"method": "isotonic", "x": [1, 0], "y": [0, 1], "prior_log_odds": 0})
    with pytest.raises(InputError, match=r"p_fake\[1\] = 1.2 is outside \[0, 1\]"):
        brier([0, 1], [0.5, 1.2])
    with pytest.raises(InputError, match="only real"):
        Calibrator().fit([0.1, 0.2], [0, 0])
    with pytest.raises(InputError, match="one class only"):
        cllr([1, 1], [0.1, np.inf])
    assert cllr([0, 1], [-np.inf, np.inf]) == 0.0 and cllr([0, 1], [np.inf, 0.0]) == np.inf


def test_reliability_figure_draws_the_bins() -> None:
    from deepshield.report.plots import plot_reliability

    y, _, p = _overconfident(7, n=500)
    fig = plot_reliability(y, p, n_bins=10)
    r = reliability(y, p, 10)
    line = fig.axes[0].lines[1]
    full = r.counts > 0
    np.testing.assert_array_equal(line.get_xdata(), r.mean_p_fake[full])
    np.testing.assert_array_equal(line.get_ydata(), r.fraction_fake[full])
    heights = [bar.get_height() for bar in fig.axes[1].patches]
    assert heights == r.counts.tolist()
    assert f"ECE {ece(y, p, 10):.3f}" in fig.axes[0].get_title()
