"""Decode and validate image files into uint8 RGB arrays (photos for scanning checked from their
header before decoding); errors name the file and the fix."""

from __future__ import annotations

import functools
import mmap
import struct
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features

from deepshield.errors import DataError
from deepshield.media.types import HEAD_BYTES, sniff
from deepshield.media.video import EMPTY_FILE, MediaLimitError, MediaLimits

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".avif", ".heic", ".heif", ".hif")
HEIF_FORMATS = {"avif": "AVIF", "heic": "HEIF"}  # sniffed type -> the Pillow plugin that reads it

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
ORIENTATION_TAG = 274  # EXIF Orientation (0x0112)


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (case-insensitive)."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted by path."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p))


def missing_decoder(kind: str | None) -> str | None:
    """Why a photo of sniffed type `kind` cannot be decoded here and the fix (one line), else None.
    HEIC/HEIF needs the optional pillow-heif (its Pillow opener is registered on first use)."""
    if kind == "heic" and not _heif_opener():
        return (
            "a HEIC/HEIF photo, which needs the optional pillow-heif to be read: "
            "pip install 'deepshield[heic]', or convert it to JPEG"
        )
    if kind == "avif" and not features.check("avif"):
        return (
            "an AVIF photo, which this Pillow cannot read (built without AVIF): "
            "pip install -U Pillow (its wheels read AVIF), or convert it to JPEG"
        )
    return None


@functools.cache
def _heif_opener() -> bool:
    """True once pillow-heif's Pillow opener is registered; False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()  # decodes HEVC; 10/12-bit comes out as 8-bit RGB
    return True


def _formats(path: Path) -> list[str] | None:
    """The Pillow format to open `path` with when its bytes are AVIF/HEIC (None: any); a
    DataError naming the fix when that decoder is not installed."""
    with open(path, "rb") as f:
        kind = sniff(f.read(HEAD_BYTES))
    if why := missing_decoder(kind):
        raise DataError(f"{path}: {why}")
    return [HEIF_FORMATS[kind]] if kind in HEIF_FORMATS else None


def read_image(path: str | Path, *, convert_modes: bool = False) -> np.ndarray:
    """Decode one image file -> uint8 [H,W,3] RGB (EXIF orientation applied; AVIF/HEIC: their
    irot/imir rotation and mirror; an animated GIF/WebP/AVIF: its first frame).

    A file that is not RGB (L, LA, RGBA, P, CMYK, 16-bit ...) raises DataError unless
    `convert_modes`, which converts it to RGB (alpha dropped, 16-bit scaled to 8-bit).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow's EXIF warnings: below
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=_formats(path)) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__}: {e}): replace or delete the file"
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large to decode safely ({e}): downscale it") from e
    except struct.error as e:  # exif_transpose rewriting a tag of the wrong type, once turned
        raise DataError(
            f"{path}: its EXIF metadata is corrupt ({e}), so its orientation cannot be "
            "applied: save a copy without EXIF (turned upright) and scan that"
        ) from e
    if any(str(w.message).endswith(f"tag {ORIENTATION_TAG}") for w in caught):  # "Skipping"
        raise DataError(
            f"{path}: its EXIF orientation tag is corrupt, so which way is up is unknown: save "
            "a copy without EXIF (turned upright) and scan that"
        )
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
        with warnings.catch_warnings():  # the size is checked against our own limit below;
            warnings.simplefilter("ignore")  # EXIF warnings: `read_image` judges them
            with Image.open(path, formats=_formats(path)) as im:  # lazy: reads the header only
                return im.size
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to decode safely ({e}): downscale it") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{path}: not a readable image ({type(e).__name__}: {e}): replace or delete the file"
        ) from e


def image_frame_count(path: str | Path) -> int:
    """Frames in a photo file, from its header and frame headers, no pixel decoded: > 1 for an
    animated GIF, WebP, PNG or AVIF and a multi-page TIFF, of which `read_image` reads the
    first; 1 for a camera's MPO JPEG, whose other images (an HDR gain map, a depth map, a
    preview) are not more photos; 1 when unreadable."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # the read before checked its size and EXIF
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_formats(path)) as im:
                return 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1))
    except (OSError, ValueError, DataError):
        return 1


def read_media_image(path: str | Path, limits: MediaLimits | None = None) -> np.ndarray:
    """Header-checked decode of a photo -> uint8 [H,W,3] RGB (EXIF orientation, modes converted):
    its bytes, the sizes an AVIF/HEIC declares (every `ispe`) and the size Pillow reads from
    the header are checked against `limits` before any pixel is decoded."""
    limits = limits or MediaLimits()
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    if size > limits.max_file_bytes:
        raise MediaLimitError(
            path,
            f"{size} bytes exceeds the limit of {limits.max_file_bytes}",
            "downscale the photo or raise max_file_bytes",
        )
    if size == 0:
        raise DataError(f"{path}: {EMPTY_FILE}")
    declared, missing = _heif_header(path)
    if declared:
        _check_pixels(path, *declared, limits)
    if missing:
        raise DataError(
            f"{path}: truncated: {missing} bytes of its image data are missing (past its end): "
            "copy the whole file again"
        )
    _check_pixels(path, *image_size(path), limits)
    return read_image(path, convert_modes=True)


def _check_pixels(path: Path, w: int, h: int, limits: MediaLimits) -> None:
    if w * h > limits.max_image_pixels:
        raise DataError(
            f"{path}: image of {w}x{h} pixels exceeds the limit of {limits.max_image_pixels}: "
            "downscale it or raise max_image_pixels"
        )
    if w * h == 0:
        raise DataError(f"{path}: image of {w}x{h} pixels is empty: replace or delete the file")


# -- AVIF / HEIC: the sizes the container declares, read without decoding -----------------------
def heif_size(data: bytes | mmap.mmap) -> tuple[int, int] | None:
    """(width, height) of the largest image an ISO-BMFF HEIF file (AVIF, HEIC) declares: the
    largest `ispe` property in meta/iprp/ipco (a grid's full size, above its tiles' and
    thumbnails'); None when there is none."""
    sizes = [
        struct.unpack(">II", data[ispe[0] + 4 : ispe[0] + 12])  # FullBox header, width, height
        for meta in _boxes(data, (0, len(data)), b"meta")
        for iprp in _boxes(data, (meta[0] + 4, meta[1]), b"iprp")  # meta is a FullBox
        for ipco in _boxes(data, iprp, b"ipco")
        for ispe in _boxes(data, ipco, b"ispe")
        if ispe[1] - ispe[0] >= 12
    ]
    return max(sizes, key=lambda wh: wh[0] * wh[1], default=None)


def heif_missing_bytes(data: bytes | mmap.mmap) -> int:
    """Bytes past the end of `data` that an AVIF/HEIC's item locations (`iloc`, offsets in the
    file) reach: > 0 for a cut file (libheif fills a grid's missing tiles silently), else 0."""
    ends = [
        end
        for meta in _boxes(data, (0, len(data)), b"meta")
        for iloc in _boxes(data, (meta[0] + 4, meta[1]), b"iloc")
        for end in _iloc_file_ends(data, iloc)
    ]
    return max(0, max(ends, default=0) - len(data))


def _iloc_file_ends(data: bytes | mmap.mmap, span: tuple[int, int]) -> Iterator[int]:
    """End offset of every extent the `iloc` box body at `span` places in the file itself
    (construction method 0; ISO/IEC 14496-12 8.11.3, versions 0-2)."""
    i = span[0]
    if span[1] - i < 8:  # version/flags, the four sizes, an item count
        return
    version = data[i]
    sizes = data[i + 4] << 8 | data[i + 5]  # offset, length, base offset, index sizes (4 bits)
    offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
    base_size, index_size = (sizes >> 4) & 15, (sizes & 15 if version else 0)
    i, id_size = i + 6, 4 if version == 2 else 2
    count, i = _uint(data, i, id_size), i + id_size

    def field(n: int) -> int:
        nonlocal i
        value, i = _uint(data, i, n), i + n
        return value

    for _ in range(count):
        if i + id_size + 4 > span[1]:
            return
        field(id_size)  # item_ID
        method = field(2) & 15 if version else 0
        field(2)  # data_reference_index
        base, extents = field(base_size), field(2)
        step = index_size + offset_size + length_size  # bytes per extent
        if i + extents * step > span[1]:
            return  # extents past the box: a damaged iloc
        for _ in range(extents if step else min(extents, 1)):  # no fields: one end, the base
            field(index_size)
            offset, length = field(offset_size), field(length_size)
            if method == 0 and i <= span[1]:
                yield base + offset + length


def _uint(data: bytes | mmap.mmap, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "big")


def _heif_header(path: Path) -> tuple[tuple[int, int] | None, int]:
    """(`heif_size`, `heif_missing_bytes`) of the file at `path` (mapped, not read); (None, 0)
    when its bytes are not AVIF/HEIC or cannot be mapped (Pillow's header read then judges)."""
    try:
        with open(path, "rb") as f:
            if sniff(f.read(HEAD_BYTES)) not in HEIF_FORMATS:
                return None, 0
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return heif_size(data), heif_missing_bytes(data)
    except (OSError, ValueError):
        return None, 0


def _boxes(
    data: bytes | mmap.mmap, span: tuple[int, int], kind: bytes
) -> Iterator[tuple[int, int]]:
    """(start, end) of the body of each box of type `kind` among the boxes filling
    data[span[0]:span[1]]; a box whose size does not fit ends the walk."""
    i, end = span
    while i + 8 <= end:
        size, name = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1 and i + 16 <= end:  # 64-bit size
            size, head = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:  # to the end of the enclosing box
            size = end - i
        if size < head or i + size > end:
            return
        if name == kind:
            yield i + head, i + size
        i += size
