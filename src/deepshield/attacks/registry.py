"""Attacks by name, with one calling convention for the CLI, sweeps and the audit.

    ATTACKS[name](model, x, y, eps, *, norm="linf", steps=None, seed=0, mask=None, restarts=1,
                  eot_samples=1, eot_transforms=()) -> x_adv

x: [B,...] in [0,1] (or model.bounds), y: labels [B]. Each entry (`Attack`) holds the attack's
defaults and what it supports, once: `steps` (iterations; queries for Square) taken when
steps=None (`fixed` schedules, FGSM's one step and AutoAttack's, ignore steps), the norms, masks, restarts, EOT,
targeted use (through its function) and whether the disruption of generators runs it. An
option an attack cannot honour raises InputError rather than being silently dropped. CW-L2 is
`minimal`: eps is ignored and it searches the smallest L2 perturbation (sweeps keep it where
its norm fits eps). Seeds: 0 by default for every attack (the same call, the same x_adv).
eot_transforms (every attack, images only): craft on the model in expectation over
differentiable stand-ins of everyday processing, e.g. "jpeg75,resize0.75,blur1"
(`attacks.eot_transforms.ExpectedOverTransforms`), so the examples survive that processing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from deepshield.attacks.apgd import apgd, apgd_targeted
from deepshield.attacks.autoattack import autoattack
from deepshield.attacks.cw import cw_l2
from deepshield.attacks.eot_transforms import ExpectedOverTransforms, stand_ins
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.attacks.square import SquareResult, square_search
from deepshield.errors import ConfigError, InputError

# (model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> x_adv
Run = Callable[..., Tensor]


@dataclass(frozen=True)
class Attack:
    """A registered attack: how to run it, its default steps and what it supports."""

    name: str
    run: Run
    steps: int | None  # default iterations (Square: queries); None: set by the attack itself
    fixed: bool = False  # the schedule is fixed: a steps argument is ignored
    norms: tuple[str, ...] = ("linf",)
    masks: bool = False
    restarts: bool = False
    eot: bool = False
    targeted: bool = False  # its function takes targeted=True (not the registry convention)
    generators: bool = False  # `disrupt` runs it against image-to-image generators
    minimal: bool = False  # ignores eps: the smallest L2 perturbation that succeeds

    def refuse(self, norm: str, masked: bool, restarts: int, eot_samples: int) -> None:
        """InputError for an option this attack cannot honour."""
        if norm not in self.norms:
            kind = "an L-inf" if self.norms == ("linf",) else f"a {'/'.join(self.norms)}"
            raise InputError(f"{self.name} is {kind} attack, not {norm!r}: use pgd or apgd for L2")
        if masked and not self.masks:
            raise InputError(
                f"{self.name} does not take a mask: use fgsm, ifgsm or pgd for masked attacks"
            )
        if restarts != 1 and not self.restarts:
            raise InputError(f"{self.name} has no restarts: use pgd or apgd for restarts > 1")
        if eot_samples != 1 and not self.eot:
            raise InputError(f"{self.name} does not average gradients (EOT): use pgd or apgd")

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: float,
        *,
        norm: str = "linf",
        steps: int | None = None,
        seed: int | None = 0,
        mask: Tensor | None = None,
        restarts: int = 1,
        eot_samples: int = 1,
        eot_transforms: str | Sequence[str] = (),
    ) -> Tensor:
        """x: [B,...] -> x_adv under budget eps (module docstring)."""
        norm = "l2" if self.minimal else norm  # an L2 search, whatever was passed
        self.refuse(norm, mask is not None, restarts, eot_samples)
        steps = self.steps if steps is None or self.fixed else steps
        model = over_transforms(model, x, eot_transforms)
        return self.run(model, x, y, eps, norm=norm, steps=steps, seed=seed, mask=mask,
                        restarts=restarts, eot_samples=eot_samples)  # fmt: skip


def over_transforms(model: nn.Module, x: Tensor, names: str | Sequence[str]) -> nn.Module:
    """`model` itself when `names` is empty, else the model in expectation over the stand-ins
    of `names` (images x [B,3,H,W] only; InputError for other inputs)."""
    if not names:
        return model
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(
            f"EOT transforms work on images [B, 3, H, W], got {list(x.shape)}: "
            "leave --eot-transforms out for speech"
        )
    return ExpectedOverTransforms(model, stand_ins(names))


def _fgsm(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return fgsm(model, x, y, eps, mask=mask, eot_samples=eot_samples)


def _ifgsm(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return ifgsm(model, x, y, eps, steps=steps, mask=mask, eot_samples=eot_samples)


def _pgd(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return pgd(model, x, y, eps, norm=norm, steps=steps, seed=seed, mask=mask,
               restarts=restarts, eot_samples=eot_samples)  # fmt: skip


def _cw_l2(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return cw_l2(model, x, y, steps=steps)


def _apgd(loss: str) -> Run:
    def attack(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
        return apgd(model, x, y, eps, norm=norm, loss=loss, steps=steps, restarts=restarts,
                    seed=seed, eot_samples=eot_samples)  # fmt: skip

    attack.__doc__ = f"APGD on the {loss} loss (apgd with loss={loss!r})."
    return attack


def _apgd_t(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return apgd_targeted(model, x, y, eps, norm=norm, steps=steps, restarts=restarts, seed=seed,
                         eot_samples=eot_samples)  # fmt: skip


def _square(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
    return square_search(model, x, y, eps, norm=norm, queries=steps, seed=seed).x_adv


def square_with_queries(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                        norm: str = "linf", steps: int | None = None, seed: int | None = 0,
                        mask: Tensor | None = None, restarts: int = 1, eot_samples: int = 1,
                        eot_transforms: str | Sequence[str] = ()) -> SquareResult:  # fmt: skip
    """The registry's Square attack with the queries it spent per sample (`SquareResult`)."""
    entry = ATTACKS["square"]
    entry.refuse(norm, mask is not None, restarts, eot_samples)
    model = over_transforms(model, x, eot_transforms)
    return square_search(model, x, y, eps, norm=norm, queries=steps or entry.steps, seed=seed)


def _autoattack(version: str) -> Run:
    def attack(model, x, y, eps, *, norm, steps, seed, mask, restarts, eot_samples) -> Tensor:
        return autoattack(model, x, y, eps, norm=norm, version=version, seed=seed,
                          eot_samples=eot_samples)[0]  # fmt: skip

    attack.__doc__ = f"AutoAttack, {version} version (x_adv only; autoattack() gives the report)."
    return attack


_GRADIENT = {"masks": True, "eot": True, "targeted": True, "generators": True}
_APGD = {"norms": ("linf", "l2"), "restarts": True, "eot": True}
_AUTO = {"norms": ("linf", "l2"), "eot": True}
ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack("fgsm", _fgsm, 1, fixed=True, **_GRADIENT),
        Attack("ifgsm", _ifgsm, 10, **_GRADIENT),
        Attack("pgd", _pgd, 10, norms=("linf", "l2"), restarts=True, **_GRADIENT),
        Attack("cw_l2", _cw_l2, 100, norms=("l2",), targeted=True, minimal=True),
        Attack("apgd", _apgd("ce"), 100, **_APGD),
        Attack("apgd-dlr", _apgd("dlr"), 100, **_APGD),
        Attack("apgd-t", _apgd_t, 100, **_APGD),
        Attack("square", _square, 5000, norms=("linf", "l2")),
        Attack("autoattack", _autoattack("standard"), None, fixed=True, **_AUTO),
        Attack("autoattack-fast", _autoattack("fast"), None, fixed=True, **_AUTO),
    )
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


def get_attack(name: str) -> Attack:
    """The attack registered under `name` (see `canonical_name`)."""
    return ATTACKS[canonical_name(name)]
