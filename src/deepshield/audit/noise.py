"""The random-noise baseline of the gradient-masking checks: the best of k uniform draws in the
eps-ball, per image. A gradient attack that does worse than this sees no useful gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deepshield.attacks import attack_mode, margin, robust_accuracy
from deepshield.attacks.checks import check_count, model_bounds
from deepshield.attacks.norms import Budget
from deepshield.metrics import detector_metrics


def random_noise(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf", draws: int = 8,
    seed: int = 0,
) -> Tensor:  # fmt: skip
    """x: [B,...] in the model's bounds, y: [B] -> x + the one of `draws` uniform points of the
    eps-ball (clipped to the bounds) with the lowest margin of y, per sample."""
    draws = check_count("draws", draws)
    lo, hi = model_bounds(model)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    ball = Budget(norm, eps)
    best, best_margin = x, torch.full((len(x),), float("inf"), device=x.device)  # [B]
    with attack_mode(model), torch.no_grad():
        for _ in range(draws):
            candidate = (x + ball.sample(x, None, gen)).clamp(lo, hi)  # [B, ...]
            m = margin(model(candidate), y)  # [B]: < 0 once misclassified
            better = m < best_margin
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), candidate, best)
            best_margin = torch.minimum(m, best_margin)
    return best


def noise_rows(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: tuple[float, ...],
    *,
    draws: int,
    seed: int,
    batch_size: int = 128,
) -> tuple[list[dict[str, Any]], list[Tensor]]:
    """The random-noise baseline on a detector: (one row per eps: eps, accuracy, auc, eer,
    fake_passed_as_real, real_flagged_as_fake, balanced_accuracy (keys of a sweep's rows), the
    P(fake) [N] at each eps)."""

    def attack(m: nn.Module, xb: Tensor, yb: Tensor, e: float) -> Tensor:
        return random_noise(m, xb, yb, e, draws=draws, seed=seed)

    result = robust_accuracy(model, x, y, attack, list(eps), batch_size=batch_size)
    rows = []
    for e, acc, scores in zip(result.eps, result.accuracy, result.scores, strict=True):
        m = detector_metrics(y.numpy(), scores.numpy(), threshold=0.5)
        keys = ("auc", "eer", "fake_passed_as_real", "real_flagged_as_fake", "balanced_accuracy")
        rows.append({"eps": e, "accuracy": acc, **{k: m[k] for k in keys}})
    return rows, list(result.scores)
