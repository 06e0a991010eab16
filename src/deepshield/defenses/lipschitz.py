"""Lipschitz (input-gradient) regularisation: a training penalty on the detector's input gradient.

penalty = lam * mean_i || d loss_i / d x_i ||_2^2, loss_i the cross-entropy of sample i, computed
by double backpropagation (Drucker & LeCun) so that the optimiser also descends the gradient norm.
A small input gradient bounds how far a small perturbation can move the loss (a local Lipschitz
constant); Gandhi & Jain train deepfake detectors with it.

@inproceedings{gandhi2020adversarial,
  title     = {Adversarial Perturbations Fool Deepfake Detectors},
  author    = {Gandhi, Apurva and Jain, Shomik},
  booktitle = {International Joint Conference on Neural Networks (IJCNN)},
  year      = {2020}
}
@article{drucker1992double,
  title   = {Improving Generalization Performance Using Double Backpropagation},
  author  = {Drucker, Harris and LeCun, Yann},
  journal = {IEEE Transactions on Neural Networks},
  volume  = {3},
  number  = {6},
  pages   = {991--997},
  year    = {1992}
}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield.errors import ConfigError


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool) -> Tensor:
    """d CE(model(x_i), y_i) / d x_i per sample: x [B,...], y [B] -> [B,...] (sum of losses)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return grad


@contextmanager
def kept_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Batch-norm running statistics stay as they were (an extra forward must not count twice).

    The extra forward updates copies; on exit the original tensors are put back untouched. They
    are never written in place, since the training forward's graph holds them for its backward.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [
        (m, [getattr(m, n) for n in names])
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m, tensors in saved:
        for n, t in zip(names, tensors, strict=True):
            setattr(m, n, t.clone())
    try:
        yield
    finally:
        for m, tensors in saved:
            for n, t in zip(names, tensors, strict=True):
                setattr(m, n, t)


class LipschitzPenalty:
    """Trainer penalty lam * mean_i ||grad_x CE_i||_2^2 (x in pixel space [0,1])."""

    name = "lipschitz"

    def __init__(self, lam: float) -> None:
        if not lam > 0:
            raise ConfigError(f"--lipschitz {lam}: give a positive weight, e.g. 0.1")
        self.lam = float(lam)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        """model: the bare module (in train mode); x: [B,...]; y: [B] -> scalar penalty."""
        with kept_norm_statistics(model), torch.enable_grad():
            grad = input_gradient(model, x, y, create_graph=True)  # [B, ...]
        return self.lam * grad.flatten(1).square().sum(1).mean()
