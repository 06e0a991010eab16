"""Image grids for reports: rows of images with titles, and sample images per class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from deepshield.data.splits import TensorSet
from deepshield.errors import InputError


def image_grid(
    rows: Sequence[torch.Tensor],
    row_titles: Sequence[str],
    col_titles: Sequence[str] | None = None,
    *,
    cell_inches: float = 1.2,
) -> Figure:
    """One figure row per tensor [N,C,H,W] in [0,1] (C = 1 or 3); rows may differ in N."""
    if len(rows) == 0:
        raise InputError("image_grid: no rows given: pass at least one [N,C,H,W] tensor")
    if len(row_titles) != len(rows):
        raise InputError(
            f"image_grid: {len(rows)} rows but {len(row_titles)} row titles: give one per row"
        )
    for r, t in zip(rows, row_titles, strict=True):
        if r.ndim != 4 or r.shape[1] not in (1, 3):
            raise InputError(
                f"image_grid: row {t!r} has shape {tuple(r.shape)}, expected [N,1|3,H,W]"
            )
        if r.numel() and (r.min() < 0 or r.max() > 1 or not torch.isfinite(r).all()):
            raise InputError(f"image_grid: row {t!r} has values outside [0,1]: clamp or rescale it")
    ncols = max(max(len(r) for r in rows), 1)
    if col_titles is not None and len(col_titles) > ncols:
        raise InputError(f"image_grid: {len(col_titles)} column titles for {ncols} columns")
    fig = Figure(figsize=(cell_inches * ncols + 0.8, cell_inches * len(rows)))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, (r, title) in enumerate(zip(rows, row_titles, strict=True)):
        imgs = r.detach().float().cpu().permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                img = imgs[j]
                if img.shape[2] == 1:
                    ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                else:
                    ax.imshow(img, vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
        axes[i, 0].set_ylabel(title, fontsize=8)
        if len(imgs) == 0:  # keep the row title visible on an empty row
            axes[i, 0].axis("on")
            axes[i, 0].set_frame_on(False)
    fig.tight_layout()
    return fig


def class_samples(
    tensorset: TensorSet, classes: Sequence[str], n_per_class: int = 8, seed: int = 0
) -> Figure:
    """A grid of up to `n_per_class` random images (chosen by `seed`) per class, one row each."""
    rng = np.random.default_rng(seed)
    y = tensorset.y.numpy()
    rows, titles = [], []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(y == c)
        pick = np.sort(rng.permutation(idx)[:n_per_class])
        rows.append(tensorset.subset(pick).tensors()[0])  # [n, C, H, W] in [0, 1]
        titles.append(f"{name} ({len(idx)})")
    return image_grid(rows, titles)
