"""Carlini-Wagner L2 (Carlini & Wagner, 2017): the smallest L2 perturbation that flips the class.

Minimise ||x' - x||_2^2 + c * max(Z_y - max_{i!=y} Z_i, -kappa) over w, x' = tanh-box(w),
with Adam on w; a binary search per sample adapts c (larger when no success, smaller after one).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepshield import progress
from deepshield.attacks.checks import check_attack, check_count, check_labels, check_number
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.objectives import margin

_INSIDE = 1.0 - 1e-6  # keeps atanh finite on pixels at the bounds


def _sample_view(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 5,
    targeted: bool = False,
) -> Tensor:
    """x: [B,...] in [0,1] (or model.bounds), y: labels [B] (targets when targeted) -> x_adv.

    Per sample, the smallest successful perturbation found over all steps and searches
    (success: the margin to the true class / to the target exceeds kappa); where none
    succeeded, the most adversarial point seen (lowest margin gap; x when no step beat it).
    c is the starting constant of the search; binary_search_steps=1 keeps c fixed.
    """
    c = check_number("c", c, strict=True)
    kappa = check_number("kappa", kappa)
    steps = check_count("steps", steps)
    lr = check_number("lr", lr, strict=True)
    binary_search_steps = check_count("binary_search_steps", binary_search_steps)
    (lo, hi), y, _ = check_attack(model, x, y)
    x = x.detach()
    sign = -1.0 if targeted else 1.0  # gap = sign * margin: below -kappa means success

    def to_box(w: Tensor) -> Tensor:
        return lo + (hi - lo) * (torch.tanh(w) + 1) / 2

    w_start = torch.atanh(((x - lo) / (hi - lo) * 2 - 1) * _INSIDE)  # [B, ...]
    const = torch.full((len(x),), c, device=x.device, dtype=x.dtype)  # [B]
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, math.inf)
    best = x.clone()
    with attack_mode(model), torch.enable_grad():
        with torch.no_grad():  # where x itself succeeds, x is the smallest perturbation
            output = model(x)
            check_labels(output, y)
            closest_gap = sign * margin(output, y)  # [B]: the fallback's gap
            best_l2 = torch.where(closest_gap < -kappa, 0.0, upper)  # [B]
        closest = x.clone()  # per sample the lowest-gap point: returned where nothing succeeded
        for _ in range(binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=lr)
            found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
            for _ in range(steps):
                x_adv = to_box(w)  # [B, ...] in bounds
                l2 = (x_adv - x).square().flatten(1).sum(1)  # [B] squared L2
                gap = sign * margin(model(x_adv), y)  # [B]
                cost = l2 + const * gap.clamp(min=-kappa)  # [B]
                (w.grad,) = torch.autograd.grad(cost.sum(), w)
                optimizer.step()
                with torch.no_grad():
                    success = gap < -kappa  # [B]
                    improved = success & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best = torch.where(_sample_view(improved, x), x_adv, best)
                    found |= success
                    closer = gap < closest_gap
                    closest_gap = torch.where(closer, gap, closest_gap)
                    closest = torch.where(_sample_view(closer, x), x_adv, closest)
                progress.tick()
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper.isfinite(), (lower + upper) / 2, const * 10)
    return torch.where(_sample_view(best_l2.isfinite(), x), best, closest)
