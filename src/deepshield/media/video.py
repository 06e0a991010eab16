"""Probe and decode video files with PyAV: bounds checked from the header, N frames evenly
spaced in time, each reached by seeking to its keyframe when that skips decoding."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from deepshield.errors import DataError

VIDEO_EXTENSIONS = (
    *(".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mkv", ".webm", ".avi"),
    *(".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".vob", ".wmv", ".asf", ".flv"),
)


ASPECT_TOLERANCE = Fraction(1, 100)  # pixel aspects within 1 % of square are taken as square
EMPTY_FILE = "the file is empty (0 bytes): copy it again from its source"


@dataclass(frozen=True)
class MediaLimits:
    """Bounds a file must meet before it is decoded (a hostile or huge file is refused early)."""

    max_file_bytes: int = 4 * 1024**3
    max_duration_s: float = 3600.0
    max_frame_pixels: int = 8192 * 4320  # 8K video
    max_image_pixels: int = 100_000_000  # a 20000x20000 image (400 Mpx) is refused
    max_frames_out: int = 1024  # frames one call may return ([N,H,W,3] uint8 in memory)
    max_frames: int = 1_000_000  # frames in the stream (decoding reaches the last one sampled)


class MediaLimitError(DataError):
    """A file over one of its MediaLimits: `detail` says which bound and by how much."""

    def __init__(self, path: Path, detail: str, fix: str) -> None:
        super().__init__(f"{path}: {detail}: {fix}")
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says, read without decoding: sizes in pixels, duration in s."""

    path: Path
    width: int
    height: int
    frames: int  # frames present (video packets counted when the header has no count)
    duration_s: float
    fps: float
    codec: str
    rotation: int  # counter-clockwise degrees from the display matrix (0 when absent)
    has_audio: bool
    file_bytes: int
    # presentation times of the frames (int64 [frames], stream time base, sorted) and of the
    # keyframes among them; None when a packet has no or a repeated timestamp
    pts: np.ndarray | None = field(default=None, compare=False, repr=False)
    keyframes: np.ndarray | None = field(default=None, compare=False, repr=False)
    keyframe_bytes: np.ndarray | None = field(default=None, compare=False, repr=False)  # sizes
    mirrored: bool = False  # the display matrix flips left-right after rotating
    pixel_aspect: Fraction = Fraction(1)  # width of a stored pixel on screen / its height
    # the field kept of an interlaced first frame ("top" or "bottom": the one shown first);
    # None when it is progressive
    interlaced: str | None = None


@dataclass(frozen=True)
class VideoFrames:
    """Decoded frames: `images` uint8 [N,H,W,3] RGB (display matrix applied), frame `indices`,
    `times` s."""

    info: VideoInfo
    images: np.ndarray
    indices: np.ndarray  # int64 [N], 0-based decode order
    times: np.ndarray  # float64 [N], presentation time in seconds


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found: check the path") from e
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable video container ({e}): re-encode it as H.264 MP4 or remove it"
        ) from e


def _video_stream(path: Path, container: av.container.InputContainer) -> av.video.VideoStream:
    if not container.streams.video:
        kind = "audio only" if container.streams.audio else "no streams"
        raise DataError(f"{path}: no video stream ({kind}): give a video file, or scan it as audio")
    stream = container.streams.video[0]
    name = stream.codec_context.name if stream.codec_context is not None else None
    if not name or name not in av.codecs_available:
        raise DataError(
            f"{path}: video codec {name or 'unknown'} cannot be decoded by this FFmpeg build: "
            "re-encode it as H.264 (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
        )
    return stream


@dataclass(frozen=True)
class _Packets:
    """The first video stream's packets, by demuxing only: `stored` (a truncated file has fewer
    than its header declares), `frames` shown (an edit list, e.g. a phone's trim, flags the
    others to be discarded: decoders drop them, as they drop those read before the first
    keyframe, e.g. of a broadcast capture cut mid-GOP), their sorted `pts` and the keyframes' `keys`
    (discarded ones included: a seek may land there) with their sizes in bytes (a seek must
    land on a whole one); no pts when one is missing or repeated."""

    stored: int
    frames: int
    pts: np.ndarray | None
    keys: np.ndarray | None
    key_bytes: np.ndarray | None


def _packet_index(path: Path) -> _Packets:
    """Demux the first video stream without decoding -> _Packets."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stored, stamps, keys, lead = 0, [], {}, 0
        for p in container.demux(stream):
            if p.size > 0:
                stored += 1
                if p.is_keyframe:
                    lead = lead if keys else len(stamps)  # frames read before the first one
                    keys[p.pts] = p.size
                if not p.is_discard:
                    stamps.append(p.pts)
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: corrupt video data ({e}): re-encode or remove the file") from e
    finally:
        container.close()
    stamps = stamps[lead:]  # a stream cut mid-GOP: its frames before a keyframe cannot decode
    pts = np.sort(np.array(stamps, dtype=np.int64)) if None not in stamps else None
    if None in keys or pts is None or (len(pts) > 1 and not (np.diff(pts) > 0).all()):
        return _Packets(stored, len(stamps), None, None, None)
    key_pts = np.array(sorted(keys), dtype=np.int64)
    sizes = np.array([keys[k] for k in key_pts.tolist()], dtype=np.int64)
    return _Packets(stored, len(stamps), pts, key_pts, sizes)


FIELD_ORDER_BB = 3  # FFmpeg's AV_FIELD_BB: bottom field coded and shown first


def _first_frame(path: Path) -> tuple[int, bool, str | None]:
    """(rotation, mirrored, field kept or None) of the first video frame: see _orientation;
    the field is the one shown first when the frame is interlaced."""
    container = _open(path)
    try:
        frame = next(container.decode(video=0), None)
        matrix = frame.side_data.get("DISPLAYMATRIX") if frame is not None else None
        raw = bytes(matrix) if matrix is not None else b""
        order = container.streams.video[0].codec_context.field_order
        field = None
        if frame is not None and frame.interlaced_frame:
            field = "bottom" if order == FIELD_ORDER_BB else "top"
    except av.error.FFmpegError:
        return 0, False, None  # decoding errors are reported by the decoding pass
    finally:
        container.close()
    return (*_orientation(raw), field)


def _orientation(raw: bytes) -> tuple[int, bool]:
    """(counter-clockwise degrees, a multiple of 90; mirrored) of a display matrix's 36 bytes
    (none: upright): mirrored means flipped left-right after the rotation (FFmpeg's hflip)."""
    if len(raw) != 36:
        return 0, False
    m = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0  # [9], 16.16 fixed point
    a, b, c, d = m[0], m[1], m[3], m[4]  # x' = a x + c y, y' = b x + d y
    mirrored = a * d - b * c < 0
    if mirrored:  # FFmpeg's flip negates the first column: undo it to read the rotation
        a, c = -a, -c
    return round(np.degrees(np.arctan2(c, a)) / 90.0) * 90 % 360, bool(mirrored)


def _check_duration(path: Path, duration: float, limits: MediaLimits) -> None:
    if duration > limits.max_duration_s:
        raise MediaLimitError(
            path,
            f"duration {duration:.1f} s exceeds the limit of {limits.max_duration_s:.0f} s",
            "cut the video or raise max_duration_s",
        )


def _check_frames(path: Path, frames: int, limits: MediaLimits, how: str) -> None:
    if frames > limits.max_frames:
        raise MediaLimitError(
            path,
            f"{frames} frames ({how}) exceed the limit of {limits.max_frames}",
            "cut the video or raise max_frames",
        )


def probe_video(path: str | Path, limits: MediaLimits | None = None) -> VideoInfo:
    """Header facts of a video, with `limits` enforced; DataError names the file and the fix."""
    path, limits = Path(path), limits or MediaLimits()
    if not path.is_file():
        raise DataError(f"{path}: file not found: check the path")
    size = os.path.getsize(path)
    if size > limits.max_file_bytes:
        raise MediaLimitError(
            path,
            f"{size} bytes exceeds the limit of {limits.max_file_bytes}",
            "cut the video or raise max_file_bytes",
        )
    if size == 0:
        raise DataError(f"{path}: {EMPTY_FILE}")
    container = _open(path)
    try:
        stream = _video_stream(path, container)
        w, h = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        declared, has_audio = stream.frames, bool(container.streams.audio)
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        codec = stream.codec_context.name
    finally:
        container.close()
    if w * h <= 0:
        raise DataError(f"{path}: video frame size {w}x{h} is empty: re-encode or remove the file")
    aspect = Fraction(sar) if sar and sar > 0 else Fraction(1)  # absent or 0:0 -> square
    if abs(aspect - 1) <= ASPECT_TOLERANCE:  # e.g. 1280:1281: one pixel in 854, not resampled
        aspect = Fraction(1)
    shown = max(1, round(w * aspect))
    if max(w, shown) * h > limits.max_frame_pixels:
        pixels = f"{w}x{h}" if shown == w else f"{w}x{h} ({shown}x{h} shown, pixel aspect {aspect})"
        raise MediaLimitError(
            path,
            f"frames of {pixels} pixels exceed the limit of {limits.max_frame_pixels}",
            "downscale the video or raise max_frame_pixels",
        )
    _check_duration(path, duration, limits)
    _check_frames(path, declared or 0, limits, "declared")
    packets = _packet_index(path)
    _check_frames(path, packets.stored, limits, "present")
    frames = packets.frames
    if frames == 0:
        raise DataError(f"{path}: the video stream holds no frames: re-encode or remove the file")
    if declared and packets.stored < declared:
        raise DataError(
            f"{path}: truncated: the header declares {declared} frames, {packets.stored} are "
            "present: copy the file again or re-encode what is left"
        )
    if not duration and fps:  # no duration in the header: from the frames present
        duration = frames / fps
        _check_duration(path, duration, limits)
    rotation, mirrored, field = _first_frame(path)
    return VideoInfo(
        path,
        w,
        h,
        frames,
        duration,
        fps,
        codec,
        rotation,
        has_audio,
        size,
        packets.pts,
        packets.keys,
        packets.key_bytes,
        mirrored,
        aspect,
        field,
    )


def sample_indices(
    n_frames: int, *, frames: int | None = 32, every: int | None = None
) -> np.ndarray:
    """Frame indices: `frames` evenly spaced over [0, n_frames-1] (all when fewer), or every k-th."""
    if (frames is None) == (every is None):
        raise DataError("give exactly one of frames=N or every=K to sample a video")
    if every is not None:
        if every < 1:
            raise DataError(f"every={every} is invalid: give a positive step (1 = every frame)")
        return np.arange(0, n_frames, every, dtype=np.int64)
    if frames < 1:
        raise DataError(f"frames={frames} is invalid: give a positive number of frames")
    if frames >= n_frames:
        return np.arange(n_frames, dtype=np.int64)
    return np.linspace(0, n_frames - 1, frames).round().astype(np.int64)


def _constant_rate(pts: np.ndarray) -> bool:
    """True when every frame lies within one tick or 1 % of an interval of the straight line
    from the first to the last frame (a constant frame rate, up to time-base rounding)."""
    if len(pts) < 3:
        return True
    line = np.linspace(pts[0], pts[-1], len(pts))
    step = (pts[-1] - pts[0]) / (len(pts) - 1)
    return bool(np.abs(pts - line).max() <= max(1.0, 0.01 * step))


def sample_frames(
    info: VideoInfo, *, frames: int | None = 32, every: int | None = None
) -> np.ndarray:
    """Frame indices of a probed video: the frames nearest `frames` evenly spaced times from the
    first to the last frame (evenly spaced indices at a constant frame rate), or every k-th."""
    indices = sample_indices(info.frames, frames=frames, every=every)
    pts = info.pts
    if every is not None or pts is None or len(indices) == info.frames or _constant_rate(pts):
        return indices
    times = np.linspace(pts[0], pts[-1], frames)  # [frames] in stream ticks
    after = np.clip(np.searchsorted(pts, times), 1, len(pts) - 1)
    nearer = (times - pts[after - 1]) <= (pts[after] - times)
    return np.unique(np.where(nearer, after - 1, after)).astype(np.int64)


def rotate_upright(img: np.ndarray, rotation: int, mirrored: bool = False) -> np.ndarray:
    """Show [H,W,3] as its display matrix says: rotate `rotation` degrees counter-clockwise (a
    multiple of 90), then flip left-right when `mirrored`."""
    k = (round(rotation / 90.0)) % 4
    out = np.rot90(img, k=k) if k else img
    if mirrored:
        out = out[:, ::-1]
    return np.ascontiguousarray(out) if k or mirrored else img


COMB_THRESHOLD = 9  # 8-bit levels a lost line must exceed both neighbours by, same side


def _uncomb_rows(rows: np.ndarray, keep: int, threshold: int) -> np.ndarray:
    """[H, ...] lines with those of parity `keep` kept; a sample of the other lines that lies
    more than `threshold` above both its vertical neighbours or below both (combing) becomes
    their rounded mean, the rest is kept (so is a top or bottom line: one neighbour cannot
    tell combing from an edge)."""
    out, h = rows.copy(), len(rows)
    first = 1 if keep == 0 else 2  # the first line of the other field with two neighbours
    wide = np.int16 if rows.dtype == np.uint8 else np.int32
    a, x, b = (rows[first + d : h - 1 + d : 2].astype(wide) for d in (-1, 0, 1))
    combed = (x > np.maximum(a, b) + threshold) | (x < np.minimum(a, b) - threshold)
    out[first : h - 1 : 2] = np.where(combed, (a + b + 1) >> 1, x)
    return out


def deinterlace(frame: av.VideoFrame, field: str) -> av.VideoFrame:
    """A copy of an interlaced frame with its `field` ("top": even lines, or "bottom") kept and
    the other field's samples interpolated where they comb (COMB_THRESHOLD), in every plane (an
    interlaced 4:2:0 frame's chroma lines alternate fields too); the decoder's frame is kept."""
    keep = 0 if field == "top" else 1
    bits = max(c.bits for c in frame.format.components)
    threshold = COMB_THRESHOLD << max(0, bits - 8)
    out = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for src, dst in zip(frame.planes, out.planes, strict=True):
        rows = np.frombuffer(memoryview(src), dtype=np.uint8).reshape(src.height, src.line_size)
        rows = rows[:, : min(src.line_size, dst.line_size)]
        if bits > 8:
            rows = rows.view("<u2")
        done = np.zeros((dst.height, dst.line_size), dtype=np.uint8)
        done[:, : rows.nbytes // dst.height] = _uncomb_rows(rows, keep, threshold).view(np.uint8)
        dst.update(done.tobytes())
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    return out


def _upright_rgb(
    info: VideoInfo, i: int, frame: av.VideoFrame, limits: MediaLimits
) -> tuple[int, float, np.ndarray]:
    """(index, time s, uint8 [H,W,3] RGB upright) of a decoded frame, its size checked; an
    interlaced frame is deinterlaced (`deinterlace`), a progressive one converted as it is."""
    shown = max(1, round(frame.width * info.pixel_aspect))  # the width it is shown at
    if max(frame.width, shown) * frame.height > limits.max_frame_pixels:
        raise MediaLimitError(
            info.path,
            f"frame {i} is {frame.width}x{frame.height} ({shown} shown), above the limit of "
            f"{limits.max_frame_pixels} pixels",
            "downscale the video",
        )
    t = float(frame.time or 0.0)
    if frame.interlaced_frame:  # two fields 1/50 or 1/60 s apart: one kept, as a whole frame
        frame = deinterlace(frame, info.interlaced or "top")
    if info.pixel_aspect == 1:
        rgb = frame.to_ndarray(format="rgb24")  # [H, W, 3]
    else:  # anamorphic (DV, DVD, broadcast): resampled to square pixels, as it is shown
        how = "AREA" if shown < frame.width else "BICUBIC"
        rgb = frame.to_ndarray(format="rgb24", width=shown, height=frame.height, interpolation=how)
    rgb = np.ascontiguousarray(rgb)  # PyAV 18.1.1 returns a view with the decoder's padded rows
    return i, t, rotate_upright(rgb, info.rotation, info.mirrored)


SEEK_RETRIES = 2  # earlier keyframes asked for when a seek lands past the frame wanted


def _decoded(packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
    """The frames decoded from `packets` (the last, empty one flushes the decoder)."""
    return (frame for packet in packets for frame in packet.decode())


def _landed(packet: av.Packet, info: VideoInfo) -> bool:
    """True when the keyframe a seek reached first is a whole one of the index (same pts and
    size): a demuxer that lands inside one (MPEG-PS) gives a broken frame with the right pts."""
    keys, sizes = info.keyframes, info.keyframe_bytes
    j = int(np.searchsorted(keys, packet.pts)) if packet.pts is not None else len(keys)
    return j < len(keys) and keys[j] == packet.pts and sizes[j] == packet.size


def _frames_from(
    container: av.container.InputContainer, info: VideoInfo, k: int, target: int, fresh: bool
) -> Iterator[av.VideoFrame] | None:
    """The decoder's frames from keyframe `k` (-1: the first frame) on, the first of them at
    or before `target` pts; an earlier keyframe is asked for when the demuxer lands past it
    (MPEG-TS lands after the keyframe asked for) or inside one, at most SEEK_RETRIES times;
    None when every try does. `fresh`: nothing decoded yet."""
    stream, keys = container.streams.video[0], info.keyframes
    for attempt, kk in enumerate(range(k, k - 1 - SEEK_RETRIES, -1)):
        if kk < 0 and attempt > 0:
            return None
        sought = attempt > 0 or not fresh or (kk >= 0 and keys[kk] > keys[0])
        if sought:
            container.seek(int(keys[kk]), stream=stream)  # the keyframe at or before it
        packets = container.demux(stream)
        if sought:  # decoding starts at the first keyframe read (MPEG-TS lands just after one)
            first = next((p for p in packets if p.size > 0 and p.is_keyframe), None)
            if first is None or not _landed(first, info):
                continue
            packets = itertools.chain([first], packets)
        frames = _decoded(packets)
        head = next(frames, None)
        if head is not None and head.pts is not None and head.pts <= target:
            return itertools.chain([head], frames)
    return None


def _decode_seeking(
    info: VideoInfo, wanted: list[int], limits: MediaLimits
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield the `wanted` frames (sorted indices into info.pts), seeking to a frame's keyframe
    whenever it lies past the last frame decoded; stops early (the caller decodes the rest in
    order) when a frame is not where the index says or the file cannot seek."""
    pts, keys = info.pts, info.keyframes
    container = _open(info.path)
    try:
        container.streams.video[0].thread_type = "AUTO"
        decoded, last = None, None  # the decoder's frames, the newest one's pts
        for i in wanted:
            target = int(pts[i])
            k = int(np.searchsorted(keys, target, side="right")) - 1
            if decoded is None or (k >= 0 and last is not None and keys[k] > last):
                decoded, last = _frames_from(container, info, k, target, decoded is None), None
                if decoded is None:
                    return
            for frame in decoded:
                last = frame.pts
                if last is None or last > target:
                    return
                if last == target:
                    yield _upright_rgb(info, i, frame, limits)
                    break
            else:
                return
    except av.error.FFmpegError:
        return  # decoding in order reports what is wrong with the file
    finally:
        container.close()


def _decode_in_order(
    info: VideoInfo, wanted: list[int], limits: MediaLimits
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield the `wanted` frames (sorted decode-order indices) decoding from the first frame."""
    path, left, last = info.path, set(wanted), max(wanted)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(_decoded(container.demux(stream))):
            if i > last:
                break
            if i in left:
                yield _upright_rgb(info, i, frame, limits)
                left.discard(i)
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: corrupt video data ({e}): re-encode or remove the file") from e
    finally:
        container.close()
    if left:
        raise DataError(
            f"{path}: frames {sorted(left)[:5]} of {info.frames} could not be decoded "
            "(corrupt or truncated): re-encode or remove the file"
        )


def iter_video_frames(
    info: VideoInfo, indices: np.ndarray, limits: MediaLimits | None = None, *, seek: bool = True
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time s, uint8 [H,W,3] RGB upright) for the sorted `indices`: seeking to each
    frame's keyframe when the file has timestamps (and `seek`), else decoding from the start."""
    limits = limits or MediaLimits()
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return
    if seek and info.pts is not None and info.keyframes is not None and len(info.keyframes):
        done = 0
        for item in _decode_seeking(info, wanted, limits):
            done += 1
            yield item
        wanted = wanted[done:]
    if wanted:
        yield from _decode_in_order(info, wanted, limits)


def read_video_frames(
    path: str | Path,
    *,
    frames: int | None = 32,
    every: int | None = None,
    limits: MediaLimits | None = None,
    seek: bool = True,
) -> VideoFrames:
    """Probe, then decode `frames` frames evenly spaced in time (or every k-th) -> VideoFrames."""
    limits = limits or MediaLimits()
    info = probe_video(path, limits)
    indices = sample_frames(info, frames=frames, every=every)
    if len(indices) > limits.max_frames_out:
        raise DataError(
            f"{info.path}: {len(indices)} frames requested, above the limit of "
            f"{limits.max_frames_out} (max_frames_out): use fewer frames or a larger every=K"
        )
    decoded = list(iter_video_frames(info, indices, limits, seek=seek))
    return VideoFrames(
        info=info,
        images=np.stack([img for _, _, img in decoded]),  # [N, H, W, 3]
        indices=np.array([i for i, _, _ in decoded], dtype=np.int64),
        times=np.array([t for _, t, _ in decoded], dtype=np.float64),
    )
