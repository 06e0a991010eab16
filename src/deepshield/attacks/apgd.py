"""APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts itself.

The step starts at 2 eps; each iterate is x + 0.75 (z - x) + 0.25 (x - x_prev) with
z = P(x + eta * steepest(grad)). At checkpoints w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), the step halves and the search restarts from
the best point so far where
  condition 1: fewer than rho = 75 % of the steps since the last checkpoint raised the loss, or
  condition 2: the step was not halved at the last checkpoint and the best loss has not grown.
The step rule is `APGDStep`, run by the shared core (`attack_loop`, best iterate). `apgd` attacks
with cross-entropy ("ce", APGD-CE), DLR ("dlr", APGD-DLR) or the margin loss; `apgd_targeted`
(APGD-T) runs the targeted DLR loss once per target: the classes ranked 2nd, 3rd, ... at x.
Restarts and targets attack only the points that are still classified correctly; across them a
point keeps the lowest margin z_y - max_{i!=y} z_i found (a misclassified point first), so an
unfooled sample comes back as its most adversarial point, not as x. One run starts at a random
point of the ball (the paper's), or at x with random_start=False; restarts N > 1 are one run
from x and N - 1 random ones (`core.random_starts`).

    @inproceedings{croce2020reliable,
      title={Reliable evaluation of adversarial robustness with an ensemble of diverse
             parameter-free attacks},
      author={Croce, Francesco and Hein, Matthias}, booktitle={ICML}, year={2020}}
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import (
    check_attack,
    check_count,
    check_labels,
    check_norm,
    check_number,
)
from deepshield.attacks.core import Objective, Projection, attack_loop, random_starts
from deepshield.attacks.dlr import dlr_loss, targeted_dlr_loss, targeted_margin_loss
from deepshield.attacks.gradient import _generator
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import _TINY, Budget, _l2, _per_sample
from deepshield.attacks.objectives import as_logits, classification_loss, margin, misclassified
from deepshield.errors import InputError

LOSSES: dict[str, Objective] = {
    "ce": classification_loss,
    "dlr": dlr_loss,
    "margin": lambda output, y: -margin(output, y),
}


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints [w_0 = 0, w_1, ...] for N = steps: w_j = ceil(p_j N), p_j <= 1.

    p_j is kept in exact hundredths, so ceil never sees a rounding error (0.41 * 100 = 41).
    For small N several p_j can share a w_j; each position is listed once.
    """
    points = [0]
    p_prev, p = 0, 22  # p_0, p_1 in hundredths
    while p <= 100:
        w = -(-p * steps // 100)  # ceil(p / 100 * steps)
        if w > points[-1]:
            points.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return points


class APGDStep:
    """APGD's step rule for `attack_loop` (Algorithm 1 of the paper), per sample.

    Call k (k = 0, 1, ...) receives iterate x^(k), its gradient and loss (ascent sense); at
    k = w_j it applies the checkpoint test, then returns x^(k+1). `eta` [B] is the step size.
    """

    def __init__(
        self, norm: str, eps: float, steps: int, rho: float = 0.75, momentum: float = 0.75
    ) -> None:
        self.norm, self.eps, self.rho, self.momentum = norm, eps, rho, momentum
        self.checkpoints = checkpoints(steps)

    def reset(self, x_adv: Tensor, project: Projection) -> None:
        """A new run from x_adv: step 2 eps, no history."""
        self.project = project
        self.k = 0
        self.eta = torch.full((len(x_adv),), 2 * self.eps, device=x_adv.device, dtype=x_adv.dtype)

    def _direction(self, grad: Tensor) -> Tensor:
        """The steepest ascent direction of unit norm: sign(g) for linf, g/||g||_2 for l2."""
        if self.norm == "linf":
            return grad.sign()
        return grad / _per_sample(_l2(grad) + _TINY, grad)

    def _remember(self, x_adv: Tensor, grad: Tensor, loss: Tensor) -> None:
        """Count loss increases and keep the best point (with its gradient) since the start."""
        if self.k == 0:
            self.best_x, self.best_grad, self.best_loss = x_adv, grad, loss
            self.previous_loss, self.checkpoint_loss = loss, loss
            self.increases = torch.zeros_like(loss)
            self.halved = torch.zeros_like(loss, dtype=torch.bool)
            self.last_checkpoint = 0
            return
        self.increases = self.increases + (loss > self.previous_loss).to(loss.dtype)
        better = loss > self.best_loss  # [B]
        self.best_x = torch.where(_per_sample(better, x_adv), x_adv, self.best_x)
        self.best_grad = torch.where(_per_sample(better, grad), grad, self.best_grad)
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.previous_loss = loss

    def _checkpoint(self, x_adv: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        """At w_j: halve eta and go back to the best point where condition 1 or 2 holds."""
        since = self.k - self.last_checkpoint
        few_increases = self.increases < self.rho * since  # condition 1 [B]
        stalled = ~self.halved & (self.best_loss <= self.checkpoint_loss)  # condition 2 [B]
        halve = few_increases | stalled
        self.eta = torch.where(halve, self.eta / 2, self.eta)
        x_adv = torch.where(_per_sample(halve, x_adv), self.best_x, x_adv)
        grad = torch.where(_per_sample(halve, grad), self.best_grad, grad)
        self.previous_loss = torch.where(halve, self.best_loss, self.previous_loss)
        self.halved, self.checkpoint_loss = halve, self.best_loss
        self.increases = torch.zeros_like(self.increases)
        self.last_checkpoint = self.k
        return x_adv, grad

    def __call__(self, x_adv: Tensor, grad: Tensor, loss: Tensor) -> Tensor:
        """x^(k), grad, loss [B] -> x^(k+1) (before the core's final projection)."""
        self._remember(x_adv, grad, loss)
        if self.k > 0 and self.k in self.checkpoints:
            x_adv, grad = self._checkpoint(x_adv, grad)
        z = self.project(x_adv + _per_sample(self.eta, x_adv) * self._direction(grad))
        if self.k > 0:
            a = self.momentum
            z = self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - self.x_previous))
        self.x_previous = x_adv
        self.k += 1
        return z


def _check_common(
    eps: float, norm: str, steps: int, restarts: int, rho: float, eot_samples: int
) -> tuple[float, str, int, int, float, int]:
    eps = check_number("eps", eps)
    norm = check_norm(norm)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    rho = check_number("rho", rho, strict=True)
    if rho > 1:
        raise InputError(f"rho={rho} must be in (0, 1]: the paper uses rho=0.75")
    return eps, norm, steps, restarts, rho, check_count("eot_samples", eot_samples)


def _predictions(model: nn.Module, x: Tensor) -> Tensor:
    """Logits [B, C] at x (no gradient, attack mode)."""
    with attack_mode(model), torch.no_grad():
        return as_logits(model(x))


def _clean_logits(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Logits [B, C] at x; the labels are checked against them (no separate probe pass)."""
    logits = _predictions(model, x)
    check_labels(logits, y)
    return logits


def _attack_rounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    logits: Tensor,
    objectives: list[tuple[Callable[[Tensor], Objective], bool]],
    *,
    budget: Budget,
    steps: int,
    rho: float,
    bounds: tuple[float, float],
    generator: torch.Generator | None,
    eot_samples: int,
) -> Tensor:
    """One APGD run per objective, each on the points still classified correctly.

    logits: [B, C] at x. objectives[r] = (objective_for, random_start): objective_for(idx) ->
    the objective for the samples idx of round r (targets are per sample). Per sample the
    lowest-margin point of all rounds is kept (x when no round found a lower margin).
    """
    x_adv = x.clone()
    best = margin(logits, y)  # [B]
    robust = logits.argmax(1) == y  # [B]
    for objective_for, random_start in objectives:
        idx = robust.nonzero().squeeze(1)  # [b]
        if len(idx) == 0:
            break
        found = attack_loop(
            model,
            x[idx],
            y[idx],
            budget=budget,
            step=APGDStep(budget.norm, budget.eps, steps, rho),
            steps=steps,
            objective=objective_for(idx),
            success=misclassified,
            random_start=random_start,
            bounds=bounds,
            generator=generator,
            eot_samples=eot_samples,
        )
        found_logits = _predictions(model, found)  # [b, C]
        found_margin = margin(found_logits, y[idx])  # [b]
        better = found_margin < best[idx]
        x_adv[idx[better]] = found[better]
        best[idx[better]] = found_margin[better]
        robust[idx[found_logits.argmax(1) != y[idx]]] = False
    return x_adv


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    random_start: bool = True,
    rho: float = 0.75,
    eot_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Untargeted APGD. x: [B,...] in [0,1] (or model.bounds), y: labels [B] -> x_adv.

    loss: "ce" (APGD-CE), "dlr" (APGD-DLR, >= 3 classes) or "margin" (-(z_y - max_{i!=y} z_i)).
    Per sample, x_adv is a misclassified point when one was found, else the most adversarial
    point found (lowest margin; x only where nothing beat it); points misclassified at x are
    returned unchanged. random_start: one run starts at a random point (True, the paper's) or at
    x; restarts N > 1: one run from x, N - 1 random, each on the points not yet fooled.
    eot_samples averages gradients over that many forward passes (randomised models).
    Randomness: `generator`, else `seed`.
    """
    eps, norm, steps, restarts, rho, eot_samples = _check_common(
        eps, norm, steps, restarts, rho, eot_samples
    )
    if loss not in LOSSES:
        raise InputError(f"unknown APGD loss {loss!r}: use one of {', '.join(LOSSES)}")
    bounds, y, _ = check_attack(model, x, y)
    x = x.detach()
    logits = _clean_logits(model, x, y)  # [B, C]
    if loss == "dlr":
        dlr_loss(logits[:1], y[:1])  # fewer than 3 classes: InputError now
    objective = LOSSES[loss]
    starts = random_starts(restarts, random_start)
    return _attack_rounds(
        model, x, y, logits, [(lambda idx: objective, r) for r in starts],
        budget=Budget(norm, eps), steps=steps, rho=rho, bounds=bounds,
        generator=_generator(seed, generator), eot_samples=eot_samples,
    )  # fmt: skip


def apgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    targets: int = 9,
    steps: int = 100,
    restarts: int = 1,
    random_start: bool = True,
    rho: float = 0.75,
    eot_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD-T: targeted DLR towards the classes ranked 2nd .. (targets+1)-th at x, in turn.

    x: [B,...] in [0,1] (or model.bounds), y: true labels [B] -> x_adv (success: any wrong
    class). targets is capped at C - 1. Models with fewer than 4 classes (the targeted DLR's
    denominator needs z_pi4) use the targeted margin -(z_y - z_t) instead; with 2 classes this
    is the untargeted margin attack. Each target and restart attacks the points not yet fooled
    (starts per target as in `apgd`); unfooled points keep their lowest-margin point.
    """
    eps, norm, steps, restarts, rho, eot_samples = _check_common(
        eps, norm, steps, restarts, rho, eot_samples
    )
    targets = check_count("targets", targets)
    bounds, y, _ = check_attack(model, x, y)
    x = x.detach()
    logits = _clean_logits(model, x, y)  # [B, C]
    classes = logits.shape[1]
    ranked = logits.argsort(dim=1, descending=True)  # [B, C]
    loss = targeted_dlr_loss if classes >= 4 else targeted_margin_loss

    def towards(rank: int) -> Callable[[Tensor], Objective]:
        def objective_for(idx: Tensor) -> Objective:
            target = ranked[idx, rank]  # [b]
            return lambda output, labels: loss(output, labels, target)

        return objective_for

    rounds = [towards(rank) for rank in range(1, min(targets, classes - 1) + 1)]
    starts = random_starts(restarts, random_start)
    return _attack_rounds(
        model, x, y, logits, [(r, s) for r in rounds for s in starts],
        budget=Budget(norm, eps), steps=steps, rho=rho, bounds=bounds,
        generator=_generator(seed, generator), eot_samples=eot_samples,
    )  # fmt: skip
