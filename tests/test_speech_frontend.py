"""Log-mel front end: equal to librosa, differentiable down to the waveform."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from conftest import shared_path
from deepshield.data.speech_synth import random_speaker, synthesize
from deepshield.media.audio import read_audio
from deepshield.models.frontend import LogMel, Spectrogram

CONFIGS = [
    {},  # deepshield default: n_fft 512, hop 160, win 400, 64 slaney mels, constant pad
    {"n_fft": 1024, "hop_length": 256, "win_length": None, "n_mels": 80, "htk": True, "norm": None},
    {"center": False, "power": 1.0, "fmin": 50.0, "fmax": 7000.0, "n_mels": 40},
    {"pad_mode": "reflect", "n_fft": 400, "win_length": 400, "hop_length": 100},
]


def _librosa_mel(y: np.ndarray, m: LogMel, cfg: dict) -> np.ndarray:
    spec = m.spectrogram
    return librosa.feature.melspectrogram(
        y=y,
        sr=16000,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
        win_length=spec.win_length,
        center=spec.center,
        pad_mode=spec.pad_mode,
        power=spec.power,
        n_mels=m.n_mels,
        fmin=cfg.get("fmin", 0.0),
        fmax=cfg.get("fmax"),
        htk=cfg.get("htk", False),
        norm=cfg.get("norm", "slaney"),
    )


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    real = shared_path("data", "asvspoof2019_la_eval_samples", "flac", "LA_E_3757378.flac")
    rng = np.random.default_rng(0)
    synthetic = synthesize(random_speaker(rng), 24000, rng).astype(np.float32)
    return {"real": read_audio(real)[0][:48000], "synthetic": synthetic}


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_mel_power_equals_librosa(clips, cfg, source):
    y = clips[source]
    m = LogMel(**cfg)
    # float64: the same arithmetic as librosa
    ref64 = _librosa_mel(y.astype(np.float64), m, cfg)
    out64 = m.mel(torch.from_numpy(y.astype(np.float64))[None])[0].numpy()
    assert out64.shape == ref64.shape
    assert np.abs(out64 - ref64).max() / ref64.max() < 1e-10
    # float32 (what models run): 1e-4 relative on every bin within 50 dB of the peak
    ref = _librosa_mel(y, m, cfg)
    out = m.mel(torch.from_numpy(y)[None])[0].numpy()
    big = ref > 1e-5 ** (m.spectrogram.power / 2) * ref.max()
    assert np.max(np.abs(out - ref)[big] / ref[big]) < 1e-4
    assert np.abs(out - ref).max() / ref.max() < 1e-5


def test_spectrogram_equals_librosa_stft_and_log_is_log_of_mel(clips):
    y = clips["real"][:16000].astype(np.float64)
    s = Spectrogram(n_fft=512, hop_length=128, win_length=320)
    ref = np.abs(librosa.stft(y, n_fft=512, hop_length=128, win_length=320)) ** 2
    np.testing.assert_allclose(s(torch.from_numpy(y)[None])[0].numpy(), ref, rtol=1e-9, atol=1e-12)
    m = LogMel(eps=1e-6)
    x = torch.from_numpy(y)[None]
    torch.testing.assert_close(m(x), torch.log(m.mel(x) + 1e-6))


def test_gradients_reach_the_waveform_and_nothing_is_saved(clips):
    m = LogMel()
    x = torch.from_numpy(clips["synthetic"][:8000]).unsqueeze(0).requires_grad_(True)
    m(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert m.state_dict() == {}  # filterbank and window are rebuilt, never stored
    assert m(torch.zeros(3, 4000)).shape == (3, 64, 26)
