"""Budgeted attacks by name, with one signature, for the CLI and sweeps.

    fn(model, x, y, eps, *, norm: str = "linf", steps: int | None = None, seed: int | None = 0) -> Tensor -> x_adv

x: [B,...] in [0,1] (or model.bounds), y: labels [B]. steps=None takes the attack's default:
iterations for gradient attacks (ifgsm/pgd 10, APGD 100), queries for Square (5000); FGSM and
AutoAttack ignore it (their schedules are fixed). Attacks that exist for L-inf only raise
InputError for norm="l2".
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import Tensor, nn

from deepshield.attacks.apgd import apgd, apgd_targeted
from deepshield.attacks.autoattack import autoattack
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.attacks.square import square
from deepshield.errors import ConfigError, InputError

AttackFn = Callable[..., Tensor]


def _linf_only(name: str, norm: str) -> None:
    if norm != "linf":
        raise InputError(f"{name} is an L-inf attack, not {norm!r}: use pgd or apgd for L2")


def _fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int | None = None,
    seed: int | None = 0,
) -> Tensor:
    _linf_only("fgsm", norm)
    return fgsm(model, x, y, eps)


def _ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int | None = None,
    seed: int | None = 0,
) -> Tensor:
    _linf_only("ifgsm", norm)
    return ifgsm(model, x, y, eps, steps=steps or 10)


def _pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int | None = None,
    seed: int | None = 0,
) -> Tensor:
    return pgd(model, x, y, eps, norm=norm, steps=steps or 10, seed=seed)


def _apgd(loss: str) -> AttackFn:
    def attack(
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: float,
        *,
        norm: str = "linf",
        steps: int | None = None,
        seed: int | None = 0,
    ) -> Tensor:
        return apgd(model, x, y, eps, norm=norm, loss=loss, steps=steps or 100, seed=seed)

    attack.__doc__ = f"APGD on the {loss} loss (apgd with loss={loss!r})."
    return attack


def _apgd_t(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int | None = None,
    seed: int | None = 0,
) -> Tensor:
    return apgd_targeted(model, x, y, eps, norm=norm, steps=steps or 100, seed=seed)


def _square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int | None = None,
    seed: int | None = 0,
) -> Tensor:
    return square(model, x, y, eps, norm=norm, queries=steps or 5000, seed=seed)


def _autoattack(version: str) -> AttackFn:
    def attack(
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: float,
        *,
        norm: str = "linf",
        steps: int | None = None,
        seed: int | None = 0,
    ) -> Tensor:
        return autoattack(model, x, y, eps, norm=norm, version=version, seed=seed)[0]

    attack.__doc__ = f"AutoAttack, {version} version (x_adv only; autoattack() gives the report)."
    return attack


ATTACKS: dict[str, AttackFn] = {
    "fgsm": _fgsm,
    "ifgsm": _ifgsm,
    "pgd": _pgd,
    "apgd": _apgd("ce"),
    "apgd-dlr": _apgd("dlr"),
    "apgd-t": _apgd_t,
    "square": _square,
    "autoattack": _autoattack("standard"),
    "autoattack-fast": _autoattack("fast"),
}


def get_attack(name: str) -> AttackFn:
    """The attack registered under `name`; ConfigError naming the choices otherwise."""
    if name in ATTACKS:
        return ATTACKS[name]
    close = difflib.get_close_matches(name, list(ATTACKS), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown attack {name!r}{hint}: use one of {', '.join(ATTACKS)}")
