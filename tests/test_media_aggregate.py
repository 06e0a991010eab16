"""Frame score = max over faces; video score = mean over frames with a face; no_face is no score."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from deepshield.errors import InputError
from deepshield.media import frame_score, video_score


def test_frame_score_is_the_max_face_and_none_without_faces():
    assert frame_score([0.2, 0.9, 0.4]) == 0.9
    assert frame_score([]) is None


def test_video_score_skips_no_face_frames():
    frames = [0.2, None, 0.8, 0.5, None, 0.1]
    v = video_score(frames, top_k=2)
    assert v.score == pytest.approx((0.2 + 0.8 + 0.5 + 0.1) / 4)
    assert (v.max, v.top_k_mean, v.top_k) == (0.8, pytest.approx(0.65), 2)
    assert (v.frames, v.frames_with_face, v.reason) == (6, 4, None)
    assert video_score([0.3], top_k=5).top_k == 1  # k capped at the frames with a face


def test_all_no_face_is_undefined_with_a_reason():
    v = video_score([None] * 32)
    assert v.score is None and v.max is None and v.frames_with_face == 0
    assert "no face in any of the 32 sampled frames" in v.reason
    assert video_score([]).reason == "no frame was sampled"


def test_invalid_scores_are_refused():
    for bad in ([math.nan], [1.5], [-0.1]):
        with pytest.raises(InputError):
            video_score(bad)
        with pytest.raises(InputError):
            frame_score(bad)
    with pytest.raises(InputError):
        video_score([0.5], top_k=0)


def test_media_imports_no_run_or_service_layer():
    code = (
        "import sys, deepshield.media; "
        "print(' '.join(m for m in sys.modules if m.startswith('deepshield.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    layers = {m.split(".")[1] for m in out.stdout.split()}
    assert "media" in layers
    assert not layers & {"run", "runs", "report", "cli", "audit", "service", "studies"}
