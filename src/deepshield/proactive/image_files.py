"""Image files in and out of `protect apply` / `protect detect` (decoding: deepshield.data)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepshield.errors import DataError
from deepshield.files import atomic_write_bytes
from deepshield.media.images import IMAGE_EXTENSIONS, image_files
from deepshield.media.images import read_image as decode


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursive, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise DataError(
                    f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder"
                )
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder; check the path")
    return out


def read_image(path: Path) -> torch.Tensor:
    """One image file (any mode, converted; EXIF orientation applied) -> RGB [3, H, W] in [0, 1]."""
    a = decode(path, convert_modes=True)  # uint8 [H, W, 3]
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def write_png(path: Path, image: torch.Tensor) -> Path:
    """image: [3, H, W] in [0, 1] -> 8-bit RGB PNG at `path` (lossless: keeps the template)."""
    a = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
