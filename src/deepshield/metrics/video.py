"""Frame- and video-level detector metrics from per-crop scores of face crops taken from videos.

Frame score = max over the crops (faces) of one frame; video score = mean over its frames with
a face (as `deepshield.media.aggregate`); a frame or video without a crop has no score at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deepshield.errors import InputError
from deepshield.metrics import inputs
from deepshield.metrics.decision import average_precision
from deepshield.metrics.detector import detector_metrics


def _level(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    """`detector_metrics` (threshold 0.5) plus `ap` (None when one class is absent)."""
    out = detector_metrics(y, s)
    out["ap"] = average_precision(y, s) if out["auc"] is not None else None
    return out


def _group_reduce(keys: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(unique rows of keys [N,K], max or mean of values [N] per row)."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if how == "max":
        out = np.full(len(uniq), -np.inf)
        np.maximum.at(out, inverse, values)
    else:
        out = np.bincount(inverse, weights=values, minlength=len(uniq))
        out = out / np.bincount(inverse, minlength=len(uniq))
    return uniq, out


def video_metrics(
    y_true: Any,
    scores: Any,
    videos: Sequence[int] | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of crops y_true [N] in {0, 1}, scores [N] = P(fake), video ids [N], frame index [N].

    Keys `frame` and `video`: `detector_metrics` at that level (n, accuracy at 0.5, auc, eer, ...)
    and ap;
    `per_video`: one row per video (`video` name from `names[id]` or the id, label, score = mean
    frame score, frames = frames with a face). A video's crops must share one label.
    """
    y, s = inputs.binary_labels(y_true), inputs.scores(scores)
    v = inputs.as_array(videos, "videos").astype(np.int64)
    f = inputs.as_array(frames, "frames").astype(np.int64)
    for a, name in ((s, "scores"), (v, "videos"), (f, "frames")):
        inputs.same_length(y, a, ("y_true", name))
    _, top = _group_reduce(v[:, None], y.astype(np.float64), "max")
    _, bottom = _group_reduce(v[:, None], -y.astype(np.float64), "max")
    if np.any(top != -bottom):
        raise InputError("video_metrics: a video holds crops of both labels: fix the video ids")
    keys, frame_scores = _group_reduce(np.stack([v, f], axis=1), s, "max")  # [F,2], [F]
    vids, video_scores = _group_reduce(keys[:, :1], frame_scores, "mean")  # [V,1], [V]
    video_y = top.astype(np.int64)  # one label per video, ids sorted as in vids
    of_frame = np.searchsorted(vids[:, 0], keys[:, 0])  # [F] position of each frame's video
    frame_y, per_frame = video_y[of_frame], np.bincount(of_frame, minlength=len(vids))
    rows = [
        {
            "video": names[int(i)] if names is not None else int(i),
            "label": int(lab),
            "score": float(sc),
            "frames": int(n),
        }
        for i, lab, sc, n in zip(vids[:, 0], video_y, video_scores, per_frame, strict=True)
    ]
    return {
        "frame": _level(frame_y, frame_scores),
        "video": _level(video_y, video_scores),
        "per_video": rows,
    }


def video_rates(
    y_true: Any,
    p_fake: Any,
    videos: Sequence[int] | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    names: Sequence[str] | None,
    threshold: float,
) -> dict[str, Any] | None:
    """Video-level AUC, EER and error rates at `threshold` of crop P(fake) [N] (video score =
    mean over frames of the max over crops, `video_metrics`), with each video's score; None
    unless both classes have a video."""
    vm = video_metrics(y_true, p_fake, videos, frames, names)
    labels = np.array([row["label"] for row in vm["per_video"]])
    scores = np.array([row["score"] for row in vm["per_video"]])
    if len(set(labels.tolist())) < 2:
        return None
    return {
        "n": len(labels),
        "auc": vm["video"]["auc"],
        "eer": vm["video"]["eer"],
        "fake_passed_as_real": float(np.mean(scores[labels == 1] < threshold)),
        "real_flagged_as_fake": float(np.mean(scores[labels == 0] >= threshold)),
        "scores": {str(row["video"]): row["score"] for row in vm["per_video"]},
    }
