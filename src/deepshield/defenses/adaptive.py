"""Adaptive attacks on the defences (Athalye et al., 2018; Tramer et al., 2020): attacks that know
the defence and are built to get through it, next to the non-adaptive attacks they replace.

Purification (`purifier.Purified`, e.g. Deep Image Prior): the defended model classifies
purify(x), and the purifier returns a detached image, so no gradient reaches x.
- none: craft on the bare classifier and show the examples to the defended model (the setting
  the defence was evaluated in);
- bpda: craft on classifier(BPDA(purify)(x)): the forward pass runs the attacker's own copy of
  the purifier, the backward pass takes it as the identity;
- eot: bpda with a purifier that draws a new random initialisation on every pass, each gradient
  averaged over `eot_samples` passes (expectation over the purifier's randomness).
The defended model's purifier is seeded with `DEFENDER_SEED` + seed, which the attacker's copy
(seeded `seed`) never uses: the attacker knows the purifier, not its random draws.

Adversarial-example detector (`adversarial_detector.Guarded`, classifier + detector as one
(K+1)-class model): the non-adaptive attacks (fgsm, pgd) attack the classifier alone; the
detector-aware attack (Carlini & Wagner, 2017) is the same PGD on the Guarded model with the
objective `objectives.detector_aware_loss`: log P(wrong class and passed) - log P(true class or
rejected) under the joint model.

    @inproceedings{athalye2018obfuscated,
      title={Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
             Adversarial Examples},
      author={Athalye, Anish and Carlini, Nicholas and Wagner, David}, booktitle={ICML},
      year={2018}}
    @inproceedings{carlini2017adversarial,
      title={Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection Methods},
      author={Carlini, Nicholas and Wagner, David}, booktitle={AISec}, year={2017}}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import Tensor, nn

from deepshield.attacks.adaptive import BPDA
from deepshield.attacks.evaluate import Scored, attack_transform, score_dataset
from deepshield.attacks.gradient import pgd
from deepshield.attacks.objectives import detector_aware_loss
from deepshield.attacks.registry import get_attack
from deepshield.defenses.adversarial_detector import Guarded, eight_bit
from deepshield.defenses.dip import FAST, DipConfig
from deepshield.defenses.purifier import DipPurifier, Purified
from deepshield.errors import ConfigError

ADAPTIVE = ("none", "bpda", "eot")
PURIFIERS = ("dip",)
DEFENDER_SEED = 1_000_000  # offset of the defended model's DIP seeds (never the attacker's)
DEFAULT_EOT_SAMPLES = 8

Purifier = Callable[[Tensor], Tensor]  # x [B,C,H,W] in [0,1] -> purified, same shape and range
CRAFTED = {
    "none": "crafted on the bare model (non-adaptive)",
    "bpda": "crafted through BPDA: the attacker's own DIP forward, identity backward",
    "eot": "crafted through BPDA with EOT: a new DIP initialisation on every pass, gradients "
    "averaged over the passes",
}


def purifier_attack_models(
    model: nn.Module, defender: Purifier, attacker: Purifier, adaptive: str
) -> tuple[nn.Module, nn.Module]:
    """-> (crafting model, defended model Purified(model, defender)) for the `adaptive` threat.

    none: the bare model crafts; bpda / eot: model(BPDA(attacker)(x)), identity backward (for
    eot, `attacker` should draw new randomness per call and the attack average over passes).
    """
    defended = Purified(model, defender)
    if adaptive == "none":
        return model, defended
    return nn.Sequential(BPDA(attacker), model), defended


@dataclass(frozen=True)
class PurifierThreat:
    """A DIP-purified model and how it is attacked (module docstring)."""

    adaptive: str = "bpda"
    dip: DipConfig = FAST
    chunk: int = 16

    def models(self, model: nn.Module, seed: int = 0) -> tuple[nn.Module, nn.Module]:
        """(crafting model, defended model) around `model`; DIP seeds from `seed`."""
        defender = DipPurifier(self.dip, chunk=self.chunk, seed=DEFENDER_SEED + seed)
        attacker = DipPurifier(self.dip, chunk=self.chunk, seed=seed, reseed=self.adaptive == "eot")
        return purifier_attack_models(model, defender, attacker, self.adaptive)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {
            "purify": "dip",
            "adaptive": self.adaptive,
            "crafted": CRAFTED[self.adaptive],
            "dip": asdict(self.dip),
        }

    def tag(self) -> str:
        """Short name for result files: dip_none, dip_bpda, dip_eot."""
        return f"dip_{self.adaptive}"

    def flags(self) -> str:
        """The `deepshield attack` flags of this threat (without --eot-samples)."""
        iters = "" if self.dip.iters == FAST.iters else f" --dip-iters {self.dip.iters}"
        return f"--purify dip --adaptive {self.adaptive}{iters}"


def purifier_threat(
    purify: str | None,
    adaptive: str | None,
    eot_samples: int | None,
    dip_iters: int | None = None,
) -> tuple[PurifierThreat | None, int]:
    """(threat, EOT passes per gradient) of the CLI flags (threat None: no defence);
    ConfigError on a bad combination, before any work.

    adaptive defaults to bpda; eot_samples to DEFAULT_EOT_SAMPLES for eot and 1 otherwise.
    """
    if purify is None:
        for flag, value in (("--adaptive", adaptive), ("--eot-samples", eot_samples),
                            ("--dip-iters", dip_iters)):  # fmt: skip
            if value is not None:
                raise ConfigError(f"{flag} needs a defence to adapt to: add --purify dip")
        return None, 1
    if purify not in PURIFIERS:
        raise ConfigError(f"--purify {purify!r}: the purifier available is dip")
    adaptive = adaptive or "bpda"
    if adaptive not in ADAPTIVE:
        raise ConfigError(f"--adaptive {adaptive!r}: use one of {', '.join(ADAPTIVE)}")
    if eot_samples is not None and adaptive != "eot":
        raise ConfigError(f"--eot-samples needs --adaptive eot (got --adaptive {adaptive})")
    samples = DEFAULT_EOT_SAMPLES if eot_samples is None and adaptive == "eot" else eot_samples
    if samples is not None and samples < 1:
        raise ConfigError(f"--eot-samples {samples}: give a positive number of passes, e.g. 8")
    if dip_iters is not None and dip_iters < 1:
        raise ConfigError(f"--dip-iters {dip_iters}: give a positive number of iterations")
    dip = FAST if dip_iters is None else replace(FAST, iters=dip_iters)
    return PurifierThreat(adaptive, dip), samples or 1


# -- the adversarial-example detector --------------------------------------------------------
NON_ADAPTIVE = ("fgsm", "pgd")


def _outcome(scored: Scored) -> dict[str, Tensor]:
    """Per sample [N] bool: the classifier is right, the detector flags the input as adversarial
    (P(adversarial) >= 0.5), from the engine's scores of models "protected" and "detector"."""
    return {
        "right": scored.predictions("protected") == scored.y,
        "flagged": scored.scores("detector") >= 0.5,
    }


def _row(
    attack: str, adaptive: bool, eps: float, out: dict[str, Tensor], target: Tensor
) -> dict[str, Any]:
    """target: [N] bool, the samples the attack has to turn (right and passed when clean)."""
    right, flagged = out["right"], out["flagged"]
    goal = ~right & ~flagged  # [N]
    broke, could = int((~right & target).sum()), int(target.sum())
    outcome = f"yes: {broke} of {could}" if broke else f"NO: none of {could}"
    if attack == "clean":
        outcome = "clean"
    return {
        "attack": attack,
        "detector-aware": adaptive,
        "eps": eps,
        "n": len(right),
        "attack broke": outcome,
        "accuracy": float(right.float().mean()),
        "detected": float(flagged.float().mean()),
        "fooled, undetected": float(goal.float().mean()),
        "success": float(goal[target].float().mean()) if target.any() else None,
    }


def detector_attack_table(
    protected: nn.Module,
    detector: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Sequence[float],
    *,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Non-adaptive (fgsm, pgd on the classifier) vs detector-aware pgd, per eps (L-inf).

    x: [N,C,H,W] in [0,1] (8-bit values), y: [N] -> rows (a "clean" row first): accuracy of the
    classifier, share flagged by the detector (P(adversarial) >= 0.5) and share both fooling
    the classifier and passing the detector (the attacker's goal), over all N samples; "success":
    that share among the samples the classifier gets right and the detector passes when clean.
    Examples are rounded to 8 bits before evaluation. PGD: `steps` steps of 2.5 eps / steps,
    random start.
    """
    guarded = Guarded(protected, detector)
    both = {"protected": protected, "detector": detector}

    def table_row(name: str, adaptive: bool, e: float, model: nn.Module, **kw: Any) -> None:
        attack = pgd if adaptive else get_attack(name)  # the registry's has no loss_fn
        transform = attack_transform(
            attack, model, e, batch_size=batch_size, seed=seed, steps=steps, post=eight_bit, **kw
        )
        scored = score_dataset(both, x, y, transform, batch_size=batch_size)
        rows.append(_row(name, adaptive, e, _outcome(scored), target))

    clean = _outcome(score_dataset(both, x, y, batch_size=batch_size))
    target = clean["right"] & ~clean["flagged"]  # [N]
    rows = [_row("clean", False, 0.0, clean, target)]
    for e in eps:
        for name in NON_ADAPTIVE:
            table_row(name, False, e, protected)
        table_row("pgd", True, e, guarded, loss_fn=detector_aware_loss)
    return rows
