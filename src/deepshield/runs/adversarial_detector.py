"""An adversarial-example detector run: train it on a detector run's clean and attacked images,
evaluate it and write its tables and report section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepshield import data, models
from deepshield.config import TrainConfig
from deepshield.data.split import stratified_take
from deepshield.data.splits import Splits
from deepshield.defenses.adversarial_detector import (
    DetectorConfig,
    adversarial_pairs,
    adversarial_splits,
    detection_row,
    parse_attack,
    plot_detection_rocs,
    real_attack_note,
)
from deepshield.report.html import figure, table
from deepshield.run import RunDir, check_run, start_run
from deepshield.runtime import resolve_device, seed_all


def _protected(cfg: DetectorConfig) -> tuple[RunDir, TrainConfig]:
    run = RunDir.open(cfg.protect)
    pcfg = run.read_config(TrainConfig)
    return run, pcfg


def _limited(splits: Splits, limit: int | None, seed: int) -> Splits:
    if limit is None:
        return splits
    parts = {
        s: splits.split(s).subset(stratified_take(splits.split(s).y.numpy(), limit, seed=seed))
        for s in ("train", "val", "test")
    }
    return Splits(name=splits.name, classes=splits.classes, notes=splits.notes, **parts)


def train_adversarial_detector(
    cfg: DetectorConfig, out: str | Path, *, force: bool = False
) -> RunDir:
    """Train the detector of cfg (resuming an interrupted run), evaluate it on held-out pairs of
    every attack in cfg.evaluate; write detector.json, plots and report sections into `out`."""
    from deepshield.runs.evaluation import write_evaluation
    from deepshield.train.trainer import Trainer

    protected_run, pcfg = _protected(cfg)
    run, complete, replace = check_run(out, "defend detector", cfg, force=force)
    if complete:
        return run
    seed_all(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    protected = protected_run.load_model("best").to(device)
    source = _limited(
        data.load(pcfg.dataset, seed=pcfg.seed, **pcfg.data_kwargs), cfg.limit, cfg.train.seed
    )
    detector = models.create(cfg.train.model, num_classes=2, **cfg.train.model_kwargs).to(device)
    start_run(run, "defend detector", cfg, replace=replace)  # inputs are good: write from here
    splits = adversarial_splits(
        protected, source, cfg.attack, cfg.eps, steps=cfg.steps, seed=cfg.train.seed
    )
    history = Trainer(detector, cfg.train, run, device=device).fit(splits)
    detector = run.load_model("best").to(device)
    write_evaluation(run, detector, splits, "test")
    rows, curves = [], {}
    for spec in cfg.evaluate:
        name, eps = parse_attack(spec, cfg.eps)
        seen = name == cfg.attack and eps == cfg.eps
        pairs = splits.test if seen else adversarial_pairs(
            protected, source.test, name, eps, steps=cfg.steps, seed=cfg.train.seed
        )  # fmt: skip
        row, scores = detection_row(detector, pairs, name, eps)
        rows.append({**row, "seen in training": seen})
        curves[spec] = (pairs.y, scores)
    run.save_plot(plot_detection_rocs(curves), "detector_roc")
    result = {
        "protected": str(protected_run.path),
        "protected_model": pcfg.model,
        "dataset": source.name,
        "trained_on": {"attack": cfg.attack, "eps": cfg.eps},
        "detector": cfg.train.model,
        "best_epoch": history["best_epoch"],
        "counts": splits.counts(),
        "rows": rows,
    }
    run.write_json("detector.json", result)
    _report(run, cfg, result)
    run.set_done("defend detector")
    return run


def _report(run: RunDir, cfg: DetectorConfig, result: dict[str, Any]) -> None:
    from deepshield.report.plots import plot_history

    run.save_plot(plot_history(run.read_json("history.json")), "history")
    shown = ["attack", "eps", "seen in training", "real attack", "successes", "attacked"]
    shown += ["attack_success", "detected_successes", "accuracy", "balanced_accuracy", "auc"]
    shown += ["eer", "missed_adversarial", "clean_flagged"]
    html = (
        f"<p>{cfg.train.model} trained to tell clean images of {result['dataset']} from "
        f"{cfg.attack} (eps={cfg.eps:g}) adversarial examples against {result['protected_model']} "
        f"({result['protected']}). Held-out test pairs (clean + attacked), threshold 0.5. "
        "successes / attacked: adversarial test images the protected model gets wrong among "
        "those it gets right when clean (attack_success, their ratio); detected_successes: share "
        "of those successful adversarial images the detector flags.</p>"
        + f"<p><b>{real_attack_note(result['rows'])}.</b></p>"
        + table(result["rows"], shown)
        + "<div class='figs'>"
        + figure("plots/detector_roc.png")
        + figure("plots/history.png")
        + "</div>"
        + f"<p>Reproduce: <code>deepshield defend detector --config {run.file('config.yaml')}"
        "</code></p>"
    )
    run.add_section("adversarial_detector", "Adversarial-example detector", html, order=15)
