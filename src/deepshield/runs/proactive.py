"""`deepshield protect train` as a library call: data, generators, both detectors, evaluation.

The run folder holds config.yaml, generators/ (cached trained generators), templates.{safetensors,
json}, detector.{safetensors,json} (proactive), passive.{safetensors,json}, history.json,
metrics.json (see evaluate.py), metrics.md (the tables), plots/ and report.html. Re-running the
same config in the same folder reuses what is there (generators, trained detectors); a folder
written with another config needs `force`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepshield import data
from deepshield.errors import DataError
from deepshield.files import atomic_write_text
from deepshield.proactive import manipulations as manip
from deepshield.proactive.config import ProactiveConfig
from deepshield.proactive.detector import ProactiveDetector, load_detector, save_detector
from deepshield.proactive.evaluate import evaluate, markdown_tables
from deepshield.proactive.figures import plot_examples, plot_history, plot_templates
from deepshield.proactive.templates import TemplateSet
from deepshield.proactive.training import DetectorTrainer
from deepshield.report.html import table
from deepshield.run import RunDir, check_run, start_run


def clean_images(cfg: ProactiveConfig) -> dict[str, torch.Tensor]:
    """The dataset's real (label 0) images per split: {"train", "val", "test"} -> [N, 3, H, W]."""
    splits = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs)
    out = {}
    for name in ("train", "val", "test"):
        x, y = splits.split(name).tensors()
        out[name] = x[y == 0]
        if out[name].shape[0] < 2 or out[name].dim() != 4 or out[name].shape[1] != 3:
            raise DataError(
                f"{cfg.dataset}: the {name} split has {tuple(out[name].shape)} real RGB images; "
                "need at least 2 (raise data_kwargs.n)"
            )
    return out


def run_experiment(
    cfg: ProactiveConfig,
    out: str | Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train generators, the proactive and the passive detector; evaluate; -> metrics."""
    start, start_cpu = time.perf_counter(), time.process_time()
    run, complete, replace = check_run(out, "protect train", cfg, force=force)
    images = clean_images(cfg)
    if not complete:  # the data is good: the folder is written from here on
        start_run(run, "protect train", cfg, replace=replace)  # reuses what is there
    log(f"{cfg.dataset}: {', '.join(f'{k} {len(v)}' for k, v in images.items())} clean images")
    names = cfg.seen + cfg.unseen
    nets = manip.load_or_train_generators(
        cfg.generators, names, images["train"], run.output("generators/"), cfg.seed, log
    )
    manipulations = manip.build(names, cfg.generators, nets)
    timings = {"generators_s": time.perf_counter() - start}
    history = run.read_json("history.json") if run.exists("history.json") else {}
    seen = [manipulations[n] for n in cfg.seen]
    train = images["train"]
    templates, proactive = _trained(run, cfg, train, seen, True, history, timings, log)
    _, passive = _trained(run, cfg, train, seen, False, history, timings, log)
    run.write_json("history.json", history)
    t = time.perf_counter()
    groups = {"seen": cfg.seen, "unseen": cfg.unseen}
    with torch.no_grad():
        metrics = evaluate(
            images["test"], manipulations, groups, templates, proactive, passive, cfg.seed
        )
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    timings["total_cpu_s"] = time.process_time() - start_cpu
    metrics["generators"] = {
        name: manip.read_quality(run.file("generators"), name) for name in nets
    }
    metrics["timings"] = timings
    run.write_json("metrics.json", metrics)
    tables = markdown_tables(metrics)
    atomic_write_text(run.output("metrics.md"), tables)
    _report(run, metrics, history, templates, images["test"], manipulations, cfg)
    run.set_done("protect train")
    return metrics


def _trained(
    run: RunDir,
    cfg: ProactiveConfig,
    train: torch.Tensor,
    seen: list[manip.Manipulation],
    proactive: bool,
    history: dict[str, Any],
    timings: dict[str, float],
    log: Callable[[str], None],
) -> tuple[TemplateSet | None, ProactiveDetector]:
    """The run's (templates, detector), or (None, detector) for the passive one; trains and
    saves them unless the run folder already holds them."""
    name, stem = ("proactive", "detector") if proactive else ("passive", "passive")
    files = [f"{stem}.json", "templates.json"] if proactive else [f"{stem}.json"]
    if all(run.exists(f) for f in files):
        log(f"{name}: loaded from {run.path}")
        templates = TemplateSet.load(run.file("templates")) if proactive else None
        return templates, load_detector(run.file(stem))
    t = time.perf_counter()
    trainer = DetectorTrainer(cfg, train, seen, proactive=proactive)
    history[name] = trainer.fit(cfg.steps)
    run.claim(
        *(
            f"{s}.{ext}"
            for s in {stem, "templates" if proactive else stem}
            for ext in ("safetensors", "json")
        )
    )
    save_detector(trainer.detector.eval(), run.file(stem))
    if trainer.templates is not None:
        trainer.templates.save(run.file("templates"))
    timings[f"{name}_s"] = time.perf_counter() - t
    log(f"{name}: trained {cfg.steps} steps in {timings[f'{name}_s']:.0f} s")
    return trainer.templates, trainer.detector


def _report(
    run: RunDir,
    metrics: dict[str, Any],
    history: dict[str, Any],
    templates: TemplateSet,
    test: torch.Tensor,
    manipulations: dict[str, manip.Manipulation],
    cfg: ProactiveConfig,
) -> None:
    """Plots and the report section."""
    run.save_plot(plot_templates(templates), "templates")
    run.save_plot(plot_examples(test[:4], templates, manipulations, cfg.seed), "examples")
    if history:
        run.save_plot(plot_history(history), "history")
    rows = []
    for det in ("proactive", "passive"):
        for op, m in metrics[det].items():
            row: dict[str, Any] = {"detector": det, "processing": op}
            for group, g in m["groups"].items():
                row[f"{group} AUC"], row[f"{group} acc"] = g["auc"], g["accuracy"]
            row["untouched kept"] = m["untouched_kept"]
            rows.append(row)
    q = metrics["quality"]
    html = (
        f"<p>Protected vs original: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.4f} "
        f"({metrics['n_images']} test images).</p>"
        + table(rows)
        + '<p><img src="plots/templates.png"> <img src="plots/examples.png"></p>'
    )
    run.add_section("proactive", "Proactive protection", html, order=30)
