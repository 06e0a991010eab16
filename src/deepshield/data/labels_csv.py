"""A labels CSV as people write them: Excel's BOM, CRLF, ';' (European Excel) or tab
separators, blank rows, labels as 0/1 (also '1.0'), real/fake or bonafide/spoof in any case."""

from __future__ import annotations

import csv
import io
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
