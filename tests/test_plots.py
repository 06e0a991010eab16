"""deepshield.report.plots: each figure holds the expected lines, labels and data."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.stats import norm

from deepshield.errors import InputError
from deepshield.metrics import auc, det, eer, roc
from deepshield.report.plots import (
    DET_TICKS,
    normal_deviate,
    plot_curve,
    plot_det,
    plot_history,
    plot_roc,
    plot_score_hist,
)


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(300, int)]
    s = 1 / (1 + np.exp(-(rng.normal(size=500) + 1.5 * (2 * y - 1))))  # P(fake), overlapping
    return y, s


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_history_lines_per_split():
    history = {
        "epochs": [
            {
                "epoch": e,
                "train": {"loss": 1.0 / e, "acc": 0.5 + 0.1 * e},
                "val": {"loss": 1.2 / e, "acc": 0.45 + 0.1 * e},
                **({"test": {"loss": 0.9, "acc": 0.8}} if e == 3 else {}),
            }
            for e in (1, 2, 3)
        ]
    }
    fig = plot_history(history)
    assert isinstance(fig, Figure)
    ax_loss, ax_acc = fig.axes
    for ax in (ax_loss, ax_acc):
        assert _legend(ax) == ["train", "val", "test"]
        assert [len(line.get_xdata()) for line in ax.get_lines()] == [3, 3, 1]
    np.testing.assert_allclose(ax_loss.get_lines()[0].get_ydata(), [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(ax_acc.get_lines()[1].get_ydata(), [0.55, 0.65, 0.75])
    with pytest.raises(InputError, match="epochs"):
        plot_history({})


def test_plot_roc_both_classes_with_auc(scores):
    y, s = scores
    ax = plot_roc(y, s).axes[0]
    fake, real, chance = ax.get_lines()
    assert _legend(ax) == [
        f"fake (AUC = {auc(y, s):.4f})",
        f"real (AUC = {auc(1 - y, 1 - s):.4f})",
        "chance",
    ]
    fpr, tpr, _ = roc(y, s)
    np.testing.assert_array_equal(fake.get_xdata(), fpr)
    np.testing.assert_array_equal(fake.get_ydata(), tpr)
    fpr_r, tpr_r, _ = roc(1 - y, 1 - s)
    np.testing.assert_array_equal(real.get_xdata(), fpr_r)
    np.testing.assert_array_equal(real.get_ydata(), tpr_r)
    assert list(chance.get_xdata()) == [0, 1]


def test_plot_det_normal_deviate_axes(scores):
    y, s = scores
    ax = plot_det(y, s).axes[0]
    curve, marker = ax.get_lines()
    # a 10% error rate sits at the normal deviate norm.ppf(0.1) = -1.2816 and is labelled "10"
    for axis in (ax.xaxis, ax.yaxis):
        ticks = dict(
            zip([t.get_text() for t in axis.get_ticklabels()], axis.get_ticklocs(), strict=True)
        )
        assert list(ticks) == ["0.1", "1", "2", "5", "10", "20", "40"]
        assert ticks["10"] == pytest.approx(-1.2815515655446004, abs=1e-12)
        np.testing.assert_allclose(list(ticks.values()), norm.ppf(DET_TICKS), atol=1e-12)
    rate, _ = eer(y, s)
    assert 0.02 < rate < 0.4
    assert marker.get_xdata()[0] == pytest.approx(norm.ppf(rate), abs=1e-12)
    assert marker.get_ydata()[0] == pytest.approx(norm.ppf(rate), abs=1e-12)
    assert _legend(ax) == ["DET", f"EER = {100 * rate:.2f}%"]
    # the curve is the DET curve mapped through the same transform, rates 0 kept finite
    fpr, fnr, _ = det(y, s)
    inner = (fpr > 0) & (fpr < 1)
    np.testing.assert_allclose(curve.get_xdata()[inner], norm.ppf(fpr[inner]), atol=1e-12)
    np.testing.assert_allclose(curve.get_ydata(), normal_deviate(fnr))
    assert np.isfinite(curve.get_ydata()).all()
    # on the axes, 10% lies where a linear normal-deviate scale from 0.05% to 50% puts it
    to_axes = ax.transData + ax.transAxes.inverted()
    lo, hi = norm.ppf(0.0005), norm.ppf(0.5)
    frac = (norm.ppf(0.1) - lo) / (hi - lo)
    np.testing.assert_allclose(to_axes.transform([[norm.ppf(0.1)] * 2])[0], [frac, frac])


def test_normal_deviate_clips_to_finite():
    assert normal_deviate(0.5) == 0.0
    assert normal_deviate(0.0) == pytest.approx(norm.ppf(1e-6))
    assert normal_deviate(1.0) == pytest.approx(-norm.ppf(1e-6))


def test_plot_score_hist_per_class(scores):
    y, s = scores
    ax = plot_score_hist(y, s, threshold=0.5).axes[0]
    assert _legend(ax) == ["real (n=200)", "fake (n=300)", "threshold 0.5"]
    real_bars, fake_bars = ax.containers
    assert sum(b.get_height() for b in real_bars) == 200
    assert sum(b.get_height() for b in fake_bars) == 300
    assert ax.get_lines()[0].get_xdata()[0] == 0.5
    assert len(plot_score_hist(y[y == 1], s[y == 1]).axes[0].containers) == 1


def test_plot_curve_one_line_per_series():
    eps = [0, 1 / 255, 2 / 255, 4 / 255]
    fig = plot_curve(
        eps, {"fgsm": [0.9, 0.7, 0.5, 0.2], "pgd": [0.9, 0.5, 0.2, 0.0]}, "eps", "acc", "t"
    )
    ax = fig.axes[0]
    assert _legend(ax) == ["fgsm", "pgd"]
    assert list(ax.get_lines()[1].get_ydata()) == [0.9, 0.5, 0.2, 0.0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("eps", "acc", "t")
    with pytest.raises(InputError, match="'pgd' has 2 values but xs has 4"):
        plot_curve(eps, {"pgd": [0.9, 0.5]}, "eps", "acc", "t")


def test_figures_save_through_run_dir(tmp_path, scores):
    from deepshield.run import RunDir

    run = RunDir.create(tmp_path / "run")
    path = run.save_plot(plot_det(*scores), "det")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
