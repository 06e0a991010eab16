"""`asvspoof:PROTOCOL_FILE`: an ASVspoof 2019 LA-style countermeasure protocol and its audio.

Each protocol line reads `SPEAKER_ID AUDIO_FILE_NAME - SYSTEM_ID KEY` (KEY bonafide | spoof,
SYSTEM_ID `-` for bona fide, else the attack, e.g. A07). Audio is `AUDIO_DIR/<AUDIO_FILE_NAME>.flac`
with AUDIO_DIR = `<protocol dir>/flac` unless `audio_dir=` says otherwise (the official zip keeps
protocols and audio in sibling folders). Sample names are the utterance ids; `meta["system"]` is an
int per sample whose meaning `Splits.notes` lists (0 = `-`, bona fide).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepshield.data.registry import register_source
from deepshield.data.sources.audio_folder import split_indices
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError
from deepshield.media.audio import CLIP_LENGTH, SAMPLE_RATE, read_clips

KEYS = {"bonafide": 0, "spoof": 1}


@dataclass(frozen=True)
class Trial:
    """One protocol line."""

    speaker: str
    utterance: str
    system: str
    label: int  # 0 bona fide, 1 spoof
    line: int  # 1-based line number in the protocol file


def read_protocol(path: str | Path) -> list[Trial]:
    """Parse a protocol file; DataError naming the file and line of the first malformed line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: protocol file not found; give asvspoof:PATH/TO/protocol.txt")
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for n, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 5 or fields[4] not in KEYS:
            raise DataError(
                f"{path}:{n}: malformed protocol line {raw.strip()[:80]!r}; expected "
                "'SPEAKER_ID AUDIO_FILE_NAME - SYSTEM_ID KEY' with KEY bonafide or spoof"
            )
        speaker, utterance, _, system, key = fields
        if utterance in seen:
            raise DataError(
                f"{path}:{n}: utterance {utterance} already listed on line {seen[utterance]}; "
                "remove the duplicate line"
            )
        seen[utterance] = n
        trials.append(Trial(speaker, utterance, system, KEYS[key], n))
    if not trials:
        raise DataError(f"{path}: protocol file has no trials; check that it is the right file")
    return trials


def system_codes(trials: list[Trial]) -> tuple[np.ndarray, list[str]]:
    """Per-trial int codes [N] and the system id of each code (`-`, bona fide, is code 0)."""
    ids = sorted({t.system for t in trials} | {"-"})
    ids.remove("-")
    ids.insert(0, "-")
    index = {s: i for i, s in enumerate(ids)}
    return np.asarray([index[t.system] for t in trials], dtype=np.int64), ids


@register_source(
    "asvspoof",
    description="ASVspoof 2019 LA protocol file (audio in <protocol dir>/flac or audio_dir=)",
    modality="audio",
)
def load_asvspoof(
    arg: str | None,
    *,
    seed: int = 0,
    audio_dir: str | Path | None = None,
    split: str | None = None,
    length: int = CLIP_LENGTH,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
) -> Splits:
    """Protocol trials -> Splits of float32 [N, length] 16 kHz waveforms in [-1, 1].

    `split=None` splits the trials stratified by `seed`; `split="train"|"val"|"test"` puts every
    trial in that split (e.g. `split="test"` for an evaluation protocol) and leaves the others empty.
    """
    if arg is None:
        raise ConfigError("asvspoof needs a protocol file: asvspoof:PATH/TO/protocol.txt")
    if split not in (None, "train", "val", "test"):
        raise ConfigError(f"split={split!r}: use train, val, test or leave it unset")
    protocol = Path(arg)
    trials = read_protocol(protocol)
    folder = Path(audio_dir) if audio_dir is not None else protocol.parent / "flac"
    files = [folder / f"{t.utterance}.flac" for t in trials]
    for t, f in zip(trials, files, strict=True):
        if not f.is_file():
            raise DataError(
                f"{protocol}:{t.line}: audio file {f} not found; pass audio_dir= with the folder "
                "holding the .flac files"
            )
    y = np.asarray([t.label for t in trials], dtype=np.int64)
    codes, ids = system_codes(trials)
    x, records = read_clips(files, SAMPLE_RATE, length)  # [N, length], [N, R]
    meta = {"system": torch.from_numpy(codes), "audio": records}
    full = TensorSet(x, torch.from_numpy(y), [t.utterance for t in trials], meta)
    if split is None:
        parts = split_indices(y, val_frac, test_frac, seed)
    else:
        everything, nothing = np.arange(len(y)), np.zeros(0, dtype=np.int64)
        parts = tuple(everything if s == split else nothing for s in ("train", "val", "test"))
    train, val, test = (full.subset(p) for p in parts)
    mapping = ", ".join(f"{i}={s}" for i, s in enumerate(ids))
    return Splits(
        name=f"asvspoof:{protocol}",
        train=train,
        val=val,
        test=test,
        classes=["bonafide", "spoof"],
        modality="audio",
        sample_rate=SAMPLE_RATE,
        systems=ids,
        notes=f"meta['system'] codes: {mapping} (- is bona fide)",
    )
