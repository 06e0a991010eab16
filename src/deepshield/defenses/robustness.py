"""Clean and robust accuracy of several models on the same data: white-box (each model attacked
itself) and transfer (adversarial examples crafted on one model, shown to another).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.attacks.evaluate import (
    Scored,
    Transform,
    attack_transform,
    model_device,
    score_dataset,
)
from deepshield.attacks.registry import get_attack


def predictions(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes [N] of x [N,...] (frozen eval, restored after)."""
    return score_dataset(
        model, x, torch.zeros(len(x), dtype=torch.long), batch_size=batch_size
    ).predictions()


def accuracy_on(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Share of x [N,...] that `model` classifies as y [N] (frozen eval, restored after)."""
    return score_dataset(model, x, y, batch_size=batch_size).accuracy()


def _rates(scored: Scored, name: str) -> dict[str, Any]:
    """`metrics.class_rates` of model `name` in `scored` (a detector: y in {0, 1})."""
    from deepshield.metrics import class_rates

    return class_rates(scored.y.numpy(), scored.predictions(name).numpy())


def rates_on(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> dict[str, Any]:
    """`metrics.class_rates` of `model` on x [N,...], y [N] in {0, 1} (a detector): accuracy,
    balanced accuracy, fakes passed as real, reals flagged as fake, collapsed."""
    return _rates(score_dataset(model, x, y, batch_size=batch_size), "model")


def attacked_by(
    model: nn.Module, attack: str, eps: float, *, steps: int = 10, seed: int = 0, batch_size: int
) -> Transform:
    """The engine transform of a registered attack against `model` (batch seeds: seed + index of
    the batch's first sample)."""
    return attack_transform(
        get_attack(attack), model, eps, batch_size=batch_size, seed=seed, steps=steps
    )


def craft(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: str,
    eps: float,
    *,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> Tensor:
    """Adversarial examples of x [N,...] in [0,1] against `model` with a registered attack."""
    transform = attacked_by(model, attack, eps, steps=steps, seed=seed, batch_size=batch_size)
    found = score_dataset(
        {}, x, y, transform, batch_size=batch_size, device=model_device(model, x),
        keep=range(len(x)),
    )  # fmt: skip
    return found.kept if found.kept is not None else x[:0].clone()


def robustness_table(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    attack: str = "pgd",
    steps: int = 10,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per model: clean accuracy, white-box accuracy and accuracy under examples
    transferred from each other model ("from <name>"), all at the same eps. x: [N,...], y: [N].

    For detectors (y in {0, 1}, 1 = fake) each accuracy comes with its balanced accuracy, the
    white-box and clean rows with fakes passed as real and reals flagged as fake, and "collapsed"
    says the model calls one class for >= 95 % of the clean images (its accuracy then only
    reflects the class balance). Each model crafts once; every model scores its examples."""
    clean = score_dataset(models, x, y)
    crafted = {}
    for name, m in models.items():
        transform = attacked_by(m, attack, eps, steps=steps, seed=seed, batch_size=256)
        crafted[name] = score_dataset(models, x, y, transform)
    detector = bool(len(y)) and int(y.max()) <= 1
    rows = []
    for name in models:
        row: dict[str, Any] = {"model": name, "eps": eps}
        views = {"clean": clean, "white-box": crafted[name]}
        views.update({f"from {s}": crafted[s] for s in models if s != name})
        for view, scored in views.items():
            if not detector:
                row[view] = scored.accuracy(name)
                continue
            r = _rates(scored, name)
            row[view] = r["accuracy"]
            row[f"{view} balanced"] = r["balanced_accuracy"]
            if not view.startswith("from "):
                row[f"{view} fakes passed"] = r["fake_passed_as_real"]
                row[f"{view} reals flagged"] = r["real_flagged_as_fake"]
            if view == "clean":
                row["collapsed"] = r["collapsed_to"] or False
        rows.append(row)
    return rows


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add "rank" (1 = most robust) per eps to robustness_table rows: by white-box balanced
    accuracy (plain accuracy for classifiers), a collapsed detector always below a working
    one. Rows keep their order; the same list is returned."""

    def key(r: dict[str, Any]) -> tuple[bool, float, float]:
        score = r.get("white-box balanced", r["white-box"])
        return (bool(r.get("collapsed")), -score, -r.get("clean balanced", r["clean"]))

    for eps in dict.fromkeys(r["eps"] for r in rows):
        group = [r for r in rows if r["eps"] == eps]
        for rank, r in enumerate(sorted(group, key=key), start=1):
            r["rank"] = rank
    return rows
