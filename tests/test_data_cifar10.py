"""CIFAR-10 batches through the restricted unpickler: real data, splits, refused pickles."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from deepshield.data import load
from deepshield.data.sources.cifar10 import read_pickle
from deepshield.errors import ConfigError, DataError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar(
    folder: Path, n: int = 50, protocol: int = 2
) -> dict[str, tuple[np.ndarray, list]]:
    """A small cifar-10-batches-py folder (2 train batches + test), pickled like the original."""
    folder.mkdir(parents=True)
    meta = {b"label_names": [s.encode() for s in NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    rng = np.random.default_rng(0)
    out = {}
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
        out[name] = (data, labels)
    return out


@pytest.mark.parametrize("protocol", [2, 5])
def test_synthetic_batches_load_with_exact_pixels(tmp_path, protocol):
    raw = _write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    s = load(f"cifar10:{tmp_path}", seed=0)
    assert s.classes == NAMES and s.num_classes == 10
    assert len(s.train) + len(s.val) == 100 and len(s.val) == 10 and len(s.test) == 50
    for t in (s.train, s.val, s.test):
        for i in (0, len(t) - 1):
            batch, idx = t.names[i].split(":")
            data, labels = raw[batch]
            assert np.array_equal(t.x[i].numpy().reshape(-1), data[int(idx)])
            assert int(t.y[i]) == labels[int(idx)]
    assert set(s.train.names).isdisjoint(s.val.names)
    limited = load(f"cifar10:{tmp_path}/cifar-10-batches-py", seed=0, limit=20)
    assert [len(limited.train), len(limited.val), len(limited.test)] == [20, 10, 20]
    assert np.bincount(limited.test.y.numpy(), minlength=10).tolist() == [2] * 10


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "payload",
    [
        lambda m: pickle.dumps(_Evil(m), protocol=2),
        lambda m: pickle.dumps({b"data": _Evil(m)}, protocol=5),
        lambda m: f"cos\nsystem\n(S'touch {m}'\ntR.".encode(),
        lambda m: f'cbuiltins\neval\n(S\'open("{m}", "w")\'\ntR.'.encode(),
        lambda m: f"cnumpy\nload\n(S'{m}'\ntR.".encode(),  # allowed module, other name
    ],
)
def test_malicious_pickle_is_refused_without_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(payload(marker))
    with pytest.raises(DataError, match=r"data_batch_1: pickle refers to .*refusing"):
        read_pickle(p)
    assert not marker.exists()


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(DataError, match="no path given"):
        load("cifar10", seed=0)
    with pytest.raises(DataError, match=r"nowhere: no batches\.meta"):
        load(f"cifar10:{tmp_path / 'nowhere'}", seed=0)
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR-10 pickle"):
        load(f"cifar10:{tmp_path / 'c'}", seed=0)
    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch: no 'data' entry"):
        load(f"cifar10:{tmp_path / 'c'}", seed=0)
    with pytest.raises(ConfigError, match="limit=0"):
        load(f"cifar10:{tmp_path / 'c'}", seed=0, limit=0)


def _raw_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Pixels and labels read straight from the pickle opcodes (no unpickling)."""
    ops = list(pickletools.genops(path.read_bytes()))
    data = max((arg for op, arg, _ in ops if isinstance(arg, bytes | str)), key=len)
    if isinstance(data, str):  # SHORT/BINSTRING args are decoded as latin-1 text
        data = data.encode("latin-1")
    start = next(i for i, (_, arg, _) in enumerate(ops) if arg == "labels")
    labels = []
    for op, arg, _ in ops[start + 1 :]:
        if op.name in ("SHORT_BINSTRING", "BINSTRING", "BINUNICODE", "SHORT_BINUNICODE"):
            break
        if op.name in ("BININT1", "BININT2", "BININT"):
            labels.append(arg)
    return np.frombuffer(data, np.uint8).reshape(-1, 3072), labels


def test_real_cifar_batches():
    folder = shared_path("data", "cifar10", "cifar-10-batches-py")
    s = load(f"cifar10:{folder.parent}", seed=0)
    assert s.classes == NAMES
    assert len(s.train) + len(s.val) == 932 * 5 and len(s.test) == 932
    assert np.bincount(s.test.y.numpy(), minlength=10).tolist() == [
        97,
        78,
        94,
        95,
        85,
        84,
        105,
        96,
        98,
        100,
    ]
    raw = {
        name: _raw_batch(folder / name) for name in ("data_batch_1", "data_batch_5", "test_batch")
    }
    assert all(len(r[0]) == 932 and len(r[1]) == 932 for r in raw.values())
    checked = 0
    for t in (s.train, s.val, s.test):
        for i in range(0, len(t), 97):
            batch, idx = t.names[i].split(":")
            if batch in raw:
                data, labels = raw[batch]
                assert np.array_equal(t.x[i].numpy().reshape(-1), data[int(idx)])
                assert int(t.y[i]) == labels[int(idx)]
                checked += 1
    assert checked >= 15
