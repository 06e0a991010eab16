"""Decode and validate image files into uint8 RGB arrays (photos for scanning checked from their
header before decoding); errors name the file and the fix."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deepshield.errors import DataError
from deepshield.media.video import MediaLimits

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (case-insensitive)."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted by path."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def read_image(path: str | Path, *, convert_modes: bool = False) -> np.ndarray:
    """Decode one image file -> uint8 [H,W,3] RGB (EXIF orientation applied).

    A file that is not RGB (L, LA, RGBA, P, CMYK, 16-bit ...) raises DataError unless
    `convert_modes`, which converts it to RGB (alpha dropped, 16-bit scaled to 8-bit).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__}: {e}): replace or delete the file"
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large to decode safely ({e}): downscale it") from e
    if im.mode != "RGB":
        if not convert_modes:
            raise DataError(
                f"{path}: image mode {im.mode}, expected RGB: pass convert_modes=True to convert "
                "such images to RGB (or convert the file)"
            )
        im = _to_rgb(im)
    return np.asarray(im, dtype=np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _SIXTEEN_BIT:  # Pillow would clip 16-bit values at 255
        a = (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    """size N or (H, W) -> (H, W); DataError when not positive."""
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"image size {size!r} is invalid: give a positive int N or (H, W)")
    return hw  # type: ignore[return-value]


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H,W,3] -> uint8 [size[0],size[1],3], antialiased bilinear (unchanged if equal)."""
    if img.shape[:2] == size:
        return img
    out = Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def stack_images(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-size uint8 [H,W,3] arrays -> uint8 tensor [N,3,H,W]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # the size is checked against our own limit below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: reads the header only
                return im.size
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to decode safely ({e}): downscale it") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__}: {e}): replace or delete the file"
        ) from e


def read_media_image(path: str | Path, limits: MediaLimits | None = None) -> np.ndarray:
    """Header-checked decode of a photo -> uint8 [H,W,3] RGB (EXIF orientation, modes converted)."""
    limits = limits or MediaLimits()
    w, h = image_size(path)
    if w * h > limits.max_image_pixels:
        raise DataError(
            f"{path}: image of {w}x{h} pixels exceeds the limit of {limits.max_image_pixels}: "
            "downscale it or raise max_image_pixels"
        )
    if w * h == 0:
        raise DataError(f"{path}: image of {w}x{h} pixels is empty: replace or delete the file")
    return read_image(path, convert_modes=True)
