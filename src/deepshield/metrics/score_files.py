"""Score files of any system, read into one form: ASVspoof 5 CM and SASV files with their key
files, ASVspoof 2019 `utt src key score` files (what deepshield writes, see `scorefile`),
ASVspoof 2021 `utt score` files with a protocol or trial-metadata key file, and deepshield's own
P(fake) CSV (`utt,label,p_fake`).

The format is read from the first line (the official headers, a `p_fake` column, or four or
two fields); the score orientation is stated by the caller, never inferred from the numbers:
"bonafide-high" (the ASVspoof convention, the default for ASVspoof files) or "fake-high".
A P(fake) file is fake-high by definition. Every problem is a DataError naming file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from deepshield.errors import ConfigError, DataError, InputError
from deepshield.files import atomic_write_text
from deepshield.metrics import inputs

ORIENTATIONS = ("bonafide-high", "fake-high")
CM_HEADER = ["filename", "cm-score"]
CM_KEY_HEADER = ["filename", "cm-label"]
SASV_HEADER = ["spk", "filename", "cm-score", "asv-score", "sasv-score"]
SASV_KEY_HEADER = ["spk", "filename", "cm-label", "asv-label"]
_CM_LABELS = {"bonafide": 0, "spoof": 1}
_PFAKE_LABELS = {"real": 0, "fake": 1, "bonafide": 0, "spoof": 1, "0": 0, "1": 1}
_ASV_LABELS = ("target", "nontarget", "spoof")
FORMATS = (
    "ASVspoof 5 CM ('filename<TAB>cm-score' header, with --keys 'filename<TAB>cm-label')",
    "ASVspoof 5 SASV ('spk filename cm-score asv-score sasv-score' header, with --keys "
    "'spk filename cm-label asv-label')",
    "ASVspoof 2019 'utt src key score' lines (optionally --keys an LA protocol)",
    "ASVspoof 2021 'utt score' lines (with --keys a 2019 protocol or 2021 trial metadata)",
    "deepshield P(fake) CSV (header with utt, p_fake and label, or --keys)",
)


class Trials(NamedTuple):
    """Trials of one system, joined with their keys. spoof [N]: 1 = spoof/fake; cm [N]: CM score
    HIGHER = BONA FIDE (None when the file has none); llr_cm [N]: the CM score read as an LLR
    (for a P(fake) file ln((1-p)/p), possibly +-inf); asv_labels / asv / sasv: SASV files only."""

    fmt: str
    orientation: str
    spoof: np.ndarray
    cm: np.ndarray | None
    llr_cm: np.ndarray | None
    asv_labels: np.ndarray | None = None
    asv: np.ndarray | None = None
    sasv: np.ndarray | None = None


class _Line(NamedTuple):
    lineno: int
    fields: list[str]


def _lines(path: Path, sep: str | None) -> list[_Line]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM: Excel, Notepad
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}); pass an existing text file") from e
    if sep == ",":
        rows = csv.reader(io.StringIO(text))
        out = [_Line(i, [f.strip() for f in r]) for i, r in enumerate(rows, start=1)]
        return [line for line in out if any(line.fields)]
    return [
        _Line(i, line.split(sep) if sep else line.split())
        for i, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _number(path: Path, line: _Line, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise DataError(
            f"{path}:{line.lineno}: {what} {text!r} is not a finite number; fix or drop the line"
        )
    return value


def _table(path: Path, header: list[str]) -> dict[str, tuple[int, list[str]]]:
    """{trial id: (line number, fields)} of a whitespace file whose first line is `header`; the
    id is the `filename` column (SASV: spk and filename)."""
    lines = _lines(path, None)
    if not lines or lines[0].fields != header:
        found = lines[0].fields if lines else "nothing"
        raise DataError(f"{path}:1: header {found}; expected {' '.join(header)}")
    rows: dict[str, tuple[int, list[str]]] = {}
    for line in lines[1:]:
        if len(line.fields) != len(header):
            raise DataError(
                f"{path}:{line.lineno}: {len(line.fields)} fields; expected {' '.join(header)}"
            )
        key = " ".join(line.fields[: header.index("filename") + 1])
        if key in rows:
            raise DataError(f"{path}:{line.lineno}: trial {key!r} repeats line {rows[key][0]}")
        rows[key] = (line.lineno, line.fields)
    if not rows:
        raise DataError(f"{path}: no trials after the header")
    return rows


def _join(
    scores_path: Path,
    scores: dict[str, tuple[int, list[str]]],
    keys_path: Path,
    keys: dict[str, tuple[int, list[str]]],
) -> list[str]:
    """Trial ids in score-file order; DataError when either file names a trial the other lacks."""
    for trial, (lineno, _) in keys.items():
        if trial not in scores:
            raise DataError(
                f"{keys_path}:{lineno}: names trial {trial!r} that is not in {scores_path}; "
                "score every keyed trial or pass the matching key file"
            )
    for trial, (lineno, _) in scores.items():
        if trial not in keys:
            raise DataError(
                f"{scores_path}:{lineno}: trial {trial!r} has no line in {keys_path}; "
                "pass the key file that covers every scored trial"
            )
    return list(scores)


def _label(path: Path, lineno: int, text: str, allowed: dict[str, int] | tuple[str, ...]) -> Any:
    if text not in allowed:
        raise DataError(f"{path}:{lineno}: label {text!r}; expected one of {list(allowed)}")
    return allowed[text] if isinstance(allowed, dict) else text


def _oriented(values: np.ndarray, orientation: str) -> np.ndarray:
    return values if orientation == "bonafide-high" else -values


def _read_cm(path: Path, keys: Path | None, orientation: str) -> Trials:
    if keys is None:
        raise ConfigError(f"{path} is an ASVspoof 5 CM score file; pass its key file with --keys")
    scores, labels = _table(path, CM_HEADER), _table(keys, CM_KEY_HEADER)
    ids = _join(path, scores, keys, labels)
    cm = np.array([_number(path, _Line(*scores[t]), scores[t][1][1], "cm-score") for t in ids])
    spoof = np.array([_label(keys, labels[t][0], labels[t][1][1], _CM_LABELS) for t in ids])
    cm = _oriented(cm, orientation)
    return Trials("asvspoof5-cm", orientation, spoof, cm, cm)


def _optional_column(path: Path, scores: dict, ids: list[str], col: int, what: str) -> Any:
    """A SASV score column as float [N], or None when every entry is '-'."""
    texts = [scores[t][1][col] for t in ids]
    if all(x == "-" for x in texts):
        return None
    return np.array([_number(path, _Line(*scores[t]), scores[t][1][col], what) for t in ids])


def _read_sasv(path: Path, keys: Path | None, orientation: str) -> Trials:
    if keys is None:
        raise ConfigError(f"{path} is an ASVspoof 5 SASV score file; pass its key file with --keys")
    scores, labels = _table(path, SASV_HEADER), _table(keys, SASV_KEY_HEADER)
    ids = _join(path, scores, keys, labels)
    spoof = np.array([_label(keys, labels[t][0], labels[t][1][2], _CM_LABELS) for t in ids])
    asv_labels = np.array([_label(keys, labels[t][0], labels[t][1][3], _ASV_LABELS) for t in ids])
    cols = [
        _optional_column(path, scores, ids, c, n)
        for c, n in ((2, "cm-score"), (3, "asv-score"), (4, "sasv-score"))
    ]
    cm = None if cols[0] is None else _oriented(cols[0], orientation)
    return Trials("asvspoof5-sasv", orientation, spoof, cm, cm, asv_labels, cols[1], cols[2])


def _trial_rows(path: Path, width: int, expected: str) -> dict[str, tuple[int, list[str]]]:
    """{trial id (first field): (line number, fields)} of a headerless whitespace score file
    whose lines have `width` fields."""
    rows: dict[str, tuple[int, list[str]]] = {}
    for line in _lines(path, None):
        if len(line.fields) != width:
            raise DataError(f"{path}:{line.lineno}: {len(line.fields)} fields; expected {expected}")
        if line.fields[0] in rows:
            raise DataError(f"{path}:{line.lineno}: trial {line.fields[0]!r} repeats")
        rows[line.fields[0]] = (line.lineno, line.fields)
    return rows


def _protocol(keys: Path) -> dict[str, tuple[int, str]]:
    """{utt: (line number, "bonafide" or "spoof")} of an ASVspoof protocol: 2019 LA lines
    'spk utt - src key', or 2021 LA/DF trial metadata 'spk utt codec channel src key trim
    subset ...'. The utt is the second field and the key the bonafide/spoof word after it
    (2021 repeats it in the source column of bona fide lines)."""
    protocol: dict[str, tuple[int, str]] = {}
    for line in _lines(keys, None):
        words = {w for w in line.fields[2:] if w in _CM_LABELS}
        if len(line.fields) < 5 or len(words) != 1:
            raise DataError(
                f"{keys}:{line.lineno}: {' '.join(line.fields)!r} is not an ASVspoof protocol "
                "line ('spk utt - src key' of 2019, or 2021 trial metadata with one bonafide/"
                "spoof key)"
            )
        if line.fields[1] in protocol:
            raise DataError(f"{keys}:{line.lineno}: trial {line.fields[1]!r} repeats")
        protocol[line.fields[1]] = (line.lineno, words.pop())
    return protocol


def _read_2019(path: Path, keys: Path | None, orientation: str) -> Trials:
    rows = _trial_rows(path, 4, "'utt src key score'")
    ids = list(rows)
    labels = {t: (n, f[2]) for t, (n, f) in rows.items()}
    labels_path = path
    if keys is not None:
        labels = _protocol(keys)
        ids = _join(path, rows, keys, labels)
        labels_path = keys
    spoof = np.array([_label(labels_path, *labels[t], _CM_LABELS) for t in ids])
    cm = np.array([_number(path, _Line(*rows[t]), rows[t][1][3], "score") for t in ids])
    cm = _oriented(cm, orientation)
    return Trials("asvspoof2019", orientation, spoof, cm, cm)


def _read_2021(path: Path, keys: Path | None, orientation: str) -> Trials:
    if keys is None:
        raise DataError(
            f"{path} holds 'utt score' lines (the ASVspoof 2021 format) and no labels: pass "
            "--keys, an ASVspoof 2019 protocol or 2021 trial metadata file"
        )
    rows = _trial_rows(path, 2, "'utt score'")
    labels = _protocol(keys)
    ids = _join(path, rows, keys, labels)
    spoof = np.array([_CM_LABELS[labels[t][1]] for t in ids])
    cm = np.array([_number(path, _Line(*rows[t]), rows[t][1][1], "score") for t in ids])
    cm = _oriented(cm, orientation)
    return Trials("asvspoof2021", orientation, spoof, cm, cm)


def _read_pfake(path: Path, keys: Path | None) -> Trials:
    lines = _lines(path, ",")
    header = lines[0].fields
    if "utt" not in header or ("label" not in header and keys is None):
        raise DataError(
            f"{path}:1: header {header}; a P(fake) file needs columns utt and p_fake, and label "
            "(real/fake) unless --keys gives the labels"
        )
    col = {name: header.index(name) for name in header}
    rows: dict[str, tuple[int, list[str]]] = {}
    for line in lines[1:]:
        if len(line.fields) != len(header):
            raise DataError(f"{path}:{line.lineno}: {len(line.fields)} fields; expected {header}")
        utt = line.fields[col["utt"]]
        if utt in rows:
            raise DataError(f"{path}:{line.lineno}: trial {utt!r} repeats line {rows[utt][0]}")
        rows[utt] = (line.lineno, line.fields)
    if not rows:
        raise DataError(f"{path}: no trials after the header")
    ids = list(rows)
    if keys is None:
        spoof = np.array(
            [_label(path, rows[t][0], rows[t][1][col["label"]], _PFAKE_LABELS) for t in ids]
        )
    else:
        key_rows = _table(keys, CM_KEY_HEADER)
        ids = _join(path, rows, keys, key_rows)
        spoof = np.array([_label(keys, key_rows[t][0], key_rows[t][1][1], _CM_LABELS) for t in ids])
    p = np.empty(len(ids))
    for i, t in enumerate(ids):
        line = _Line(*rows[t])
        p[i] = _number(path, line, line.fields[col["p_fake"]], "p_fake")
        if not 0 <= p[i] <= 1:
            raise DataError(
                f"{path}:{line.lineno}: p_fake {float(p[i])!r} is outside [0, 1]; a P(fake) file holds "
                "probabilities (write other scores in the ASVspoof format with --orientation)"
            )
    with np.errstate(divide="ignore"):
        llr = np.log1p(-p) - np.log(p)  # log-odds of bona fide, read as an LLR at prior 1/2
    return Trials("deepshield-pfake", "fake-high", spoof, -p, llr)


def _format(path: Path) -> str:
    lines = _lines(path, None)
    if not lines:
        raise DataError(f"{path}: empty score file; expected one of: {'; '.join(FORMATS)}")
    first = lines[0].fields
    if first == CM_HEADER:
        return "asvspoof5-cm"
    if first == SASV_HEADER:
        return "asvspoof5-sasv"
    if "p_fake" in _lines(path, ",")[0].fields:
        return "deepshield-pfake"
    if len(first) == 4:
        return "asvspoof2019"
    if len(first) == 2:
        return "asvspoof2021"
    raise DataError(
        f"{path}:{lines[0].lineno}: first line {' '.join(first)!r} matches no score format; "
        f"expected one of: {'; '.join(FORMATS)}"
    )


def _check_trials(path: Path, t: Trials) -> None:
    """DataError when one class is missing or every CM score is the same."""
    n_spoof = int(t.spoof.sum())
    if n_spoof in (0, t.spoof.size):
        only = "spoof" if n_spoof else "bona fide"
        raise DataError(
            f"{path}: all {t.spoof.size} trials are {only}; the metrics need bona fide and spoof "
            "trials (check the key file)"
        )
    if t.cm is not None and np.unique(t.cm).size == 1:
        raise DataError(
            f"{path}: every CM score is {float(t.cm[0])!r}; constant scores rank nothing, so EER, DCF "
            "and AUC are undefined (is the score column the right one?)"
        )


def read_trials(
    path: str | Path, keys: str | Path | None = None, orientation: str | None = None
) -> Trials:
    """Read a score file (and its key file) of any supported format; orientation "bonafide-high"
    (default for ASVspoof files) or "fake-high"; P(fake) files accept only "fake-high"."""
    path = Path(path)
    keys = None if keys is None else Path(keys)
    if orientation is not None and orientation not in ORIENTATIONS:
        raise ConfigError(f"--orientation {orientation!r}; use one of {ORIENTATIONS}")
    fmt = _format(path)
    if fmt == "deepshield-pfake":
        if orientation == "bonafide-high":
            raise ConfigError(
                f"{path} holds P(fake), which is fake-high; drop --orientation bonafide-high"
            )
        trials = _read_pfake(path, keys)
    else:
        reader = {
            "asvspoof5-cm": _read_cm,
            "asvspoof5-sasv": _read_sasv,
            "asvspoof2019": _read_2019,
            "asvspoof2021": _read_2021,
        }
        trials = reader[fmt](path, keys, orientation or "bonafide-high")
    _check_trials(path, trials)
    return trials


def write_pfake_scores(path: str | Path, utt_ids: Sequence[str], labels: Any, p_fake: Any) -> Path:
    """Write deepshield's P(fake) CSV `utt,label,p_fake` atomically; labels [N] in {0, 1}
    (written real/fake), p_fake [N] in [0, 1]."""
    from deepshield.metrics.calibration import probabilities

    y, p = inputs.binary_labels(labels, "labels"), probabilities(p_fake, "p_fake")
    inputs.same_length(y, p, ("labels", "p_fake"))
    if len(utt_ids) != y.size:
        raise InputError(f"utt_ids has {len(utt_ids)} entries but p_fake has {y.size}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["utt", "label", "p_fake"])
    for utt, label, value in zip(utt_ids, y.tolist(), p.tolist(), strict=True):
        w.writerow([utt, ("real", "fake")[label], repr(value)])
    return atomic_write_text(path, buf.getvalue())
