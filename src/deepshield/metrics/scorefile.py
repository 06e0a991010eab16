"""ASVspoof countermeasure score files: one trial per line, `utt src key score`.

utt: trial id; src: attack id ("-" for bona fide or unknown); key: "bonafide" or "spoof";
score: the CM score in ASVspoof orientation (higher = more bona fide). deepshield's scores grow
with "fake", so the file holds the NEGATED deepshield score (-P(fake), or -logit): negation keeps
every ordering and tie, works for unbounded scores, and round-trips exactly (shortest repr of a
float64); `read_scores` negates it back. Files written this way feed the official ASVspoof
evaluation scripts unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from deepshield.errors import DataError, InputError
from deepshield.files import atomic_write_text
from deepshield.metrics import inputs

_KEYS = ("bonafide", "spoof")  # index = deepshield label


class ScoreRows(NamedTuple):
    """The trials of a score file; scores [N] float64 in deepshield orientation (grow with fake)."""

    utt_ids: list[str]
    sources: list[str]
    keys: list[str]
    scores: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """int64 [N]: 1 = spoof, 0 = bona fide."""
        return np.array([_KEYS.index(k) for k in self.keys], dtype=np.int64)


def _token(value: Any, what: str) -> str:
    text = str(value)
    if not text or text.split() != [text]:
        raise InputError(
            f"{what} {text!r} is empty or holds whitespace; score files split on spaces"
        )
    return text


def write_scores(
    path: str | Path,
    utt_ids: Sequence[str],
    sources: Sequence[str] | None,
    keys: Sequence[str | int],
    scores: Any,
) -> Path:
    """Write an ASVspoof score file atomically. keys: "bonafide"/"spoof" or labels 0/1;
    sources: attack ids, or None for "-" on every line; scores [N] grow with "fake"."""
    s = inputs.scores(scores)
    n = s.size
    src = ["-"] * n if sources is None else list(sources)
    ids, key_list = list(utt_ids), list(keys)
    for name, seq in (("utt_ids", ids), ("sources", src), ("keys", key_list)):
        if len(seq) != n:
            raise InputError(
                f"{name} has {len(seq)} entries but scores has {n}; pass one per trial"
            )
    lines = []
    for utt, attack, key, score in zip(ids, src, key_list, s, strict=True):
        if not isinstance(key, str) and key in (0, 1):
            key = _KEYS[int(key)]
        if key not in _KEYS:
            raise InputError(f"key {key!r} for trial {utt!r}; use 'bonafide'/'spoof' or 0/1")
        lines.append(f"{_token(utt, 'utt id')} {_token(attack, 'source')} {key} {float(-score)!r}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_scores(path: str | Path) -> ScoreRows:
    """Read an ASVspoof score file (as `write_scores` writes it); scores come back negated to
    deepshield orientation. DataError naming the file and line on any malformed line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM: Excel, Notepad
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read score file ({e}); pass an existing text file") from e
    ids: list[str] = []
    sources: list[str] = []
    keys: list[str] = []
    values: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != 4:
            raise DataError(
                f"{where}: {len(fields)} fields in {line.strip()!r}; expected 'utt src key score'"
            )
        utt, attack, key, score_text = fields
        if key not in _KEYS:
            raise DataError(f"{where}: key {key!r}; expected 'bonafide' or 'spoof'")
        try:
            score = float(score_text)
        except ValueError:
            score = float("nan")
        if not np.isfinite(score):
            raise DataError(f"{where}: score {score_text!r} is not a finite number; fix the line")
        ids.append(utt)
        sources.append(attack)
        keys.append(key)
        values.append(-score)
    if not ids:
        raise DataError(f"{path}: no trials; expected lines 'utt src key score'")
    return ScoreRows(ids, sources, keys, np.asarray(values, dtype=np.float64))
