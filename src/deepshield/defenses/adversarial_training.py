"""Adversarial training: every training batch is replaced by adversarial examples of the model
being trained, crafted with the attack core (a Trainer BatchTransform).

- "pgd" (Madry et al.): L-inf PGD from a random start in the eps ball, `steps` steps of `alpha`
  (default 2.5 * eps / steps).
- "fgsm-rs" (Wong et al., "fast is better than free"): one FGSM step of alpha = 1.25 * eps from a
  uniform random start in the eps ball, then projection onto the ball and [0, 1].

@inproceedings{madry2018towards,
  title     = {Towards Deep Learning Models Resistant to Adversarial Attacks},
  author    = {Madry, Aleksander and Makelov, Aleksandar and Schmidt, Ludwig and Tsipras, Dimitris
               and Vladu, Adrian},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2018}
}
@inproceedings{wong2020fast,
  title     = {Fast is Better than Free: Revisiting Adversarial Training},
  author    = {Wong, Eric and Rice, Leslie and Kolter, J. Zico},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2020}
}
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepshield.attacks import pgd
from deepshield.errors import ConfigError

METHODS = ("pgd", "fgsm-rs")
FGSM_RS_STEP = 1.25  # Wong et al.'s step size, as a multiple of eps


class AdversarialBatch:
    """BatchTransform (model, x, y) -> (x_adv, y): x [B,C,H,W] in [0,1], ||x_adv - x||_inf <= eps.

    The attack runs on the model as it is at this step, in eval mode with frozen parameters
    (restored afterwards). Random starts draw from `generator`, else torch's global generator
    (which the Trainer seeds and checkpoints, so a resumed run draws the same starts).
    """

    def __init__(
        self,
        method: str,
        eps: float,
        *,
        steps: int = 7,
        alpha: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"--adv-train {method!r}: use one of {', '.join(METHODS)} (or none)")
        if not 0 < eps <= 1:
            raise ConfigError(f"--adv-eps {eps}: give a budget in (0, 1], e.g. 8/255")
        if steps < 1 or (alpha is not None and alpha <= 0):
            raise ConfigError(
                f"--adv-steps {steps} / --adv-alpha {alpha}: need steps >= 1 and alpha > 0"
            )
        self.method = method
        self.eps = float(eps)
        self.steps = 1 if method == "fgsm-rs" else int(steps)
        if alpha is None:
            alpha = FGSM_RS_STEP * eps if method == "fgsm-rs" else 2.5 * eps / steps
        self.alpha = float(alpha)
        self.generator = generator

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: [B,C,H,W] in [0,1], y: [B] -> (x_adv, y)."""
        x_adv = pgd(
            model, x, y, self.eps, alpha=self.alpha, steps=self.steps, random_start=True,
            generator=self.generator,
        )  # fmt: skip
        return x_adv.detach(), y
