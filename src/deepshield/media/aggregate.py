"""Face scores -> frame score -> video score, with frames without a face kept out (no_face)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepshield.errors import InputError


@dataclass(frozen=True)
class VideoScore:
    """P(fake) of a video: `score` = mean over frames with a face (None when undefined, `reason`)."""

    score: float | None
    max: float | None
    top_k_mean: float | None
    top_k: int
    frames: int  # frames sampled
    frames_with_face: int
    reason: str | None = None  # why `score` is undefined


def _checked(scores: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
        raise InputError(f"{what} must be finite P(fake) in [0, 1], got {a.tolist()[:5]}...")
    return a


def frame_score(face_scores: Sequence[float]) -> float | None:
    """Frame P(fake) = max over its faces (one fake face makes the frame fake); None = no_face."""
    a = _checked(face_scores, "face scores")
    return float(a.max()) if a.size else None


def video_score(frame_scores: Sequence[float | None], *, top_k: int = 5) -> VideoScore:
    """Mean, max and top-k mean of the frame scores, over the frames with a face (None = no_face)."""
    if top_k < 1:
        raise InputError(f"top_k={top_k} is invalid: give a positive number of frames")
    with_face = [s for s in frame_scores if s is not None]
    n = len(frame_scores)
    if not with_face:
        reason = f"no face in any of the {n} sampled frames" if n else "no frame was sampled"
        return VideoScore(None, None, None, top_k, n, 0, reason)
    a = _checked(with_face, "frame scores")
    k = min(top_k, a.size)
    top = np.sort(a)[::-1][:k]
    return VideoScore(float(a.mean()), float(a.max()), float(top.mean()), k, n, int(a.size))
