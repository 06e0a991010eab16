"""Media file -> face crops per frame, the unit a scan scores (no face = an empty frame, no_face)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepshield.media.faces import Border, Face, FaceMode, face_crops
from deepshield.media.images import read_media_image
from deepshield.media.video import (
    MediaLimits,
    VideoInfo,
    iter_video_frames,
    probe_video,
    sample_indices,
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
    """How faces are found and cropped: crop `size` px, mode, detection side, margin, border."""

    size: int = 256
    mode: FaceMode = "largest"
    max_side: int | None = 640
    scale: float = 1.3
    border: Border = "ffpp"
    align: bool = False


def _frame_faces(index: int, time: float, img: np.ndarray, opts: CropOptions) -> FrameFaces:
    faces, crops = face_crops(
        img,
        opts.size,
        mode=opts.mode,
        max_side=opts.max_side,
        scale=opts.scale,
        border=opts.border,
        align=opts.align,
    )
    return FrameFaces(index, time, faces, crops)


def image_faces(
    path: str | Path, opts: CropOptions | None = None, limits: MediaLimits | None = None
) -> FrameFaces:
    """Faces and crops of one photo (header-checked before decoding)."""
    return _frame_faces(0, 0.0, read_media_image(path, limits), opts or CropOptions())


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
    indices = sample_indices(info.frames, frames=frames, every=every)
    stream = iter_video_frames(info, indices, limits)
    return info, (_frame_faces(i, t, img, opts) for i, t, img in stream)
