"""Figures of a proactive run (matplotlib Agg, no pyplot state); save with RunDir.save_plot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepshield.proactive.losses import minmax
from deepshield.proactive.manipulations import Manipulation
from deepshield.proactive.templates import TemplateSet


def _figure(rows: int, cols: int, cell: float = 1.6) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cell * cols, cell * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _hwc(img: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> [H, W, C] (C = 1 becomes grey RGB)."""
    return img.expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).numpy()


def plot_templates(templates: TemplateSet) -> Figure:
    """Each template MinMax-scaled to [0, 1], with its value range in the title."""
    eta = templates().detach()  # [n, C, H, W]
    fig, axes = _figure(1, templates.n)
    for k, (ax, img) in enumerate(zip(axes[0], minmax(eta), strict=True)):
        ax.imshow(_hwc(img), interpolation="nearest")
        ax.set_title(f"eta_{k + 1}\n[{eta[k].min():+.3f}, {eta[k].max():+.3f}]", fontsize=7)
    return fig


def plot_examples(
    images: torch.Tensor,
    templates: TemplateSet,
    manipulations: Mapping[str, Manipulation],
    seed: int = 0,
) -> Figure:
    """Rows: images [N, 3, H, W]; columns: original, protected, 25x difference, manipulations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        protected = templates.protect(images, templates.random_indices(len(images), g))
        outs = {name: m(protected, g) for name, m in manipulations.items()}
    cols = {"original": images, "protected": protected}
    cols["25x |difference|"] = ((protected - images).abs() * 25).clamp(0, 1)
    cols.update(outs)
    fig, axes = _figure(len(images), len(cols))
    for j, (title, batch) in enumerate(cols.items()):
        axes[0, j].set_title(title, fontsize=7)
        for i in range(len(images)):
            axes[i, j].imshow(_hwc(batch[i]), interpolation="nearest")
    return fig


def plot_history(history: Mapping[str, Any], window: int = 25) -> Figure:
    """Loss terms per step (moving mean over `window`), one panel per detector."""
    fig = Figure(figsize=(5 * len(history), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(history)))
    for ax, (name, records) in zip(axes, history.items(), strict=True):
        for key in (k for k in records[0] if k not in ("step", "acc")):
            v = np.array([r[key] for r in records])
            w = min(window, len(v))
            ax.plot(np.convolve(v, np.ones(w) / w, mode="valid"), label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig
