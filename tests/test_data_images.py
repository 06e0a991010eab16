"""Image decoding: RGB round trip, mode errors and conversion, corrupt files, resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepshield.errors import DataError
from deepshield.media.images import parse_size, read_image, resize, stack_images


def _rgb(seed: int = 0, h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp", "webp"])
def test_lossless_round_trip(tmp_path, ext):
    a = _rgb()
    p = tmp_path / f"a.{ext}"
    Image.fromarray(a).save(p, lossless=True)  # webp needs the flag, png/bmp ignore it
    assert np.array_equal(read_image(p), a)


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("L", lambda a: Image.fromarray(a[..., 0])),
        ("RGBA", lambda a: Image.fromarray(np.dstack([a, a[..., :1]]))),
        ("P", lambda a: Image.fromarray(a).convert("P")),
        ("CMYK", lambda a: Image.fromarray(a).convert("CMYK")),
    ],
)
def test_non_rgb_mode_is_an_error_naming_file_mode_and_fix(tmp_path, mode, make):
    p = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    make(_rgb()).save(p)
    with pytest.raises(DataError, match=rf"x\.(png|jpg).*mode {mode}.*convert_modes=True"):
        read_image(p)
    out = read_image(p, convert_modes=True)
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)


def test_converted_modes_keep_values(tmp_path):
    a = _rgb()
    Image.fromarray(a[..., 0]).save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png", convert_modes=True)
    assert all(np.array_equal(g[..., c], a[..., 0]) for c in range(3))
    Image.fromarray(np.dstack([a, np.full_like(a[..., :1], 7)])).save(tmp_path / "t.png")
    assert np.array_equal(read_image(tmp_path / "t.png", convert_modes=True), a)  # alpha dropped


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    a16 = np.array([[0, 256, 65535, 30000]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png", convert_modes=True)
    assert out[0, :, 0].tolist() == [0, 1, 255, 30000 >> 8]


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match=r"bad\.png: not a readable image.*replace or delete"):
        read_image(tmp_path / "bad.png")
    good = tmp_path / "cut.png"
    Image.fromarray(_rgb(h=64, w=64)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match=r"trunc\.png"):
        read_image(tmp_path / "trunc.png")
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_resize_and_stack():
    a = _rgb(h=20, w=30)
    assert resize(a, (20, 30)) is a
    r = resize(np.full((20, 30, 3), 77, np.uint8), (8, 5))
    assert r.shape == (8, 5, 3) and (r == 77).all()  # constant stays constant
    t = stack_images([a, a])
    assert tuple(t.shape) == (2, 3, 20, 30) and np.array_equal(t[1, 2].numpy(), a[..., 2])
    assert parse_size(7) == (7, 7) and parse_size((4, 9)) == (4, 9)
    with pytest.raises(DataError, match="image size"):
        parse_size(0)
