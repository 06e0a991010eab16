"""`deepshield disrupt --config` as a library call: train (or reuse) the generators of a
DisruptConfig, measure its tables, write them with image grids into one run folder.

The folder holds config.yaml, generators/<name>/ (generator runs, reused when finished),
metrics.json (every table's rows, written after each table: an interrupted run keeps what it
measured and computes only the rest when re-run), tables.md, plots/ and report.html.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepshield.disrupt.attack import from_pixels, to_pixels
from deepshield.disrupt.config import DisruptConfig, GeneratorConfig
from deepshield.disrupt.generators import real_images
from deepshield.disrupt.tables import (
    Setting,
    classes_of,
    generate,
    method_table,
    minimal_change_table,
    pairs,
    transfer_table,
)
from deepshield.disrupt.views import is_conditional
from deepshield.files import atomic_write_text
from deepshield.report.grids import image_grid
from deepshield.report.html import table
from deepshield.run import RunDir, check_run, start_run
from deepshield.runs.generators import load_generator, train_generator

_TITLES = {
    "methods": "Table 1: disruption by method (distance to the clean output; higher is stronger)",
    "transfer": "Table 4: class transferability (x_adv made without knowing the class)",
    "minimal_change": "Table 5: minimal change (distance of G(x_adv, c) to the input; lower "
    "is better)",
    "robust": "Adversarial training of the generator (% disrupted before and after)",
}


def _percent(rows: list[dict]) -> list[dict]:
    """'disrupted' shares -> '% disrupted' percentages, for display."""
    return [
        {
            ("% disrupted" if k == "disrupted" else k): (100 * v if k == "disrupted" else v)
            for k, v in r.items()
        }
        for r in rows
    ]


def markdown(rows: list[dict], digits: int = 4) -> str:
    """A GitHub markdown table of rows (floats rounded; '% disrupted' to one decimal)."""
    rows = _percent(rows)
    columns = list(rows[0])

    def fmt(key: str, v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if key == "% disrupted" else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def _grid(
    run: RunDir,
    name: str,
    generator: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    count: int,
    batch_size: int,
) -> None:
    """plots/disrupt_<name>.png: input / disrupted input / clean / disrupted output, `count` pairs."""
    x_all, c_all = pairs(x, classes_of(generator))
    k = 1 if c_all is None else len(classes_of(generator))
    pick = torch.arange(count) * k + torch.arange(count) % k  # image i under class i mod K
    pick = pick[pick < len(x_all)]
    c = None if c_all is None else c_all[pick]
    bounds = generator.bounds
    rows = [
        x_all[pick],
        x_adv[pick],
        generate(generator, x_all[pick], c, batch_size),
        generate(generator, x_adv[pick], c, batch_size),
    ]
    fig = image_grid(
        [to_pixels(r, bounds) for r in rows],
        ["input", "disrupted input", "clean output", "disrupted output"],
    )
    run.save_plot(fig, f"disrupt_{name}")


def _robust_rows(
    cfg: DisruptConfig,
    base_dir: Path,
    generators_dir: Path,
    x01: torch.Tensor,
    setting: Setting,
    measured: list[dict] | None,
    force: bool,
    log: Callable[[str], None],
) -> list[dict]:
    """Fine-tune the base generator without and with adversarial training; measure each.

    measured: the base generator's rows of the methods table, reused when given; force:
    retrain a fine-tune whose folder holds another config. A fine-tune's config names the
    base weights by their SHA-256, so one made from other base weights is never reused."""
    spec = cfg.robust
    base_cfg: GeneratorConfig = cfg.generators[spec.generator]
    base_id = f"fine-tune of {spec.generator} sha256:{RunDir(base_dir).weights_sha256()[:16]}"
    variants: dict[str, Path] = {"before (base run)": base_dir}
    for mode in ["none", *spec.modes]:
        ft = base_cfg.model_copy(
            update={
                "name": base_id,
                "init": str(base_dir),
                "steps": spec.steps,
                "adversarial": spec.attack.model_copy(update={"mode": mode}),
            }
        )
        label = {
            "none": "fine-tuned, clean",
            "generator": "fine-tuned, adv G",
            "generator+discriminator": "fine-tuned, adv G+D",
        }[mode]
        variants[label] = train_generator(
            ft, generators_dir / f"{spec.generator}-finetune-{mode}", force=force, log=log
        ).path
    rows = []
    for label, path in variants.items():
        generator = load_generator(path)
        quality = RunDir(path).read_json("metrics.json")["test"]["l1"]
        if path == base_dir and measured is not None:
            methods = [{k: v for k, v in r.items() if k != "generator"} for r in measured]
        else:
            x = from_pixels(x01, generator.bounds)
            methods, _ = method_table(generator, x, list(cfg.methods), setting)
        for r in methods:
            rows.append({"training": label, "edit L1 (test)": quality, **r})
    return rows


def run_experiment(
    cfg: DisruptConfig,
    out: str | Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train/reuse the generators, measure cfg.tables, write the run folder; -> metrics."""
    run, complete, replace = check_run(out, "disrupt", cfg, force=force)
    x01 = real_images(cfg.dataset, cfg.data_kwargs, cfg.seed, "test")[: cfg.n_images]
    if not complete:  # the data is good: the folder is written from here on
        start_run(run, "disrupt", cfg, replace=replace)  # resumes table by table
    run.claim("generators/")
    metrics: dict[str, Any] = run.read_json("metrics.json") if run.exists("metrics.json") else {}
    setting = Setting(cfg.eps, cfg.steps, cfg.alpha, cfg.threshold, cfg.batch_size, cfg.seed)
    generators_dir = run.path / "generators"
    dirs = {}
    for name, gcfg in cfg.generators.items():
        dirs[name] = train_generator(gcfg, generators_dir / name, force=force, log=log).path

    def save(key: str, rows: list[dict]) -> None:
        metrics[key] = rows
        run.write_json("metrics.json", metrics)
        log(f"{key}: done")

    for name, path in dirs.items():
        generator = load_generator(path)
        x = from_pixels(x01, generator.bounds)
        adversarial = None
        if "methods" in cfg.tables and f"methods/{name}" not in metrics:
            rows, adversarial = method_table(generator, x, list(cfg.methods), setting)
            save(f"methods/{name}", [{"generator": name, **r} for r in rows])
            method = cfg.transfer_method if cfg.transfer_method in adversarial else cfg.methods[0]
            _grid(run, name, generator, x, adversarial[method], cfg.grid_images, cfg.batch_size)
        if (
            "transfer" in cfg.tables
            and is_conditional(generator)
            and f"transfer/{name}" not in metrics
        ):
            per_class = None if adversarial is None else adversarial.get(cfg.transfer_method)
            rows = transfer_table(generator, x, cfg.transfer_method, setting, per_class)
            save(f"transfer/{name}", [{"generator": name, **r} for r in rows])
        if "minimal_change" in cfg.tables and f"minimal_change/{name}" not in metrics:
            rows = minimal_change_table(generator, x, cfg.transfer_method, setting)
            save(f"minimal_change/{name}", [{"generator": name, **r} for r in rows])
    if "robust" in cfg.tables and "robust" not in metrics:
        measured = metrics.get(f"methods/{cfg.robust.generator}")
        rows = _robust_rows(
            cfg, dirs[cfg.robust.generator], generators_dir, x01, setting, measured, force, log
        )
        save("robust", rows)
    _write_tables(run, cfg, metrics)
    run.set_done("disrupt")
    return metrics


def _write_tables(run: RunDir, cfg: DisruptConfig, metrics: dict) -> None:
    """tables.md and one report section per table (+ the grids)."""
    md, order = [], 60
    for key, title in _TITLES.items():
        rows = [r for name, part in metrics.items() if name.split("/")[0] == key for r in part]
        if not rows:
            continue
        md += [f"## {title}", "", markdown(rows), ""]
        run.add_section(f"disrupt_{key}", title, table(_percent(rows)), order=order)
        order += 1
    setup = (
        f"eps {cfg.eps} (L-inf, generator range [-1, 1]), {cfg.steps} steps, alpha "
        f"{cfg.alpha or cfg.eps / 5}, % disrupted = share of (image, class) pairs with L2 >= "
        f"{cfg.threshold}; {cfg.n_images} real test images of {cfg.dataset}."
    )
    atomic_write_text(run.output("tables.md"), f"Setting: {setup}\n\n" + "\n".join(md))
    grids = [
        f'<p>{name}<br><img src="plots/disrupt_{name}.png"></p>'
        for name in cfg.generators
        if (run.path / "plots" / f"disrupt_{name}.png").is_file()
    ]
    if grids:
        html = f"<p>{setup}</p>" + "".join(grids)
        run.add_section("disrupt_grids", "Disrupted images", html, order=order)
