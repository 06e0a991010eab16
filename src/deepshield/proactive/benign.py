"""Benign processing that must NOT count as manipulation: JPEG compression and resizing.

`jpeg` is the real codec (Pillow / libjpeg, its default 4:2:0 chroma subsampling), used to
measure robustness. `jpeg_like` is a differentiable stand-in used in training: RGB -> YCbCr
(JFIF), 8x8 orthonormal DCT per channel on edge-padded blocks, division by the IJG quality-scaled
Annex K tables, rounding (straight-through: the backward pass treats it as identity),
multiplication back, inverse DCT, YCbCr -> RGB and 8-bit rounding; no chroma subsampling
(it matches libjpeg with subsampling 4:4:4 up to libjpeg's integer DCT). `resize_roundtrip`
shrinks by `scale` (antialiased bilinear) and enlarges back to the input size.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deepshield.errors import InputError

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), row-major.
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip
# JFIF RGB -> YCbCr (offsets of 128 on Cb, Cr applied separately).
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)


def _check(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"{name}: x has shape {tuple(x.shape)}; pass RGB images [B, 3, H, W]")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError(f"{name}: x is outside [0, 1] or not finite; pass pixels in [0, 1]")


def _check_quality(quality: float) -> None:
    if not 1 <= quality <= 100:
        raise InputError(f"JPEG quality {quality} is outside [1, 100]; use e.g. 90, 75 or 50")


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1] -> the same images after a real JPEG round trip (Pillow)."""
    _check(x, "jpeg")
    _check_quality(quality)
    out = []
    for img in x.detach().cpu():
        a = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H, W, 3]
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255))
    return torch.stack(out).permute(0, 3, 1, 2).to(x.device)  # [B, 3, H, W]


def quantization_tables(quality: float) -> torch.Tensor:
    """IJG quality scaling of the Annex K tables -> [2, 8, 8] (luminance, chrominance)."""
    _check_quality(quality)
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor([_LUMA_TABLE, _CHROMA_TABLE], dtype=torch.float64).view(2, 8, 8)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255).float()


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix D [8, 8]: coefficients = D @ block @ D.T."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    """round(v) forward, identity backward."""
    return v + (torch.round(v) - v).detach()


def jpeg_like(x: torch.Tensor, quality: float) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1] -> differentiable JPEG (4:4:4) round trip [B, 3, H, W] in [0, 1]."""
    _check(x, "jpeg_like")
    b, _, h, w = x.shape
    m = torch.tensor(_RGB_TO_YCBCR, dtype=x.dtype, device=x.device)  # [3, 3]
    ycc = torch.einsum("ij,bjhw->bihw", m, x * 255)  # [B, 3, H, W], level-shifted by -128 below
    ycc = ycc - torch.tensor([128.0, 0.0, 0.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    ph, pw = -h % 8, -w % 8
    ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")  # [B, 3, H8, W8]
    hb, wb = ycc.shape[2] // 8, ycc.shape[3] // 8
    blocks = ycc.view(b, 3, hb, 8, wb, 8).permute(0, 1, 2, 4, 3, 5)  # [B, 3, hb, wb, 8, 8]
    d = _dct_matrix(x.dtype, x.device)
    coef = d @ blocks @ d.T  # [B, 3, hb, wb, 8, 8]
    q = quantization_tables(quality).to(dtype=x.dtype, device=x.device)
    q = torch.stack([q[0], q[1], q[1]]).view(1, 3, 1, 1, 8, 8)  # Y, Cb, Cr
    coef = _round_ste(coef / q) * q
    blocks = d.T @ coef @ d  # [B, 3, hb, wb, 8, 8]
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, 3, hb * 8, wb * 8)[:, :, :h, :w]
    ycc = ycc + torch.tensor([128.0, 0.0, 0.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), ycc)  # [B, 3, H, W] in 0..255
    return _round_ste(rgb.clamp(0, 255)) / 255


def resize_roundtrip(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1] -> shrunk by `scale` (antialiased bilinear), enlarged back."""
    _check(x, "resize_roundtrip")
    if not 0 < scale <= 1:
        raise InputError(f"resize scale {scale} is outside (0, 1]; use e.g. 0.5 or 0.75")
    h, w = x.shape[2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    y = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
