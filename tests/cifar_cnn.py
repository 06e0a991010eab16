"""The tests' reference CIFAR-10 model: a small CNN trained on the real lossless subset of ../shared.

Three stride-2 convs (~30 k parameters), Adam 2e-3, batch 64, seed 0: the same weights every run
(6 epochs: ~45 % test accuracy, ~10 s on one core). Used by the peer comparisons of the attacks.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conftest import shared_path
from deepshield.data.sources.cifar10 import read_batch


@functools.cache
def cifar() -> dict[str, torch.Tensor]:
    """The lossless CIFAR-10 subset: 4,660 training and 932 test images, x in [0, 1]."""
    folder = shared_path("data", "cifar10", "cifar-10-batches-py")
    xs, ys = zip(*(read_batch(folder / f"data_batch_{i}") for i in range(1, 6)), strict=True)
    x_test, y_test = read_batch(folder / "test_batch")
    return {
        "x_train": torch.from_numpy(np.concatenate(xs)).float() / 255,
        "y_train": torch.from_numpy(np.concatenate(ys)).long(),
        "x_test": torch.from_numpy(x_test).float() / 255,
        "y_test": torch.from_numpy(y_test).long(),
    }


def train_cnn(preprocess: nn.Module | None = None, epochs: int = 6) -> nn.Module:
    """x: [B,3,32,32] in [0,1] -> logits [B,10]; trained on cifar(), behind `preprocess` if given."""
    torch.manual_seed(0)
    layers = [] if preprocess is None else [preprocess]
    net = nn.Sequential(
        *layers,
        nn.Conv2d(3, 16, 3, stride=2, padding=1),  # [B, 16, 16, 16]
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),  # [B, 32, 8, 8]
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),  # [B, 64, 4, 4]
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 16, 10),
    )
    data = cifar()
    x, y = data["x_train"], data["y_train"]
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()
