"""Read a photo for scanning: its pixel count is checked from the header before it is decoded."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepshield.errors import DataError
from deepshield.media.images import read_image
from deepshield.media.video import MediaLimits


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
