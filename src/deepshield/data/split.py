"""Stratified train/val/test index splits by seed: each class is split in the same proportions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def stratified_split(
    y: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int,
) -> list[np.ndarray]:
    """Indices of each part (one array per fraction, sorted ascending); y: [N] class ids.

    Every class is shuffled by `seed` and cut in `fractions` (rounded per class, the remainder
    going to the largest-fraction part); a class with at least as many samples as parts puts
    at least one sample in every part.
    """
    y = np.asarray(y)
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"fractions must be non-negative and sum to > 0, got {list(fractions)}")
    f = f / f.sum()
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in f]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        sizes = _part_sizes(len(idx), f)
        for p, chunk in enumerate(np.split(idx, np.cumsum(sizes)[:-1])):
            parts[p].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def group_split(
    y: Sequence[int] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    seed: int,
) -> list[np.ndarray]:
    """Indices of each part (sorted) with every group wholly in one part; y, groups: [N].

    Groups are stratified by the set of classes they hold (real only, fake only, both) and each
    stratum is cut in `fractions` of its groups by `stratified_split`, so the class balance of
    the parts follows the groups as far as their number allows.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    kinds = [",".join(map(str, np.unique(y[inverse == g]))) for g in range(len(names))]
    _, kind_codes = np.unique(np.asarray(kinds), return_inverse=True)
    parts = stratified_split(kind_codes, fractions, seed=seed)
    return [np.flatnonzero(np.isin(inverse, p)) for p in parts]


def stratified_take(y: Sequence[int] | np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of `n` samples keeping class proportions (all if n >= N).

    Each class gets its share of `n` rounded down; the samples left over go to the classes with
    the largest rounding remainders.
    """
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / len(y)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _part_sizes(n: int, f: np.ndarray) -> np.ndarray:
    """Split n items into len(f) parts by fractions f; >= 1 per non-zero part when n allows."""
    sizes = np.floor(n * f).astype(np.int64)
    if n >= np.count_nonzero(f):
        sizes[(sizes == 0) & (f > 0)] = 1
    while sizes.sum() > n:  # the min-1 rule overshot: take from the largest part
        sizes[np.argmax(sizes)] -= 1
    sizes[np.argmax(f)] += n - sizes.sum()
    return sizes


def stratified_take_parts(
    parts: Sequence[Sequence[int] | np.ndarray], n: int, *, seed: int
) -> list[np.ndarray]:
    """Indices into each part (sorted) of a seeded subset of `n` samples over all parts.

    parts: class ids [N_p] per part (e.g. a dataset's given train / val / test). Every
    (part, class) stratum keeps its share of `n` (`stratified_take` on the pair), so both the
    class balance and the parts' proportions are those of the whole; all samples if n >= N.
    """
    if n < 1:
        raise ValueError(f"n = {n}: a subset needs n >= 1")
    ys = [np.asarray(y, dtype=np.int64) for y in parts]
    top = max((int(y.max()) + 1 for y in ys if len(y)), default=1)
    key = np.concatenate([p * top + y for p, y in enumerate(ys)] or [np.zeros(0, np.int64)])
    chosen = stratified_take(key, n, seed=seed)
    bounds = np.cumsum([0] + [len(y) for y in ys])
    return [chosen[(chosen >= a) & (chosen < b)] - a for a, b in itertools.pairwise(bounds)]
