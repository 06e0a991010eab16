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
def accuracy_on(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Share of x [N,...] that `model` classifies as y [N] (eval mode, restored after)."""
    device = next(model.parameters()).device
    correct = 0
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size].to(device))  # [b, K]
            correct += int((logits.argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


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
    transferred from each other model ("from <name>"), all at the same eps. x: [N,...], y: [N]."""
    adversarial = {
        name: craft(m, x, y, attack, eps, steps=steps, seed=seed) for name, m in models.items()
    }
    rows = []
    for name, model in models.items():
        row: dict[str, Any] = {"model": name, "eps": eps, "clean": accuracy_on(model, x, y)}
        row["white-box"] = accuracy_on(model, adversarial[name], y)
        for source in models:
            if source != name:
                row[f"from {source}"] = accuracy_on(model, adversarial[source], y)
        rows.append(row)
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
    html = table([result]) + (
        "<p class='muted'>Accuracy on the test split, clean and under a white-box "
        f"{attack.upper()} attack (L-inf, eps={eps:g}). Compare with an undefended run: "
        "<code>deepshield defend compare RUN_DIR PLAIN_RUN_DIR</code>.</p>"
    )
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
    from deepshield.data.split import stratified_take

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
    test = data.load(key[0], seed=key[2], **key[1]).test
    if limit is not None:
        test = test.subset(stratified_take(test.y.numpy(), limit, seed=seed))
    x, y = test.tensors()
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
    for row in rows:
        row["defence"] = defence[row["model"]]
    result = {"attack": attack, "eps": budgets, "steps": steps, "n": len(y), "rows": rows}
    runs[0].write_json("robustness_compare.json", result)
    html = table(rows) + (
        f"<p class='muted'>{len(y)} test samples of {key[0]}; white-box: {attack.upper()} "
        f"(L-inf, {steps} steps) on the model itself; 'from X': the same attack "
        "crafted on model X (transfer).</p>"
    )
    runs[0].add_section("robustness_compare", "Robustness: defended vs plain", html, order=31)
    return rows


def _defence_of(cfg: Any) -> str:
    """A short label of the training-time defence of a TrainConfig."""
    parts = []
    if cfg.lipschitz > 0:
        parts.append(f"lipschitz {cfg.lipschitz:g}")
    if cfg.adv_train != "none":
        parts.append(f"{cfg.adv_train} eps={cfg.adv_eps:g}")
    return ", ".join(parts) or "none"
