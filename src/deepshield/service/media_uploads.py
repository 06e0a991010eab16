"""Video and audio uploads: bounded by what their headers declare before anything is decoded.

Video (image-detector runs): the upload is spooled to a temporary file and probed by the media
reader (container header and a demux pass, no frame decoded before the byte, duration, frame
count and frame size limits pass); then `MediaRules.frames` evenly spaced frames are decoded,
faces found and cropped as the detector's training data were (`deepshield.media`), each face
scored by the run's detector. Frame score = max over its faces; video score = mean over the
frames with a face; a frame without one is `no_face` and gets no score.
Audio (speech runs): the duration its header declares is checked before decoding.

Decoding memory is reserved in the service's pixel budget: for a video first one frame at the
pixel limit (the probe decodes at most the first frame, for its rotation), then
FRAMES_HELD frames of its declared size while frames are decoded; for audio its declared samples.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepshield import media
from deepshield.errors import DataError
from deepshield.media.faces import FaceMode
from deepshield.service.scanner import EXPLAIN_SIDE, Scanner, image_tensor, resized
from deepshield.service.uploads import Upload, UploadError, check_type

# Frames of its size a video decode holds at once, counted in the budget (the frame being
# scored, its detection copy, the decoder's reference and threaded frames): the server's peak
# memory grew by ~7 RGB frames per frame size (9 in-process), benchmarks/serve_video.py.
FRAMES_HELD = 8


@dataclass(frozen=True)
class MediaRules:
    """What the service decodes of a video or audio upload, and the bounds it refuses past."""

    frames: int = 16  # frames sampled, evenly spaced over the video
    faces: FaceMode = "largest"
    max_video_s: float = 120.0
    max_video_frames: int = 7200  # frames in the stream (120 s at 60 fps)
    max_audio_s: float = 600.0

    def with_max_seconds(self, seconds: float | None) -> MediaRules:
        """These rules with `seconds` as the video and audio duration limit (and the frames in
        a video stream scaled with it, at 60 fps); unchanged for None."""
        if seconds is None:
            return self
        frames = max(1, round(seconds * 60))
        return replace(self, max_video_s=seconds, max_video_frames=frames, max_audio_s=seconds)


def video_limits(rules: MediaRules, max_bytes: int, max_pixels: int) -> media.MediaLimits:
    """The media reader's limits for one upload under the service's rules."""
    return media.MediaLimits(
        max_file_bytes=max_bytes,
        max_duration_s=rules.max_video_s,
        max_frame_pixels=max_pixels,
        max_frames_out=rules.frames,
        max_frames=rules.max_video_frames,
    )


def _name(up: Upload) -> str:
    return f"'{up.filename}'" if up.filename else "the upload"


def _answer(up: Upload, path: Path, e: DataError, limits: media.MediaLimits) -> UploadError:
    """A media reader's error as the HTTP answer: 413 over a limit, 422 undecodable; the
    temporary file's path replaced by the upload's name."""
    if isinstance(e, media.MediaLimitError):
        return UploadError(
            413,
            f"{_name(up)}: {e.detail}: send a shorter or smaller video (this server takes up to "
            f"{limits.max_duration_s:g} s, {limits.max_frames:,} frames and "
            f"{limits.max_frame_pixels:,} pixels a frame)",
        )
    text = " ".join(str(e).replace(str(path), _name(up)).split())
    return UploadError(422, text)


def spool(up: Upload, kind: str, folder: str) -> Path:
    """Write the upload's bytes to `folder`/upload.<kind> (the media reader opens files)."""
    path = Path(folder) / f"upload.{kind}"
    path.write_bytes(up.data)
    return path


def probe_upload(
    up: Upload, accepted: tuple[str, ...], folder: str, limits: media.MediaLimits
) -> tuple[Path, media.VideoInfo]:
    """(spooled path, header facts) of a video upload, its type and limits checked (4xx)."""
    kind = check_type(up, accepted)
    path = spool(up, kind, folder)
    try:
        return path, media.probe_video(path, limits)
    except DataError as e:
        raise _answer(up, path, e, limits) from e


def scan_video(
    scanner: Scanner,
    up: Upload,
    path: Path,
    limits: media.MediaLimits,
    rules: MediaRules,
    explain: bool,
) -> dict[str, Any]:
    """Score the sampled frames' faces -> {p_fake, p_fake_raw, label ('no_face' without a face
    in any frame), reason, video: {...}, frames: [{index, time, p_fake, faces: [{box, p_fake,
    p_fake_raw}]}]} (+ the top face's overlay and its frame index with `explain`)."""
    opts = media.CropOptions(size=max(scanner.input_size), mode=rules.faces)
    try:
        info, found = media.video_faces(path, opts, frames=rules.frames, limits=limits)
        rows, frame_p, frame_raw, best = _score_frames(scanner, found)
    except DataError as e:
        raise _answer(up, path, e, limits) from e
    agg, agg_raw = media.video_score(frame_p), media.video_score(frame_raw)
    label, why = ("no_face", None) if agg.score is None else scanner.label(agg.score)
    out = {
        "kind": "video",
        "p_fake": agg.score,
        "p_fake_raw": agg_raw.score,
        "calibrated": scanner.calibrated,
        "label": label,
        "unsure_reason": why,
        "reason": agg.reason,
        "threshold": scanner.threshold,
        "unsure_band": scanner.unsure_band,
        "threshold_warning": scanner.threshold_warning,
        "model": scanner.name,
        "run": scanner.run.path.name,
        "video": {
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
            "fps": info.fps,
            "frames_total": info.frames,
            "rotation": info.rotation,
            "codec": info.codec,
            "frames_sampled": agg.frames,
            "frames_with_face": agg.frames_with_face,
            "p_fake_max": agg.max,
            "p_fake_top_k": agg.top_k_mean,
            "top_k": agg.top_k,
        },
        "frames": rows,
    }
    if explain and best is not None:
        crop = Image.fromarray(best.crop)
        side = min(EXPLAIN_SIDE, crop.size[0])
        display = image_tensor(resized(crop, (side, side)))
        out |= scanner.explanation(scanner.pixels(crop), label, display)
        out["gradcam_frame"] = best.frame
    return out


@dataclass(frozen=True)
class _Top:
    """The face a video's overlay is drawn on: its P(fake), frame index and uint8 [S,S,3] crop."""

    p_fake: float
    frame: int
    crop: np.ndarray


def _score_frames(
    scanner: Scanner, found: Iterator[media.FrameFaces]
) -> tuple[list[dict], list[float | None], list[float | None], _Top | None]:
    """(frame rows, frame P(fake) or None, raw ones, the face with the highest P(fake))."""
    rows: list[dict] = []
    frame_p: list[float | None] = []
    frame_raw: list[float | None] = []
    best: _Top | None = None
    for ff in found:
        row: dict[str, Any] = {"index": ff.index, "time": round(ff.time, 3), "p_fake": None}
        rows.append(row | {"faces": []})
        if ff.no_face:
            frame_p.append(None)
            frame_raw.append(None)
            continue
        x = torch.cat([scanner.pixels(Image.fromarray(c)) for c in ff.crops])  # [F, 3, H, W]
        p, raw = scanner.probabilities(x)  # [F], [F]
        frame_p.append(media.frame_score(p))
        frame_raw.append(media.frame_score(raw))
        rows[-1]["p_fake"] = frame_p[-1]
        rows[-1]["faces"] = [
            {"box": [round(v, 1) for v in f.box], "p_fake": float(pk), "p_fake_raw": float(rk)}
            for f, pk, rk in zip(ff.faces, p, raw, strict=True)
        ]
        k = int(np.argmax(p))
        if best is None or p[k] > best.p_fake:
            best = _Top(float(p[k]), ff.index, ff.crops[k])
    return rows, frame_p, frame_raw, best


def declared_audio(up: Upload) -> tuple[float, int] | None:
    """(seconds, samples over all channels) a WAV/FLAC header declares; None when it cannot be
    read from the header (the decoder then judges the file)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(up.data))
    except Exception:  # libsndfile: not a header it reads; decoding reports the reason
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return info.frames / info.samplerate, info.frames * info.channels


def audio_cost(up: Upload, rules: MediaRules, unknown: int) -> int:
    """Samples (all channels) decoding the audio upload holds, from its header (`unknown` when
    the header says nothing); 413 when it declares more than rules.max_audio_s of audio."""
    found = declared_audio(up)
    if found is None:
        return unknown
    if found[0] > rules.max_audio_s:
        raise UploadError(
            413,
            f"{_name(up)} declares {found[0]:,.1f} s of audio, over this server's "
            f"{rules.max_audio_s:g} s limit: send a shorter clip",
        )
    return found[1]


def temporary_folder() -> tempfile.TemporaryDirectory:
    """A private folder for one video upload's spooled bytes, removed when the request ends."""
    return tempfile.TemporaryDirectory(prefix="deepshield-upload-")
