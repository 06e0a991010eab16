"""`synthetic-speech`: the built-in speech deepfake set, synthesised on the fly (no download).

Half the samples are bona fide utterances of random synthetic speakers
(`deepshield.data.speech_synth.synthesize`), half are the same utterances re-synthesised by a
vocoder. Train and val spoofs come from `griffin-lim` and `lpc-vocoder`; the test split adds
`sinusoidal`, an attack never seen in training. Bona fide and spoof alike then pass through a
random room, microphone, noise and level (`record`) and 16-bit quantisation.

Splits hold whole utterances (a bona fide clip and its spoof stay together) and disjoint
speakers: 60 / 20 / 20 % of the utterances. Per-sample meta: `system` (0 bona fide,
1 griffin-lim, 2 lpc-vocoder, 3 sinusoidal), `utterance` (pairs a spoof with its source) and
`speaker`. The set is deterministic by (n, length, seed) and cached as int16 in
`$DEEPSHIELD_CACHE/synthetic-speech/` (default ~/.cache/deepshield).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from deepshield.data.registry import register_source
from deepshield.data.speech_synth import VOCODERS, random_speaker, record, synthesize
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError
from deepshield.files import atomic_write_bytes
from deepshield.media.audio import CLIP_LENGTH, SAMPLE_RATE
from deepshield.progress import track

SYSTEMS = ("bonafide", "griffin-lim", "lpc-vocoder", "sinusoidal")
SEEN_ATTACKS = (1, 2)
UNSEEN_ATTACKS = (3,)
VERSION = 1  # bump when the synthesiser changes, so old caches are not reused
_FIELDS = ("x", "y", "system", "utterance", "speaker", "split")


def cache_path(n: int, length: int, seed: int) -> Path:
    """Where the set for (n, length, seed) is cached."""
    root = Path(os.environ.get("DEEPSHIELD_CACHE", Path.home() / ".cache" / "deepshield"))
    return root / "synthetic-speech" / f"v{VERSION}-n{n}-t{length}-seed{seed}.npz"


def _partition(count: int, rng: np.random.Generator) -> np.ndarray:
    """Split ids 0 train, 1 val, 2 test for `count` items (20 % val, 20 % test, each >= 1)."""
    n_test = n_val = max(1, round(0.2 * count))
    ids = np.repeat([0, 1, 2], [count - n_val - n_test, n_val, n_test])
    return rng.permutation(ids)


def build(n: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Synthesise the set: x int16 [n, length]; y, system, utterance, speaker, split int64 [n]."""
    n_utt = n // 2
    rng = np.random.default_rng([seed, 0])
    utt_split = _partition(n_utt, rng)  # [U]
    n_speakers = max(3, n_utt // 8)
    spk_split = _partition(n_speakers, rng)  # [S]
    speaker = np.empty(n_utt, dtype=np.int64)
    attack = np.empty(n_utt, dtype=np.int64)
    for s in (0, 1, 2):
        members = np.flatnonzero(utt_split == s)
        speaker[members] = rng.choice(np.flatnonzero(spk_split == s), len(members))
        pool = SEEN_ATTACKS + (UNSEEN_ATTACKS if s == 2 else ())
        attack[members] = rng.permutation(np.resize(pool, len(members)))
    voices = [random_speaker(np.random.default_rng([seed, 1, j])) for j in range(n_speakers)]
    x = np.empty((2 * n_utt, length), dtype=np.int16)
    for i in track(range(n_utt), "synthesising speech", total=n_utt):
        urng = np.random.default_rng([seed, 2, i])
        clean = synthesize(voices[speaker[i]], length, urng)
        spoof = VOCODERS[SYSTEMS[attack[i]]](clean, urng)
        x[2 * i] = _pcm16(record(clean, urng))
        x[2 * i + 1] = _pcm16(record(spoof, urng))
    utterance = np.repeat(np.arange(n_utt), 2)
    system = np.stack([np.zeros(n_utt, dtype=np.int64), attack], 1).ravel()
    return {
        "x": x,
        "y": (system > 0).astype(np.int64),
        "system": system,
        "utterance": utterance,
        "speaker": speaker[utterance],
        "split": utt_split[utterance],
    }


def _pcm16(v: np.ndarray) -> np.ndarray:
    """float [T] in [-1, 1] -> int16 [T]."""
    return np.clip(np.round(v * 32768.0), -32768, 32767).astype(np.int16)


def _read_cache(path: Path, n: int, length: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent or unreadable (then the set is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in _FIELDS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return data if data["x"].shape == (n, length) else None


def _write_cache(path: Path, data: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **data)
    atomic_write_bytes(path, buf.getvalue())


@register_source(
    "synthetic-speech",
    description="built-in bona fide vs vocoded speech (formant synthesiser; unseen attack in test)",
    modality="audio",
    builtin=True,
)
def load_synthetic_speech(
    arg: str | None, *, seed: int = 0, n: int = 1200, length: int = CLIP_LENGTH
) -> Splits:
    """n waveforms float32 [n, length] in [-1, 1] at 16 kHz, half bona fide, half spoof."""
    if arg is not None:
        raise ConfigError(f"synthetic-speech takes no argument (got {arg!r}); set n= and length=")
    if n < 6 or n % 2:
        raise ConfigError(f"synthetic-speech n={n}: give an even number of samples, at least 6")
    if length < 4000:
        raise ConfigError(f"synthetic-speech length={length}: give at least 4000 samples (0.25 s)")
    path = cache_path(n, length, seed)
    data = _read_cache(path, n, length)
    if data is None:
        data = build(n, length, seed)
        _write_cache(path, data)
    x = torch.from_numpy(data["x"].astype(np.float32) / 32768.0)  # [n, length]
    names = [
        f"u{u:05d}-{SYSTEMS[s]}" for u, s in zip(data["utterance"], data["system"], strict=True)
    ]
    full = TensorSet(
        x,
        torch.from_numpy(data["y"]),
        names,
        {k: torch.from_numpy(data[k]) for k in ("system", "utterance", "speaker")},
    )
    train, val, test = (full.subset(np.flatnonzero(data["split"] == s)) for s in (0, 1, 2))
    systems = ", ".join(f"{i}={s}" for i, s in enumerate(SYSTEMS))
    return Splits(
        name="synthetic-speech",
        train=train,
        val=val,
        test=test,
        classes=["bonafide", "spoof"],
        modality="audio",
        sample_rate=SAMPLE_RATE,
        systems=list(SYSTEMS),
        notes=(
            f"meta['system'] codes: {systems}; sinusoidal is the unseen attack (test only); "
            "meta['utterance'] pairs each spoof with its bona fide source; speakers are "
            "disjoint across splits"
        ),
    )
