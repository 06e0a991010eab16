"""Attacks by name, with one calling convention for the CLI, sweeps and the audit.

`ATTACKS[name](model, x, y, eps, *, steps, norm, seed, mask) -> x_adv` (x: [B,...] in [0,1]).
Each entry adapts a public attack to that signature; options an attack does not use are ignored
(documented per entry). CW-L2 is unbounded: eps is ignored and it searches the smallest L2.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from deepshield.attacks.cw import cw_l2
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.errors import ConfigError

AttackFn = Callable[..., Tensor]


def _fgsm(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, *, mask: Tensor | None = None, **_: object
) -> Tensor:
    return fgsm(model, x, y, eps, mask=mask)


def _ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    mask: Tensor | None = None,
    **_: object,
) -> Tensor:
    return ifgsm(model, x, y, eps, steps=steps, mask=mask)


def _pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    norm: str = "linf",
    seed: int = 0,
    mask: Tensor | None = None,
    restarts: int = 1,
    **_: object,
) -> Tensor:
    return pgd(model, x, y, eps, steps=steps, norm=norm, seed=seed, mask=mask, restarts=restarts)


def _cw_l2(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, *, steps: int = 100, **_: object
) -> Tensor:
    return cw_l2(model, x, y, steps=steps)


ATTACKS: dict[str, AttackFn] = {
    "fgsm": _fgsm,
    "ifgsm": _ifgsm,
    "pgd": _pgd,
    "cw_l2": _cw_l2,
}


def get_attack(name: str) -> AttackFn:
    """The attack registered as `name`; ConfigError listing the names when unknown."""
    key = name.lower().replace("-", "_")
    if key not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}: use one of {', '.join(sorted(ATTACKS))}")
    return ATTACKS[key]
