"""The synthetic speech set: synthesiser, vocoders and the `synthetic-speech` source."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal
from scipy.linalg import solve_toeplitz
from sklearn.metrics import roc_auc_score

from deepshield.data import load
from deepshield.data import speech_synth as ss
from deepshield.data.sources.synthetic_speech import SYSTEMS, cache_path
from deepshield.errors import ConfigError

N, LENGTH = 36, 16000


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the cache the autouse fixture sets per test
        mp.setenv("DEEPSHIELD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return load("synthetic-speech", seed=7, n=N, length=LENGTH)


def test_shapes_labels_and_balance(small):
    assert small.modality == "audio" and small.sample_rate == 16000
    total = 0
    for part in (small.train, small.val, small.test):
        assert part.x.dtype == torch.float32 and part.x.shape[1] == LENGTH
        assert part.x.abs().max() <= 1.0 and torch.isfinite(part.x).all()
        assert (part.y == 0).sum() == (part.y == 1).sum() >= 2
        assert torch.equal(part.y, (part.meta["system"] > 0).long())
        total += len(part)
    assert total == N
    assert [len(p) for p in (small.train, small.val, small.test)] == [20, 8, 8]


def test_unseen_attack_only_in_test_and_splits_are_disjoint(small):
    unseen = SYSTEMS.index("sinusoidal")
    assert not (small.train.meta["system"] == unseen).any()
    assert not (small.val.meta["system"] == unseen).any()
    assert (small.test.meta["system"] == unseen).any()
    assert set(small.test.meta["system"].tolist()) == {0, 1, 2, 3}
    parts = (small.train, small.val, small.test)
    for a in range(3):
        for b in range(a + 1, 3):
            for key in ("utterance", "speaker"):
                shared = set(parts[a].meta[key].tolist()) & set(parts[b].meta[key].tolist())
                assert not shared, f"{key} in two splits"
    for part in parts:  # each utterance: one bona fide and its one spoof
        utt, sys = part.meta["utterance"], part.meta["system"]
        for u in utt.unique():
            assert sorted(sys[utt == u].tolist())[0] == 0 and len(sys[utt == u]) == 2
    assert "sinusoidal is the unseen attack" in small.notes
    assert small.test.names[0].startswith("u") and small.test.names[0].split("-", 1)[1] in SYSTEMS


def test_deterministic_and_cached(small):
    path = cache_path(N, LENGTH, 7)
    assert path.is_file()
    with np.load(path, allow_pickle=False) as f:
        assert f["x"].dtype == np.int16
    again = load("synthetic-speech", seed=7, n=N, length=LENGTH)  # from the cache
    assert torch.equal(again.train.x, small.train.x) and again.test.names == small.test.names
    path.unlink()
    rebuilt = load("synthetic-speech", seed=7, n=N, length=LENGTH)  # synthesised anew
    assert torch.equal(rebuilt.test.x, small.test.x)
    path.write_bytes(b"corrupt")  # an unreadable cache is rebuilt, not trusted
    assert torch.equal(load("synthetic-speech", seed=7, n=N, length=LENGTH).val.x, small.val.x)


def test_other_seed_other_data():
    a = load("synthetic-speech", seed=1, n=6, length=8000)
    b = load("synthetic-speech", seed=2, n=6, length=8000)
    assert not torch.equal(a.train.x, b.train.x)


@pytest.mark.parametrize("kw", [{"n": 7}, {"n": 4}, {"length": 100}])
def test_bad_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        load("synthetic-speech", **kw)


def test_no_level_cue(small):
    """Bona fide and spoof share the channel: RMS level does not tell them apart."""
    x, y = (
        torch.cat([p.tensors()[i] for p in (small.train, small.val, small.test)]) for i in (0, 1)
    )
    rms = x.pow(2).mean(1).sqrt().numpy()
    assert 0.25 < roc_auc_score(y.numpy(), rms) < 0.75


def _autocorr_f0(x: np.ndarray) -> float:
    x = x - x.mean()
    r = np.correlate(x, x, "full")[len(x) - 1 :]
    lo, hi = ss.SR // 400, ss.SR // 60
    return ss.SR / (lo + np.argmax(r[lo:hi]))


def test_synthesised_pitch_and_formants_follow_the_speaker():
    rng = np.random.default_rng(0)
    speaker = ss.random_speaker(rng)
    x = ss.synthesize(speaker, 32000, rng)
    assert x.shape == (32000,) and np.abs(x).max() == pytest.approx(0.5)
    frames = x[: len(x) // 640 * 640].reshape(-1, 640)
    loud = frames[(frames**2).mean(1) > 0.3 * (frames**2).mean(1).max()]
    f0 = np.median([_autocorr_f0(f) for f in loud])
    assert 0.65 * speaker.f0 < f0 < 1.4 * speaker.f0  # declination and accents around the mean
    # cascade of resonators: one spectral peak at each formant, unity gain at DC
    formants = np.array([[500.0, 1500.0, 2500.0, 3500.0]])
    impulse = np.zeros(ss.FRAME * 50)
    impulse[0] = 1.0
    h = ss._cascade(impulse, np.repeat(formants, 50, 0), np.array([60.0, 90, 120, 180]))
    freqs, resp = signal.freqz(h, worN=4096, fs=ss.SR)
    peaks = freqs[signal.find_peaks(np.abs(resp))[0]]
    assert len(peaks) == 4 and np.allclose(peaks, formants[0], atol=20)
    assert abs(resp[0]) == pytest.approx(1.0, rel=1e-3)


def test_rosenberg_pulse_shape():
    phase = np.linspace(0, 1, 1000, endpoint=False)
    g = ss._rosenberg(phase, 0.6)
    assert g[0] == 0 and g.max() == pytest.approx(1.0, abs=1e-3)
    assert phase[np.argmax(g)] == pytest.approx(0.39, abs=0.01)  # end of the opening phase
    assert np.all(g[phase >= 0.6] == 0)  # closed phase


def test_stft_round_trip_and_lpc_against_a_toeplitz_solve():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000)
    np.testing.assert_allclose(ss._istft(ss._stft(x, 512, 128), 512, 128, len(x)), x, atol=1e-10)
    frames = signal.lfilter([1.0], [1.0, -1.2, 0.6], rng.standard_normal((4, 400)), axis=1)
    a, err = ss._lpc(frames * np.hanning(400), 6)
    for f, coef, e in zip(frames * np.hanning(400), a, err, strict=True):
        r = np.correlate(f, f, "full")[len(f) - 1 : len(f) + 6]
        r[0] *= 1 + 1e-6
        ref = solve_toeplitz(r[:6], -r[1:7])
        np.testing.assert_allclose(coef[1:], ref, rtol=1e-6, atol=1e-9)
        assert e == pytest.approx(r[0] + ref @ r[1:7], rel=1e-6)
    assert a[:, 1] == pytest.approx(-1.2, abs=0.1)  # recovers the AR(2) process


def test_pitch_tracker_on_a_pulse_train():
    pulses = np.zeros(16000)
    pulses[::128] = 1.0  # 125 Hz
    x = signal.lfilter([1.0], [1.0, -1.3, 0.8], pulses)
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::160][5:20]
    f0, nccf = ss._pitch(frames)
    assert np.allclose(f0, 125.0, atol=1.0) and np.all(nccf > 0.8)
    _, noise_nccf = ss._pitch(np.random.default_rng(0).standard_normal((10, 640)))
    assert np.all(noise_nccf < 0.5)  # white noise: unvoiced


@pytest.mark.parametrize("name", list(ss.VOCODERS))
def test_vocoders_keep_length_and_spectral_envelope(name):
    rng = np.random.default_rng(3)
    x = ss.synthesize(ss.random_speaker(rng), 16000, rng)
    other = ss.synthesize(ss.random_speaker(rng), 16000, rng)
    y = ss.VOCODERS[name](x, rng)
    assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0

    def mel_db(v):  # per-utterance normalised log-mel
        s = np.abs(ss._stft(v, 1024, 256)) ** 2
        fb = __import__("librosa").filters.mel(sr=ss.SR, n_fft=1024, n_mels=40)
        m = 10 * np.log10(fb @ s + 1e-10)
        return m - m.max()

    def dist(a, b):
        return np.mean(np.abs(np.maximum(mel_db(a), -60) - np.maximum(mel_db(b), -60)))

    assert dist(y, x) < 0.5 * dist(other, x)  # it says the same thing
    assert not np.allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-2)  # differently


@pytest.mark.slow
def test_mel_cnn_learns_seen_attacks_and_detects_the_unseen_one():
    """Trained on griffin-lim and lpc-vocoder spoofs only (epoch chosen on val), mel_cnn
    flags test spoofs of all three vocoders."""
    import copy

    from sklearn.metrics import roc_curve

    from deepshield import models

    def eer(y: np.ndarray, p: np.ndarray) -> float:
        fpr, tpr, _ = roc_curve(y, p)
        i = np.argmin(np.abs(1 - tpr - fpr))
        return (fpr[i] + 1 - tpr[i]) / 2

    def scores(m: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        m.eval()
        with torch.no_grad():
            return torch.softmax(m(x), 1)[:, 1].numpy()

    s = load("synthetic-speech", seed=0, n=400, length=16000)
    torch.manual_seed(0)
    m = models.create("mel_cnn")
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = s.train.tensors()
    xv, yv = s.val.tensors()
    g = torch.Generator().manual_seed(0)
    best = (1.0, None)
    for _ in range(12):
        m.train()
        for idx in torch.randperm(len(y), generator=g).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
        val = eer(yv.numpy(), scores(m, xv))
        if val < best[0]:
            best = (val, copy.deepcopy(m.state_dict()))
    m.load_state_dict(best[1])
    xt, yt = s.test.tensors()
    p, yt = scores(m, xt), yt.numpy()
    system = s.test.meta["system"].numpy()
    unseen = (system == 0) | (system == SYSTEMS.index("sinusoidal"))
    assert eer(yt, p) < 0.15
    assert eer(yt[unseen], p[unseen]) < 0.3
