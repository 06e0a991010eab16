"""The audio reader (deepshield.media.audio): mono mix, resampling, tiling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import shared_path
from deepshield.errors import DataError
from deepshield.media.audio import fix_length, read_audio, read_clip, read_clips, resample


def _sine(freq: float, sr: int, seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.sin(2 * np.pi * freq * t + phase)


def test_stereo_is_mixed_to_mono(tmp_path):
    left = 0.5 * _sine(440, 16000, 0.5)
    right = -0.25 * _sine(440, 16000, 0.5)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    x, record = read_audio(tmp_path / "st.wav")
    assert record.channels == 2 and record.done() == ["mixed 2 channels to mono"]
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_allclose(x, 0.125 * _sine(440, 16000, 0.5), atol=1e-6)


def test_int16_flac_scaled_to_unit_range(tmp_path):
    pcm = (np.array([0, 16384, -32768, 32767] * 500)).astype(np.int16)  # 0.125 s
    sf.write(tmp_path / "a.flac", pcm, 16000, subtype="PCM_16")
    x = read_audio(tmp_path / "a.flac")[0]
    np.testing.assert_allclose(x[:4], [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-7)


def test_resampling_a_sine_gives_the_same_sine_at_16k():
    """A 1 kHz tone at 22.05 kHz resampled to 16 kHz equals the tone sampled at 16 kHz."""
    y = resample(_sine(1000, 22050, 1.0), 22050, 16000)
    ref = _sine(1000, 16000, 1.0)
    assert len(y) == 16000
    inner = slice(200, -200)  # the FIR's edge transients aside
    assert np.abs(y[inner] - ref[inner]).max() < 2e-3


def test_read_audio_resamples_to_the_requested_rate(tmp_path):
    sf.write(tmp_path / "t.wav", 0.5 * _sine(300, 44100, 0.5), 44100)
    x = read_audio(tmp_path / "t.wav", rate=16000)[0]
    assert len(x) == 8000
    np.testing.assert_allclose(x[200:-200], 0.5 * _sine(300, 16000, 0.5)[200:-200], atol=2e-3)


def test_fix_length_cuts_and_repeat_pads_like_aasist():
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 7), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(fix_length(x, 3), x)
    np.testing.assert_array_equal(fix_length(np.arange(10.0), 4), [0, 1, 2, 3])
    # AASIST's pad: tile int(max_len / len) + 1 times, then cut
    long = np.random.default_rng(0).standard_normal(1234)
    reps = int(64600 / 1234) + 1
    np.testing.assert_array_equal(fix_length(long, 64600), np.tile(long, reps)[:64600])


@pytest.mark.parametrize(
    "content", [b"", b"this is not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt "]
)
def test_unreadable_files_raise_data_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"broken\.wav"):
        read_audio(path)


def test_empty_and_missing_audio_raise_data_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(DataError, match=r"empty\.wav: 0\.000 s of audio; deepshield needs"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(DataError, match=r"nope\.flac: audio file not found"):
        read_clip(tmp_path / "nope.flac")


def test_real_asvspoof_flac_matches_soundfile_and_is_padded():
    path = shared_path(
        "data", "asvspoof2019_la_eval_samples", "flac", "LA_E_2834763.flac"
    )  # 22,831 samples
    ref, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    x, record = read_clip(path)
    assert record.kept_samples == len(ref) and record.tiled == 64600 / len(ref)
    assert x.shape == (64600,) and x.dtype == np.float32
    np.testing.assert_array_equal(x[: len(ref)], ref)
    np.testing.assert_array_equal(x[len(ref) : 2 * len(ref)], ref)


def test_real_22k_wavefake_clips_load_at_16k():
    real = shared_path("data", "speech_wavefake_ljspeech", "real")
    files = sorted(real.glob("*.wav"))[:2]
    frames = [sf.info(f).frames for f in files]
    for f, n in zip(files, frames, strict=True):
        assert len(read_audio(f)[0]) == -(-n * 320 // 441)  # ceil(n * 16000 / 22050)
    batch, rows = read_clips(files, length=16000)
    assert rows.shape[0] == 2
    assert batch.shape == (2, 16000) and batch.dtype == torch.float32
    assert batch.abs().max() <= 1.0 and batch.abs().max() > 0.05
