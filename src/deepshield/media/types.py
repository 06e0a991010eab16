"""What a media file is, told from its first bytes (never from its name): the one rule the
scan service and `deepshield scan` share."""

from __future__ import annotations

import struct
from pathlib import Path

from deepshield.media.audio import audio_kind

IMAGE_TYPES = ("png", "jpeg", "webp", "bmp", "avif", "heic")  # heic: any HEIF image but AVIF
AUDIO_TYPES = ("wav", "flac", "ogg", "mp3", "aac", "mp4", "webm")  # what the audio reader opens
# mp4: the ISO/QuickTime family (MP4, MOV, M4V, 3GP); webm: Matroska; mpegts: MPEG-TS and the
# M2TS of AVCHD camcorders and Blu-ray; mpegps: MPEG program streams (MPG, DVD VOB); asf: WMV
VIDEO_TYPES = ("mp4", "webm", "avi", "mpegts", "mpegps", "asf", "flv")
_BMP_DIB_SIZES = {struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124)}
HEAD_BYTES = 400  # every signature below: an ftyp box's brands, three MPEG-TS packets
# ISO-BMFF `ftyp` brands of HEIF images (ISO/IEC 23008-12; AVIF: AV1 Image File Format spec):
_AVIF_BRANDS = (b"avif", b"avis")  # AV1 image, AV1 image sequence (animated AVIF)
_HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")  # HEVC
_HEIF_BRANDS = (b"mif1", b"msf1")  # any-codec image / image sequence: the codec's brand follows
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # ASF header object (WMV)


def sniff(data: bytes) -> str | None:
    """The file type its magic bytes say: png, jpeg, webp, bmp, avif, heic, wav, flac, mp4, webm,
    avi, mpegts, mpegps, asf, flv, the audio-only containers of `deepshield.media.audio.audio_kind` (ogg, mp3, aac), or
    None. AVIF and HEIC are told from MP4/MOV/M4A, which also start with `ftyp`, by its brands."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM") and data[14:18] in _BMP_DIB_SIZES:
        return "bmp"
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"fLaC"):
        return "flac"
    if data[4:8] == b"ftyp" and (photo := _heif_kind(data)):
        return photo
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"wide"):  # the first box of an ISO/QuickTime file
        return "mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML header: Matroska / WebM
        return "webm"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if _mpeg_ts(data) and not data.startswith(b"GIF8"):  # a GIF also starts with 0x47
        return "mpegts"
    if data.startswith(b"\x00\x00\x01\xba"):  # MPEG pack header
        return "mpegps"
    if data.startswith(_ASF_GUID):
        return "asf"
    if data.startswith(b"FLV\x01"):
        return "flv"
    kind = audio_kind(data)
    return kind if kind in ("ogg", "mp3", "aac") else None


def _mpeg_ts(data: bytes) -> bool:
    """Three MPEG-TS packets' sync bytes: 188 bytes apart, or 192 after a 4-byte time code
    (M2TS: AVCHD camcorders, Blu-ray)."""
    return any(
        len(data) > start + 2 * step and all(data[start + i * step] == 0x47 for i in range(3))
        for start, step in ((0, 188), (4, 192))
    )


def _heif_kind(data: bytes) -> str | None:
    """'avif' or 'heic' when the `ftyp` box at the start of `data` names a HEIF image brand as
    its major brand (an MP4, MOV or M4A names isom, mp42, qt, M4A ...), else None."""
    major = data[8:12]
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEIC_BRANDS:
        return "heic"
    if major not in _HEIF_BRANDS:
        return None
    end = min(int.from_bytes(data[:4], "big"), len(data))
    compatible = {data[i : i + 4] for i in range(16, end - 3, 4)}
    return "avif" if compatible.intersection(_AVIF_BRANDS) else "heic"


_NAMES = {"mpegts": "MPEG-TS", "mpegps": "MPEG-PS", "asf": "WMV"}


def type_name(kind: str) -> str:
    """How a `sniff` answer is named to a user: MP4, MPEG-TS, WMV (ASF) ..."""
    return _NAMES.get(kind, kind.upper())


def kinds_of(kind: str | None) -> tuple[str, ...]:
    """The file kinds ('image', 'video', 'audio') bytes of type `kind` (a `sniff` answer) may
    hold: an MP4 or WebM holds video or only sound; None: unknown, anything."""
    if kind is None:
        return ("image", "video", "audio")
    return tuple(
        k
        for k, types in (("image", IMAGE_TYPES), ("video", VIDEO_TYPES), ("audio", AUDIO_TYPES))
        if kind in types
    )


def sniff_file(path: Path) -> str | None:
    """`sniff` of the file's first bytes; None also when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return sniff(f.read(HEAD_BYTES))
    except OSError:  # unreadable: the decoder's error row says so
        return None


def misnamed(path: Path, named: str) -> str | None:
    """Why the file at `path`, whose extension says `named` ('image', 'video' or 'audio'), is
    not what its name says (its bytes are another kind's), else None."""
    kind = sniff_file(path)
    if named in kinds_of(kind):
        return None
    return (
        f"{path}: its bytes are a {type_name(kind)} file ({' or '.join(kinds_of(kind))}) but its "
        f"name says {named} ({path.suffix}); rename it to its type and scan it again"
    )
