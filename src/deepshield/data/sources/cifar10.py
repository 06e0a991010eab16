"""CIFAR-10 python batches (cifar-10-batches-py), read through a restricted unpickler.

train = data_batch_*, test = test_batch, val = 10% of train carved by seed (stratified);
classes = batches.meta label_names. A pickle global other than the few numpy/codecs names the
format needs raises DataError before anything in the file runs.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepshield.data.registry import register_source
from deepshield.data.split import stratified_split, stratified_take
from deepshield.data.splits import Splits, TensorSet
from deepshield.data.summary import counts_note
from deepshield.errors import ConfigError, DataError

BATCH_FOLDER = "cifar-10-batches-py"
VAL_FRACTION = 0.10


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """(module, name) -> object for the globals a CIFAR batch may name (numpy 1 and 2 paths)."""
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    out: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in Python 3 protocol-2 pickles
    }
    for pkg in ("numpy.core", "numpy._core"):
        out[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol-5 pickles
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array globals of the CIFAR format."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise DataError(
                f"{self.source}: pickle refers to {module}.{name}, which a CIFAR-10 batch never "
                "does: refusing to load it (use the official cifar-10-python files)"
            )
        return obj


def read_pickle(path: Path) -> Any:
    """Unpickle `path` with RestrictedUnpickler; DataError when absent, corrupt or not allowed."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e}): check the CIFAR-10 folder") from e
    try:
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # any malformed pickle stream
        raise DataError(
            f"{path}: not a readable CIFAR-10 pickle ({type(e).__name__}: {e}): "
            "re-download cifar-10-python.tar.gz"
        ) from e


def _field(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path}: holds {type(d).__name__}, not a CIFAR-10 dict: check the file")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: no {key!r} entry: not a CIFAR-10 python batch file")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (x uint8 [N,3,32,32], y int64 [N])."""
    d = read_pickle(path)
    data = np.asarray(_field(d, "data", path))
    labels = np.asarray(_field(d, "labels", path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if len(labels) != len(data) or (labels < 0).any() or (labels > 9).any():
        raise DataError(f"{path}: {len(labels)} labels (0..9) expected for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), labels  # [N, 3, 32, 32]: rows are R, G, B planes


def _batch_folder(arg: str | None) -> Path:
    if not arg:
        raise DataError(f"cifar10: no path given: use cifar10:PATH, PATH holding {BATCH_FOLDER}/")
    root = Path(arg).expanduser()
    for folder in (root / BATCH_FOLDER, root):
        if (folder / "batches.meta").is_file():
            return folder
    raise DataError(
        f"{root}: no batches.meta in it or in {root / BATCH_FOLDER}: give the folder of the "
        "extracted cifar-10-python.tar.gz"
    )


@register_source(
    "cifar10",
    description=f"CIFAR-10 python batches: cifar10:PATH (PATH or PATH/{BATCH_FOLDER}); 10 classes",
)
def load_cifar10(arg: str | None, *, seed: int, limit: int | None = None) -> Splits:
    """train = data_batch_* minus a 10% val carved by seed, test = test_batch; x uint8 [N,3,32,32].

    limit: at most this many samples per split (a class-stratified subset chosen by seed).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"cifar10: limit={limit}: give a positive number of samples per split")
    folder = _batch_folder(arg)
    names = _field(read_pickle(folder / "batches.meta"), "label_names", folder / "batches.meta")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files:
        raise DataError(
            f"{folder}: no data_batch_* files: extract the full cifar-10-python archive"
        )
    if not (folder / "test_batch").is_file():
        raise DataError(f"{folder / 'test_batch'}: file missing: extract the full archive")
    batches = [read_batch(f) for f in train_files]
    xs, ys = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    ids = [
        f"{f.name}:{i}" for f, b in zip(train_files, batches, strict=True) for i in range(len(b[1]))
    ]
    x_test, y_test = read_batch(folder / "test_batch")
    train_idx, val_idx = stratified_split(ys, (1 - VAL_FRACTION, VAL_FRACTION), seed=seed)
    full = TensorSet(torch.from_numpy(xs), torch.from_numpy(ys), ids)
    test = TensorSet(
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        [f"test_batch:{i}" for i in range(len(y_test))],
    )
    train, val = full.subset(train_idx), full.subset(val_idx)
    if limit is not None:
        train, val, test = (
            s.subset(stratified_take(s.y.numpy(), limit, seed=seed)) for s in (train, val, test)
        )
    splits = Splits(name="cifar10", train=train, val=val, test=test, classes=classes)
    splits.notes = counts_note(splits)
    return splits
