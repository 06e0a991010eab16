"""Heat-map overlays of explanation maps on their images, and image / overlay grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from deepshield.errors import InputError


def _as_tensor(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    return (
        (torch.from_numpy(np.asarray(a)) if not isinstance(a, torch.Tensor) else a).detach().cpu()
    )


def heatmap_colors(maps: torch.Tensor | np.ndarray, cmap: str = "jet") -> np.ndarray:
    """maps [...,H,W] in [0,1] -> RGB float32 [...,H,W,3] in [0,1] through a matplotlib colormap."""
    m = np.clip(_as_tensor(maps).float().numpy(), 0.0, 1.0)
    return matplotlib.colormaps[cmap](m)[..., :3].astype(np.float32)


def _unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """maps [B,H,W] >= 0 -> each divided by its maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)  # [B,1,1]
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), 0.0)


def overlay(
    images: torch.Tensor | np.ndarray,
    maps: torch.Tensor | np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    as_uint8: bool = False,
) -> np.ndarray:
    """(1 - alpha) * image + alpha * colormap(map / max(map)), per image.

    images: [B,C,H,W] or [C,H,W] in [0,1] (C = 1 or 3); maps: [B,h,w] or [h,w], >= 0 (resized
    bilinearly to H,W when smaller). Returns RGB [B,H,W,3] (or [H,W,3]) float32 in [0,1], or
    uint8 in 0..255 with as_uint8.
    """
    img, m = _as_tensor(images).float(), _as_tensor(maps).float()
    single = img.ndim == 3
    if single:
        img, m = img.unsqueeze(0), m.unsqueeze(0)
    if img.ndim != 4 or img.shape[1] not in (1, 3) or m.ndim != 3 or len(m) != len(img):
        raise InputError(
            f"images {tuple(_as_tensor(images).shape)} and maps {tuple(_as_tensor(maps).shape)}: "
            "pass images [B,C,H,W] (C = 1 or 3) and one map [B,H,W] per image"
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha={alpha}: use a blend weight in [0,1]")
    if (m < 0).any() or not torch.isfinite(m).all():
        raise InputError("maps have negative or non-finite values: pass abs / ReLU maps")
    if m.shape[1:] != img.shape[2:]:
        m = F.interpolate(m.unsqueeze(1), size=img.shape[2:], mode="bilinear")[:, 0]  # [B,H,W]
    rgb = img.clamp(0, 1).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()  # [B,H,W,3]
    out = (1 - alpha) * rgb + alpha * heatmap_colors(_unit_maps(m), cmap)  # [B,H,W,3]
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if as_uint8:
        out = np.round(out * 255).astype(np.uint8)
    return out[0] if single else out


def outcome_indices(
    y_true: torch.Tensor | np.ndarray, y_pred: torch.Tensor | np.ndarray, per_group: int
) -> dict[str, list[int]]:
    """The first `per_group` sample indices of each outcome: real-correct, real-wrong,
    fake-correct, fake-wrong (label 1 = fake). Groups with no sample are empty lists."""
    t = _as_tensor(y_true).long().flatten()
    p = _as_tensor(y_pred).long().flatten()
    groups = {
        "real-correct": (t == 0) & (p == 0),
        "real-wrong": (t == 0) & (p != 0),
        "fake-correct": (t == 1) & (p == 1),
        "fake-wrong": (t == 1) & (p != 1),
    }
    return {k: v.nonzero().flatten()[:per_group].tolist() for k, v in groups.items()}


def explanation_grid(
    images: torch.Tensor | np.ndarray,
    maps: torch.Tensor | np.ndarray,
    titles: Sequence[str],
    *,
    ncols: int | None = None,
    row_labels: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Figure:
    """A figure of image / overlay pairs, `ncols` pairs per row (e.g. one row per outcome of
    `outcome_indices`, labelled by `row_labels`). images [N,C,H,W] in [0,1], maps [N,H,W] >= 0,
    titles: one per pair."""
    over = overlay(images, maps, alpha=alpha, cmap=cmap)  # [N,H,W,3]
    img = _as_tensor(images).float().clamp(0, 1)
    n = len(over)
    if len(titles) != n:
        raise InputError(f"{len(titles)} titles for {n} images: pass one title per image")
    ncols = ncols or min(n, 4)
    nrows = -(-n // ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise InputError(f"{len(row_labels)} row labels for {nrows} rows: pass one per row")
    fig = Figure(figsize=(2.0 * 2 * ncols, 2.2 * nrows))
    axes = fig.subplots(nrows, 2 * ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i in range(n):
        r, c = divmod(i, ncols)
        pic = img[i].permute(1, 2, 0).numpy()  # [H,W,C]
        axes[r, 2 * c].imshow(
            pic[..., 0] if pic.shape[2] == 1 else pic, cmap="gray", vmin=0, vmax=1
        )
        axes[r, 2 * c].set_title(titles[i], fontsize=8)
        axes[r, 2 * c + 1].imshow(over[i])
        axes[r, 2 * c + 1].set_title("explanation", fontsize=8)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig
