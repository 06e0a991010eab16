"""Attacks by name, with one calling convention for the CLI, sweeps and the audit.

    fn(model, x, y, eps, *, norm="linf", steps=None, seed=0, mask=None, restarts=1,
       eot_samples=1) -> x_adv

x: [B,...] in [0,1] (or model.bounds), y: labels [B]. steps=None takes the attack's default:
iterations for gradient attacks (ifgsm/pgd 10, APGD 100, CW 100), queries for Square (5000);
FGSM and AutoAttack ignore it (their schedules are fixed). `mask` ([B|1,1,H,W] in {0,1}) is
supported by fgsm/ifgsm/pgd only; `restarts` by pgd and the APGD variants; `eot_samples` (EOT:
mean gradient of that many forward passes of a randomised model) by the gradient attacks and
AutoAttack, not by Square (no gradients) or CW-L2. An option an attack cannot honour raises
InputError rather than being silently dropped. CW-L2 is unbounded: eps is
ignored and it searches the smallest L2 perturbation (sweeps keep it where its norm fits eps).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import Tensor, nn

from deepshield.attacks.apgd import apgd, apgd_targeted
from deepshield.attacks.autoattack import autoattack
from deepshield.attacks.cw import cw_l2
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.attacks.square import SquareResult, square_search
from deepshield.errors import ConfigError, InputError

AttackFn = Callable[..., Tensor]


def _refuse(
    name: str, norm: str, allowed: str, mask: Tensor | None, restarts: int, eot_samples: int = 1
) -> None:
    """InputError for options the attack `name` cannot honour."""
    if norm not in allowed.split(","):
        kind = "an L-inf" if allowed == "linf" else f"a {allowed}"
        raise InputError(f"{name} is {kind} attack, not {norm!r}: use pgd or apgd for L2")
    if mask is not None:
        raise InputError(f"{name} does not take a mask: use fgsm, ifgsm or pgd for masked attacks")
    if restarts != 1:
        raise InputError(f"{name} has no restarts: use pgd or apgd for restarts > 1")
    if eot_samples != 1:
        raise InputError(f"{name} does not average gradients (EOT): use pgd or apgd for EOT")


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
          steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
          restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    _refuse("fgsm", norm, "linf", None, restarts)
    return fgsm(model, x, y, eps, mask=mask, eot_samples=eot_samples)


def _ifgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
           steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
           restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    _refuse("ifgsm", norm, "linf", None, restarts)
    return ifgsm(model, x, y, eps, steps=steps or 10, mask=mask, eot_samples=eot_samples)


def _pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
         steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
         restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    return pgd(model, x, y, eps, norm=norm, steps=steps or 10, seed=seed, mask=mask,
               restarts=restarts, eot_samples=eot_samples)  # fmt: skip


def _cw_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "l2",
           steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
           restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    _refuse("cw_l2", "l2", "l2", mask, restarts, eot_samples)  # always L2: norm is ignored
    return cw_l2(model, x, y, steps=steps or 100)


def _apgd(loss: str) -> AttackFn:
    def attack(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
               steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
               restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
        _refuse(f"apgd ({loss})", norm, "linf,l2", mask, 1)
        return apgd(model, x, y, eps, norm=norm, loss=loss, steps=steps or 100,
                    restarts=restarts, seed=seed, eot_samples=eot_samples)  # fmt: skip

    attack.__doc__ = f"APGD on the {loss} loss (apgd with loss={loss!r})."
    return attack


def _apgd_t(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
            steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
            restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    _refuse("apgd-t", norm, "linf,l2", mask, restarts)
    return apgd_targeted(model, x, y, eps, norm=norm, steps=steps or 100, seed=seed,
                         eot_samples=eot_samples)  # fmt: skip


def square_with_queries(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                        norm: str = "linf", steps: int | None = None, seed: int | None = 0,
                        mask: Tensor | None = None, restarts: int = 1,
                        eot_samples: int = 1) -> SquareResult:  # fmt: skip
    """The registry's Square attack with the queries it spent per sample (`SquareResult`)."""
    _refuse("square", norm, "linf,l2", mask, restarts, eot_samples)
    return square_search(model, x, y, eps, norm=norm, queries=steps or 5000, seed=seed)


def _square(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
            steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
            restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
    return square_with_queries(model, x, y, eps, norm=norm, steps=steps, seed=seed, mask=mask,
                               restarts=restarts, eot_samples=eot_samples).x_adv  # fmt: skip


def _autoattack(version: str) -> AttackFn:
    def attack(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, norm: str = "linf",
               steps: int | None = None, seed: int | None = 0, mask: Tensor | None = None,
               restarts: int = 1, eot_samples: int = 1) -> Tensor:  # fmt: skip
        _refuse("autoattack", norm, "linf,l2", mask, restarts)
        return autoattack(model, x, y, eps, norm=norm, version=version, seed=seed,
                          eot_samples=eot_samples)[0]  # fmt: skip

    attack.__doc__ = f"AutoAttack, {version} version (x_adv only; autoattack() gives the report)."
    return attack


ATTACKS: dict[str, AttackFn] = {
    "fgsm": _fgsm,
    "ifgsm": _ifgsm,
    "pgd": _pgd,
    "cw_l2": _cw_l2,
    "apgd": _apgd("ce"),
    "apgd-dlr": _apgd("dlr"),
    "apgd-t": _apgd_t,
    "square": _square,
    "autoattack": _autoattack("standard"),
    "autoattack-fast": _autoattack("fast"),
}


def canonical_name(name: str) -> str:
    """The registry key of an attack name (case and cw-l2 / cw_l2 forgiven); ConfigError naming
    the choices for an unknown name."""
    key = name.lower()
    key = "cw_l2" if key == "cw-l2" else key
    if key in ATTACKS:
        return key
    close = difflib.get_close_matches(key, list(ATTACKS), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown attack {name!r}{hint}: use one of {', '.join(ATTACKS)}")


def get_attack(name: str) -> AttackFn:
    """The attack registered under `name` (see `canonical_name`)."""
    return ATTACKS[canonical_name(name)]
