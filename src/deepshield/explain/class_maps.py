"""Mean explanation map per class over a dataset."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepshield.data.splits import TensorSet, as_batch
from deepshield.errors import InputError
from deepshield.explain.methods import Method, method_fn


def _batches(
    data: Dataset | tuple[torch.Tensor, torch.Tensor], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of a TensorSet, any map-style dataset of (x, y), or a tensor pair."""
    if isinstance(data, tuple):
        x, y = data
        if len(x) != len(y):
            raise InputError(f"x has {len(x)} samples but y has {len(y)}: pass matching tensors")
        for i in range(0, len(y), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    collate = as_batch if isinstance(data, TensorSet) else None
    yield from DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)


def class_mean_maps(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    method: str | Method = "grad_cam",
    batch_size: int = 64,
    *,
    target: str = "label",
) -> dict[int, torch.Tensor]:
    """{class: mean map [H,W] (speech: [F,T'] or [T])} over the samples of each class present.

    data: a TensorSet / dataset of (x, y) or a pair (x [N,...], y [N]). Each sample is explained
    for its true class (target="label") or for the model's predicted class (target="predicted").
    The result does not depend on batch_size.
    """
    if target not in ("label", "predicted"):
        raise InputError(f"target={target!r}: use 'label' or 'predicted'")
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: use a positive batch size")
    fn = method_fn(method)
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    for x, y in _batches(data, batch_size):
        y = torch.as_tensor(y).long()
        maps = fn(model, x, y.to(x.device) if target == "label" else None).detach().cpu().double()
        for c in y.unique().tolist():
            pick = maps[y == c]  # [n_c, ...]
            sums[c] = sums.get(c, 0) + pick.sum(dim=0)
            counts[c] = counts.get(c, 0) + len(pick)
    if not counts:
        raise InputError("the dataset is empty: pass at least one sample")
    return {c: (sums[c] / counts[c]).float() for c in sorted(sums)}
