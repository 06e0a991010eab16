"""A labels CSV as people write them: Excel's BOM, CRLF, ';' (European Excel) or tab
separators, blank rows, labels as 0/1 (also '1.0'), real/fake or bonafide/spoof in any case."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from deepshield.errors import DataError

LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1, "bonafide": 0, "bona-fide": 0, "spoof": 1}
LABELS_ACCEPTED = "0/real/bonafide or 1/fake/spoof"
SEPARATORS = (",", ";", "\t")  # a tie (e.g. one column) goes to the first


def label_value(cell: str) -> int | None:
    """0 (real) or 1 (fake) from a label cell: a word of LABEL_WORDS in any case, or a number
    equal to 0 or 1 ('1.0'); None for anything else."""
    text = cell.strip().lower()
    if text in LABEL_WORDS:
        return LABEL_WORDS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header cells stripped and lower-cased, [(line number in the file, cells)] of the rows
    below it that are not empty); the separator is the one of SEPARATORS the header line holds
    most of. ([], []) for an empty file; DataError when it cannot be read as text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}): save it as UTF-8 CSV text") from e
    first = next((line for line in text.splitlines() if line.strip()), "")
    separator = max(SEPARATORS, key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):  # blank line, or ",,," left by Excel
                continue
            if not header:
                header = [cell.strip().lower() for cell in cells]
            else:
                rows.append((reader.line_num, cells))
    except csv.Error as e:
        raise DataError(f"{path} line {reader.line_num}: {e}: fix the line") from e
    return header, rows


def read_path_labels(
    path: Path,
    *,
    base: Path | None = None,
    what: str = "file",
    classes: Sequence[str] | None = None,
) -> list[tuple[Path, int]]:
    """(file, label) of each row of a `path,label` CSV (the image and speech folders' labels.csv),
    paths relative to `base` (default: the CSV's folder); DataError naming the file and line on
    a bad row or a missing `what` ("image", "clip"), and with `classes` (names of labels 0, 1)
    when a class has no row."""
    base = path.parent if base is None else base
    header, rows = read_rows(path)
    if not header:
        raise DataError(f"{path}: empty file: write a header `path,label` and one row per {what}")
    if "path" not in header or "label" not in header:
        raise DataError(
            f"{path} line 1: header {header} lacks `path` and `label` columns: add them"
        )
    ip, il = header.index("path"), header.index("label")
    out: list[tuple[Path, int]] = []
    for line, row in rows:
        if len(row) <= max(ip, il):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, expected {len(header)}: fix the line"
            )
        rel, label = row[ip].strip(), label_value(row[il])
        if label is None:
            raise DataError(
                f"{path} line {line}: label {row[il]!r} is not {LABELS_ACCEPTED}: fix the line"
            )
        file = base / rel
        if not rel or not file.is_file():
            raise DataError(
                f"{path} line {line}: {what} {rel!r} not found under {base}: fix the path"
            )
        out.append((file, label))
    for label, name in enumerate(classes or ()):
        if not any(lab == label for _, lab in out):
            raise DataError(f"{path}: no rows with label {label} ({name}): add {name} {what}s")
    return out
