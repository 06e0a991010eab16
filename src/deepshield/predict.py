"""Batched inference: logits and P(fake) scores for a dataset or a tensor."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from deepshield.data.splits import TensorSet, as_batch
from deepshield.models.frozen import frozen_eval


def loader(
    ds: TensorSet, batch_size: int, *, shuffle: bool = False, seed: int = 0, sampler: object = None
) -> DataLoader:
    """A DataLoader over a TensorSet using its batched fetch (no per-item collation)."""
    gen = torch.Generator().manual_seed(seed) if shuffle and sampler is None else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=gen,
        collate_fn=as_batch,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: TensorSet | torch.Tensor,
    batch_size: int = 128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits [N, K] of `model` (frozen eval mode, every submodule restored after) on a
    TensorSet or tensor [N, ...]."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with frozen_eval(model):
        out = []
        if isinstance(data, torch.Tensor):
            for i in range(0, len(data), batch_size):
                out.append(model(data[i : i + batch_size].to(device)).float().cpu())
        else:
            for x, _ in loader(data, batch_size):
                out.append(model(x.to(device)).float().cpu())
        return torch.cat(out) if out else torch.empty(0)


def fake_scores(logits: torch.Tensor) -> torch.Tensor:
    """P(fake) [N] from detector logits [N,2] (softmax) or [N] / [N,1] (sigmoid of one logit)."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return torch.sigmoid(logits.reshape(-1))
    return torch.softmax(logits, dim=-1)[:, 1]
