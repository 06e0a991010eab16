"""The projected-gradient core: every gradient attack in deepshield is a configuration of it.

A configuration picks a budget (norm ball and eps), a step rule (steepest ascent, or a stateful
rule such as APGD's momentum), an objective (model output, y) -> per-sample loss, its sense
(maximise, or minimise for targeted attacks and "towards target" disruption), a mask, a random
start (in the whole ball or a smaller one), restarts, the input bounds ((0, 1) for images,
model.bounds for e.g. [-1, 1] generators) and an optional per-step hook (e.g. to cycle the class
a conditional generator is attacked under).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import Budget

Objective = Callable[[Tensor, Tensor], Tensor]  # (model output, y) -> loss per sample [B]
Success = Callable[[Tensor, Tensor], Tensor]  # (model output, y) -> attack succeeded [B] bool
Projection = Callable[[Tensor], Tensor]  # candidate x_adv -> nearest feasible x_adv


class StepRule(Protocol):
    """How x_adv moves along the gradient; the core projects the result afterwards."""

    def reset(self, x_adv: Tensor, project: Projection) -> None:
        """Start a new run (random start or restart) at x_adv; `project` maps onto the feasible set."""

    def __call__(self, x_adv: Tensor, grad: Tensor, loss: Tensor) -> Tensor:
        """x_adv, grad (ascent sense): [B,...]; loss at x_adv (ascent sense): [B] -> next x_adv."""


class _Strongest:
    """Per sample, the strongest point seen: a successful one first, then the highest loss."""

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.loss = torch.full((len(x),), float("-inf"), device=x.device, dtype=x.dtype)
        self.success = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def update(self, x_adv: Tensor, loss: Tensor, success: Tensor | None) -> None:
        """x_adv: [B,...]; loss (ascent sense): [B]; success: [B] bool or None."""
        better = loss > self.loss  # [B]
        if success is not None:
            better = (success & ~self.success) | ((success == self.success) & better)
            self.success = torch.where(better, success, self.success)
        self.loss = torch.where(better, loss, self.loss)
        self.x = torch.where(better.view(-1, *([1] * (x_adv.dim() - 1))), x_adv, self.x)


def attack_loop(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    budget: Budget,
    step: StepRule,
    steps: int,
    objective: Objective,
    maximize: bool = True,
    success: Success | None = None,
    mask: Tensor | None = None,
    random_start: bool = False,
    restarts: int = 1,
    keep_best: bool = False,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    start_radius: float | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """x: [B,...] in bounds -> x_adv, same shape, in bounds, with x_adv - x in budget and mask.

    Each of `restarts` runs starts at x (or a random point of the budget) and takes `steps`
    steps. With one run and keep_best=False the last iterate is returned (the textbook
    algorithm); otherwise, per sample, the strongest point evaluated over all iterations and
    runs (a successful one first, then the highest objective). Arguments are trusted: the
    public attacks validate them. Gradients reach x only; the model is in attack_mode.
    eot_samples > 1 (expectation over transformation, for randomised models): losses and
    gradients are means over that many forward passes; success is read from the last one.
    start_radius: draw the random start from the ball of this radius (budget's norm) instead of
    the whole budget, e.g. a 1e-3 jitter that moves I-FGSM off x where the objective is
    stationary (the distance to the clean output). on_step(i) is called before the gradient of
    step i (0 .. steps - 1, in every run), e.g. to switch the condition of a generator.
    """
    lo, hi = bounds
    sense = 1.0 if maximize else -1.0

    def project(x_new: Tensor) -> Tensor:
        delta = budget.project(x_new - x)  # [B, ...]
        if mask is not None:
            delta = delta * mask
        return (x + delta).clamp(lo, hi)

    def evaluate(x_adv: Tensor) -> tuple[Tensor, Tensor]:
        out = model(x_adv)
        return out, sense * objective(out, y)  # loss in ascent sense [B]

    def expected(x_adv: Tensor, grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """-> (last output, mean loss [B], mean gradient [B, ...] or None) over eot_samples."""
        if eot_samples == 1:  # no accumulators: two fewer full-size tensors per step
            out, loss = evaluate(x_adv)
            g = torch.autograd.grad(loss.sum(), x_adv)[0] if grad else None
            return out.detach(), loss.detach(), g
        total_loss, total_grad = 0.0, 0.0
        for _ in range(eot_samples):
            out, loss = evaluate(x_adv)
            if grad:
                total_grad = total_grad + torch.autograd.grad(loss.sum(), x_adv)[0]
            total_loss = total_loss + loss.detach()
        mean_grad = total_grad / eot_samples if grad else None
        return out.detach(), total_loss / eot_samples, mean_grad

    start = budget if start_radius is None else Budget(budget.norm, start_radius)
    strongest = _Strongest(x) if keep_best or restarts > 1 else None
    with attack_mode(model), torch.enable_grad():
        for _ in range(restarts):
            x_adv = project(x + start.sample(x, mask, generator)) if random_start else x
            step.reset(x_adv, project)
            for i in range(steps):
                if on_step is not None:
                    on_step(i)
                x_adv = x_adv.detach().requires_grad_(True)
                out, loss, grad = expected(x_adv, grad=True)  # grad: [B, ...]
                x_adv = x_adv.detach()
                if strongest is not None:
                    strongest.update(x_adv, loss, None if success is None else success(out, y))
                if mask is not None:
                    grad = grad * mask
                x_adv = project(step(x_adv, grad, loss))
            if strongest is not None:
                with torch.no_grad():
                    out, loss, _ = expected(x_adv, grad=False)
                strongest.update(x_adv, loss, None if success is None else success(out, y))
    return x_adv if strongest is None else strongest.x
