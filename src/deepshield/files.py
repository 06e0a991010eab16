"""Atomic file writes (a temp file in the same folder, then os.replace: never a half-written
file) and the identity of a file read (size, modification time, SHA-256)."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_stamp(path: Path) -> dict[str, Any]:
    """{bytes, mtime}: the size and the modification time (ISO 8601 UTC, microseconds) of a file."""
    st = path.stat()
    t = datetime.datetime.fromtimestamp(st.st_mtime_ns / 1e9, datetime.UTC)
    return {"bytes": st.st_size, "mtime": t.isoformat(timespec="microseconds")}


def file_identity(path: Path) -> dict[str, Any]:
    """{bytes, mtime, sha256} of a file: what ties a result to the exact bytes it came from."""
    return file_stamp(path) | {"sha256": file_digest(path)}


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> Path:
    """A CSV with a header of `columns` and one line per row (None written as an empty cell),
    replaced atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalar
        return _finite(obj.item())
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def atomic_save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
