"""Clean and robust accuracy of several models on the same data: white-box (each model attacked
itself) and transfer (adversarial examples crafted on one model, shown to another).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.attacks.mode import attack_mode
from deepshield.attacks.registry import get_attack


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes [N] of x [N,...] (eval mode, restored after)."""
    device = next(model.parameters()).device
    out = []
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            out.append(model(x[i : i + batch_size].to(device)).argmax(1).cpu())  # [b]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy_on(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Share of x [N,...] that `model` classifies as y [N] (eval mode, restored after)."""
    return float((predictions(model, x, batch_size) == y).float().mean()) if len(x) else 0.0


def rates_on(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> dict[str, Any]:
    """`metrics.class_rates` of `model` on x [N,...], y [N] in {0, 1} (a detector): accuracy,
    balanced accuracy, fakes passed as real, reals flagged as fake, collapsed."""
    from deepshield.metrics import class_rates

    return class_rates(y.numpy(), predictions(model, x, batch_size).numpy())


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
    fn = get_attack(attack)
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        out.append(fn(model, xb, yb, eps, steps=steps, seed=seed + i).cpu())
    return torch.cat(out)


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
    reflects the class balance)."""
    adversarial = {
        name: craft(m, x, y, attack, eps, steps=steps, seed=seed) for name, m in models.items()
    }
    detector = bool(len(y)) and int(y.max()) <= 1
    rows = []
    for name, model in models.items():
        row: dict[str, Any] = {"model": name, "eps": eps}
        views = {"clean": x, "white-box": adversarial[name]}
        views.update({f"from {s}": adversarial[s] for s in models if s != name})
        for view, inputs in views.items():
            if not detector:
                row[view] = accuracy_on(model, inputs, y)
                continue
            r = rates_on(model, inputs, y)
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
