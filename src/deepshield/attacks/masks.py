"""Masks for localised attacks: [B or 1, 1, H, W] in {0, 1}; pixels outside a mask never change."""

from __future__ import annotations

import torch
from torch import Tensor

from deepshield.errors import ConfigError, InputError

MASK_KINDS = ("full", "center", "patch")


def _check_size(size: int, height: int, width: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(height, width):
        raise InputError(
            f"patch size {size!r} does not fit a {height}x{width} image: "
            f"pass a size in 1..{min(height, width)}"
        )


def center_mask(size: int, height: int, width: int) -> Tensor:
    """A centred size x size square of ones: [1, 1, H, W] float."""
    _check_size(size, height, width)
    top, left = (height - size) // 2, (width - size) // 2
    mask = torch.zeros(1, 1, height, width)
    mask[..., top : top + size, left : left + size] = 1.0
    return mask


def random_patch_mask(
    batch: int, size: int, height: int, width: int, generator: torch.Generator | None = None
) -> Tensor:
    """One size x size square of ones per sample at a random position: [B, 1, H, W] float."""
    _check_size(size, height, width)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch={batch!r} must be an integer >= 1: pass the batch size")
    top = torch.randint(0, height - size + 1, (batch,), generator=generator)  # [B]
    left = torch.randint(0, width - size + 1, (batch,), generator=generator)  # [B]
    rows = torch.arange(height)[None, :]  # [1, H]
    cols = torch.arange(width)[None, :]  # [1, W]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # [B, W]
    return (in_rows[:, :, None] & in_cols[:, None, :]).float()[:, None]  # [B, 1, H, W]


def parse_mask(
    spec: str, batch: int, height: int, width: int, generator: torch.Generator | None = None
) -> Tensor | None:
    """A CLI mask string -> mask: "full" (None: no mask), "center:16", "patch:8"."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "full" and not arg:
        return None
    if kind in ("center", "patch") and arg.isdigit():
        size = int(arg)
        if kind == "center":
            return center_mask(size, height, width)
        return random_patch_mask(batch, size, height, width, generator)
    raise ConfigError(
        f"mask {spec!r} is not understood: use full, center:SIZE or patch:SIZE (e.g. center:16)"
    )
