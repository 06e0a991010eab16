"""A training run from a config: data, model, Trainer, metrics.json, plots and report section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepshield import data, models
from deepshield.config import TrainConfig
from deepshield.defenses.training import is_defended, training_hooks
from deepshield.errors import ConfigError
from deepshield.models.architectures.siamese import Siamese
from deepshield.precision import check_amp, use_channels_last
from deepshield.report.html import figure, table
from deepshield.run import RunDir, check_run, file_tag, start_run
from deepshield.runs.decision import calibrate_run
from deepshield.runs.evaluation import collapse_warning, write_evaluation
from deepshield.runs.robustness import write_training_robustness
from deepshield.runtime import seed_all
from deepshield.train import distributed
from deepshield.train.augment import check_augment
from deepshield.train.objectives import CrossEntropy, Objective, balanced_class_weights
from deepshield.train.siamese import BalancedPairSampler, SiameseObjective
from deepshield.train.trainer import Trainer, check_trainable


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<name> or runs/<model>-<dataset>-s<seed>."""
    name = cfg.name or f"{cfg.model}-{cfg.dataset}-s{cfg.seed}"
    return Path("runs") / file_tag(name).strip("_")


def init_weights_path(init: str | Path) -> Path:
    """The weights file `init` names: the file itself, or a run folder's best.safetensors."""
    path = Path(init)
    if path.is_dir():
        weights = path / "best.safetensors"
        if not weights.is_file():
            raise ConfigError(
                f"{path}: --init names a folder without best.safetensors; pass a finished run "
                "folder or a .safetensors/.pth weights file"
            )
        return weights
    if not path.is_file():
        raise ConfigError(f"{path}: --init weights not found; pass a weights file or a run folder")
    return path


def run_training(
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    force: bool = False,
) -> RunDir:
    """Train a detector (or classifier) as `cfg` says; write the run folder; return it.

    A two-class run with both classes in validation gets its decision.json (`calibrate_run`
    with `cfg.operating_point` and `cfg.calibration`) once the best model is final, before the test
    evaluation that reports it; other runs get none (`decision_skipped` says why).

    An interrupted run with the same config resumes from its last checkpoint and rebuilds
    every artifact after training; the run is complete once its final marker is written (see
    `check_run` for --force and folders holding other files). Nothing is written before the
    data and the model are loaded. Under torchrun every rank trains
    (DistributedDataParallel) and only rank 0 writes the folder.
    """
    check_amp(cfg.amp, distributed.device_for_rank(cfg.device))  # before any work
    run = RunDir(out or default_run_dir(cfg))
    complete, replace = None, False
    with distributed.main_first("preparing the run folder"):
        if distributed.is_main():
            run, complete, replace = check_run(run.path, "train", cfg, force=force)
    if distributed.broadcast_object(complete):
        return run
    seed_all(cfg.seed)
    with distributed.main_first("loading the dataset"):  # rank 0 fills the cache once
        splits = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs)
    check_trainable(splits, cfg.epochs)  # before the folder is written
    check_augment(cfg.augment, splits.train.x.shape[1:])
    device = distributed.device_for_rank(cfg.device)
    model = models.create(cfg.model, num_classes=splits.num_classes, **cfg.model_kwargs)
    if cfg.init:
        models.load_weights(model, init_weights_path(cfg.init))
    model = model.to(device)
    use_channels_last(model, cfg.channels_last, tuple(splits.train.x.shape[1:]))
    if distributed.is_main():  # data and model are good: the folder is written from here on
        start_run(run, "train", cfg, replace=replace)
        run.write_json(
            "dataset.json",
            {
                "name": splits.name,
                "classes": splits.classes,
                "counts": splits.counts(),
                "notes": splits.notes,
                "sample_shape": list(splits.train.x.shape[1:]),
            },
        )
    weight = (
        balanced_class_weights(splits.train.y, splits.num_classes)
        if cfg.class_weights == "balanced"
        else None
    )
    hooks = training_hooks(cfg, distributed.rank())  # augmentations, Lipschitz, adv. training
    objective, sampler = _objective(model, splits, cfg, weight)
    trainer = Trainer(
        model, cfg, run, objective=objective, device=device, train_sampler=sampler, **hooks
    )
    history = trainer.fit(splits)
    skipped = decision_skipped(splits)
    with distributed.main_first("fitting the run's decision"):
        if distributed.is_main() and skipped is None:
            calibrate_run(
                run.path, rule=cfg.operating_point, calibration=cfg.calibration, device=device
            )
    finish_run(run, cfg, splits, history, skipped)
    if is_defended(cfg) and distributed.is_main():
        write_training_robustness(run, run.load_model("best").to(device), splits, cfg.adv_eps)
    if distributed.is_main():
        run.set_done("train")  # the final marker, after every artifact
    return run


def decision_skipped(splits: data.Splits) -> str | None:
    """Why a run gets no decision.json (None when it gets one): it is not a two-class detector
    or its validation split lacks a class."""
    if splits.num_classes != 2:
        return f"no decision.json: {splits.num_classes} classes, decisions are for real/fake runs"
    held = len(torch.unique(splits.val.y))
    if held != 2:
        what = "no samples" if held == 0 else "one class"
        return f"no decision.json: the validation split holds {what}, nothing to calibrate on"
    return None


def _objective(
    model: nn.Module, splits: data.Splits, cfg: TrainConfig, weight: torch.Tensor | None
) -> tuple[Objective, BalancedPairSampler | None]:
    """Cross-entropy, or for a Siamese model its pair objective over balanced pairs."""
    if not isinstance(model, Siamese):
        return CrossEntropy(weight), None
    if (cfg.batch_size // distributed.world_size()) % 2:
        raise ConfigError(
            f"batch_size {cfg.batch_size}: a Siamese model trains on pairs; use an even batch "
            "size (per process under torchrun)"
        )
    return SiameseObjective(weight), BalancedPairSampler(splits.train.y, seed=cfg.seed * 1000)


def _objective_text(model: nn.Module) -> str:
    if not isinstance(model, Siamese):
        return "cross-entropy"
    return (
        f"Siamese, balanced pairs: {model.contrastive_weight:g} x contrastive (margin "
        f"{model.margin:g}) + cross-entropy of each sample"
    )


def finish_run(
    run: RunDir,
    cfg: TrainConfig,
    splits: data.Splits,
    history: dict[str, Any],
    decision_skipped: str | None = None,
) -> None:
    """After training: metrics.json (test at the best-val epoch, `decision_skipped` the note of
    a run without decision.json), plots, report sections."""
    from deepshield.report.plots import plot_history

    best = history["best_epoch"]
    row = next(r for r in history["epochs"] if r["epoch"] == best)
    model = run.load_model("best")
    test = write_evaluation(run, model, splits, "test")  # sharded under torchrun
    if not distributed.is_main():
        return
    metrics = {
        "best_epoch": best,
        "val_acc_at_best": (row.get("val") or {}).get("acc"),
        "test_acc_at_best_val": row["test"]["acc"],
        "test": test,
        "param_count": models.param_count(model),
    }
    warning = collapse_warning(test, cfg)
    if warning:  # e.g. adversarial training that calls every image real
        metrics["collapse_warning"] = warning
    if decision_skipped:
        metrics["decision_skipped"] = decision_skipped
    run.write_json("metrics.json", metrics)
    run.save_plot(plot_history(history), "history")
    counts = [{"split": s, **c} for s, c in splits.counts().items()]
    summary = [
        {"item": "model", "value": f"{cfg.model} ({metrics['param_count']:,} parameters)"},
        {"item": "dataset", "value": splits.name},
        {"item": "optimizer", "value": f"{cfg.optimizer} lr={cfg.lr:g} batch={cfg.batch_size}"},
        {"item": "objective", "value": _objective_text(model)},
        {
            "item": "epochs (best val)",
            "value": f"{cfg.epochs} ({best})" if cfg.epochs else f"0: the weights of {cfg.init}",
        },
        {"item": "test accuracy at best val epoch", "value": f"{row['test']['acc']:.4f}"},
    ]
    if "balanced_accuracy" in test:
        summary.append(
            {"item": "test balanced accuracy", "value": f"{test['balanced_accuracy']:.4f}"}
        )
    if warning:
        summary.append({"item": "warning", "value": warning})
    figs = [figure("plots/history.png")]
    if splits.modality == "image":
        from deepshield.report.grids import class_samples

        fig = class_samples(splits.train, splits.classes, n_per_class=8, seed=cfg.seed)
        run.save_plot(fig, "samples")
        figs.append(figure("plots/samples.png"))
    html = (
        table(summary)
        + "<h3>Data</h3>"
        + table(counts)
        + (f"<p class='muted'>{splits.notes}</p>" if splits.notes else "")
        + "<div class='figs'>"
        + "".join(figs)
        + "</div>"
        + f"<p>Reproduce: <code>deepshield train --config {run.file('config.yaml')}</code></p>"
    )
    run.add_section("training", "Training", html, order=10)
