"""Labels CSVs as people write them (`data.labels_csv`): Excel's BOM and CRLF, ';' and tab
separators, blank rows, labels in any common spelling; line numbers that are the file's."""

from __future__ import annotations

import pytest

from deepshield.data.labels_csv import label_value, read_rows
from deepshield.errors import DataError

ROWS = [("a.png", "real"), ("b.png", "fake")]


@pytest.mark.parametrize(
    ("separator", "newline", "bom"),
    [(",", "\n", False), (",", "\r\n", True), (";", "\r\n", True), ("\t", "\n", False)],
)
def test_excel_variants_read_as_the_same_rows(tmp_path, separator, newline, bom) -> None:
    text = newline.join(separator.join(r) for r in [("File", "Label"), *ROWS]) + newline
    path = tmp_path / "labels.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    header, rows = read_rows(path)
    assert header == ["file", "label"]
    assert rows == [(2, ["a.png", "real"]), (3, ["b.png", "fake"])]


def test_blank_rows_are_skipped_and_lines_are_the_files(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("file,label\n\na.png,0\n,\n\nb.png,oops\n,,\n")
    assert read_rows(path) == (["file", "label"], [(3, ["a.png", "0"]), (6, ["b.png", "oops"])])


@pytest.mark.parametrize(
    ("cell", "label"),
    [("0", 0), ("1", 1), ("1.0", 1), (" 0.0 ", 0), ("REAL", 0), ("Fake", 1), ("bonafide", 0),
     ("spoof", 1), ("2", None), ("0.5", None), ("", None), ("nan", None), ("maybe", None)],
)  # fmt: skip
def test_label_spellings(cell, label) -> None:
    assert label_value(cell) == label


def test_a_file_that_is_not_text_is_one_error(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match=r"labels\.csv: cannot read .* save it as UTF-8"):
        read_rows(path)
