"""`media.track.score_track`: a long track's windows reach the detector in small batches."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from deepshield.media.track import BATCH_SAMPLES, score_track


def test_a_long_track_is_scored_in_batches_bounded_in_samples(tmp_path):
    """32 windows of 64,600 samples: each call holds at most BATCH_SAMPLES samples, and the
    window scores are those of one call on every window (the official AASIST-L's forward on
    32 windows at once peaked at 8.2 GB)."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.wav", 0.1 * rng.standard_normal(32 * 64600), 16000, subtype="FLOAT")
    calls: list[int] = []

    def scores(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        calls.append(x.numel())
        p = torch.sigmoid(100 * x.mean(dim=1)).double().numpy()  # a score per window [W]
        return p, p / 2

    track = score_track(
        tmp_path / "long.wav", window=64600, model_rate=16000, max_windows=32, scores=scores
    )
    assert track.inputs is not None and track.inputs.shape == (32, 64600)
    assert max(calls) <= BATCH_SAMPLES and sum(calls) == 32 * 64600
    whole = scores(track.inputs)[0]  # one call on every window, the reference
    np.testing.assert_array_equal(track.window_p, whole)
    assert track.raw.score == np.mean(whole / 2)
