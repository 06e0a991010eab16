"""Clean and robust accuracy of several models on the same data: white-box (each model attacked
itself) and transfer (adversarial examples crafted on one model, shown to another).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepshield.attacks.mode import attack_mode
from deepshield.attacks.registry import get_attack
from deepshield.data.splits import Splits
from deepshield.errors import ConfigError
from deepshield.report.html import table
from deepshield.run import RunDir


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


def write_training_robustness(
    run: RunDir,
    model: nn.Module,
    splits: Splits,
    eps: float,
    *,
    attack: str = "pgd",
    steps: int = 10,
) -> dict[str, Any]:
    """Clean and white-box accuracy of a defended training run on its test split at eps:
    robustness.json and a report section."""
    x, y = splits.test.tensors()
    (row,) = robustness_table({"this run": model}, x, y, eps, attack=attack, steps=steps)
    result = {"attack": attack, "steps": steps, **row}
    run.write_json("robustness.json", result)
    warning = _collapse_line(row)
    html = table([result]) + (
        "<p class='muted'>Accuracy and balanced accuracy (mean of the two class recalls) on the "
        f"test split, clean and under a white-box {attack.upper()} attack (L-inf, eps={eps:g}). "
        "Compare with an undefended run: "
        "<code>deepshield defend compare RUN_DIR PLAIN_RUN_DIR</code>.</p>"
    )
    if warning:
        html = f"<p><b>{warning}</b></p>" + html
    run.add_section("robustness", "Robustness of the defended detector", html, order=30)
    return result


def compare_runs(
    run_dirs: Sequence[str | Path],
    eps: float | Sequence[float],
    *,
    attack: str = "pgd",
    steps: int = 10,
    limit: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """robustness_table (at each eps) of the best models of several runs on the first run's test
    split (all runs must share dataset, options and seed); written into the first run."""
    from deepshield import data
    from deepshield.config import TrainConfig, parse_config
    from deepshield.data.splits import stratified_subset

    if len(run_dirs) < 2:
        raise ConfigError("compare needs two or more run folders (e.g. a plain and a defended run)")
    runs = [RunDir.open(d) for d in run_dirs]
    cfgs = [
        parse_config(r.read_yaml("config.yaml"), TrainConfig, str(r.file("config.yaml")))
        for r in runs
    ]
    key = (cfgs[0].dataset, cfgs[0].data_kwargs, cfgs[0].seed)
    for r, c in zip(runs[1:], cfgs[1:], strict=True):
        if (c.dataset, c.data_kwargs, c.seed) != key:
            raise ConfigError(
                f"{r.path} was trained on {c.dataset} (seed {c.seed}) but {runs[0].path} on "
                f"{key[0]} (seed {key[2]}): compare runs of the same dataset, options and seed"
            )
    loaded = data.load(key[0], seed=key[2], **key[1])
    drawn = stratified_subset(loaded.test, limit, seed=seed, classes=loaded.classes)
    x, y = drawn.data.tensors()
    names = [r.path.name for r in runs]
    if len(set(names)) != len(names):
        names = [str(r.path) for r in runs]
    models = {name: r.load_model("best") for name, r in zip(names, runs, strict=True)}
    budgets = [eps] if isinstance(eps, (int, float)) else list(eps)
    rows = [
        row
        for e in budgets
        for row in robustness_table(models, x, y, e, attack=attack, steps=steps, seed=seed)
    ]
    defence = {name: _defence_of(c) for name, c in zip(names, cfgs, strict=True)}
    for row in rank_rows(rows):
        row["defence"] = defence[row["model"]]
    result = {
        "attack": attack, "eps": budgets, "steps": steps, "n": len(y), "subset": drawn.note,
        "ranking": "white-box balanced accuracy; a collapsed detector ranks below working ones",
        "rows": rows,
    }  # fmt: skip
    runs[0].write_json("robustness_compare.json", result)
    warnings = dict.fromkeys(w for w in map(_collapse_line, rows) if w)
    html = table(rows) + (
        f"<p class='muted'>{drawn.note} of the {key[0]} test split; white-box: {attack.upper()} "
        f"(L-inf, {steps} steps) on the model itself; 'from X': the same attack crafted on model "
        "X (transfer). 'balanced': the mean of the two class recalls; rank: by white-box balanced "
        "accuracy per eps, a collapsed detector (one class for >= 95 % of the clean images) "
        "always below a working one.</p>"
    )
    html = "".join(f"<p><b>{w}</b></p>" for w in warnings) + html
    runs[0].add_section("robustness_compare", "Robustness: defended vs plain", html, order=31)
    return rows


def _collapse_line(row: dict[str, Any]) -> str | None:
    """The warning of a robustness_table row whose model collapsed, or None."""
    if not row.get("collapsed"):
        return None
    return (
        f"{row['model']} is COLLAPSED: it calls >= 95 % of the clean images {row['collapsed']} "
        f"(balanced accuracy {row['clean balanced']:.3f}); its accuracy, clean or attacked, "
        "only reflects the class balance"
    )


def _defence_of(cfg: Any) -> str:
    """A short label of the training-time defence of a TrainConfig."""
    parts = []
    if cfg.lipschitz > 0:
        parts.append(f"lipschitz {cfg.lipschitz:g}")
    if cfg.adv_train != "none":
        k = cfg.adv_eps * 255
        eps = f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{cfg.adv_eps:g}"
        parts.append(f"{cfg.adv_train} eps={eps}")
    return ", ".join(parts) or "none"
