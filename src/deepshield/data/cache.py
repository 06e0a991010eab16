"""On-disk cache of built datasets: .npz files in $DEEPSHIELD_CACHE, keyed by every parameter."""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepshield.files import atomic_write_bytes

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """$DEEPSHIELD_CACHE, else ~/.cache/deepshield."""
    env = os.environ.get("DEEPSHIELD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepshield"


def cache_path(kind: str, params: Mapping[str, Any]) -> Path:
    """File of dataset `kind` built with `params` (JSON-able; include a format version)."""
    text = json.dumps({"kind": kind, **params}, sort_keys=True)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]
    return cache_dir() / kind / f"{digest}.npz"


def cached_arrays(kind: str, params: Mapping[str, Any], build: Callable[[], Arrays]) -> Arrays:
    """Arrays of `kind`/`params` from the cache, or `build()` them and store them atomically.

    A cache file that cannot be read (truncated, foreign) is rebuilt and replaced.
    """
    path = cache_path(kind, params)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
            pass
    arrays = build()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # read-only or full cache folder: the data is still good
        warnings.warn(
            f"cannot write dataset cache {path} ({e}); set DEEPSHIELD_CACHE to a writable folder",
            stacklevel=2,
        )
    return arrays
