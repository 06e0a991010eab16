"""Stratified splits by seed: disjoint, complete, class-proportional, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepshield.data.split import stratified_split, stratified_take, stratified_take_parts


def test_split_is_a_partition_with_per_class_proportions():
    y = np.array([0] * 600 + [1] * 200 + [2] * 40)
    parts = stratified_split(y, (0.7, 0.15, 0.15), seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and len(np.unique(joined)) == len(y)  # disjoint and complete
    for c, n in ((0, 600), (1, 200), (2, 40)):
        sizes = [int((y[p] == c).sum()) for p in parts]
        assert sizes[1] == int(n * 0.15) and sizes[2] == int(n * 0.15)
        assert sum(sizes) == n


def test_split_depends_only_on_seed():
    y = np.arange(500) % 2
    a = stratified_split(y, seed=1)
    b = stratified_split(y, seed=1)
    c = stratified_split(y, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


def test_small_class_gets_one_sample_in_every_part():
    y = np.array([0] * 100 + [1] * 3)
    parts = stratified_split(y, seed=0)
    assert [int((y[p] == 1).sum()) for p in parts] == [1, 1, 1]


def test_bad_fractions_raise():
    with pytest.raises(ValueError, match="fractions"):
        stratified_split([0, 1], (0.5, -0.5), seed=0)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    frac=st.floats(0.05, 0.95),
    seed=st.integers(0, 10),
)
def test_take_returns_exactly_n_in_proportion(counts, frac, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    n = max(1, int(frac * len(y)))
    idx = stratified_take(y, n, seed=seed)
    assert len(idx) == n and len(np.unique(idx)) == n
    for c, k in enumerate(counts):  # each class within one sample of its exact share
        assert abs(int((y[idx] == c).sum()) - n * k / len(y)) < 1.0 + 1e-9


def test_take_all_when_n_exceeds():
    assert np.array_equal(stratified_take([1, 0, 1], 10, seed=0), [0, 1, 2])


def test_subset_over_parts_keeps_part_and_class_shares():
    parts = [np.array([0] * 60 + [1] * 20), np.array([0] * 10 + [1] * 10)]
    a, b = stratified_take_parts(parts, 50, seed=4)
    assert (parts[0][a] == 0).sum() == 30 and (parts[0][a] == 1).sum() == 10
    assert (parts[1][b] == 0).sum() == 5 and (parts[1][b] == 1).sum() == 5
    assert len(np.unique(a)) == len(a) and a.max() < 80 and b.max() < 20
    again = stratified_take_parts(parts, 50, seed=4)
    assert np.array_equal(again[0], a) and np.array_equal(again[1], b)
