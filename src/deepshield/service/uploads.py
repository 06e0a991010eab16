"""Uploads to the scan service: read a multipart body under a byte limit, tell the file's type
from its magic bytes, and decode images with their size checked before decoding (audio and
video: `deepshield.service.media_uploads`).

Every refusal is an `UploadError` carrying the HTTP status it is answered with:
400 malformed request (not one file in field `file`, empty file), 413 too large (bytes, pixels,
audio frames), 415 a type the model cannot take or a declared type the bytes contradict,
422 bytes of a known type that do not decode (truncated, corrupt, too small).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from deepshield.errors import InputError
from deepshield.media.images import HEIF_FORMATS, heif_missing_bytes, heif_size, missing_decoder
from deepshield.media.types import sniff, type_name

# What multipart framing may add to the file's own bytes (boundaries, part headers, small fields).
ENVELOPE_BYTES = 16 * 1024

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", **HEIF_FORMATS}
_MIME = {
    "png": ("image/png",),
    "jpeg": ("image/jpeg", "image/jpg", "image/pjpeg"),
    "webp": ("image/webp",),
    "bmp": ("image/bmp", "image/x-bmp", "image/x-ms-bmp"),
    "avif": ("image/avif",),
    "heic": ("image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"),
    "wav": ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"),
    "flac": ("audio/flac", "audio/x-flac"),
    "ogg": ("audio/ogg", "audio/opus", "audio/vorbis", "application/ogg"),
    "mp3": ("audio/mpeg", "audio/mp3"),
    "aac": ("audio/aac", "audio/x-aac"),
    "mp4": (
        *("video/mp4", "video/quicktime", "video/x-m4v", "audio/mp4", "audio/x-m4a"),
        *("video/3gpp", "video/3gpp2"),
    ),
    "webm": ("video/webm", "video/x-matroska", "audio/webm"),
    "avi": ("video/x-msvideo", "video/avi", "video/msvideo"),
    "mpegts": ("video/mp2t", "video/vnd.dlna.mpeg-tts", "video/MP2T"),
    "mpegps": ("video/mpeg", "video/x-mpeg", "video/dvd", "video/x-ms-vob"),
    "asf": ("video/x-ms-wmv", "video/x-ms-asf"),
    "flv": ("video/x-flv",),
}
_EXTENSIONS = {
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "webp": (".webp",),
    "bmp": (".bmp", ".dib"),
    "avif": (".avif",),
    "heic": (".heic", ".heif", ".hif"),
    "wav": (".wav", ".wave"),
    "flac": (".flac",),
    "ogg": (".ogg", ".oga", ".opus"),
    "mp3": (".mp3",),
    "aac": (".aac",),
    "mp4": (".mp4", ".m4v", ".mov", ".m4a", ".3gp", ".3g2"),
    "webm": (".webm", ".mkv"),
    "avi": (".avi",),
    "mpegts": (".ts", ".mts", ".m2ts"),
    "mpegps": (".mpg", ".mpeg", ".vob"),
    "asf": (".wmv", ".asf"),
    "flv": (".flv",),
}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class UploadError(InputError):
    """An upload the service refuses; `status` is the HTTP status it is answered with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its bytes and what the client declared about it."""

    data: bytes
    filename: str
    content_type: str


# -- reading the body -------------------------------------------------------------------------
async def read_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    *,
    field: str,
    max_bytes: int,
) -> Upload:
    """The one file in multipart/form-data field `field`, read chunk by chunk from `body`.

    Never holds more than `max_bytes` of file data (+ ENVELOPE_BYTES of framing): a declared
    Content-Length over the limit is refused before reading, a body that grows past it while
    streaming is refused at that chunk (413).
    """
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadError(
            415,
            f"request body is {ctype.decode('latin-1') or 'untyped'}, not multipart/form-data: "
            f"send the file as a form upload in field '{field}' (curl -F {field}=@FILE URL)",
        )
    limit = max_bytes + ENVELOPE_BYTES
    if content_length and content_length.strip().isdigit() and int(content_length) > limit:
        raise UploadError(413, _too_large(int(content_length), max_bytes, "request body"))
    form = _FormCollector(field, max_bytes)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        total = 0
        async for chunk in body:
            total += len(chunk)
            if total > limit:
                raise UploadError(413, _too_large(None, max_bytes, "request body"))
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise UploadError(
            400, f"malformed multipart body ({e}): send a standard form upload"
        ) from e
    return form.upload()


class _FormCollector:
    """Callbacks for python-multipart's streaming parser: keeps only the `field` part's bytes."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field
        self.max_bytes = max_bytes
        self.names: list[str] = []
        self.files: list[Upload] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._data: bytearray | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._data = None

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace").strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self.names.append(name)
        self._data = bytearray() if name == self.field else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is None:
            return  # other fields: counted against the body limit, not kept
        self._data.extend(data[start:end])
        if len(self._data) > self.max_bytes:
            raise UploadError(413, _too_large(None, self.max_bytes, "file"))

    def _part_end(self) -> None:
        if self._data is None:
            return
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        filename = params.get(b"filename", b"").decode("utf-8", "replace")
        ctype = self._headers.get("content-type", "").split(";")[0].strip().lower()
        self.files.append(Upload(bytes(self._data), filename, ctype))
        self._data = None

    def upload(self) -> Upload:
        if not self.files:
            got = ", ".join(repr(n) for n in self.names) or "none"
            raise UploadError(
                400,
                f"no form field '{self.field}' in the upload (fields sent: {got}): "
                f"send the file in field '{self.field}' (curl -F {self.field}=@FILE URL)",
            )
        if len(self.files) > 1:
            raise UploadError(
                400,
                f"{len(self.files)} files in field '{self.field}': send one file per request "
                f"in field '{self.field}' (curl -F {self.field}=@FILE URL)",
            )
        up = self.files[0]
        if not up.data:
            raise UploadError(400, f"{_name(up)} is empty (0 bytes): upload the file's contents")
        return up


def _too_large(size: int | None, max_bytes: int, what: str) -> str:
    """size None: the stream was cut at the limit, its full size unknown."""
    how = f"is {size:,} bytes, over" if size is not None else "is larger than"
    return (
        f"{what} {how} the {max_bytes:,}-byte upload limit: send a smaller file "
        "(or start the server with a larger --max-mb)"
    )


def _name(up: Upload) -> str:
    return f"'{up.filename}'" if up.filename else "the upload"


# -- types ------------------------------------------------------------------------------------
def check_type(up: Upload, accepted: tuple[str, ...]) -> str:
    """The sniffed type of `up`, one of `accepted`; 415 when the bytes are none of them or
    contradict the declared Content-Type / extension (a spoofed or misnamed file)."""
    kind = sniff(up.data)
    names = "/".join(map(type_name, accepted))
    if kind is None:
        said = f" (declared {_declared_text(up)})" if _claims(up) else ""
        raise UploadError(
            415,
            f"{_name(up)}{said} is not a {names} file: its first bytes match none of them; "
            f"upload a real {names} file",
        )
    if kind not in accepted:
        raise UploadError(
            415, f"{_name(up)} is a {type_name(kind)} file; this model takes {names}: upload one"
        )
    for claim in _claims(up):
        if claim != kind:
            raise UploadError(
                415,
                f"{_name(up)} is declared {type_name(claim)} ({_declared_text(up)}) but its "
                f"bytes are {type_name(kind)}: upload it with a matching name and type",
            )
    return kind


def _claims(up: Upload) -> list[str]:
    """The types the Content-Type and the file extension name, where we know them (not e.g.
    application/octet-stream, which claims nothing)."""
    ext = "." + up.filename.rsplit(".", 1)[-1].lower() if "." in up.filename else ""
    by_type = [k for k, mimes in _MIME.items() if up.content_type in mimes]
    by_name = [k for k, exts in _EXTENSIONS.items() if ext in exts]
    return by_type + by_name


def _declared_text(up: Upload) -> str:
    parts = [f"type {up.content_type}"] if up.content_type else []
    parts += [f"name {up.filename}"] if up.filename else []
    return ", ".join(parts)


# -- images -----------------------------------------------------------------------------------
def decode_image(up: Upload, kind: str, *, max_pixels: int, min_side: int) -> Image.Image:
    """Decode an image upload of sniffed `kind` to an RGB PIL image (EXIF orientation applied).

    The size in the header is checked before any pixel is decoded: more than `max_pixels`
    pixels -> 413, a side under `min_side` -> 422. Grayscale, palette, RGBA (alpha dropped),
    CMYK and 16-bit images are converted to RGB.
    """
    if why := missing_decoder(kind):
        raise UploadError(415, f"{_name(up)} is {why}")
    fmt = _PIL_FORMAT[kind]
    declared = header_size(up.data, kind)
    if declared is not None:
        _check_pixels(up, *declared, max_pixels=max_pixels, min_side=min_side)
    if kind in HEIF_FORMATS and (missing := heif_missing_bytes(up.data)):  # grid tiles: no error
        raise UploadError(
            422, f"{_name(up)}: the {fmt} data is truncated ({missing} bytes missing): re-export it"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(up.data), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError as e:
        raise UploadError(413, f"{_name(up)}: {_pixels_text(e)}: downscale the image") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
        raise UploadError(
            422, f"{_name(up)} starts like a {fmt} file but its header is corrupt: {_why(e)}"
        ) from e
    _check_pixels(up, *im.size, max_pixels=max_pixels, min_side=min_side)
    if declared is not None and (  # the budget was reserved for it
        im.size[0] * im.size[1] > declared[0] * declared[1]  # AVIF/HEIC: rotated, cropped
        if kind in HEIF_FORMATS
        else tuple(declared) != im.size
    ):
        raise UploadError(
            422,
            f"{_name(up)}: its header declares {declared[0]}x{declared[1]} pixels but the image "
            f"is {im.size[0]}x{im.size[1]}: re-export it",
        )
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:  # RuntimeError: libavif/heif
        raise UploadError(
            422, f"{_name(up)}: the {fmt} data is truncated or corrupt ({_why(e)}): re-export it"
        ) from e
    return to_rgb(im)


def _check_pixels(up: Upload, w: int, h: int, *, max_pixels: int, min_side: int) -> None:
    if w * h > max_pixels:
        raise UploadError(
            413,
            f"{_name(up)} is {w}x{h} pixels, over the {max_pixels:,}-pixel limit: "
            "downscale the image",
        )
    if min(w, h) < min_side:
        raise UploadError(
            422, f"{_name(up)} is {w}x{h} pixels: the scan needs at least {min_side} px per side"
        )


def header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """(width, height) an image's header declares, read without decoding anything (None when
    the header is too short or not where the format puts it; the decoder then judges the file).
    PNG: IHDR; BMP: the DIB header; WebP: the VP8 / VP8L / VP8X chunk; JPEG: the first SOFn;
    AVIF/HEIC: the largest `ispe`."""
    try:
        if kind in HEIF_FORMATS:
            return heif_size(data)
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "bmp":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)  # negative height: rows stored top-down
        if kind == "webp":
            return _webp_size(data)
        if kind == "jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit width-1, height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20:21] == b"\x2f":  # lossless: 14-bit width-1, height-1
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame: its height and width."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length field
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA:  # scan data before any frame header: malformed
            return None
        i += 2 + length
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; 16-bit gray scaled to 8 bits (Pillow's convert would clip it)."""
    if im.mode == "RGB":
        return im
    if im.mode in _SIXTEEN_BIT:
        a = (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)  # [H, W]
        return Image.fromarray(a, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _pixels_text(e: Exception) -> str:
    return str(e).split(", could be")[0].rstrip(".") or "image has too many pixels"


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
