"""AVIF and HEIC/HEIF photos (phones): told from MP4/MOV/M4A by their ftyp brands, decoded to the
pixels they hold (a peer decoder, lossless round trips, 10-bit to 8-bit), turned upright by their
irot/imir, refused over the pixel limit from the sizes they declare before any decoding, and a
HEIC without pillow-heif is one error row naming the fix (the installed script)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from deepshield.errors import DataError
from deepshield.media import images
from deepshield.media.images import HEIF_FORMATS, heif_size, read_media_image
from deepshield.media.types import kinds_of, misnamed, sniff
from deepshield.media.video import MediaLimits

SCRIPT = Path(sys.executable).parent / "deepshield"
HAS_HEIF = images._heif_opener()  # registers pillow-heif's opener where it is installed
needs_heif = pytest.mark.skipif(
    not HAS_HEIF, reason="pillow-heif is not installed (pip install 'deepshield[heic]')"
)
T = Image.Transpose
ORIENT = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE}
ORIENT |= {6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}  # EXIF Orientation -> the fix
LOSSLESS_HEIC = {"quality": -1, "chroma": 444, "matrix_coefficients": 0}  # RGB coded as is
AVIF_444 = {"quality": 100, "subsampling": "4:4:4"}
SERVICE = {"max_pixels": 4096 * 4096, "min_side": 16}  # the service's decode bounds


def ffhq(i: int = 0) -> Image.Image:
    """A real FFHQ face, 128x128 RGB (faces_ffhq_vs_tpdne)."""
    path = shared_path("data", "faces_ffhq_vs_tpdne", "real", f"real_{i}.png")
    return Image.open(path).convert("RGB")


def save(im: Image.Image, path: Path, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of one shape."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ten_bit_avif(src: np.ndarray, path: Path) -> Path:
    """`src` uint8 [H,W,3] encoded as a 10-bit 4:2:0 AVIF by FFmpeg (SVT-AV1, its avif muxer)."""
    with av.open(str(path), "w", format="avif") as box:
        stream = box.add_stream("libsvtav1", rate=1)
        stream.width, stream.height, stream.pix_fmt = src.shape[1], src.shape[0], "yuv420p10le"
        stream.options = {"crf": "20"}
        frame = av.VideoFrame.from_ndarray(src.astype(np.uint16) * 257, format="rgb48le")
        for packet in [*stream.encode(frame.reformat(format="yuv420p10le")), *stream.encode()]:
            box.mux(packet)
    return path


# -- sniffing -----------------------------------------------------------------------------------
def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body


def _m4a(path: Path, fmt: str) -> Path:
    """Half a second of AAC sound in the `fmt` muxer's container (ipod: M4A, mov: QuickTime)."""
    with av.open(str(path), "w", format=fmt) as box:
        stream = box.add_stream("aac", rate=16000, layout="mono")
        t = np.arange(8000, dtype=np.float32) / 16000
        frame = av.AudioFrame.from_ndarray(
            (0.1 * np.sin(2 * np.pi * 440 * t))[None], format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            box.mux(packet)
    return path


def test_photos_videos_and_sound_that_all_start_with_ftyp_are_told_apart(tmp_path) -> None:
    """An FF++ MP4, an M4A, a MOV, an AVIF, an animated AVIF and a HEIC: the major brand (and,
    for the codec-neutral mif1/msf1, the compatible brands) say which; the MP4 family stays a
    video-or-sound container, the photos are images only."""
    video = shared_path("data", "deepfake_videos", "real", "ffpp_c23_original_519.mp4")
    frames = [ffhq(0), ffhq(1)]
    files = {
        "video": (video, "mp4"),
        "m4a": (_m4a(tmp_path / "a.m4a", "ipod"), "mp4"),
        "mov": (_m4a(tmp_path / "a.mov", "mov"), "mp4"),
        "avif": (save(frames[0], tmp_path / "a.avif", "AVIF"), "avif"),
        "avis": (
            save(frames[0], tmp_path / "s.avif", "AVIF", save_all=True, append_images=frames[1:]),
            "avif",
        ),
    }
    if HAS_HEIF:
        files["heic"] = (save(frames[0], tmp_path / "a.heic", "HEIF"), "heic")
    for name, (path, want) in files.items():
        head = path.read_bytes()[:64]
        assert head[4:8] == b"ftyp", name  # they all open with the same box
        assert sniff(head) == want, (name, head[:32])
    assert files["avis"][0].read_bytes()[8:12] == b"avis"  # Pillow writes animated as avis
    assert kinds_of("avif") == kinds_of("heic") == ("image",)
    assert kinds_of("mp4") == ("video", "audio")
    # codec-neutral HEIF brands: the compatible list names the codec
    assert sniff(_ftyp(b"mif1", b"mif1", b"avif", b"miaf")) == "avif"
    assert sniff(_ftyp(b"msf1", b"msf1", b"avis")) == "avif"
    assert sniff(_ftyp(b"mif1", b"mif1", b"heic")) == "heic"
    assert sniff(_ftyp(b"isom", b"isom", b"mif1", b"avc1")) == "mp4"  # the major brand rules
    avif_as_mp4 = tmp_path / "photo.mp4"
    avif_as_mp4.write_bytes(files["avif"][0].read_bytes())
    assert "its bytes are a AVIF file (image) but its name says video" in misnamed(
        avif_as_mp4, "video"
    )


# -- decoded pixels -----------------------------------------------------------------------------
def test_avif_decodes_to_the_bt601_conversion_of_the_planes_a_peer_decoder_reads(tmp_path):
    """A 4:4:4 AVIF of a real face: our RGB equals the full-range BT.601 formula applied to the
    Y/Cb/Cr planes FFmpeg's dav1d decodes from the same file, to the rounding (1 level); against
    the source PNG it keeps 45 dB (measured 49.5 on this face, 47.6 on real_0: the chroma planes
    are not kept exactly even at quality 100)."""
    src = ffhq(3)
    path = save(src, tmp_path / "a.avif", "AVIF", **AVIF_444)
    ours = read_media_image(path).astype(np.float64)
    with av.open(str(path)) as box:
        y, cb, cr = next(box.decode(video=0)).to_ndarray(format="yuv444p").astype(np.float64)
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    peer = np.stack([r, g, y + 1.772 * (cb - 128)], axis=-1)  # full-range BT.601 [H,W,3]
    assert np.abs(ours - np.clip(np.round(peer), 0, 255)).max() <= 1
    assert psnr(ours, np.asarray(src)) > 45


@needs_heif
def test_a_lossless_heic_decodes_to_the_source_exactly(tmp_path) -> None:
    """HEVC lossless with RGB coded as is (identity matrix, 4:4:4): every pixel comes back."""
    src = ffhq(4)
    path = save(src, tmp_path / "a.heic", "HEIF", **LOSSLESS_HEIC)
    assert np.array_equal(read_media_image(path), np.asarray(src))


@needs_heif
def test_a_grid_heic_as_phones_write_it_decodes_whole_and_declares_the_grid_size(tmp_path):
    """A 1200x800 photo encoded as 512x512 tiles of a grid (as Apple devices do): the size read
    before decoding is the grid's (its ispe, not a tile's) and the whole picture comes back
    (measured 51.8 dB at quality 90: the upscaled face is smooth)."""
    import pillow_heif

    src = ffhq(2).resize((1200, 800), Image.Resampling.LANCZOS)
    path = tmp_path / "IMG_0002.HEIC"
    pillow_heif.from_pillow(src).save(path, quality=90, tile_size=512)
    assert path.read_bytes().count(b"ispe") == 2  # the tiles' 512x512 and the grid's
    assert heif_size(path.read_bytes()) == (1200, 800)
    got = read_media_image(path)
    assert got.shape == (800, 1200, 3)
    assert psnr(got, np.asarray(src)) > 45


@pytest.mark.parametrize("fmt", ["avif", "heic"])
def test_a_ten_bit_photo_becomes_eight_bit_rgb_close_to_its_source(fmt, tmp_path) -> None:
    """A 10-bit AVIF (SVT-AV1) or HEIC (x265) of a real face decodes to uint8 RGB above 33 dB
    against the source (measured: AVIF 35.9, HEIC 38.1); the same samples read wrongly (the low
    8 bits of each 10-bit value: 7.9 dB, or clipped at 255: 6.6 dB) fall far below it."""
    src = np.asarray(ffhq(5))
    if fmt == "avif":
        path = ten_bit_avif(src, tmp_path / "p10.avif")
        with av.open(str(path)) as box:  # it holds 10-bit samples
            frame = next(box.decode(video=0))
            assert frame.format.name == "yuv420p10le"
            ten = frame.to_ndarray(format="rgb48le") >> 6  # [H,W,3] 10-bit values
    else:
        if not HAS_HEIF:
            pytest.skip("pillow-heif is not installed (pip install 'deepshield[heic]')")
        import pillow_heif

        ten = ((src.astype(np.uint32) * 1023 + 127) // 255).astype(np.uint16)  # [H,W,3] 10-bit
        heif = pillow_heif.from_bytes("RGB;16", (src.shape[1], src.shape[0]), (ten << 6).tobytes())
        path = tmp_path / "p10.heic"
        heif.save(path, quality=95)
        assert pillow_heif.open_heif(path, convert_hdr_to_8bit=False).info["bit_depth"] == 10
    got = read_media_image(path)
    assert got.dtype == np.uint8 and got.shape == src.shape
    assert psnr(got, src) > 33
    assert psnr((ten & 0xFF).astype(np.uint8), src) < 15
    assert psnr(np.minimum(ten, 255).astype(np.uint8), src) < 15


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF", "JPEG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_turned_upright_as_its_exif_orientation_says(fmt, orientation, tmp_path):
    """Saved with EXIF Orientation 1..8 (AVIF and HEIC writers store it as irot/imir), a
    non-square face reads as the source turned/mirrored as EXIF defines; JPEG the control."""
    if fmt == "HEIF" and not HAS_HEIF:
        pytest.skip("pillow-heif is not installed (pip install 'deepshield[heic]')")
    src = ffhq(6).crop((0, 0, 128, 96))
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"AVIF": AVIF_444, "HEIF": LOSSLESS_HEIC, "JPEG": {"quality": 100}}[fmt]
    path = save(src, tmp_path / f"o.{fmt.lower()}", fmt, exif=exif.tobytes(), **kw)
    want = np.asarray(src.transpose(ORIENT[orientation]) if orientation > 1 else src)
    got = read_media_image(path)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 2  # lossy AVIF/JPEG: under 2 levels
    if fmt != "JPEG" and orientation in (3, 6, 8):  # a rotation: in the container's irot box
        assert b"irot" in path.read_bytes()


def test_a_photo_whose_exif_cannot_be_rewritten_is_one_error_line(tmp_path) -> None:
    """Pillow's exif_transpose turns the photo, then rewrites its EXIF without the orientation;
    a tag of an unexpected type (here ColorMap, 0x0140, holding text) made that raise
    struct.error, which escaped the reader as a bare "required argument is not an integer"."""
    exif = Image.Exif()
    exif[0x0112], exif[0x0110] = 6, "EOS"  # orientation 6, Model (ASCII)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buf, "JPEG", exif=exif.tobytes())
    data = buf.getvalue()
    tag = data.index(b"Exif\x00\x00") + 6  # the TIFF header: byte order, then the IFD
    model = b"\x01\x10\x00\x02" if data[tag : tag + 2] == b"MM" else b"\x10\x01\x02\x00"
    colormap = b"\x01\x40\x00\x02" if data[tag : tag + 2] == b"MM" else b"\x40\x01\x02\x00"
    assert data.count(model) == 1
    path = tmp_path / "camera.jpg"
    path.write_bytes(data.replace(model, colormap))
    with pytest.raises(DataError, match="EXIF metadata is corrupt") as e:
        read_media_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "upright.jpg").write_bytes(data)  # the same photo with its Model tag intact
    assert read_media_image(tmp_path / "upright.jpg").shape == (64, 48, 3)  # turned


def test_a_photo_whose_exif_orientation_is_corrupt_is_one_error_line(tmp_path) -> None:
    """An Orientation entry whose count runs past the EXIF block is skipped by Pillow with a
    UserWarning (printed amid scan's output, naming no photo) and the photo was read as stored,
    on its side: its face went unfound. Now one DataError line; other EXIF warnings are not
    printed (the read is quiet under warnings-as-errors)."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    big_endian = data[data.index(b"Exif\x00\x00") + 6 : data.index(b"Exif\x00\x00") + 8] == b"MM"
    entry = data.index(b"\x01\x12\x00\x03" if big_endian else b"\x12\x01\x03\x00")
    data[entry + 4 : entry + 8] = (4096).to_bytes(4, "big" if big_endian else "little")
    path = tmp_path / "sideways.jpg"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="EXIF orientation tag is corrupt") as e:
            read_media_image(path)
    assert str(path) in str(e.value)


def test_an_animated_avif_is_read_as_its_first_frame_like_gif_and_webp(tmp_path) -> None:
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    for fmt in ("AVIF", "WEBP", "GIF"):
        path = tmp_path / f"anim.{fmt.lower()}"
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100)
        assert Image.open(path).n_frames == 3
        mean = read_media_image(path).reshape(-1, 3).mean(0)
        assert np.abs(mean - (200, 0, 0)).max() < 3, fmt


# -- bounds before decoding -----------------------------------------------------------------------
def _declare(data: bytes, w: int, h: int) -> bytes:
    """`data` with every ispe (HEIF image size property) declaring w x h."""
    out, at = bytearray(data), data.find(b"ispe")
    while at >= 0:
        out[at + 8 : at + 16] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
        at = data.find(b"ispe", at + 4)
    return bytes(out)


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_a_photo_declaring_too_many_pixels_is_refused_before_pillow_opens_it(
    fmt, tmp_path, monkeypatch
) -> None:
    """A real AVIF/HEIC whose ispe declares 60000x60000 (3.6 Gpx): refused with the declared
    size while Image.open (and so any decoder) is never reached; the sizes are read from the
    file mapped, not decoded. Its true size over a lowered limit is refused from the header
    (Pillow's lazy open) while no plugin's load() runs."""
    if fmt == "HEIF" and not HAS_HEIF:
        pytest.skip("pillow-heif is not installed (pip install 'deepshield[heic]')")
    path = save(ffhq(7), tmp_path / f"a.{fmt.lower()}", fmt)
    assert heif_size(path.read_bytes()) == (128, 128)
    huge = tmp_path / f"huge.{fmt.lower()}"
    huge.write_bytes(_declare(path.read_bytes(), 60000, 60000))

    def never(*a, **k):
        raise AssertionError("Image.open was called")

    with monkeypatch.context() as m:
        m.setattr(images.Image, "open", never)
        with pytest.raises(DataError, match="60000x60000 pixels exceeds the limit of 100000000"):
            read_media_image(huge)
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self))
    Image.init()
    monkeypatch.setattr(Image.OPEN[fmt][0], "load", lambda self: loads.append(self))
    with pytest.raises(DataError, match="128x128 pixels exceeds the limit of 16000"):
        read_media_image(path, MediaLimits(max_image_pixels=16_000))
    assert loads == []
    with pytest.raises(DataError, match="bytes exceeds the limit of 100"):
        read_media_image(path, MediaLimits(max_file_bytes=100))


@pytest.mark.parametrize("kind", ["avif", "heic", "grid"])
def test_a_cut_photo_is_refused_as_truncated_wherever_its_image_data_is_cut(kind, tmp_path):
    """A real AVIF, HEIC and 512-tiled grid HEIC cut at 5 points after their meta box: each is
    refused as truncated with the bytes missing, read from `iloc` before decoding. The check is
    needed: libheif decodes the cut grid without an error (its lost tiles filled green)."""
    if kind != "avif" and not HAS_HEIF:
        pytest.skip("pillow-heif is not installed (pip install 'deepshield[heic]')")
    face = ffhq(10)
    path = tmp_path / f"whole.{kind}"
    if kind == "avif":
        save(face, path, "AVIF", quality=90)
    else:
        import pillow_heif

        big = face.resize((1200, 800)) if kind == "grid" else face
        pillow_heif.from_pillow(big).save(path, quality=90, tile_size=512 if kind == "grid" else 0)
    data = path.read_bytes()
    meta_end = data.find(b"mdat") + 4
    assert images.heif_missing_bytes(data) == 0
    for cut in np.linspace(meta_end, len(data) - 1, 5).astype(int):
        part = tmp_path / f"cut{cut}.{kind}"
        part.write_bytes(data[:cut])
        with pytest.raises(DataError, match=f"truncated: {len(data) - cut} bytes of its image"):
            read_media_image(part)
    if kind == "grid":
        with Image.open(part) as im:  # what the check prevents: a silent decode
            im.load()
            assert im.size == (1200, 800)


def test_an_iloc_declaring_more_extents_than_it_holds_is_read_in_time_linear_in_its_bytes(
    monkeypatch, tmp_path
) -> None:
    """A 172-byte HEIC whose `iloc` has 20 items of 65535 extents with no fields (every size 0)
    is read field by field a few times per item, not 20 x 65535 times: before, 1.2 KB of such
    items took 14 s and 400 KB would have held billions of ends in a list (scan and the
    service read the iloc before decoding)."""
    items = b"".join((k + 1).to_bytes(2, "big") + b"\0\0\xff\xff" for k in range(20))
    iloc = b"\0\0\0\0" + b"\0\0" + (20).to_bytes(2, "big") + items  # v0, sizes 0
    iloc = (8 + len(iloc)).to_bytes(4, "big") + b"iloc" + iloc
    meta = (12 + len(iloc)).to_bytes(4, "big") + b"meta\0\0\0\0" + iloc
    data = _ftyp(b"heic", b"mif1", b"heic") + meta
    calls = []
    uint = images._uint
    monkeypatch.setattr(images, "_uint", lambda *a: calls.append(a) or uint(*a))
    assert images.heif_missing_bytes(data) == 0
    assert len(calls) < 200
    path = tmp_path / "a.heic"
    path.write_bytes(data)
    with pytest.raises(DataError):  # no image in it: one error, quickly
        read_media_image(path)


@pytest.mark.parametrize("kind", ["avif", "heic"])
def test_a_photo_with_its_header_bytes_changed_decodes_or_is_one_error(kind, tmp_path) -> None:
    """300 copies of a real AVIF/HEIC with 3 random bytes of the boxes before `mdat` changed:
    each decodes or is a DataError (scan) / an UploadError (the service's decoder). Pillow's
    AVIF plugin and pillow-heif raise RuntimeError, which escaped both before (the AVIF case
    fails without it; by hand, 28 of 300 such 512 px AVIFs and 1 of 300 grid HEICs)."""
    from deepshield.service.uploads import Upload, UploadError, decode_image

    if kind == "heic" and not HAS_HEIF:
        pytest.skip("pillow-heif is not installed (pip install 'deepshield[heic]')")
    path = save(ffhq(11), tmp_path / f"a.{kind}", {"avif": "AVIF", "heic": "HEIF"}[kind])
    data, rng = path.read_bytes(), np.random.default_rng(0)
    head = data.find(b"mdat")
    errors = 0
    for _ in range(300):
        bad = bytearray(data)
        for at, value in zip(rng.integers(0, head, 3), rng.integers(0, 256, 3), strict=True):
            bad[int(at)] = int(value)
        path.write_bytes(bad)
        try:
            read_media_image(path)
        except DataError:
            errors += 1
        if sniff(bytes(bad)) not in HEIF_FORMATS:  # the service refuses it by type (415)
            continue
        with contextlib.suppress(UploadError):
            decode_image(Upload(bytes(bad), path.name, ""), sniff(bytes(bad)), **SERVICE)
    assert errors > 200  # most changes are caught (measured: 287 AVIF, 284 HEIC)


# -- scan and the service -------------------------------------------------------------------------
def _blocked_heif(folder: Path) -> dict[str, str]:
    """An environment whose Python cannot import pillow_heif (a shadowing package that fails)."""
    (folder / "pillow_heif").mkdir(parents=True, exist_ok=True)
    (folder / "pillow_heif" / "__init__.py").write_text(
        "raise ImportError('blocked by the test')\n"
    )
    src = Path(images.__file__).parents[2]
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(folder), str(src)])}


@pytest.fixture(scope="module")
def phone(tmp_path_factory) -> Path:
    """The same face as JPEG, AVIF and HEIC (named .HEIC as an iPhone does; where pillow-heif is
    absent the HEIC is the AVIF's bytes under a heic brand: only its refusal is looked at)."""
    folder = tmp_path_factory.mktemp("phone")
    face = ffhq(8).resize((256, 256), Image.Resampling.LANCZOS)
    save(face, folder / "a.jpg", "JPEG", quality=90)
    avif = save(face, folder / "b.avif", "AVIF", quality=90).read_bytes()
    if HAS_HEIF:
        save(face, folder / "IMG_0001.HEIC", "HEIF", quality=90)
    else:
        size = int.from_bytes(avif[:4], "big")
        heic = avif[:8] + b"heic" + avif[12:size].replace(b"avif", b"heic") + avif[size:]
        (folder / "IMG_0001.HEIC").write_bytes(heic)
    return folder


def _scan(folder: Path, out: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    """scan.csv rows by file name of the installed script's scan of `folder` with MesoNet."""
    weights = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    argv = [SCRIPT, "--threads", "1", "scan", folder, "--model", "meso4", "--weights", weights]
    done = subprocess.run(
        [*map(str, argv), "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    with open(out / "scan.csv") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def test_without_pillow_heif_a_heic_is_one_error_row_naming_the_fix(phone, tmp_path) -> None:
    """The installed script, pillow-heif unimportable: the HEIC is one error row naming
    `pip install 'deepshield[heic]'` (it was "not an image, video or audio file" before, and a
    folder scan skipped it), no traceback; the JPEG and the AVIF are scored. Scanned alone it
    is that one line on stderr, exit 2."""
    rows = _scan(phone, tmp_path / "o", _blocked_heif(tmp_path / "block"))
    assert sorted(rows) == ["IMG_0001.HEIC", "a.jpg", "b.avif"]
    for file in ("a.jpg", "b.avif"):
        assert (rows[file]["kind"], rows[file]["error"], rows[file]["faces"]) == ("image", "", "1")
    row = rows["IMG_0001.HEIC"]
    assert (row["kind"], row["verdict"], row["score"]) == ("image", "error", "")
    assert "\n" not in row["error"]
    assert "a HEIC/HEIF photo, which needs the optional pillow-heif" in row["error"]
    assert "pip install 'deepshield[heic]', or convert it to JPEG" in row["error"]
    weights = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    alone = [SCRIPT, "scan", phone / "IMG_0001.HEIC", "--model", "meso4", "--weights", weights]
    done = subprocess.run(
        [*map(str, alone), "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=_blocked_heif(tmp_path / "block"),
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and row["error"] in done.stderr


@needs_heif
def test_scan_reads_a_heic_like_the_other_photos(phone, tmp_path) -> None:
    """With pillow-heif, the HEIC is scored with its face found, as the JPEG and AVIF are."""
    rows = _scan(phone, tmp_path / "o")
    for file in ("a.jpg", "b.avif", "IMG_0001.HEIC"):
        assert (rows[file]["kind"], rows[file]["error"], rows[file]["faces"]) == ("image", "", "1")
        assert 0 <= float(rows[file]["score"]) <= 1


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import torch
    from fastapi.testclient import TestClient

    from deepshield import models
    from deepshield.run import RunDir
    from deepshield.service import create_app

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("service") / "simplenet"
    run = RunDir.create(path)
    run.save_model(models.create("simplenet"))
    run.write_yaml("config.yaml", {"model": "simplenet", "data_kwargs": {"size": 48}})
    return TestClient(create_app(path), base_url="http://localhost")


def _post(client, data: bytes, name: str, ctype: str):
    return client.post("/v1/scan", files={"file": (name, data, ctype)})


@pytest.mark.parametrize(("fmt", "name", "ctype"), [("AVIF", "a.avif", "image/avif")])
def test_the_service_scores_an_avif_as_the_png_of_its_pixels(client, fmt, name, ctype) -> None:
    """An AVIF upload is a photo (it was a one-frame video before: PyAV reads AVIF too), scored
    as the PNG of the pixels we decode from it; declaring 60000x60000 it is 413 before decoding,
    cut short 422."""
    buf = io.BytesIO()
    ffhq(9).save(buf, fmt, quality=90)
    got = _post(client, buf.getvalue(), name, ctype)
    assert got.status_code == 200, got.json()
    assert got.json().get("video") is None
    png = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(png, "PNG")
    same = _post(client, png.getvalue(), "a.png", "image/png").json()
    assert got.json()["p_fake"] == pytest.approx(same["p_fake"], abs=1e-6)
    huge = _post(client, _declare(buf.getvalue(), 60000, 60000), name, ctype)
    assert huge.status_code == 413 and "60000x60000" in huge.json()["error"]
    cut = _post(client, buf.getvalue()[:-100], name, ctype)
    assert cut.status_code == 422 and "data is truncated (100 bytes missing)" in cut.json()["error"]


def test_the_service_answers_a_heic_without_pillow_heif_415_naming_the_fix(
    client, monkeypatch, tmp_path
) -> None:
    """Without pillow-heif a HEIC upload is refused with the extra to install (never 'not an
    image', never a video); bytes that start as a HEIC are enough to be told apart."""
    monkeypatch.setattr(images, "_heif_opener", lambda: False)
    data = _ftyp(b"heic", b"mif1", b"heic", b"miaf") + b"\0" * 64
    got = _post(client, data, "IMG_0001.HEIC", "image/heic")
    assert got.status_code == 415
    assert "pip install 'deepshield[heic]', or convert it to JPEG" in got.json()["error"]
