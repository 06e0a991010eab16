"""The audit's budgets: how many images, which budgets (eps), how many steps, per level of effort.

A budget is data: `BUDGETS[name]` is one frozen `AuditBudget`. The L-inf ladder ends with a large
probe (64/255) at which any detector should fall to ~0 accuracy (the "unbounded attack" check).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from deepshield.errors import ConfigError

LINF_LADDER = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 64 / 255)
L2_LADDER = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Budgets the card's robustness scores are read at (pixels in [0, 1]; L2 over the whole image).
REFERENCE_EPS = {"linf": 4 / 255, "l2": 1.0}


@dataclass(frozen=True)
class AuditBudget:
    """One level of effort of `deepshield audit`.

    n: test images attacked (the first n of the split); eps_linf / eps_l2: the budget ladders
    (0 = clean); steps / restarts: PGD; cw_n / cw_steps: CW-L2 on the first cw_n images (steps
    per binary-search step); autoattack: registry name of the AutoAttack version run on
    autoattack_eps (None: skipped); noise_draws: random points per image in the random-noise
    baseline; surrogate_epochs / surrogate_widths: the simplenet trained as transfer surrogate
    when none is given; sanity_samples / sanity_repeats / explain_samples: the explanation
    sanity check and class-mean maps; grid_fakes: fakes in the Grad-CAM grid of evasions;
    batch_size: images per attack batch.
    """

    name: str
    n: int
    steps: int
    restarts: int
    cw_n: int
    cw_steps: int
    autoattack: str | None
    autoattack_eps: tuple[float, ...]
    noise_draws: int
    surrogate_epochs: int
    surrogate_widths: tuple[int, ...]
    sanity_samples: int
    sanity_repeats: int
    explain_samples: int
    grid_fakes: int
    eps_linf: tuple[float, ...] = LINF_LADDER
    eps_l2: tuple[float, ...] = L2_LADDER
    batch_size: int = 32  # CPU: batches of 128 64 px images spent a third in page faults

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


BUDGETS: dict[str, AuditBudget] = {
    "quick": AuditBudget(
        name="quick",
        n=100,
        steps=10,
        restarts=1,
        cw_n=16,
        cw_steps=20,
        autoattack=None,
        autoattack_eps=(),
        noise_draws=8,
        surrogate_epochs=2,
        surrogate_widths=(12, 24, 48, 96),
        sanity_samples=8,
        sanity_repeats=2,
        explain_samples=64,
        grid_fakes=4,
    ),
    "standard": AuditBudget(
        name="standard",
        n=256,
        steps=20,
        restarts=1,
        cw_n=64,
        cw_steps=50,
        autoattack="autoattack-fast",
        autoattack_eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
        noise_draws=20,
        surrogate_epochs=4,
        surrogate_widths=(24, 48, 96, 192),
        sanity_samples=16,
        sanity_repeats=3,
        explain_samples=200,
        grid_fakes=6,
    ),
    "thorough": AuditBudget(
        name="thorough",
        n=512,
        steps=50,
        restarts=5,
        cw_n=128,
        cw_steps=100,
        autoattack="autoattack",
        autoattack_eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
        noise_draws=50,
        surrogate_epochs=8,
        surrogate_widths=(24, 48, 96, 192),
        sanity_samples=32,
        sanity_repeats=5,
        explain_samples=500,
        grid_fakes=8,
    ),
}


def get_budget(name: str) -> AuditBudget:
    """The budget called `name`; ConfigError naming the choices otherwise."""
    key = name.strip().lower()
    if key not in BUDGETS:
        raise ConfigError(f"--budget {name!r}: use one of {', '.join(BUDGETS)}")
    return BUDGETS[key]
