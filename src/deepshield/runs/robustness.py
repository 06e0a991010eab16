"""A detector run's robustness: the defended run's own table (robustness.json) and the comparison
of several runs (defend compare)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from deepshield.data.splits import Splits
from deepshield.defenses.robustness import rank_rows, robustness_table
from deepshield.errors import ConfigError
from deepshield.report.html import table
from deepshield.run import RunDir


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
    from deepshield.config import TrainConfig
    from deepshield.data.splits import stratified_subset

    if len(run_dirs) < 2:
        raise ConfigError("compare needs two or more run folders (e.g. a plain and a defended run)")
    runs = [RunDir.open(d) for d in run_dirs]
    cfgs = [r.read_config(TrainConfig) for r in runs]
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
