"""Attribute-like image edits: deterministic targets for training conditional generators.

They play the role of StarGAN's CelebA attributes (hair colour, gender, age) on any image, so a
translation generator can be trained and disrupted without a face-attribute dataset. Each edit
maps [B, 3, H, W] in [0, 1] to the same shape and range:

    hair      top band (rows above 30 % of the height, fading out by 40 %) recoloured blond,
              keeping its luminance: 0.4 * luma + 0.6 * (0.95, 0.80, 0.45)
    bright    gamma brightening, x ** (1 / 1.6)
    warm      warm tint: red + 0.25 * (1 - red), green + 0.05 * (1 - green), blue * 0.75
    blur      Gaussian blur, sigma 1.5 px (7 taps, reflect padding)
    contrast  contrast x1.5 about each image's mean luma, clipped to [0, 1]

`apply_edit(x, c)` applies them in this order, each weighted by its entry of the attribute
vector c [B, 5]: x <- x + c_k * (edit_k(x) - x). A one-hot c applies one edit, a multi-hot c
composes several, and fractional c in [0, 1] gives partial edits (GANimation-style intensities).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepshield.errors import InputError

EDITS = ("hair", "bright", "warm", "blur", "contrast")

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
_BLOND = (0.95, 0.80, 0.45)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, H, W] -> luma [B, 1, H, W]."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _hair(x: torch.Tensor) -> torch.Tensor:
    rows = (torch.arange(x.shape[2], dtype=x.dtype, device=x.device) + 0.5) / x.shape[2]
    mask = ((0.4 - rows) / 0.1).clamp(0, 1).view(1, 1, -1, 1)  # [1, 1, H, 1]
    blond = torch.tensor(_BLOND, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    recoloured = 0.4 * _luma(x) + 0.6 * blond  # [B, 3, H, W]
    return x + mask * (recoloured - x)


def _bright(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(0) ** (1 / 1.6)


def _warm(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return torch.stack([r + 0.25 * (1 - r), g + 0.05 * (1 - g), b * 0.75], dim=1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    taps = torch.arange(-3, 4, dtype=x.dtype, device=x.device)
    k = torch.exp(-(taps**2) / (2 * 1.5**2))
    k = k / k.sum()  # [7]
    x = F.pad(x, (3, 3, 3, 3), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)  # rows: [B, 3, H + 6, W]
    return F.conv2d(x, k.view(1, 1, 7, 1).repeat(3, 1, 1, 1), groups=3)  # cols: [B, 3, H, W]


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = _luma(x).mean(dim=(2, 3), keepdim=True)  # [B, 1, 1, 1]
    return (mean + 1.5 * (x - mean)).clamp(0, 1)


_FUNCTIONS = {"hair": _hair, "bright": _bright, "warm": _warm, "blur": _blur, "contrast": _contrast}


def apply_edit(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1], c: [B, len(EDITS)] in [0, 1] -> edited [B, 3, H, W] in [0, 1]."""
    if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[2:]) < 4:
        raise InputError(f"apply_edit: x has shape {tuple(x.shape)}; pass [B, 3, H, W], H, W >= 4")
    if c.shape != (x.shape[0], len(EDITS)):
        raise InputError(
            f"apply_edit: c has shape {tuple(c.shape)}; pass one weight per edit {EDITS}, "
            f"[{x.shape[0]}, {len(EDITS)}]"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError("apply_edit: x is outside [0, 1] or not finite; pass pixels in [0, 1]")
    if not torch.isfinite(c).all() or c.min() < 0 or c.max() > 1:
        raise InputError("apply_edit: c is outside [0, 1]; pass edit weights in [0, 1]")
    c = c.to(x.dtype)
    for k, name in enumerate(EDITS):
        weight = c[:, k].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        if bool((weight > 0).any()):
            x = x + weight * (_FUNCTIONS[name](x) - x)
    return x.clamp(0, 1)


def attributes(*names: str, batch: int = 1) -> torch.Tensor:
    """Multi-hot attribute vector [batch, len(EDITS)] with the named edits on."""
    unknown = [n for n in names if n not in EDITS]
    if unknown:
        raise InputError(f"unknown edit(s) {unknown}; choose from {EDITS}")
    c = torch.zeros(batch, len(EDITS))
    for n in names:
        c[:, EDITS.index(n)] = 1.0
    return c


def sample_attributes(
    batch: int, generator: torch.Generator, multi_hot: bool = True
) -> torch.Tensor:
    """Random attribute vectors [batch, len(EDITS)]: each edit on with p = 0.5, or one-hot."""
    if multi_hot:
        return (torch.rand(batch, len(EDITS), generator=generator) < 0.5).float()
    idx = torch.randint(len(EDITS), (batch,), generator=generator)
    return F.one_hot(idx, len(EDITS)).float()
