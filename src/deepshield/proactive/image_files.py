"""Image files in and out of `protect apply` / `protect detect` (Pillow; errors name the file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deepshield.errors import DataError
from deepshield.files import atomic_write_bytes

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursive, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS)
            if not found:
                raise DataError(f"{p}: no image files ({', '.join(EXTENSIONS)}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder; check the path")
    return out


def read_image(path: Path) -> torch.Tensor:
    """One image file (any Pillow mode, EXIF orientation applied) -> RGB [3, H, W] in [0, 1]."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__}); pass PNG or JPEG files"
        ) from e
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


def write_png(path: Path, image: torch.Tensor) -> Path:
    """image: [3, H, W] in [0, 1] -> 8-bit RGB PNG at `path` (lossless: keeps the template)."""
    import io

    a = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
