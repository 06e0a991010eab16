"""Benign processing: JPEG-like codec against Pillow's libjpeg, tables, resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from deepshield.errors import InputError
from deepshield.proactive.benign import jpeg, jpeg_like, quantization_tables, resize_roundtrip


def photos(size: int = 40) -> torch.Tensor:
    """Two 8-bit photo crops [2, 3, size, size] (size not a multiple of 8: padded blocks)."""
    out = []
    for f in (data.astronaut, data.coffee):
        a = torch.from_numpy(f()).permute(2, 0, 1).float() / 255
        out.append(F.avg_pool2d(a[None], 4)[0, :, 20 : 20 + size, 30 : 30 + size])
    return (torch.stack(out) * 255).round() / 255


def pillow_444(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in x:
        a = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=0)
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


@pytest.mark.parametrize("quality", [90, 75, 50])
def test_jpeg_like_matches_libjpeg_444(quality: int) -> None:
    x = photos()
    ours, ref = jpeg_like(x, quality), pillow_444(x, quality)
    # Ours is far closer to libjpeg's output than the input is (measured: ~43 vs 29-36 dB).
    assert psnr(ours, ref) > psnr(x, ref) + 6
    assert psnr(ours, ref) > 38
    assert torch.equal(ours, (ours * 255).round() / 255)  # 8-bit output


def test_jpeg_is_the_real_codec_and_lossier_at_lower_quality() -> None:
    x = photos()
    errs = [psnr(jpeg(x, q), x) for q in (90, 75, 50)]
    assert errs[0] > errs[1] > errs[2] > 20
    with pytest.raises(InputError, match="quality"):
        jpeg(x, 0)


def test_quantization_tables_follow_ijg_scaling() -> None:
    t50 = quantization_tables(50)
    assert t50[0, 0, :4].tolist() == [16, 11, 10, 16] and t50[1, 0, 0] == 17  # Annex K itself
    assert torch.equal(quantization_tables(100), torch.ones(2, 8, 8))
    # quality 75 -> scale 50: floor((16 * 50 + 50) / 100) = 8
    assert quantization_tables(75)[0, 0, 0] == 8
    # quality 10 -> scale 500: luma 121 * 5 = 605 -> clamped to 255 (baseline)
    assert quantization_tables(10).max() == 255


def test_jpeg_like_passes_gradients_straight_through() -> None:
    x = photos().requires_grad_(True)
    jpeg_like(x, 75).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resize_roundtrip() -> None:
    x = photos(32)
    assert torch.allclose(resize_roundtrip(x, 1.0), x, atol=1e-6)
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(resize_roundtrip(const, 0.5), const, atol=1e-6)
    assert psnr(resize_roundtrip(x, 0.5), x) < psnr(resize_roundtrip(x, 0.75), x)
    with pytest.raises(InputError, match="scale"):
        resize_roundtrip(x, 1.5)
