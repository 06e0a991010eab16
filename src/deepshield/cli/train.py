"""`deepshield train` and `deepshield evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepshield.cli.app import app, parse_floats, parse_kv
from deepshield.cli.checks import (
    COUNT,
    LINF,
    amp_option,
    channels_last_option,
    choice,
    model_name,
    operating_point,
    split_choice,
    weights_source,
)

if TYPE_CHECKING:
    import torch

    from deepshield.config import TrainConfig
    from deepshield.run import RunDir


@app.command("train")
def train_cmd(
    dataset: str = typer.Option(
        None,
        "-d",
        "--dataset",
        help="Dataset spec, e.g. synthetic-faces:easy, cifar10:PATH, a folder.",
    ),
    model: str = typer.Option(
        None, "-m", "--model", help="Model name (`deepshield models`).", callback=model_name
    ),
    lr: float = typer.Option(None, "--lr", help="Learning rate [0.001].", min=0.0),
    batch_size: int = typer.Option(None, "-b", "--batch-size", help="Batch size [32].", **COUNT),
    epochs: int = typer.Option(
        None,
        "-e",
        "--epochs",
        help="Epochs [5]; 0 with --init: those weights as they are (no training), evaluated on "
        "the test split and calibrated on validation, e.g. the official AASIST or MesoNet files.",
        min=0,
    ),
    optimizer: str = typer.Option(None, "-o", "--optimizer", help="Adam, AdamW or SGD [Adam]."),
    seed: int = typer.Option(None, "--seed", help="Seed [0]."),
    out: Path = typer.Option(None, "--out", help="Run folder [runs/<model>-<dataset>-s<seed>]."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
    data_arg: list[str] = typer.Option(
        None, "--data-arg", help="Dataset option KEY=VALUE (repeatable)."
    ),
    model_arg: list[str] = typer.Option(
        None, "--model-arg", help="Model option KEY=VALUE (repeatable)."
    ),
    init: str = typer.Option(
        None,
        "--init",
        help="Start from these weights (fine-tune): a .safetensors/.pth file or a run folder.",
        callback=weights_source,
    ),
    class_weights: str = typer.Option(None, "--class-weights", help="none or balanced."),
    scheduler: str = typer.Option(None, "--scheduler", help="none or cosine (per epoch)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda[:N]."),
    lipschitz: float = typer.Option(
        None,
        "--lipschitz",
        help="Input-gradient (Lipschitz) penalty weight LAMBDA [0: off].",
        min=0.0,
    ),
    adv_train: str = typer.Option(
        None, "--adv-train", help="Adversarial training: pgd or fgsm-rs."
    ),
    adv_eps: str = typer.Option(
        None,
        "--adv-eps",
        "--eps",
        help="L-inf budget of --adv-train and of the robustness check, in [0, 1] [8/255].",
        callback=LINF,
    ),
    adv_steps: int = typer.Option(
        None, "--adv-steps", help="PGD steps of --adv-train pgd [7].", **COUNT
    ),
    adv_alpha: str = typer.Option(
        None,
        "--adv-alpha",
        help="Step size, in [0, 1] [pgd 2.5*eps/steps, fgsm-rs 1.25*eps].",
        callback=LINF,
    ),
    augment: str = typer.Option(
        None,
        "--augment",
        help="Everyday-processing augmentations: image or speech (presets; config: augment).",
        callback=choice("image", "speech"),
    ),
    rule: str = typer.Option(
        None,
        "--operating-point",
        help="Threshold rule of the run's decision, on validation: eer, fpr=F or cost [eer].",
        callback=operating_point,
    ),
    calibration: str = typer.Option(
        None,
        "--calibration",
        help="Calibrator of the run's decision: platt or isotonic [platt].",
        callback=choice("platt", "isotonic"),
    ),
    amp: str = amp_option("the forwards and losses", config=True),
    channels_last: bool = channels_last_option(config=True),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run folder."),
) -> None:
    """Train a detector; writes runs/NAME with history, metrics, plots and report.html.

    Data-parallel on N processes: `torchrun --nproc_per_node=N -m deepshield train ...`
    (--batch-size stays the global batch; docs/scaling.md)."""
    from deepshield.config import AUGMENT_PRESETS, TrainConfig, config_with_flags
    from deepshield.runs.training import run_training
    from deepshield.train import distributed

    flags = {
        "dataset": dataset,
        "model": model,
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "optimizer": optimizer,
        "seed": seed,
        "init": init,
        "class_weights": class_weights,
        "scheduler": scheduler,
        "device": device,
        "amp": amp,
        "channels_last": channels_last,
        "lipschitz": lipschitz,
        "adv_train": adv_train,
        "adv_eps": parse_floats(adv_eps, "--adv-eps")[0] if adv_eps else None,
        "adv_steps": adv_steps,
        "adv_alpha": parse_floats(adv_alpha, "--adv-alpha")[0] if adv_alpha else None,
        "operating_point": rule,
        "calibration": calibration,
        "augment": AUGMENT_PRESETS[augment] if augment else None,
    }
    nested = {
        "data_kwargs": parse_kv(data_arg, "--data-arg") if data_arg else None,
        "model_kwargs": parse_kv(model_arg, "--model-arg") if model_arg else None,
    }
    cfg = config_with_flags(TrainConfig, config, flags, nested)
    with distributed.session(cfg.device):
        run = run_training(cfg, out, force=force)
        if distributed.is_main():
            _print_summary(run.path)


RATES = ("balanced_accuracy", "fake_passed_as_real", "real_flagged_as_fake", "auc", "eer")


def _print_summary(path: Path) -> None:
    import json

    m = json.loads((path / "metrics.json").read_text())
    t = m["test"]
    parts = [f"best epoch {m['best_epoch']}", f"test acc {m['test_acc_at_best_val']:.4f}"]
    parts += [f"{k.replace('_', ' ')} {t[k]:.4f}" for k in RATES if t.get(k) is not None]
    typer.echo(f"{path}: " + ", ".join(parts))
    if m.get("collapse_warning"):
        typer.echo(m["collapse_warning"])
    if t.get("decision"):
        typer.echo(_decision_line(t["decision"], "test"))
    if m.get("decision_skipped"):
        typer.echo(m["decision_skipped"])
    typer.echo(f"report: {path / 'report.html'}")


def _decision_line(d: dict, split: str) -> str:
    """One line of an evaluation's `decision` entry: the run's threshold and its actual rates
    (and a second, the warning, when the threshold was fitted on few samples of a class)."""
    run = next(r for r in d["operating_points"] if r["point"] == "run")
    t = run["threshold"]
    return (
        f"decision: {d['rule']} threshold {t if isinstance(t, str) else round(t, 4)} on "
        f"{d['score']}; on {split} FPR {run['fpr']:.4f}, FNR {run['fnr']:.4f}; ECE raw "
        f"{d['ece_raw']:.4f}, calibrated {d['ece_calibrated']:.4f}"
        + (
            f"; Cllr raw {d['cllr_raw']:.4g}, calibrated {d['cllr_calibrated']:.4g}"
            if "cllr_raw" in d
            else ""
        )
        + ("" if d["calibrated"] else f" ({d['note']})")
        + (f"\nwarning: {d['warning']}" if d.get("warning") else "")
    )


VIDEO_KEYS = ("n", "auc", "eer", "ap")  # frame- and video-level numbers `evaluate` prints


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    dataset: str = typer.Option(None, "-d", "--dataset", help="Evaluate on another dataset."),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    data_arg: list[str] = typer.Option(None, "--data-arg", help="Dataset option KEY=VALUE."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto [cpu]."),
    amp: str = amp_option(),
    channels_last: bool = channels_last_option(),
) -> None:
    """Evaluate a trained run on its test split or on another dataset; updates report.html.

    Sharded over N processes with `torchrun --nproc_per_node=N -m deepshield evaluate ...`."""
    from deepshield.train import distributed

    with distributed.session(device) as dev:
        _evaluate(run_dir, dataset, split, data_arg, dev, amp, channels_last)


def _evaluate(
    run_dir: Path,
    dataset: str | None,
    split: str,
    data_arg: list[str] | None,
    device: torch.device,
    amp: str,
    channels_last: bool,
) -> None:

    from deepshield import data
    from deepshield.config import TrainConfig
    from deepshield.files import write_json
    from deepshield.precision import autocast, check_amp, use_channels_last
    from deepshield.run import RunDir, data_options, file_tag
    from deepshield.runs.evaluation import collapse_warning, write_evaluation
    from deepshield.train import distributed

    check_amp(amp, device)
    run = RunDir.open(run_dir)
    cfg = run.read_config(TrainConfig)
    spec = dataset or cfg.dataset
    kwargs = data_options(
        cfg.data_kwargs, dataset, parse_kv(data_arg, "--data-arg") if data_arg else None
    )
    with distributed.main_first("loading the dataset"):
        splits = data.load(spec, seed=cfg.seed, **kwargs)
        if (spec, kwargs) != (cfg.dataset, cfg.data_kwargs):
            _check_shape(run, cfg, tuple(splits.split(split).x.shape[1:]), spec)
    model = run.load_model("best").to(device)
    channels_last = use_channels_last(model, channels_last, tuple(splits.split(split).x.shape[1:]))
    tag = "" if spec == cfg.dataset and not data_arg else file_tag(spec)
    tag = "_".join(t for t in (tag, "" if split == "test" else split) if t)
    with autocast(amp, device):
        metrics = write_evaluation(run, model, splits, split, tag=tag)
    if not distributed.is_main():
        return
    out = run.output(f"eval{'_' + tag if tag else ''}.json")
    how = {"split": split, "amp": amp, "channels_last": channels_last}
    write_json(out, {"dataset": spec, "data_kwargs": kwargs, **how, **metrics})
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    typer.echo(f"{spec} [{split}]: {shown}")
    video = metrics.get("video_level")
    for level in ("frame", "video") if video else ():
        typer.echo(f"{level} level: " + ", ".join(f"{k} {video[level][k]}" for k in VIDEO_KEYS))
    if metrics.get("decision"):
        typer.echo(_decision_line(metrics["decision"], split))
    if metrics.get("files"):  # speech: per-clip verdicts and what the reader did to each clip
        from deepshield.runs.countermeasure import unsure_line

        typer.echo(unsure_line(metrics["files"]))
    warning = collapse_warning(metrics, cfg)
    if warning:
        typer.echo(warning)
    typer.echo(f"wrote {out} and {run.file('report.html')}")


def _check_shape(run: RunDir, cfg: TrainConfig, shape: tuple[int, ...], spec: str) -> None:
    """ConfigError when samples of `shape` ([C,H,W] or [T]) differ from those the run's model was
    trained on (dataset.json's sample_shape, else the run's own dataset, loaded from its cache)."""
    from deepshield import data
    from deepshield.errors import ConfigError

    recorded = (
        run.read_json("dataset.json").get("sample_shape") if run.exists("dataset.json") else None
    )
    if recorded is None:
        own = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs)
        recorded = list(own.split("test").x.shape[1:])
    if tuple(recorded) != shape:
        key = "size" if len(shape) == 3 else "length"
        raise ConfigError(
            f"{spec} has samples {list(shape)}, the model of {run.path} was trained on "
            f"{list(recorded)}: pass --data-arg {key}={recorded[-1]} (or data of that size)"
        )
