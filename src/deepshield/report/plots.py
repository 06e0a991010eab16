"""Figures of a run (matplotlib, Agg canvas, no pyplot state): training history, ROC, DET, score
histograms and a generic line plot. Each function returns a Figure; save it with
`RunDir.save_plot(fig, name)`.

y_true: [N] in {0, 1} with 1 = fake; scores: [N] growing with "fake" (P(fake)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import norm

from deepshield.errors import InputError
from deepshield.metrics import auc, det, eer, inputs, roc

DET_TICKS = (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # error rates marked on DET axes
DET_LIMITS = (0.0005, 0.5)  # DET axis range, as error rates
_DET_CLIP = 1e-6  # rates of 0 or 1 are drawn at this distance (off the axes) instead of +-inf
_SPLITS = ("train", "val", "test")


def _figure(ncols: int = 1, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(np.atleast_1d(fig.subplots(1, ncols)))


def normal_deviate(rate: Any) -> np.ndarray:
    """Error rates in [0, 1] mapped to DET axis positions: norm.ppf, rates clipped to
    [1e-6, 1 - 1e-6] so 0 and 1 stay finite."""
    return norm.ppf(np.clip(np.asarray(rate, dtype=np.float64), _DET_CLIP, 1 - _DET_CLIP))


def plot_history(history: Mapping[str, Any]) -> Figure:
    """Loss (left) and accuracy (right) per epoch, one line per split present (train/val/test).
    history: {"epochs": [{"epoch": 1, "train": {"loss": .., "acc": ..}, "val": {...}}, ...]}."""
    epochs = history.get("epochs") if isinstance(history, Mapping) else None
    if not epochs:
        raise InputError("history has no 'epochs' list; pass the dict of a run's history.json")
    fig, (ax_loss, ax_acc) = _figure(2)
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split in _SPLITS:
            points = [
                (e["epoch"], e[split][key])
                for e in epochs
                if isinstance(e.get(split), Mapping) and e[split].get(key) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")
    return fig


def plot_roc(y_true: Any, scores: Any, class_names: Sequence[str] = ("real", "fake")) -> Figure:
    """ROC of each class: the fake score with fake as positive, and 1 - score with real as
    positive; AUCs in the legend, chance diagonal dashed."""
    y, s = inputs.labelled_scores(y_true, scores)
    fig, (ax,) = _figure()
    for positive, yy, ss in ((class_names[1], y, s), (class_names[0], 1 - y, 1 - s)):
        fpr, tpr, _ = roc(yy, ss)
        ax.plot(fpr, tpr, label=f"{positive} (AUC = {auc(yy, ss):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title("ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def plot_det(y_true: Any, scores: Any) -> Figure:
    """DET curve on normal-deviate axes (ticks in %), EER point marked; positive class = fake."""
    fpr, fnr, _ = det(y_true, scores)
    rate, _ = eer(y_true, scores)
    fig, (ax,) = _figure(width=4.5, height=4.5)
    ax.plot(normal_deviate(fpr), normal_deviate(fnr), label="DET")
    ax.plot(
        normal_deviate(rate),
        normal_deviate(rate),
        linestyle="none",
        marker="o",
        color="black",
        label=f"EER = {100 * rate:.2f}%",
    )
    ticks = normal_deviate(DET_TICKS)
    labels = [f"{100 * t:g}" for t in DET_TICKS]
    lo, hi = normal_deviate(DET_LIMITS)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(ticks, labels)
    ax.set(xlim=(lo, hi), ylim=(lo, hi))
    ax.set_xlabel("False positive rate: real flagged as fake (%)")
    ax.set_ylabel("False negative rate: fake passed as real (%)")
    ax.set_title("DET")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return fig


def plot_score_hist(
    y_true: Any,
    scores: Any,
    threshold: float | None = None,
    class_names: Sequence[str] = ("real", "fake"),
    bins: int = 50,
) -> Figure:
    """Histogram of the scores of each class on shared bins; optional dashed threshold line."""
    y, s = inputs.binary_labels(y_true), inputs.scores(scores)
    inputs.same_length(y, s, ("y_true", "scores"))
    edges = np.histogram_bin_edges(s, bins=bins)
    fig, (ax,) = _figure()
    for label, name in enumerate(class_names):
        part = s[y == label]
        if part.size:
            ax.hist(part, bins=edges, alpha=0.55, label=f"{name} (n={part.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("score (P(fake))")
    ax.set_ylabel("samples")
    ax.set_title("Scores per class")
    ax.legend()
    return fig


def plot_curve(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
) -> Figure:
    """One marked line per named series over shared xs (e.g. accuracy vs attack eps)."""
    if not series:
        raise InputError(f"plot_curve({title!r}) got no series; pass at least one")
    fig, (ax,) = _figure()
    for name, ys in series.items():
        if len(ys) != len(xs):
            raise InputError(
                f"series {name!r} has {len(ys)} values but xs has {len(xs)}; pass one per x"
            )
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_reliability(y_true: Any, p_fake: Any, n_bins: int = 15) -> Figure:
    """Reliability diagram of P(fake): share of fakes against mean P(fake) per equal-width bin
    (`metrics.reliability`, empty bins left out), the diagonal of perfect calibration, ECE in the
    title, and the samples per bin below."""
    from deepshield.metrics import ece, reliability

    r = reliability(y_true, p_fake, n_bins)
    full = r.counts > 0
    fig = Figure(figsize=(5.0, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
    ax.plot(r.mean_p_fake[full], r.fraction_fake[full], marker="o", label="detector")
    ax.set(ylabel="share of fakes", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Reliability (ECE {ece(y_true, p_fake, n_bins):.3f}, {n_bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    hist.bar(r.edges[:-1], r.counts, width=np.diff(r.edges), align="edge", alpha=0.6)
    hist.set(xlabel="P(fake)", ylabel="samples")
    return fig


def plot_strength_panels(
    panels: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[float]]]],
    clean: Mapping[str, float],
    ylabel: str = "value",
) -> Figure:
    """One panel per transform kind: each metric (a marked line) against the kind's strength
    parameter, and the metric's clean value as a dashed line of the same colour.
    panels: {kind: (strengths [S], {metric: values [S]})}; clean: {metric: value}."""
    if not panels:
        raise InputError("plot_strength_panels got no panels; pass at least one transform kind")
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(np.atleast_1d(fig.subplots(rows, cols)).flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (kind, (xs, series)) in zip(axes, panels.items(), strict=False):
        order = np.argsort(np.asarray(xs, dtype=np.float64))
        for i, (name, ys) in enumerate(series.items()):
            if len(ys) != len(xs):
                raise InputError(f"{kind}: {name} has {len(ys)} values for {len(xs)} strengths")
            color = f"C{i}"
            ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], marker="o", color=color,
                    label=name)  # fmt: skip
            if name in clean:
                ax.axhline(clean[name], color=color, linestyle="--", linewidth=0.8)
        ax.set(xlabel=kind, ylabel=ylabel, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig
