"""Robust accuracy: a model's accuracy under an attack at several budgets, batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import check_batch, check_count, check_number
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.objectives import as_logits

AttackFn = Callable[[nn.Module, Tensor, Tensor, float], Tensor]  # (model, x, y, eps) -> x_adv


@dataclass(frozen=True)
class RobustAccuracy:
    """accuracy[k] under eps[k]; scores[k]: P(fake) = P(class 1) per sample [N] (eps 0 = clean)."""

    eps: list[float]
    accuracy: list[float]
    scores: Tensor  # [len(eps), N]


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack_fn: AttackFn,
    eps_list: Sequence[float],
    batch_size: int = 256,
) -> RobustAccuracy:
    """x: [N,...] in [0,1] (any device; batches go to the model's), y: [N] -> RobustAccuracy.

    attack_fn(model, x, y, eps) -> x_adv, e.g. `lambda m, x, y, e: pgd(m, x, y, e, seed=0)`;
    eps 0 is evaluated on the clean inputs without calling it.
    """
    eps_list = [check_number("eps", e) for e in eps_list]
    batch_size = check_count("batch_size", batch_size)
    check_batch(y, x)
    device = next(model.parameters(), x).device
    accuracy, scores = [], []
    for eps in eps_list:
        correct, probs = 0, []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            if eps > 0:
                xb = attack_fn(model, xb, yb, eps)
            with attack_mode(model), torch.no_grad():
                logits = as_logits(model(xb))  # [b, C]
            correct += (logits.argmax(1) == yb).sum().item()
            probs.append(logits.softmax(1)[:, 1].cpu())
        accuracy.append(correct / len(x))
        scores.append(torch.cat(probs))
    return RobustAccuracy(eps=eps_list, accuracy=accuracy, scores=torch.stack(scores))
