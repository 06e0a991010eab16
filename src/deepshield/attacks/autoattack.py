"""AutoAttack (Croce & Hein, ICML 2020): a cascade of diverse parameter-free attacks.

Each stage attacks only the points that every earlier stage left classified correctly, and a
point fooled once keeps the adversarial example that fooled it, so robust accuracy can only
fall along the cascade. A point no stage fooled keeps the lowest-margin point any stage found
(x only where none beat it), so scores under AutoAttack are comparable with PGD's. Versions:
  standard  APGD-CE (100 steps), APGD-T (targeted DLR, 9 targets, 100 steps each),
            Square (5000 queries, p_init 0.8): the reference's standard cascade without FAB-T
            (see docs/robustness.md for why FAB-T is left out and what that costs).
  fast      APGD-CE then APGD-DLR (100 steps each): about a tenth of standard's passes.
  rand      APGD-CE then APGD-DLR with EOT over 20 forward passes, for randomised models.
Models with fewer than 3 classes (e.g. 2-class detectors) cannot use DLR: APGD-DLR becomes
APGD on the margin loss ("apgd-margin"); with fewer than 4 classes APGD-T uses the targeted
margin ("apgd-t-margin"; with 2 classes its one target is the other class). The reference
AutoAttack refuses such models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from deepshield.attacks.apgd import apgd, apgd_targeted
from deepshield.attacks.checks import (
    check_attack,
    check_count,
    check_labels,
    check_norm,
    check_number,
)
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.objectives import as_logits, margin
from deepshield.attacks.square import square
from deepshield.errors import InputError

StageFn = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, x, y) -> x_adv
VERSIONS = ("standard", "fast", "rand")


@dataclass(frozen=True)
class AutoAttackReport:
    """Robust accuracy after each stage; robust[k]: [N] bool, still correct after stages[k]."""

    stages: list[str]
    accuracy: list[float]
    robust: Tensor  # [len(stages), N] bool; stages[0] is "clean"
    seconds: list[float] = field(default_factory=list)  # wall time per stage

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: {"stages": [{"name", "robust_accuracy", "seconds"}], "robust_accuracy"}."""
        rows = [
            {"name": n, "robust_accuracy": a, "seconds": s}
            for n, a, s in zip(self.stages, self.accuracy, self.seconds, strict=True)
        ]
        return {"stages": rows, "robust_accuracy": self.accuracy[-1]}


def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """Logits [N, C] of x, batch_size points at a time (no gradient, attack mode)."""
    with attack_mode(model), torch.no_grad():
        return torch.cat(
            [as_logits(model(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )


def cascade(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    stages: Sequence[tuple[str, StageFn]],
    *,
    batch_size: int = 500,
    clean_logits: Tensor | None = None,
) -> tuple[Tensor, AutoAttackReport]:
    """Run `stages` in turn on the points still classified correctly -> (x_adv, report).

    x: [N,...] (already validated), y: [N]; clean_logits: [N, C] at x when already known. Each
    stage sees batches of <= batch_size points. Per point x_adv is the lowest-margin point of
    all stages (a misclassified one as soon as a stage finds one; checked here).
    """
    x_adv = x.clone()
    start = time.perf_counter()
    logits = _logits(model, x, batch_size) if clean_logits is None else clean_logits
    best = margin(logits, y)  # [N]
    robust = [logits.argmax(1) == y]
    seconds = [time.perf_counter() - start]
    for _, attack in stages:
        start = time.perf_counter()
        still = robust[-1].clone()
        idx = still.nonzero().squeeze(1)
        for chunk in idx.split(batch_size) if len(idx) else ():  # nothing left: skip the stage
            found = attack(model, x[chunk], y[chunk])
            found_logits = _logits(model, found, batch_size)  # [b, C]
            found_margin = margin(found_logits, y[chunk])
            better = found_margin < best[chunk]
            x_adv[chunk[better]] = found[better]
            best[chunk[better]] = found_margin[better]
            still[chunk[found_logits.argmax(1) != y[chunk]]] = False
        robust.append(still)
        seconds.append(time.perf_counter() - start)
    flags = torch.stack(robust)  # [stages + 1, N]
    report = AutoAttackReport(
        stages=["clean", *(name for name, _ in stages)],
        accuracy=flags.float().mean(1).tolist(),
        robust=flags.cpu(),
        seconds=seconds,
    )
    return x_adv, report


def autoattack_stages(
    version: str,
    norm: str,
    eps: float,
    classes: int,
    seed: int | None,
    eot_samples: int,
    random_start: bool = True,
) -> list[tuple[str, StageFn]]:
    """The (name, attack) stages of a version for a model with `classes` outputs; the APGD
    stages start at a random point (the reference's) or, random_start=False, at x."""
    dlr = "dlr" if classes >= 3 else "margin"
    t_name = "apgd-t" if classes >= 4 else "apgd-t-margin"
    common = {"norm": norm, "seed": seed, "eot_samples": eot_samples, "random_start": random_start}

    def apgd_ce(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return apgd(m, x, y, eps, loss="ce", **common)

    def apgd_dlr(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return apgd(m, x, y, eps, loss=dlr, **common)

    def apgd_t(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return apgd_targeted(m, x, y, eps, targets=9, **common)

    def square_5000(m: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return square(m, x, y, eps, norm=norm, queries=5000, rescale_schedule=False, seed=seed)

    if version == "standard":
        return [("apgd-ce", apgd_ce), (t_name, apgd_t), ("square", square_5000)]
    return [("apgd-ce", apgd_ce), (f"apgd-{dlr}", apgd_dlr)]


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    version: str = "standard",
    seed: int | None = 0,
    eot_samples: int | None = None,
    batch_size: int = 500,
    random_start: bool = True,
) -> tuple[Tensor, AutoAttackReport]:
    """AutoAttack. x: [N,C,H,W] in [0,1] (or model.bounds), y: labels [N] -> (x_adv, report).

    "fast" and "rand" also take other inputs [N,...] (e.g. waveforms [N,T]).

    version: "standard" | "fast" | "rand" (module docstring). eot_samples: forward passes
    averaged per APGD gradient (default 20 for "rand", else 1). random_start=False starts the
    APGD stages at x instead of a random point of the ball. x may live on any device; the
    attack runs on the model's device and x_adv comes back on x's device.
    """
    eps = check_number("eps", eps)
    norm = check_norm(norm)
    if version not in VERSIONS:
        raise InputError(
            f"unknown AutoAttack version {version!r}: use one of {', '.join(VERSIONS)}"
        )
    if eot_samples is None:
        eot_samples = 20 if version == "rand" else 1
    eot_samples = check_count("eot_samples", eot_samples)
    batch_size = check_count("batch_size", batch_size)
    device = next(model.parameters(), x).device
    home = x.device
    x, y = x.detach().to(device), y.to(device) if isinstance(y, Tensor) else y
    _, y, _ = check_attack(model, x, y)
    if version == "standard" and x.dim() != 4:
        raise InputError(
            f"x {tuple(x.shape)} is not an image batch [B,C,H,W], which Square (in the standard "
            "version) needs: use version='fast' for other inputs"
        )
    logits = _logits(model, x, batch_size)  # [N, C]: the cascade's clean pass checks the labels
    check_labels(logits, y)
    stages = autoattack_stages(version, norm, eps, logits.shape[1], seed, eot_samples, random_start)
    x_adv, report = cascade(model, x, y, stages, batch_size=batch_size, clean_logits=logits)
    return x_adv.to(home), report
