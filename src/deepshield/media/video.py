"""Probe and decode video files with PyAV: bounds checked from the header, N evenly spaced frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from deepshield.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


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


@dataclass(frozen=True)
class VideoFrames:
    """Decoded frames: `images` uint8 [N,H,W,3] RGB (rotation applied), frame `indices`, `times` s."""

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


def _count_packets(path: Path, stream_index: int) -> int:
    """Video packets in the file (demux only, no decoding); a truncated file has fewer."""
    container = _open(path)
    try:
        stream = container.streams.video[stream_index]
        return sum(1 for p in container.demux(stream) if p.size > 0)
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: corrupt video data ({e}): re-encode or remove the file") from e
    finally:
        container.close()


def _rotation(path: Path, stream_index: int) -> int:
    """Rotation of the first frame's display matrix (counter-clockwise degrees)."""
    container = _open(path)
    try:
        frame = next(container.decode(video=stream_index), None)
        return round(frame.rotation) if frame is not None else 0
    except av.error.FFmpegError:
        return 0  # decoding errors are reported by the decoding pass
    finally:
        container.close()


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
    container = _open(path)
    try:
        stream = _video_stream(path, container)
        w, h = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        declared, index, has_audio = stream.frames, stream.index, bool(container.streams.audio)
        codec = stream.codec_context.name
    finally:
        container.close()
    if w * h <= 0:
        raise DataError(f"{path}: video frame size {w}x{h} is empty: re-encode or remove the file")
    if w * h > limits.max_frame_pixels:
        raise MediaLimitError(
            path,
            f"frames of {w}x{h} pixels exceed the limit of {limits.max_frame_pixels}",
            "downscale the video or raise max_frame_pixels",
        )
    _check_duration(path, duration, limits)
    _check_frames(path, declared or 0, limits, "declared")
    frames = _count_packets(path, index)
    _check_frames(path, frames, limits, "present")
    if frames == 0:
        raise DataError(f"{path}: the video stream holds no frames: re-encode or remove the file")
    if declared and frames < declared:
        raise DataError(
            f"{path}: truncated: the header declares {declared} frames, {frames} are present: "
            "copy the file again or re-encode what is left"
        )
    if not duration and fps:  # no duration in the header: from the frames present
        duration = frames / fps
        _check_duration(path, duration, limits)
    rotation = _rotation(path, index)
    return VideoInfo(path, w, h, frames, duration, fps, codec, rotation, has_audio, size)


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


def rotate_upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, multiple of 90) to [H,W,3]."""
    k = (round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def iter_video_frames(
    info: VideoInfo, indices: np.ndarray, limits: MediaLimits | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time s, uint8 [H,W,3] RGB upright) for the sorted `indices`, decoding in order."""
    limits = limits or MediaLimits()
    wanted, path = set(int(i) for i in indices), info.path
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = max(wanted, default=-1)
        for i, frame in enumerate(container.decode(stream)):
            if i > last:
                break
            if i not in wanted:
                continue
            if frame.width * frame.height > limits.max_frame_pixels:
                raise MediaLimitError(
                    path,
                    f"frame {i} is {frame.width}x{frame.height}, above the limit of "
                    f"{limits.max_frame_pixels} pixels",
                    "downscale the video",
                )
            rgb = frame.to_ndarray(format="rgb24")  # [H, W, 3]
            yield i, float(frame.time or 0.0), rotate_upright(rgb, info.rotation)
            wanted.discard(i)
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: corrupt video data ({e}): re-encode or remove the file") from e
    finally:
        container.close()
    if wanted:
        raise DataError(
            f"{path}: frames {sorted(wanted)[:5]} of {info.frames} could not be decoded "
            "(corrupt or truncated): re-encode or remove the file"
        )


def read_video_frames(
    path: str | Path,
    *,
    frames: int | None = 32,
    every: int | None = None,
    limits: MediaLimits | None = None,
) -> VideoFrames:
    """Probe, then decode `frames` evenly spaced frames (or every k-th) -> VideoFrames (uint8 RGB)."""
    limits = limits or MediaLimits()
    info = probe_video(path, limits)
    indices = sample_indices(info.frames, frames=frames, every=every)
    if len(indices) > limits.max_frames_out:
        raise DataError(
            f"{info.path}: {len(indices)} frames requested, above the limit of "
            f"{limits.max_frames_out} (max_frames_out): use fewer frames or a larger every=K"
        )
    decoded = list(iter_video_frames(info, indices, limits))
    return VideoFrames(
        info=info,
        images=np.stack([img for _, _, img in decoded]),  # [N, H, W, 3]
        indices=np.array([i for i, _, _ in decoded], dtype=np.int64),
        times=np.array([t for _, t, _ in decoded], dtype=np.float64),
    )
