"""The projected-gradient core: every gradient attack in deepshield is a configuration of it.

A configuration picks a budget (norm ball and eps), a step rule (steepest ascent, or a stateful
rule such as APGD's momentum), an objective (model output, y) -> per-sample loss, its sense
(maximise, or minimise for targeted attacks and "towards target" disruption), a mask, where the
runs start (x, or a random point of the whole ball or a smaller one), restarts, the input bounds ((0, 1) for images,
model.bounds for e.g. [-1, 1] generators) and an optional per-step hook (e.g. to cycle the class
a conditional generator is attacked under).

Best iterate: per sample the loop returns the strongest point it evaluated over every iteration
and run (a successful one first, then the highest objective), never a weaker last iterate. It
costs no extra forward pass per step (the step's own output and loss are reused) and one
gradient-free forward pass per run for the final iterate.

Mixed precision: under an ambient `torch.autocast` (`deepshield.precision.autocast`) the model's
forward and backward run in the lower precision; its output is cast to float32 before the
objective, and the iterate, step and projection stay float32 (autocast is off around them).

Starts: with one run, x or a random point (random_start); with restarts = N > 1, one run from x
and N - 1 from random points, so restarts never lose what the plain start from x finds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from deepshield import progress
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import Budget
from deepshield.precision import full_precision

Objective = Callable[[Tensor, Tensor], Tensor]  # (model output, y) -> loss per sample [B]
Success = Callable[[Tensor, Tensor], Tensor]  # (model output, y) -> attack succeeded [B] bool
Projection = Callable[[Tensor], Tensor]  # candidate x_adv -> nearest feasible x_adv
LOW_PRECISION = (torch.bfloat16, torch.float16)


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


def random_starts(restarts: int, random_start: bool) -> list[bool]:
    """Per run, whether it starts at a random point: one run starts as random_start says;
    N > 1 runs are one from x and N - 1 random (restarts never lose the start from x)."""
    if restarts == 1:
        return [random_start]
    return [False] + [True] * (restarts - 1)


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
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    start_radius: float | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """x: [B,...] in bounds -> x_adv, same shape, in bounds, with x_adv - x in budget and mask.

    Each of `restarts` runs takes `steps` steps from its start (`random_starts`). Per sample
    the strongest point evaluated over all iterations and runs is returned (a successful one
    first, then the highest objective; the module docstring). Arguments are trusted: the
    public attacks validate them. Gradients reach x only; the model is in attack_mode.
    eot_samples > 1 (expectation over transformation, for randomised models): losses and
    gradients are means over that many forward passes; success is read from the last one.
    start_radius: draw the random start from the ball of this radius (budget's norm) instead of
    the whole budget, e.g. a 1e-3 jitter that moves I-FGSM off x where the objective is
    stationary (the distance to the clean output). on_step(i) is called before the gradient of
    step i (0 .. steps - 1, in every run), e.g. to switch the condition of a generator; the
    objective then differs between steps, so the last iterate is returned instead.
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
        if out.dtype in LOW_PRECISION:  # an autocast forward: the objective in float32
            out = out.float()
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
    # with on_step the objective changes from step to step: losses are not comparable and the
    # last iterate of the last run is returned
    strongest = _Strongest(x) if on_step is None else None
    with attack_mode(model), torch.enable_grad():
        for from_random in random_starts(restarts, random_start):
            with full_precision(x.device):  # iterate, step, projection in float32
                x_adv = project(x + start.sample(x, mask, generator)) if from_random else x
                step.reset(x_adv, project)
            for i in range(steps):
                if on_step is not None:
                    on_step(i)
                x_adv = x_adv.detach().requires_grad_(True)
                out, loss, grad = expected(x_adv, grad=True)  # grad: [B, ...]
                x_adv = x_adv.detach()
                if strongest is not None:
                    strongest.update(x_adv, loss, None if success is None else success(out, y))
                with full_precision(x.device):
                    if mask is not None:
                        grad = grad * mask
                    x_adv = project(step(x_adv, grad, loss))
                progress.tick()
            if strongest is not None:
                with torch.no_grad():  # the final iterate: the only point not yet evaluated
                    out, loss, _ = expected(x_adv, grad=False)
                strongest.update(x_adv, loss, None if success is None else success(out, y))
    return x_adv if strongest is None else strongest.x
