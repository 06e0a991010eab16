"""A whole audio track (an audio file, or a video's sound) scored by a speech detector in windows
of its clip length: the one rule of `deepshield scan` and the scan service (an audio upload,
and a video's sound).

The track is read by the one audio reader at TRACK_RATE (16 kHz) and cut into windows of the
model's clip (its length at the model's rate, converted to TRACK_RATE), at most `max_windows` of
them evenly spaced; the last window, when shorter than half a clip, is left out unless it is the
only one, and a short one is tiled (`model_input`). Track P(fake) = mean over the windows (max
beside it, `media.video_score`). A degenerate track (`media.degenerate`: silence, clipping, far
too short, 8-bit) gets no score, only the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from deepshield.media.aggregate import VideoScore, video_score
from deepshield.media.audio import MAX_SECONDS, AudioRecord, model_input, read_audio
from deepshield.media.degenerate import degenerate_reason

TRACK_RATE = 16000  # a track is read at this rate, then resampled per window to the model's
# model input samples per call of `scores`: 4 AASIST clips (64,600 samples each); the official
# AASIST-L's forward holds about 0.25 GB per clip on a CPU, so 32 windows in one call (scan's
# default --frames) peaked at 8.2 GB
BATCH_SAMPLES = 4 * 64600

# clip inputs [W, T] -> (calibrated P(fake) [W], raw P(fake) [W]), float64 in [0, 1]
Scores = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TrackScore:
    """A track's P(fake): `p` over the calibrated window scores (its `reason`: the note below, or
    why there is no score), `raw` over the raw ones, and the reader's record (of the one window's
    clip, or of the whole track when several windows were scored); `inputs` the windows' model
    inputs [W, window] (None for a degenerate track), `window_p` / `window_raw` their
    calibrated / raw P(fake) [W] and `spans` their (start, end) in the track, seconds."""

    p: VideoScore
    raw: VideoScore
    record: AudioRecord
    inputs: torch.Tensor | None = None
    window_p: tuple[float, ...] = ()
    window_raw: tuple[float, ...] = ()
    spans: tuple[tuple[float, float], ...] = ()

    @property
    def note(self) -> str:
        """What was read and scored (or why nothing was), one line."""
        return self.p.reason or ""

    def top(self) -> int | None:
        """Index of the window with the highest P(fake) (the first of ties); None without one."""
        return int(np.argmax(self.window_p)) if self.window_p else None


@dataclass(frozen=True)
class TrackHeader:
    """What a container's first audio stream declares, read without decoding."""

    seconds: float  # 0 when the header declares no duration
    rate: int
    channels: int


def window_starts(n: int, step: int, max_windows: int) -> np.ndarray:
    """Start samples [W] of the windows of `step` samples scored in a track of `n` samples."""
    starts = np.arange(0, max(n - step // 2, 1), step)
    if len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return starts


def score_track(
    source: str | Path | bytes,
    *,
    window: int,
    model_rate: int,
    max_windows: int,
    scores: Scores,
    keep_seconds: float | None = None,
    max_seconds: float = MAX_SECONDS,
    name: str | None = None,
) -> TrackScore:
    """Score the first audio track of `source` (a path, or bytes called `name`) with a model
    taking clips of `window` samples at `model_rate`; `keep_seconds`: at most that much of the
    track is held and scored (None: all); decoding stops past `max_seconds`. Raises the reader's
    `AudioError` (`NoAudioTrackError` for a container without sound, `AudioTooLongError` past
    `max_seconds`)."""
    wave, record = read_audio(
        source, name=name, rate=TRACK_RATE, keep_seconds=keep_seconds, max_seconds=max_seconds
    )
    step = max(1, round(window * TRACK_RATE / model_rate))  # samples per window at TRACK_RATE
    record = replace(record, kept_samples=min(len(wave), step), clip_samples=step)
    reason = degenerate_reason(record)
    if reason:
        none = VideoScore(None, None, None, 1, 0, 0, f"{reason}: nothing to judge")
        return TrackScore(none, none, record)
    starts = window_starts(len(wave), step, max_windows)
    x = torch.cat(
        [model_input(wave[s : s + step], TRACK_RATE, model_rate, window) for s in starts]
    )  # [W, window]
    p, raw = _scores_in_batches(scores, x)
    spans = tuple(
        (int(s) / TRACK_RATE, min(int(s) + step, len(wave)) / TRACK_RATE) for s in starts
    )  # what each window holds of the track, before tiling
    windows = {
        "inputs": x,
        "window_p": tuple(p.tolist()),
        "window_raw": tuple(raw.tolist()),
        "spans": spans,
    }
    if len(starts) == 1:
        return TrackScore(
            replace(video_score(p.tolist()), reason=record.summary()),
            video_score(raw.tolist()),
            record,
            **windows,
        )
    # several windows: the whole track's record, and what the windows covered (not the
    # one-clip 'cut after' phrase, which would mislead)
    whole = replace(record, kept_samples=0, clip_samples=0)
    covered = sum(b - a for a, b in spans)  # source seconds scored
    note = (
        f"{whole.summary()}; scored {len(starts)} windows of {step / TRACK_RATE:.2f} s "
        f"({covered:.2f} s of {record.source_seconds:.2f} s)"
    )
    return TrackScore(
        replace(video_score(p.tolist()), reason=note),
        video_score(raw.tolist()),
        whole,
        **windows,
    )


def _scores_in_batches(scores: Scores, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`scores` of windows x [W, window], called on at most BATCH_SAMPLES samples at a time
    (at least one window) -> (calibrated [W], raw [W])."""
    per_call = max(1, BATCH_SAMPLES // x.shape[1])
    parts = [scores(x[i : i + per_call]) for i in range(0, len(x), per_call)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([r for _, r in parts])


def track_header(path: str | Path | BinaryIO) -> tuple[bool, TrackHeader | None]:
    """(whether the container at `path` (or in a file object) holds a video stream, its first
    audio stream's header or None without one); (False, None) when FFmpeg cannot open it (its
    reader then says why)."""
    import av

    try:
        with av.open(path if hasattr(path, "read") else str(path)) as box:
            video = bool(box.streams.video)
            if not box.streams.audio:
                return video, None
            a = box.streams.audio[0]
            seconds = float(a.duration * a.time_base) if a.duration and a.time_base else 0.0
            rate = int(a.rate or a.codec_context.sample_rate or 0)
            return video, TrackHeader(seconds, rate, int(a.codec_context.channels or 1))
    except (av.error.FFmpegError, OSError, ValueError):
        return False, None
