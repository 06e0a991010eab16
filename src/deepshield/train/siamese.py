"""Siamese training: the contrastive loss, the Siamese objective and a balanced pair sampler.

A batch from `BalancedPairSampler` is a sequence of pairs (x[0], x[1]), (x[2], x[3]), ...; about
half the pairs share a class and half do not, and both classes fill half the batch however
imbalanced the data. `SiameseObjective` embeds the batch once through the shared weights and
minimises L_sim = w * L_con(Z1, Z2) + CE(logits1, Y1) + CE(logits2, Y2) over those pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from deepshield.errors import ConfigError, DataError, InputError
from deepshield.train import distributed
from deepshield.train.trainer import unwrap


def contrastive_loss(
    z1: torch.Tensor, z2: torch.Tensor, same: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """Hadsell-Chopra-LeCun (2006) contrastive loss, mean over pairs.

    z1, z2: embeddings [P, D]; same: bool [P], True where the pair shares a label; with the
    Euclidean distance d = ||z1 - z2||, a same-label pair costs d^2 / 2 (pulled together) and a
    different-label pair max(0, margin - d)^2 / 2 (pushed apart until d >= margin).
    """
    if z1.shape != z2.shape or z1.ndim != 2 or same.shape != z1.shape[:1]:
        raise InputError(
            f"contrastive_loss: z1 {tuple(z1.shape)}, z2 {tuple(z2.shape)}, same "
            f"{tuple(same.shape)}; pass embeddings [P, D] and one same-label flag per pair [P]"
        )
    d = (z1 - z2).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()  # [P] (clamp: finite grad at d=0)
    pull = 0.5 * d.pow(2)  # [P]
    push = 0.5 * F.relu(margin - d).pow(2)  # [P]
    return torch.where(same, pull, push).mean()


class SiameseObjective:
    """Trainer objective for a `Siamese` model on batches of consecutive pairs.

    loss = contrastive_weight * L_con(normalize(z[0::2]), normalize(z[1::2])) + CE(logits[0::2],
    y[0::2]) + CE(logits[1::2], y[1::2]); margin and weight are the model's (`Siamese.margin`,
    `Siamese.contrastive_weight`). Embeddings are L2-normalised for the contrastive term, so the
    margin is a distance on the unit sphere (0 to 2). Batches must have an even size.
    """

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        self.weight = weight  # optional per-class CE weights [K]

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(y) % 2:
            raise InputError(
                f"a Siamese batch holds pairs, got {len(y)} samples; use an even batch size"
            )
        logits, z = model(x, with_embedding=True)  # [B, K], [B, D] from one pass
        net = unwrap(model)
        w = None if self.weight is None else self.weight.to(logits.device)
        a, b = slice(0, None, 2), slice(1, None, 2)  # pair i = (2i, 2i + 1)
        ce = F.cross_entropy(logits[a], y[a], weight=w) + F.cross_entropy(logits[b], y[b], weight=w)
        zn = F.normalize(z, dim=1)  # [B, D] on the unit sphere
        con = contrastive_loss(zn[a], zn[b], y[a] == y[b], net.margin)
        return net.contrastive_weight * con + ce, logits


class BalancedPairSampler(Sampler[int]):
    """Indices in pairs: per epoch `n_pairs` pairs (default len(labels) // 2), half of them
    same-class (split evenly over the classes) and half different-class (class pairs chosen
    uniformly), shuffled. Within a class, samples are drawn from a fresh permutation and the
    permutation restarts when exhausted, so a minority class is repeated and a majority class
    subsampled. Epoch e's order depends only on (seed, e) (`set_epoch`).

    Under torchrun each rank takes every world-th pair; the per-rank batch must be even.
    """

    def __init__(
        self,
        labels: torch.Tensor | np.ndarray,
        seed: int = 0,
        n_pairs: int | None = None,
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise DataError(
                f"Siamese training needs samples of at least 2 classes; the train split has "
                f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}; add the missing class"
            )
        self.pools = [np.flatnonzero(y == c) for c in classes]  # sample indices per class
        self.n_pairs = max(1, len(y) // 2) if n_pairs is None else int(n_pairs)
        if self.n_pairs < 1:
            raise ConfigError(f"n_pairs={n_pairs}; ask for at least one pair per epoch")
        self.seed = seed
        self.rank = distributed.rank() if rank is None else rank
        self.world = distributed.world_size() if world is None else world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * math.ceil(self.n_pairs / self.world)

    def pairs(self) -> np.ndarray:
        """The epoch's pairs, int64 [n_pairs, 2] of sample indices (all ranks, same order)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        k = len(self.pools)
        n_same = self.n_pairs // 2
        n_diff = self.n_pairs - n_same
        same_cls = np.resize(rng.permutation(k), n_same)  # even over classes
        same_cls = np.stack([same_cls, same_cls], 1)  # [n_same, 2]
        diff_cls = np.stack([rng.choice(k, 2, replace=False) for _ in range(n_diff)])
        cls = np.concatenate([same_cls, diff_cls.reshape(-1, 2)])  # [n_pairs, 2]
        draws = [_Cycle(pool, rng) for pool in self.pools]
        out = np.empty_like(cls)
        for i, (a, b) in enumerate(cls):
            out[i] = draws[a].next(), draws[b].next()
        return out[rng.permutation(len(out))]

    def __iter__(self) -> Iterator[int]:
        pairs = self.pairs()
        per_rank = math.ceil(len(pairs) / self.world)
        pairs = np.resize(pairs, (per_rank * self.world, 2))  # pad by repeating from the start
        return iter(pairs[self.rank :: self.world].reshape(-1).tolist())


class _Cycle:
    """Draws from `pool` without replacement, reshuffling it each time it runs out."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.pool, self.rng = pool, rng
        self.order, self.i = rng.permutation(pool), 0

    def next(self) -> int:
        if self.i == len(self.order):
            self.order, self.i = self.rng.permutation(self.pool), 0
        self.i += 1
        return int(self.order[self.i - 1])
