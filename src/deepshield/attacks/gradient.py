"""FGSM, I-FGSM (BIM) and PGD: configurations of the projected-gradient core.

FGSM (Goodfellow et al., 2015): one L-inf step of size eps from x.
I-FGSM / BIM (Kurakin et al., 2017): `steps` L-inf steps of alpha = eps / steps from x.
PGD (Madry et al., 2018): steps of alpha = 2.5 * eps / steps, projection onto the L-inf or L2
ball. One run starts at x by default (random_start=True: a random point of the ball, Madry's;
the default for a custom loss_fn);
restarts N > 1 are one run from x and N - 1 from random points. From x was measured at least
as strong as a random start at every budget from 2/255 to 128/255 on three detectors
(docs/attacks.md); at large budgets a random start is heavy noise that ten steps do not leave. Every one returns, per sample, the strongest point of all its iterations and runs
(`core.attack_loop`), not the last iterate.

Seeds (every attack in deepshield): seed=0 by default, so the same call gives the same x_adv;
seed=None draws from torch's global generator; a `generator` passed in wins over both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepshield.attacks.checks import (
    check_attack,
    check_count,
    check_norm,
    check_number,
    checking_labels,
)
from deepshield.attacks.core import Objective, Success, attack_loop
from deepshield.attacks.norms import Budget, SteepestStep
from deepshield.attacks.objectives import classification_loss, misclassified, predicts


def _goal(loss_fn: Objective | None, targeted: bool) -> tuple[Objective, Success | None]:
    """The objective to ascend/descend and the success test (None for a custom loss_fn)."""
    if loss_fn is not None:
        return loss_fn, None
    return checking_labels(classification_loss), predicts if targeted else misclassified


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return generator


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool | None = None,
    restarts: int = 1,
    targeted: bool = False,
    mask: Tensor | None = None,
    loss_fn: Objective | None = None,
    eot_samples: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent. x: [B,...] in [0,1] (or model.bounds) -> x_adv, same shape.

    y: labels [B] (target labels when targeted) or whatever loss_fn takes. alpha defaults to
    2.5 * eps / steps. Per sample the strongest point seen over all steps and runs comes back
    (misclassified / target reached first, then highest loss; loss only with a custom loss_fn).
    random_start: the one run starts at a random point of the ball, or at x; None (default):
    at x for the classification loss, at a random point for a custom loss_fn (which may be
    stationary at x, e.g. a distance to the clean output). restarts N > 1: one run from x,
    N - 1 from random points.
    mask: [B or 1, 1, H, W] in {0,1}; pixels outside it never change.
    loss_fn(output, y) -> per-sample loss [B] replaces cross-entropy (e.g. for Siamese models,
    or `objectives.detector_aware_loss` against a `Guarded` model). eot_samples > 1: each step
    follows the mean gradient of that many forward passes (EOT, for randomised models).
    Randomness: `generator`, else `seed` (None: torch's global generator).
    """
    eps = check_number("eps", eps)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    eot_samples = check_count("eot_samples", eot_samples)
    norm = check_norm(norm)
    alpha = 2.5 * eps / steps if alpha is None else check_number("alpha", alpha)
    bounds, y, mask = check_attack(model, x, y, mask=mask, labels=loss_fn is None)
    objective, success = _goal(loss_fn, targeted)
    if random_start is None:
        random_start = loss_fn is not None
    return attack_loop(
        model,
        x.detach(),
        y,
        budget=Budget(norm, eps),
        step=SteepestStep(norm, alpha),
        steps=steps,
        objective=objective,
        maximize=not targeted,
        success=success,
        mask=mask,
        random_start=random_start,
        restarts=restarts,
        bounds=bounds,
        generator=_generator(seed, generator),
        eot_samples=eot_samples,
    )


def ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    alpha: float | None = None,
    steps: int = 10,
    targeted: bool = False,
    mask: Tensor | None = None,
    loss_fn: Objective | None = None,
    eot_samples: int = 1,
) -> Tensor:
    """I-FGSM / BIM: L-inf PGD from x (no random start), alpha defaults to eps / steps."""
    eps = check_number("eps", eps)
    steps = check_count("steps", steps)
    alpha = eps / steps if alpha is None else alpha
    return pgd(
        model, x, y, eps, alpha=alpha, steps=steps, norm="linf", random_start=False,
        targeted=targeted, mask=mask, loss_fn=loss_fn, eot_samples=eot_samples,
    )  # fmt: skip


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    targeted: bool = False,
    mask: Tensor | None = None,
    loss_fn: Objective | None = None,
    eot_samples: int = 1,
) -> Tensor:
    """FGSM: x + eps * sign(grad), clipped to [0,1] (or model.bounds). x: [B,...] -> x_adv."""
    return ifgsm(
        model, x, y, eps, alpha=eps, steps=1, targeted=targeted, mask=mask, loss_fn=loss_fn,
        eot_samples=eot_samples,
    )  # fmt: skip
