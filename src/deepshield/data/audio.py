"""Audio I/O: read wav/flac, mix to mono, resample to 16 kHz, cut or repeat-pad to a fixed length.

Resampling uses `scipy.signal.resample_poly` (polyphase FIR with a Kaiser window, the method
librosa calls "polyphase"): exact rational ratio up/down = target/orig reduced by their gcd, no
phase shift, no wrap-around. Repeat-padding follows AASIST's evaluation `pad`: a short clip is
tiled until it is long enough and then cut, so a model never sees digital silence it was not
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from deepshield.errors import DataError
from deepshield.progress import track

SAMPLE_RATE = 16000
CLIP_LENGTH = 64600  # ~4.04 s at 16 kHz, AASIST's `nb_samp`
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 [T] in [-1, 1] at `sample_rate` Hz (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found; check the path (or the protocol line)")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as e:  # libsndfile: not audio, truncated, unsupported codec
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DataError(
            f"{path}: cannot read audio ({reason}); give a wav, flac or ogg file"
        ) from e
    if x.shape[0] == 0:
        raise DataError(f"{path}: audio file has no samples; remove it or replace it")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: audio holds NaN or inf samples; re-export the file")
    mono = x.mean(axis=1)  # [T]
    if sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """x: [..., T] at orig_sr -> [..., T * target_sr / orig_sr] at target_sr (polyphase FIR)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise DataError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return x
    g = gcd(int(orig_sr), int(target_sr))
    y = resample_poly(x, target_sr // g, orig_sr // g, axis=-1)
    return y.astype(x.dtype, copy=False)


def fix_length(x: np.ndarray, length: int = CLIP_LENGTH) -> np.ndarray:
    """x: [T] -> [length]: the first `length` samples, or x repeated (tiled) and cut when shorter."""
    if len(x) == 0:
        raise DataError("cannot pad an empty clip; remove the empty audio file")
    if len(x) >= length:
        return x[:length]
    reps = -(-length // len(x))  # ceil
    return np.tile(x, reps)[:length]


def load_clip(
    path: str | Path, sample_rate: int = SAMPLE_RATE, length: int = CLIP_LENGTH
) -> np.ndarray:
    """One file as float32 [length] in [-1, 1] at `sample_rate` (read, mono, resample, fix length)."""
    return fix_length(read_audio(path, sample_rate), length)


def load_clips(
    paths: Sequence[str | Path], sample_rate: int = SAMPLE_RATE, length: int = CLIP_LENGTH
) -> torch.Tensor:
    """Many files as float32 [N, length] in [-1, 1] (a progress bar on a terminal)."""
    out = np.empty((len(paths), length), dtype=np.float32)
    for i, p in enumerate(track(paths, "reading audio", total=len(paths))):
        out[i] = load_clip(p, sample_rate, length)
    return torch.from_numpy(out)
