"""Media file -> face crops per frame, the unit a scan scores (no face = an empty frame, no_face).

Between full detections faces can be tracked (`CropOptions.detect_every`): on the other sampled
frames each face is searched for only around its previous box (`detect_faces_near`), and the
whole frame again when it is lost."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from deepshield.media.faces import Border, Face, FaceMode, face_crops
from deepshield.media.images import image_frame_count, read_media_image
from deepshield.media.video import (
    MediaLimits,
    VideoInfo,
    iter_video_frames,
    probe_video,
    sample_frames,
)


@dataclass(frozen=True)
class FrameFaces:
    """One frame: its `index` (0 for a photo), `time` s, faces and uint8 [S,S,3] crops."""

    index: int
    time: float
    faces: list[Face]
    crops: list[np.ndarray]

    @property
    def no_face(self) -> bool:
        """True when no face was found: the frame gets no score."""
        return not self.faces


@dataclass(frozen=True)
class CropOptions:
    """How faces are found and cropped: crop `size` px, mode, detection side, margin, border;
    `detect_every` k: the whole frame is searched on every k-th sampled frame of a video (and
    when a face is lost), faces are tracked in between (1: every frame searched)."""

    size: int = 256
    mode: FaceMode = "largest"
    max_side: int | None = 640
    scale: float = 1.3
    border: Border = "ffpp"
    align: bool = False
    detect_every: int = 1


def interlace_note(field: str | None) -> str | None:
    """What a scan row or service answer says of an interlaced video (`VideoInfo.interlaced`:
    the field kept), None for a progressive one or a photo."""
    if field is None:
        return None
    return f"interlaced: {field} field kept, the other interpolated where it combs"


def median_face_width(frames: list[FrameFaces]) -> float | None:
    """Median width (px, in the frame) of every face found in `frames`; None without a face:
    what a file-level decision compares with its calibration files' (`face_size_note`)."""
    widths = [f.box[2] - f.box[0] for ff in frames for f in ff.faces]
    return float(np.median(widths)) if widths else None


def frame_faces(
    index: int, time: float, img: np.ndarray, opts: CropOptions, previous: list[Face] | None = None
) -> FrameFaces:
    """Frame `index` at `time` s (uint8 [H,W,3] RGB) -> its faces and crops as `opts` says
    (tracked from `previous` faces when given)."""
    faces, crops = face_crops(
        img,
        opts.size,
        mode=opts.mode,
        max_side=opts.max_side,
        scale=opts.scale,
        border=opts.border,
        align=opts.align,
        previous=previous,
    )
    return FrameFaces(index, time, faces, crops)


PHOTO_RETRY_PIXELS = 16_000_000  # a photo without a face at max_side is searched again at this
FRAME_RETRY_PIXELS = 1920 * 1080  # a video frame's: 1080p at full size, 4K at half its side


def faces_or_larger(
    index: int,
    time: float,
    img: np.ndarray,
    opts: CropOptions,
    pixels: int,
    previous: list[Face] | None = None,
) -> FrameFaces:
    """`frame_faces`, and when no face is found (tracked or at `opts.max_side`) in a larger
    frame, once more at its full size, or downscaled to `pixels`: dlib's HOG finds no face under
    about 50-60 px, so at 640 px a face under about 55 x (longer side / 640) px is lost."""
    found = frame_faces(index, time, img, opts, previous)
    h, w = img.shape[:2]
    if found.faces or opts.max_side is None or max(h, w) <= opts.max_side:
        return found
    side = math.floor(max(h, w) * min(1.0, math.sqrt(pixels / (h * w))))
    if side <= opts.max_side:
        return found
    return frame_faces(index, time, img, replace(opts, max_side=side))


def photo_faces(img: np.ndarray, opts: CropOptions) -> FrameFaces:
    """A photo's faces (uint8 [H,W,3] RGB): searched as a video frame is (at `opts.max_side`,
    then at up to PHOTO_RETRY_PIXELS when none is found: a 12 MP phone photo loses faces under
    about 350 px wide at 640 px, and a panorama almost every face)."""
    return faces_or_larger(0, 0.0, img, opts, PHOTO_RETRY_PIXELS)


def track_faces(
    stream: Iterator[tuple[int, float, np.ndarray]], opts: CropOptions
) -> Iterator[tuple[FrameFaces, np.ndarray]]:
    """(faces of the frame, the frame) for each decoded frame, tracking between detections; a
    frame whose whole-frame search at `opts.max_side` finds no face is searched again at up to
    FRAME_RETRY_PIXELS (`faces_or_larger`)."""
    previous: list[Face] = []
    for k, (i, t, img) in enumerate(stream):
        track = opts.detect_every > 1 and k % opts.detect_every != 0
        ff = faces_or_larger(i, t, img, opts, FRAME_RETRY_PIXELS, previous if track else None)
        previous = ff.faces
        yield ff, img


def image_faces(
    path: str | Path, opts: CropOptions | None = None, limits: MediaLimits | None = None
) -> FrameFaces:
    """Faces and crops of one photo (header-checked before decoding)."""
    return photo_faces(read_media_image(path, limits), opts or CropOptions())


def video_faces(
    path: str | Path,
    opts: CropOptions | None = None,
    *,
    frames: int | None = 32,
    every: int | None = None,
    limits: MediaLimits | None = None,
) -> tuple[VideoInfo, Iterator[FrameFaces]]:
    """Probe (bounds enforced now), then lazily decode, detect and crop the sampled frames."""
    limits, opts = limits or MediaLimits(), opts or CropOptions()
    info = probe_video(path, limits)
    indices = sample_frames(info, frames=frames, every=every)
    stream = iter_video_frames(info, indices, limits)
    return info, (ff for ff, _ in track_faces(stream, opts))


@dataclass(frozen=True)
class FileFaces:
    """A photo's or video's sampled frames with their faces, each frame also as a `view`
    (uint8 RGB, longer side at most the `view_side` asked for) to draw evidence on; `width` x
    `height` px is the upright full frame the boxes refer to; `interlaced`: the field kept of
    an interlaced video (VideoInfo.interlaced); `photo_frames`: the frames an animated photo
    (or the pages a TIFF) holds, of which the first alone is read; 1 otherwise."""

    frames: list[FrameFaces]
    views: list[np.ndarray]
    width: int
    height: int
    interlaced: str | None = None
    photo_frames: int = 1


def _view(img: np.ndarray, side: int) -> np.ndarray:
    """uint8 [H,W,3] downscaled (bilinear) so its longer side is at most `side`."""
    h, w = img.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))


def file_faces(
    path: str | Path,
    kind: str,
    opts: CropOptions,
    *,
    frames: int = 32,
    view_side: int = 480,
    limits: MediaLimits | None = None,
    part: tuple[int, int] = (0, 1),
) -> FileFaces:
    """Every sampled frame of a photo (`kind` "image") or video ("video") with its faces and
    crops, decoded, detected and cropped in this process (what a scan worker runs). `part`
    (i, n): only the i-th of n contiguous runs of a video's sampled frames (n workers share
    one long video; `join_parts` puts them back in order)."""
    limits = limits or MediaLimits()
    if kind == "image":
        img = read_media_image(path, limits)
        photo = photo_faces(img, opts)
        view, frames_held = _view(img, view_side), image_frame_count(path)
        return FileFaces([photo], [view], img.shape[1], img.shape[0], photo_frames=frames_held)
    info = probe_video(path, limits)
    indices = np.array_split(sample_frames(info, frames=frames), part[1])[part[0]]
    stream = iter_video_frames(info, indices, limits)
    out, views, size = [], [], (0, 0)
    for ff, img in track_faces(stream, opts):
        out.append(ff)
        views.append(_view(img, view_side))
        size = (img.shape[1], img.shape[0])
    return FileFaces(out, views, *size, info.interlaced)


def join_parts(parts: list[FileFaces]) -> FileFaces:
    """The FileFaces of a video from those of its `part`s, in order (a part may be empty)."""
    sized = next((p for p in parts if p.frames), parts[0])
    frames = [ff for p in parts for ff in p.frames]
    views = [v for p in parts for v in p.views]
    return FileFaces(frames, views, sized.width, sized.height, sized.interlaced)
