"""Video probing, bounds and even sampling on videos generated here with PyAV, and one FF++ clip."""

from __future__ import annotations

import csv
import struct
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import shared_path
from deepshield.errors import DataError
from deepshield.media import (
    CropOptions,
    MediaLimits,
    detect_faces,
    file_faces,
    iter_video_frames,
    probe_video,
    read_video_frames,
    sample_frames,
    sample_indices,
)
from deepshield.media import video as media_video
from deepshield.media.audio import read_audio
from deepshield.media.types import kinds_of, sniff, sniff_file
from deepshield.media.video import VIDEO_EXTENSIONS

W, H, FPS = 64, 32, 10


def _frame(i: int) -> np.ndarray:
    """Frame i: grey level 8*i, with a white 8x8 block at the top-left corner."""
    a = np.full((H, W, 3), 8 * i, np.uint8)
    a[:8, :8] = 255
    return a


def write_frames(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Lossless H.264 4:4:4 MP4 of uint8 [H,W,3] RGB frames (all of one size) at `fps`."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps, options={"qp": "0", "preset": "ultrafast"})
    s.height, s.width = frames[0].shape[:2]
    s.pix_fmt = "yuv444p"
    for img in frames:
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def write_video(
    path: Path,
    n: int = 20,
    *,
    rotation: int = 0,
    audio: bool | float = False,
    faststart: bool = False,
    audio_first: bool = False,
) -> Path:
    """H.264 4:4:4 (lossless) MP4 of n frames at 10 fps; optional display rotation and sine audio
    (`audio`: True for the video's length, or seconds), its stream stored first if asked."""
    options = {"movflags": "faststart"} if faststart else {}
    c = av.open(str(path), "w", options=options)
    if audio_first:
        a = c.add_stream("aac", rate=48000, layout="stereo")
    s = c.add_stream("libx264", rate=FPS, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = W, H, "yuv444p"
    if rotation:
        s.set_display_rotation(rotation)
    if audio and not audio_first:
        a = c.add_stream("aac", rate=48000, layout="stereo")
    for i in range(n):
        for p in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    if audio or audio_first:
        _mux_sine(c, a, seconds=n / FPS if audio is True or audio_first else float(audio))
    c.close()
    return path


def _mux_sine(c: av.container.OutputContainer, a: av.audio.AudioStream, seconds: float) -> None:
    t = np.arange(int(48000 * seconds)) / 48000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(wave), 1024):
        chunk = np.stack([wave[start : start + 1024]] * 2)  # [2, n] planar stereo
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, start
        for p in a.encode(frame):
            c.mux(p)
    for p in a.encode():
        c.mux(p)


def test_sample_indices_even_spacing_and_every():
    assert sample_indices(751, frames=32).tolist() == np.linspace(0, 750, 32).round().tolist()
    assert sample_indices(10, frames=32).tolist() == list(range(10))  # fewer frames: all of them
    assert sample_indices(10, frames=None, every=3).tolist() == [0, 3, 6, 9]
    for bad in (
        {"frames": 4, "every": 2},
        {"frames": None},
        {"frames": 0},
        {"every": 0, "frames": None},
    ):
        with pytest.raises(DataError):
            sample_indices(10, **bad)


def test_read_video_frames_decodes_the_sampled_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", n=20)
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.codec, info.has_audio) == (
        W,
        H,
        20,
        "h264",
        False,
    )
    assert info.duration_s == pytest.approx(2.0, abs=0.11)
    v = read_video_frames(path, frames=5)
    expected = np.linspace(0, 19, 5).round().astype(int)
    assert v.indices.tolist() == expected.tolist()
    assert v.images.shape == (5, H, W, 3) and v.images.dtype == np.uint8
    # the grey level (8 per frame, +-1 from RGB<->YUV rounding) identifies the decoded frame
    assert (v.images[:, 16, 32, 0] / 8).round().astype(int).tolist() == expected.tolist()
    assert v.times.tolist() == pytest.approx((expected / FPS).tolist())
    assert read_video_frames(path, frames=None, every=7).indices.tolist() == [0, 7, 14]


@pytest.mark.parametrize(
    ("rotation", "corner"), [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")]
)
def test_display_rotation_is_applied(tmp_path, rotation, corner):
    path = write_video(tmp_path / "r.mp4", n=3, rotation=rotation)
    v = read_video_frames(path, frames=1)
    assert v.info.rotation % 360 == rotation % 360
    img = v.images[0]
    assert img.shape[:2] == ((W, H) if abs(rotation) == 90 else (H, W))
    h, w = img.shape[:2]
    corners = {
        "top-left": img[:8, :8], "top-right": img[:8, w - 8 :],
        "bottom-left": img[h - 8 :, :8], "bottom-right": img[h - 8 :, w - 8 :],
    }  # fmt: skip
    assert [name for name, px in corners.items() if px.min() > 240] == [corner]


def _displayed(img: np.ndarray, matrix: list[int]) -> np.ndarray:
    """[H,W,3] placed pixel by pixel where FFmpeg's display matrix sends it: x' = a x + c y,
    y' = b x + d y (16.16 fixed point), shifted so the smallest x' and y' are 0."""
    a, b, _, c, d = (v / 65536 for v in matrix[:5])
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    xs, ys = np.rint(a * x + c * y).astype(int), np.rint(b * x + d * y).astype(int)
    out = np.zeros((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, 3), img.dtype)
    out[ys - ys.min(), xs - xs.min()] = img
    return out


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize(("hflip", "vflip"), [(False, False), (True, False), (False, True)])
def test_display_matrix_rotations_and_flips_follow_its_definition(tmp_path, rotation, hflip, vflip):
    path = tmp_path / "m.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=FPS, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = W, H, "yuv444p"
    s.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
    img = _frame(3)
    img[:4, W - 16 :] = 128  # a grey patch top-right: the picture has no symmetry
    for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    with av.open(str(path)) as f:
        stored = next(f.decode(video=0))
        side = stored.side_data.get("DISPLAYMATRIX")  # absent: the identity
        matrix = np.frombuffer(bytes(side), "<i4").tolist() if side else [65536, 0, 0, 0, 65536]
        decoded = stored.to_ndarray(format="rgb24")
    v = read_video_frames(path, frames=1)
    assert v.info.mirrored == (hflip != vflip)
    assert (v.images[0] == _displayed(decoded, matrix)).all()


def _disc(side: int = 64) -> np.ndarray:
    """uint8 [side,side,3]: a white disc of radius side/4 on black, in square pixels."""
    y, x = np.mgrid[0:side, 0:side] + 0.5
    inside = (x - side / 2) ** 2 + (y - side / 2) ** 2 <= (side / 4) ** 2
    return np.repeat((inside * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_a_pixel_aspect_within_one_percent_of_square_is_not_resampled(tmp_path):
    """One shared clip says 1280:1281 (854 px shown as 853.3): resampling it would change every
    pixel for a third of a pixel of geometry (and moved MesoNet's frame scores by up to 0.16)."""
    img = np.random.default_rng(0).integers(0, 256, (H, 854, 3), dtype=np.uint8)
    c = av.open(str(tmp_path / "near.mp4"), "w")
    s = c.add_stream("libx264", rate=FPS, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = 854, H, "yuv444p"
    s.codec_context.sample_aspect_ratio = Fraction(1280, 1281)
    for p in [*s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *s.encode()]:
        c.mux(p)
    c.close()
    v = read_video_frames(tmp_path / "near.mp4", frames=1)
    assert v.info.pixel_aspect == 1 and v.images.shape == (1, H, 854, 3)
    assert np.abs(v.images[0].astype(int) - img).max() <= 2  # lossless up to RGB<->YUV rounding


@pytest.mark.parametrize("aspect", [Fraction(2), Fraction(1, 2)])
def test_anamorphic_pixels_are_shown_square(tmp_path, aspect):
    """A video stored with non-square pixels (DV, DVD, broadcast) is resampled as it is shown:
    a disc stored squeezed comes back round."""
    disc = _disc()
    stored = np.asarray(Image.fromarray(disc).resize((round(64 / aspect), 64), Image.BOX))
    path = tmp_path / "anamorphic.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=FPS, options={"qp": "0"})
    s.width, s.height, s.pix_fmt = stored.shape[1], 64, "yuv444p"
    s.codec_context.sample_aspect_ratio = aspect
    for _ in range(2):
        for p in s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    v = read_video_frames(path, frames=1)
    assert v.info.pixel_aspect == aspect and v.images.shape == (1, 64, 64, 3)
    err = np.abs(v.images[0].astype(int) - disc).mean()
    assert err < 6  # only the disc's edge differs (resampled twice); squeezed it is ~30
    with pytest.raises(DataError, match="pixel aspect"):
        probe_video(path, MediaLimits(max_frame_pixels=64 * 64 - 1 + (aspect < 1) * 64 * 64))


def test_bounds_refuse_before_decoding(tmp_path):
    path = write_video(tmp_path / "v.mp4", n=20)
    cases = [
        (MediaLimits(max_frame_pixels=W * H - 1), "max_frame_pixels"),
        (MediaLimits(max_duration_s=1.0), "max_duration_s"),
        (MediaLimits(max_file_bytes=100), "max_file_bytes"),
    ]
    for limits, flag in cases:
        with pytest.raises(DataError, match=flag):
            probe_video(path, limits)
    with pytest.raises(DataError, match="max_frames_out"):
        read_video_frames(path, frames=None, every=1, limits=MediaLimits(max_frames_out=10))


def test_bad_videos_raise_data_error_naming_the_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    good = write_video(tmp_path / "good.mp4", n=30).read_bytes()
    moov_at_end = tmp_path / "cut.mp4"
    moov_at_end.write_bytes(good[: len(good) // 2])
    fast = write_video(tmp_path / "fast.mp4", n=30, faststart=True).read_bytes()
    moov_first = tmp_path / "cut_fast.mp4"
    moov_first.write_bytes(fast[: len(fast) // 2])
    unknown = tmp_path / "codec.mp4"
    unknown.write_bytes(good.replace(b"avc1", b"zzzz"))  # a codec tag FFmpeg does not know
    audio_only = tmp_path / "voice.mp4"
    c = av.open(str(audio_only), "w")
    _mux_sine(c, c.add_stream("aac", rate=48000, layout="stereo"), seconds=0.5)
    c.close()
    expected = {
        text: "not a readable video",
        moov_at_end: "not a readable video",
        moov_first: "truncated",
        unknown: "codec",
        audio_only: "audio only",
        tmp_path / "missing.mp4": "not found",
    }
    for path, what in expected.items():
        with pytest.raises(DataError, match=what) as e:
            read_video_frames(path, frames=4)
        assert str(path) in str(e.value)


def test_audio_track_is_mono_16k_and_keeps_the_tone(tmp_path):
    path = write_video(tmp_path / "av.mp4", n=20, audio=True)
    assert probe_video(path).has_audio
    wave, record = read_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and record.container == "m4a"
    assert len(wave) == pytest.approx(2.0 * 16000, rel=0.05)
    assert np.abs(wave).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(wave[4000:20000]))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)
    with pytest.raises(DataError, match="no audio track"):
        read_audio(write_video(tmp_path / "silent.mp4", n=3))


def test_reads_an_ffpp_h264_444_clip():
    root = shared_path("data", "deepfake_videos")
    with open(root / "labels.csv") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    name = "fake/ffpp_c23_reenact_cyshih_fake.mp4"
    v = read_video_frames(root / name, frames=4)
    row = rows[name]
    assert v.info.frames == int(row["frames"]) and v.info.fps == pytest.approx(float(row["fps"]))
    assert v.images.shape == (4, int(row["height"]), int(row["width"]), 3)
    assert v.indices.tolist() == np.linspace(0, int(row["frames"]) - 1, 4).round().tolist()
    assert v.images.std() > 10  # real picture content, not a blank decode
    # the clip shows one face in every frame (its README): found in each sampled frame
    assert all(len(detect_faces(img)) == 1 for img in v.images)


def write_coded(
    path: Path,
    codec: str,
    n: int,
    options: dict,
    gaps: list[int] | None = None,
    muxer: str | None = None,
) -> Path:
    """`codec` video of n frames with distinct content (noise seeded by the frame, a moving
    white row); `gaps` (ms, cycled) give a variable frame rate in a 1 ms time base."""
    c = av.open(str(path), "w", format=muxer)
    s = c.add_stream(codec, rate=25, options=options)
    s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
    s.codec_context.gop_size = 12
    if gaps:
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
    t = 0
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        img[i % 64] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if gaps:
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += gaps[i % len(gaps)]
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


class _Counted:
    """A container that counts the seeks made on it."""

    def __init__(self, container: av.container.InputContainer, counts: dict) -> None:
        self._c, self.counts = container, counts
        self.streams = container.streams

    def seek(self, *a, **k):
        self.counts["seeks"] += 1
        return self._c.seek(*a, **k)

    def demux(self, *a, **k):
        return self._c.demux(*a, **k)

    def close(self):
        self._c.close()


CODED = {
    "h264-bframes.mp4": ("libx264", {"bframes": "3"}),
    "h264-open-gop.mp4": ("libx264", {"x264-params": "open-gop=1:keyint=12:bframes=3"}),
    "hevc.mp4": ("libx265", {"x265-params": "keyint=12:log-level=none"}),
    "vp9.webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
    "mpeg4.avi": ("mpeg4", {}),
    "h264-vfr.mkv": ("libx264", {"bframes": "2"}),
    "h264.ts": ("libx264", {"bframes": "2"}),  # seeks land past the keyframe asked for
    "mpeg2.vob": ("mpeg2video", {}),  # seeks land inside a frame: refused by its size
}


@pytest.mark.parametrize("name", sorted(CODED))
def test_seeking_gives_the_frames_of_decoding_in_order(tmp_path, monkeypatch, name):
    codec, options = CODED[name]
    gaps = [20, 40, 100, 500] if "vfr" in name else None
    muxer = "vob" if name.endswith(".vob") else None  # FFmpeg guesses 'mpeg' from the name
    info = probe_video(write_coded(tmp_path / name, codec, 90, options, gaps, muxer))
    assert info.frames == 90 and len(info.keyframes) >= 5
    counts = {"seeks": 0, "frames": 0}
    opened, decoded_from = media_video._open, media_video._decoded
    monkeypatch.setattr(media_video, "_open", lambda p: _Counted(opened(p), counts))

    def counted(packets):
        for frame in decoded_from(packets):
            counts["frames"] += 1
            yield frame

    monkeypatch.setattr(media_video, "_decoded", counted)
    rng = np.random.default_rng(0)
    for wanted in [
        [0, 89],
        [5, 6, 40, 41, 88],
        *(rng.choice(90, 6, replace=False) for _ in range(4)),
    ]:
        seeking = list(iter_video_frames(info, np.array(wanted)))
        decoded = counts["frames"]
        in_order = list(iter_video_frames(info, np.array(wanted), seek=False))
        assert [i for i, _, _ in seeking] == [i for i, _, _ in in_order] == sorted(wanted)
        assert [t for _, t, _ in seeking] == [t for _, t, _ in in_order]
        assert all((a == b).all() for (_, _, a), (_, _, b) in zip(seeking, in_order, strict=True))
        counts["frames"] -= decoded
        skipped = decoded < counts["frames"] or max(wanted) < 12  # seeking skipped frames
        assert skipped or name.endswith(".vob")  # every landing refused: decoded in order
        counts["frames"] = 0
    assert counts["seeks"] > 0


CONTAINERS = {  # name: (codec, muxer, what the bytes say)
    "avchd.mts": ("libx264", "mpegts", "mpegts"),
    "bluray.m2ts": ("libx264", "mpegts", "mpegts"),  # 192-byte packets (FFmpeg, by the name)
    "dvd.vob": ("mpeg2video", "vob", "mpegps"),
    "vcd.mpg": ("mpeg1video", "mpeg", "mpegps"),
    "old.wmv": ("wmv2", "asf", "asf"),
    "old.flv": ("flv", "flv", "flv"),
    "phone.3gp": ("libx264", "3gp", "mp4"),
}


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_camcorder_broadcast_and_old_containers_are_told_and_read(tmp_path, name):
    codec, muxer, kind = CONTAINERS[name]
    path = write_coded(tmp_path / name, codec, 30, {}, muxer=muxer)
    assert sniff_file(path) == kind and "video" in kinds_of(kind)
    assert path.suffix in VIDEO_EXTENSIONS
    v = read_video_frames(path, frames=4)
    assert v.info.frames == 30 and v.indices.tolist() == [0, 10, 19, 29]
    # the moving white row (row i % 64 of frame i) shows which frame came back
    rows = [int(np.argmax(img.astype(int).sum(axis=(1, 2)))) for img in v.images]
    assert rows == [0, 10, 19, 29]


@pytest.mark.parametrize("at", [0.1, 0.3, 0.5])
def test_a_broadcast_capture_cut_mid_gop_is_read_from_its_first_keyframe(tmp_path, at):
    """An MPEG-TS cut at a packet boundary inside a GOP (a recording started mid-stream): its
    frames before the first keyframe cannot be decoded, so they are not counted (before: every
    such capture failed with 'frames [...] could not be decoded'); seeking agrees with decoding
    in order, and the first frame is the keyframe."""
    options = {"x264-params": "keyint=25:bframes=2"}
    whole = write_coded(tmp_path / "whole.ts", "libx264", 100, options, muxer="mpegts")
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[int(len(data) * at) // 188 * 188 :])
    info = probe_video(cut)
    assert info.pts[0] == info.keyframes[0] and 0 < info.frames < 100 * (1 - at)
    a = read_video_frames(cut, frames=8)
    b = read_video_frames(cut, frames=8, seek=False)
    assert a.indices.tolist() == b.indices.tolist() and a.indices[-1] == info.frames - 1
    assert (a.images == b.images).all()
    first = probe_video(whole)
    k = int(np.searchsorted(first.pts, info.pts[0]))  # the same frame in the whole capture
    assert (read_video_frames(whole, frames=100).images[k] == a.images[0]).all()


def test_a_gif_is_not_taken_for_mpeg_ts_by_its_first_byte():
    """MPEG-TS is told by 0x47 ('G') every 188 bytes; a GIF starts with 'G' too."""
    gif = bytearray(b"GIF89a" + bytes(394))
    gif[188] = gif[376] = 0x47
    ts = bytearray(400)
    ts[0] = ts[188] = ts[376] = 0x47
    assert (sniff(bytes(gif)), sniff(bytes(ts))) == (None, "mpegts")


def test_a_frame_missing_from_the_index_falls_back_to_decoding_in_order(tmp_path):
    info = probe_video(write_coded(tmp_path / "v.mp4", "libx264", 40, {"bframes": "2"}))
    wrong = replace(info, pts=info.pts + 1)  # no decoded frame has the pts the index says
    got = list(iter_video_frames(wrong, np.array([3, 30])))
    want = list(iter_video_frames(info, np.array([3, 30]), seek=False))
    assert [i for i, _, _ in got] == [3, 30]
    assert all((a == b).all() for (_, _, a), (_, _, b) in zip(got, want, strict=True))


def test_variable_frame_rate_is_sampled_evenly_in_time(tmp_path):
    gaps = [20, 40, 100, 500]
    path = write_coded(tmp_path / "vfr.mkv", "libx264", 60, {"bframes": "0"}, gaps)
    info = probe_video(path)
    pts = np.concatenate([[0], np.cumsum([gaps[i % 4] for i in range(59)])])
    assert info.pts.tolist() == pts.tolist()
    got = sample_frames(info, frames=7)
    times = np.linspace(0, pts[-1], 7)
    nearest = [int(np.abs(pts - t).argmin()) for t in times]  # brute force, ties to the earlier
    assert got.tolist() == sorted(set(nearest))
    assert got.tolist() != sample_indices(60, frames=7).tolist()  # by index it would differ
    v = read_video_frames(path, frames=7)
    assert v.indices.tolist() == got.tolist()
    assert v.times.tolist() == pytest.approx((pts[got] / 1000).tolist())
    # a constant rate in a 1 ms time base (33 / 34 ms steps) is sampled by index
    cfr = probe_video(write_coded(tmp_path / "cfr.mkv", "libx264", 60, {}, [33, 33, 34]))
    assert sample_frames(cfr, frames=7).tolist() == sample_indices(60, frames=7).tolist()


def test_a_video_stored_after_its_audio_stream_is_read(tmp_path):
    """The video stream's index in the file is not its index among video streams (was an
    IndexError traceback)."""
    path = write_video(tmp_path / "audio_first.mp4", n=10, audio=True, audio_first=True)
    v = read_video_frames(path, frames=3)
    assert (v.info.frames, v.info.has_audio, v.indices.tolist()) == (10, True, [0, 4, 9])
    assert (v.images[:, 16, 32, 0] / 8).round().astype(int).tolist() == [0, 4, 9]
    wave, _ = read_audio(path)
    assert len(wave) == pytest.approx(16000, rel=0.05)  # its 1 s of sound, at 16 kHz


def _trim_edit_list(path: Path, skip: int) -> None:
    """Make an MP4's edit list start `skip` frames later, as a phone's trim without re-encoding
    does: the skipped frames stay stored (needed to decode the next ones) but are not shown."""
    data = bytearray(path.read_bytes())
    mvhd, mdhd, elst = (data.find(box) for box in (b"mvhd", b"mdhd", b"elst"))
    assert data[mvhd + 4] == data[mdhd + 4] == data[elst + 4] == 0  # version 0 boxes
    movie_scale = struct.unpack(">I", data[mvhd + 16 : mvhd + 20])[0]
    media_scale = struct.unpack(">I", data[mdhd + 16 : mdhd + 20])[0]
    length, start = struct.unpack(">Ii", data[elst + 12 : elst + 20])
    length -= skip * movie_scale // FPS
    start += skip * media_scale // FPS
    data[elst + 12 : elst + 20] = struct.pack(">Ii", length, start)
    path.write_bytes(bytes(data))


def test_a_trimmed_mp4_shows_the_frames_its_edit_list_keeps(tmp_path):
    """Frames an edit list skips are stored but dropped by the decoder: they are not frames of
    the video (counting them made every trimmed clip 'could not be decoded')."""
    path = write_video(tmp_path / "trim.mp4", n=20)
    _trim_edit_list(path, 3)
    v = read_video_frames(path, frames=None, every=1)
    assert v.info.frames == 17 and v.indices.tolist() == list(range(17))
    assert (v.images[:, 16, 32, 0] / 8).round().astype(int).tolist() == list(range(3, 20))
    assert v.times.tolist() == pytest.approx((np.arange(17) / FPS).tolist())
    a = read_video_frames(path, frames=4)
    b = read_video_frames(path, frames=4, seek=False)
    assert a.indices.tolist() == b.indices.tolist() == [0, 5, 11, 16]
    assert (a.images == b.images).all()


def test_corrupt_bytes_mid_stream_raise_data_error(tmp_path):
    path = write_video(tmp_path / "v.mp4", n=30, faststart=True)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt") as e:
        read_video_frames(path, frames=None, every=1)
    assert str(path) in str(e.value)


def test_audio_file_is_resampled_and_mixed_to_mono(tmp_path):
    t = np.arange(8000) / 8000  # 1 s at 8 kHz, stereo: 300 Hz left, silence right
    stereo = np.stack([0.8 * np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], axis=1)
    path = tmp_path / "voice.wav"
    sf.write(path, stereo, 8000, subtype="PCM_16")
    wave = read_audio(path)[0]
    assert len(wave) == pytest.approx(16000, abs=64)
    spectrum = np.abs(np.fft.rfft(wave[2000:14000]))
    assert np.fft.rfftfreq(12000, 1 / 16000)[spectrum.argmax()] == pytest.approx(300, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.8, abs=0.05)  # the silent channel left out
    stereo[:, 1] = 0.4 * np.sin(2 * np.pi * 300 * t)  # two live channels: their mean
    sf.write(path, stereo, 8000, subtype="PCM_16")
    assert np.abs(read_audio(path)[0]).max() == pytest.approx(0.6, abs=0.05)


IR, SHIFT = 20, 20  # disc radius and how far it moves between the two fields, px


def _field_disc(h: int, w: int, cx: int, cy: int) -> np.ndarray:
    """bool [h,w]: a disc of radius IR centred at (cx, cy)."""
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= IR * IR


def write_interlaced(path: Path, codec: str, pix_fmt: str, *, interlaced: bool = True) -> Path:
    """6 frames 128x96 at 25 fps whose even lines (top field) show a white disc at x=30+10i and
    odd lines (bottom field) the disc SHIFT px further right: coded as interlaced (x264
    tff=1, lossless; MPEG-2 +ildct+ilme, bottom field first) or, `interlaced=False`, as
    progressive frames of the same woven pictures."""
    h, w = 96, 128
    c = av.open(str(path), "w")
    if codec == "mpeg2video":
        s = c.add_stream(codec, rate=25, options={"qscale": "1"})
        if interlaced:
            flags = av.codec.context.Flags
            s.codec_context.flags |= flags.interlaced_dct | flags.interlaced_me
    else:
        x264 = "interlaced=1:tff=1" if interlaced else "interlaced=0"
        s = c.add_stream(codec, rate=25, options={"qp": "0", "x264-params": x264})
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    even = (np.arange(h) % 2 == 0)[:, None]
    for i in range(6):
        top, bottom = _field_disc(h, w, 30 + 10 * i, 48), _field_disc(h, w, 30 + 10 * i + SHIFT, 48)
        img = np.where(np.where(even, top, bottom)[..., None], 255, 0).astype(np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(np.repeat(img, 3, axis=2), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def _off_disc(img: np.ndarray, cx: int) -> int:
    """Pixels of uint8 [H,W,3] whose grey level is more than 64 off the progressive picture of
    the disc at (cx, 48), white on black."""
    ideal = _field_disc(img.shape[0], img.shape[1], cx, 48) * 255.0
    return int((np.abs(img.mean(axis=2) - ideal) > 64).sum())


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "field"),
    [
        ("x264.mp4", "libx264", "yuv420p", "top"),
        ("x264_10bit.mkv", "libx264", "yuv420p10le", "top"),
        ("mpeg2.ts", "mpeg2video", "yuv420p", "bottom"),
    ],
)
def test_interlaced_frames_keep_the_first_field_without_combing(
    tmp_path, name, codec, pix_fmt, field
):
    path = write_interlaced(tmp_path / name, codec, pix_fmt)
    info = probe_video(path)
    assert info.interlaced == field  # the flag and field order of the first frame
    crops = file_faces(path, "video", CropOptions(size=32, mode="none"), frames=2)
    assert crops.interlaced == field  # what a scan row's note reports
    got = read_video_frames(path, frames=6)
    with av.open(str(path)) as c:
        woven = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # Kept lines are the field's own; a lost sample beyond both neighbours becomes their mean,
    # one between them or equal to one stays: off the disc (by ~127) only where the disc's
    # column starts or ends between its neighbours, at most 2 lines per column the disc covers,
    # 2 (2 IR + 1). Unprocessed, the other field's lines show the disc SHIFT px away: half the
    # symmetric difference of two discs is off, pi R^2 - lens = 766 px for R = D = 20
    # (lens = 2R^2 acos(D/2R) - D/2 sqrt(4R^2 - D^2)).
    lens = 2 * IR**2 * np.arccos(SHIFT / (2 * IR)) - SHIFT / 2 * np.sqrt(4 * IR**2 - SHIFT**2)
    for i, img in zip(got.indices, got.images, strict=True):
        cx = 30 + 10 * int(i) + (SHIFT if field == "bottom" else 0)
        assert _off_disc(img, cx) <= 2 * (2 * IR + 1)
        assert _off_disc(woven[i], cx) > 0.75 * (np.pi * IR**2 - lens)


def test_progressive_frames_are_not_deinterlaced(tmp_path):
    path = write_interlaced(tmp_path / "woven.mp4", "libx264", "yuv420p", interlaced=False)
    info = probe_video(path)
    assert info.interlaced is None
    assert file_faces(path, "video", CropOptions(size=32, mode="none"), frames=2).interlaced is None
    got = read_video_frames(path, frames=6)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert np.array_equal(got.images, np.stack(decoded))  # combing that is in the picture stays


def test_interlaced_lines_that_do_not_comb_are_kept(tmp_path):
    # A still picture, rows 128 + 100 sin(2 pi y / 24): a line exceeds both neighbours by at
    # most 100 (1 - cos(2 pi / 24)) = 3.4 < COMB_THRESHOLD (9) levels, so nothing combs and
    # every line is kept (a plain line average would move the crests by up to 3.4 levels).
    path, h, w = tmp_path / "still.mp4", 96, 64
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=25, options={"qp": "0", "x264-params": "interlaced=1:tff=1"})
    s.width, s.height, s.pix_fmt = w, h, "yuv444p"
    ramp = 128 + 100 * np.sin(2 * np.pi * np.arange(h) / 24)
    img = np.broadcast_to(ramp.round().astype(np.uint8)[:, None, None], (h, w, 3))
    for _ in range(3):
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    assert 100 * (1 - np.cos(2 * np.pi / 24)) < media_video.COMB_THRESHOLD
    got = read_video_frames(path, frames=3)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert probe_video(path).interlaced == "top"
    assert np.array_equal(got.images, np.stack(decoded))
    grey = got.images[0][:, 0, 0].astype(float)  # [H]
    assert np.abs(grey[1:-1:2] - (grey[:-2:2] + grey[2::2]) / 2).max() > 2  # a line average moves
