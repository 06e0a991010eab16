"""The built-in synthetic-faces set: determinism, shapes, balance, splits, boxes, cache."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from deepshield.data import load, resolve
from deepshield.data.cache import cache_path
from deepshield.data.sources.synthetic_faces import (
    FORMAT_VERSION,
    VARIANTS,
    CropPool,
    _quantize,
    build,
)
from deepshield.errors import ConfigError


def _full(s):
    x = torch.cat([s.train.x, s.val.x, s.test.x])
    y = torch.cat([s.train.y, s.val.y, s.test.y])
    boxes = torch.cat([s.train.meta["boxes"], s.val.meta["boxes"], s.test.meta["boxes"]])
    return x, y, boxes


@pytest.mark.parametrize("variant", ["easy", "hard"])
def test_build_is_deterministic_by_seed(variant):
    a = build(variant, n=40, size=32, seed=5, localized=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads % 2 + 1)  # a different thread count gives the same bytes
    try:
        b = build(variant, n=40, size=32, seed=5, localized=False)
    finally:
        torch.set_num_threads(threads)
    c = build(variant, n=40, size=32, seed=6, localized=False)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["x"], c["x"])


@pytest.mark.parametrize("variant", ["easy", "hard"])
def test_shapes_balance_and_splits(variant):
    s = load(f"synthetic-faces:{variant}", seed=0, n=200, size=32)
    assert s.name == f"synthetic-faces:{variant}" and s.classes == ["real", "fake"]
    x, y, boxes = _full(s)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (200, 3, 32, 32)
    assert int(y.sum()) == 100  # balanced
    assert [len(s.train), len(s.val), len(s.test)] == [140, 30, 30]
    for t in (s.train, s.val, s.test):  # stratified: half fake in every split
        assert int(t.y.sum()) * 2 == len(t)
        xf, _ = t.tensors()
        assert xf.dtype == torch.float32 and float(xf.min()) >= 0.0 and float(xf.max()) <= 1.0
    names = s.train.names + s.val.names + s.test.names
    assert len(set(names)) == 200
    assert all(("fake" in n) == bool(label) for n, label in zip(names, y.tolist(), strict=True))
    assert float(x.float().std()) > 20  # real image content, not a constant
    real = y == 0
    assert (boxes[real] == -1).all()
    fb = boxes[~real]
    assert (fb[:, 0] >= 0).all() and (fb[:, 1] >= 0).all()
    assert (fb[:, 2] <= 32).all() and (fb[:, 3] <= 32).all()
    assert (fb[:, 2] > fb[:, 0]).all() and (fb[:, 3] > fb[:, 1]).all()


@pytest.mark.parametrize("variant", ["easy", "hard"])
def test_localized_boxes_bound_every_change(variant):
    """A localized fake differs from its own base crop only inside its (sub-image) box."""
    n, size = 40, 32
    a = build(variant, n=n, size=size, seed=1, localized=True)
    assert (a["boxes"][a["y"] == 0] == -1).all()
    w = a["boxes"][:, 2] - a["boxes"][:, 0]
    h = a["boxes"][:, 3] - a["boxes"][:, 1]
    fake = a["y"] == 1
    assert (w[fake] < size).all() and (h[fake] < size).all()
    assert (w[fake] * h[fake]).mean() < 0.5 * size * size
    # Each fake's base crop is the first draw of its own random stream: redraw it and compare.
    pool = CropPool()
    streams = np.random.SeedSequence([1, VARIANTS.index(variant)]).spawn(n + 1)
    for i in np.flatnonzero(fake)[:10]:
        base = _quantize(pool.crop(np.random.default_rng(streams[i]), size)[0]).transpose(2, 0, 1)
        x0, y0, x1, y1 = a["boxes"][i]
        outside = np.ones((size, size), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(a["x"][i][:, outside], base[:, outside])
        assert not np.array_equal(a["x"][i], base)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSHIELD_CACHE", str(tmp_path))
    params = {
        "format": FORMAT_VERSION,
        "variant": "easy",
        "n": 100,
        "size": 32,
        "seed": 9,
        "localized": False,
    }
    path = cache_path("synthetic-faces", params)
    assert not path.exists()
    t0 = time.perf_counter()
    first = load("synthetic-faces:easy", seed=9, n=100, size=32)
    t_build = time.perf_counter() - t0
    assert path.is_file() and path.parent.parent == tmp_path
    t0 = time.perf_counter()
    second = load("synthetic-faces:easy", seed=9, n=100, size=32)
    t_cached = time.perf_counter() - t0
    for a, b in zip(_full(first), _full(second), strict=True):
        assert torch.equal(a, b)
    assert first.test.names == second.test.names
    assert t_cached < t_build / 3
    assert cache_path("synthetic-faces", {**params, "seed": 10}) != path


def test_default_variant_and_bad_options():
    source, arg = resolve("synthetic-faces")
    assert source.builtin and source.variants == ("easy", "hard") and arg is None
    with pytest.raises(ConfigError, match="unknown variant: use easy or hard"):
        load("synthetic-faces:medium", seed=0)
    with pytest.raises(ConfigError, match="size=30"):
        load("synthetic-faces:easy", seed=0, size=30)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "budget_s"), [("easy", 15.0), ("hard", 40.0)])
def test_default_build_time(variant, budget_s):
    t0 = time.perf_counter()
    a = build(variant, n=3000, size=64, seed=0, localized=False)
    elapsed = time.perf_counter() - t0
    assert a["x"].shape == (3000, 3, 64, 64)
    assert elapsed < budget_s, f"{variant}: {elapsed:.1f}s"
