"""Dataset cache: keyed by parameters, atomic npz files, never unpickled, rebuilt when unreadable."""

from __future__ import annotations

import numpy as np

from deepshield.data.cache import cache_dir, cache_path, cached_arrays


def _builder(calls: list[int], value: int = 3):
    def build():
        calls.append(1)
        return {"x": np.full((2, 3), value, np.uint8), "names": np.array(["a", "b"])}

    return build


def test_build_once_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSHIELD_CACHE", str(tmp_path))
    calls: list[int] = []
    a = cached_arrays("k", {"n": 1}, _builder(calls))
    b = cached_arrays("k", {"n": 1}, _builder(calls))
    assert len(calls) == 1 and cache_dir() == tmp_path
    assert np.array_equal(a["x"], b["x"]) and b["names"].tolist() == ["a", "b"]
    assert [p.name for p in (tmp_path / "k").iterdir()] == [
        cache_path("k", {"n": 1}).name
    ]  # no temp left
    cached_arrays("k", {"n": 2}, _builder(calls))
    assert len(calls) == 2  # another parameter, another entry
    assert cache_path("k", {"a": 1, "b": 2}) == cache_path("k", {"b": 2, "a": 1})


def test_unreadable_or_pickled_cache_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSHIELD_CACHE", str(tmp_path))
    path = cache_path("k", {"n": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    calls: list[int] = []
    assert cached_arrays("k", {"n": 1}, _builder(calls, 5))["x"][0, 0] == 5 and len(calls) == 1
    np.savez(path, x=np.array([object()], dtype=object))  # would need pickle to read
    assert cached_arrays("k", {"n": 1}, _builder(calls, 6))["x"][0, 0] == 6 and len(calls) == 2
    assert cached_arrays("k", {"n": 1}, _builder(calls, 7))["x"][0, 0] == 6 and len(calls) == 2


def test_default_folder(monkeypatch):
    monkeypatch.delenv("DEEPSHIELD_CACHE", raising=False)
    assert str(cache_dir()).endswith(".cache/deepshield")
