"""`deepshield train-generator` and `deepshield disrupt`: disruption of translation generators."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_kv
from deepshield.cli.checks import COUNT, GAN_EPS, choice, number_or, split_choice


@app.command("train-generator")
def train_generator_cmd(
    model: str = typer.Option(
        None, "-m", "--model", help="stargan, ganimation, pix2pix or cyclegan [stargan]."
    ),
    dataset: str = typer.Option(
        None,
        "-d",
        "--dataset",
        help="Images to learn the edits on (real ones) [synthetic-faces:easy].",
    ),
    steps: int = typer.Option(None, "--steps", help="Training steps [300].", **COUNT),
    batch_size: int = typer.Option(None, "-b", "--batch-size", help="Batch size [8].", **COUNT),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate [2e-4].", min=0.0),
    model_arg: list[str] = typer.Option(
        None, "--model-arg", help="Builder option KEY=VALUE, e.g. conv_dim=16 (repeatable)."
    ),
    data_arg: list[str] = typer.Option(
        None, "--data-arg", help="Dataset option KEY=VALUE [n=600, size=64] (repeatable)."
    ),
    adv: str = typer.Option(
        None, "--adv", help="Adversarial training: none, generator or generator+discriminator."
    ),
    adv_eps: float = typer.Option(
        None, "--adv-eps", help="eps of the training disruption, in [0, 2] [0.05].", **GAN_EPS
    ),
    adv_steps: int = typer.Option(None, "--adv-steps", help="Its attack steps [3].", **COUNT),
    init: Path = typer.Option(None, "--init", help="Fine-tune from this generator run folder."),
    seed: int = typer.Option(None, "--seed", help="Seed [0]."),
    device: str = typer.Option(None, "--device", help="cpu, cuda[:N] or auto [cpu]."),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML GeneratorConfig; flags override."
    ),
    out: Path = typer.Option(None, "--out", help="Run folder [runs/generator-<model>-s<seed>]."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run with another config."),
) -> None:
    """Train a small image-translation generator on attribute edits; write a generator run."""
    from deepshield import data
    from deepshield.config import config_with_flags
    from deepshield.disrupt.config import GeneratorConfig
    from deepshield.runs.generators import train_generator

    flags = {"model": model, "dataset": dataset, "steps": steps, "batch_size": batch_size,
             "lr": lr, "seed": seed, "device": device, "init": None if init is None else str(init)}  # fmt: skip
    adv_flags = {"mode": adv, "eps": adv_eps, "steps": adv_steps}
    nested = {
        "model_kwargs": parse_kv(model_arg, "--model-arg") if model_arg else None,
        "data_kwargs": parse_kv(data_arg, "--data-arg") if data_arg else None,
        "adversarial": {k: v for k, v in adv_flags.items() if v is not None},
    }
    cfg = config_with_flags(GeneratorConfig, config, flags, nested)
    data.check(cfg.dataset, cfg.data_kwargs)
    out = out or Path("runs") / (cfg.name or f"generator-{cfg.model}-s{cfg.seed}")
    run = train_generator(cfg, out, force=force, log=typer.echo)
    m = run.read_json("metrics.json")["test"]
    typer.echo(
        f"{run.path}: test L1 to the edits {m['l1']:.4f} (identity {m['l1_identity']:.4f}) "
        f"[0, 1] pixels"
    )
    typer.echo(f"report: {run.file('report.html')}")


def _target(text: str) -> str | float | None:
    """--target (checked by `number_or`) -> None, "input" or the number."""
    return None if text == "none" else text if text == "input" else float(text)


@app.command("disrupt")
def disrupt_cmd(
    generator: Path = typer.Option(
        None, "--generator", "-g", help="Generator run folder, or weights file (with --model)."
    ),
    model: str = typer.Option(None, "--model", "-m", help="Architecture of a weights file."),
    model_arg: list[str] = typer.Option(None, "--model-arg", help="Its builder option KEY=VALUE."),
    method: str = typer.Option(
        "ifgsm", "--method", help="fgsm, ifgsm or pgd.", callback=choice("fgsm", "ifgsm", "pgd")
    ),
    eps: float = typer.Option(
        0.05, "--eps", help="L-inf budget in the generator's [-1, 1] range: [0, 2].", **GAN_EPS
    ),
    steps: int = typer.Option(
        10,
        "--steps",
        help="Attack steps (ifgsm, pgd): the paper's 10; 50 converge on small generators "
        "(docs/disruption.md).",
        **COUNT,
    ),
    alpha: float = typer.Option(None, "--alpha", help="Step size [eps / 5].", **GAN_EPS),
    classes: str = typer.Option(
        "all", "--classes", help="all, or edit names / indices: hair,warm or 0,2."
    ),
    transfer: str = typer.Option(
        None, "--transfer", help="iterative or joint: one x_adv for all classes."
    ),
    target: str = typer.Option(
        "none",
        "--target",
        help="none (away from the clean output), input (minimal change), or a number.",
        callback=number_or("none", "input"),
    ),
    part: str = typer.Option("output", "--part", help="output, attention or color (GANimation)."),
    dataset: str = typer.Option(
        "synthetic-faces:easy", "-d", "--dataset", help="Images to protect (real ones are used)."
    ),
    data_arg: list[str] = typer.Option(None, "--data-arg", help="Dataset option KEY=VALUE."),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    n: int = typer.Option(16, "-n", "--n", help="Number of images.", **COUNT),
    batch_size: int = typer.Option(32, "-b", "--batch-size", help="Attack batch size.", **COUNT),
    threshold: float = typer.Option(0.05, "--threshold", help="L2 for 'disrupted'.", min=0.0),
    seed: int = typer.Option(0, "--seed", help="Seed (dataset split, random starts)."),
    config: Path = typer.Option(
        None,
        "--config",
        "-c",
        help="A configs/disrupt*.yaml: train its generators, measure its tables.",
    ),
    out: Path = typer.Option(None, "--out", help="Run folder [runs/disrupt-...]."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run with another config."),
) -> None:
    """Disrupt a generator on a dataset's images (or run a config's tables); write a report."""
    from deepshield.errors import ConfigError

    if config is not None:
        _run_config(config, out, force)
        return
    if generator is None:
        raise ConfigError("pass --generator RUN_DIR_OR_WEIGHTS (or --config FILE)")
    from deepshield.disrupt.generators import real_images
    from deepshield.disrupt.tables import Setting
    from deepshield.run import open_run
    from deepshield.runs.disrupt_evaluate import disrupt_images, parse_classes, write_disruption
    from deepshield.runs.generators import load_generator

    kwargs = parse_kv(data_arg, "--data-arg") if data_arg else {"n": 600, "size": 64}
    g = load_generator(generator, model, parse_kv(model_arg, "--model-arg"))
    name = generator.stem if generator.is_file() else generator.name
    settings = {"generator": str(generator), "model": model, "model_arg": model_arg, "method": method,
                "eps": eps, "steps": steps, "alpha": alpha, "classes": classes, "transfer": transfer,
                "target": target, "part": part, "dataset": dataset, "data_kwargs": kwargs,
                "split": split, "n": n, "batch_size": batch_size, "threshold": threshold, "seed": seed}  # fmt: skip
    chosen = parse_classes(classes, g)  # inputs checked before the run folder is written
    x01 = real_images(dataset, kwargs, seed, split)[:n]
    out = out or Path("runs") / f"disrupt-{name}-{method}"
    run, _ = open_run(out, "disrupt images", settings, force=force)
    setting = Setting(eps, steps, alpha, threshold, batch_size, seed)
    summary, tensors = disrupt_images(
        g, x01, chosen, method=method, setting=setting, transfer=transfer,
        target=_target(target), part=part,
    )  # fmt: skip
    write_disruption(run, g, summary, tensors)
    run.set_done("disrupt images")
    head = f"{method} eps {eps} on {summary['images']} images x {summary['classes']} classes"
    if "distortion" in summary:
        d = summary["distortion"]
        typer.echo(
            f"{head}: L1 {d['l1']:.4f}, L2 {d['l2']:.4f}, disrupted {100 * d['disrupted']:.1f}%"
        )
    else:
        a, b = summary["to_input"], summary["to_input_clean"]
        typer.echo(f"{head}: L2 to the input {a['l2']:.4f} (clean output: {b['l2']:.4f})")
    typer.echo(f"report: {run.file('report.html')}")


def _run_config(config: Path, out: Path | None, force: bool) -> None:
    from deepshield.config import load_config
    from deepshield.disrupt.config import DisruptConfig
    from deepshield.runs.disrupt_experiment import run_experiment

    cfg = load_config(config, DisruptConfig)
    run_dir = out or Path("runs") / (cfg.name or config.stem)
    run_experiment(cfg, run_dir, force=force, log=typer.echo)
    typer.echo((run_dir / "tables.md").read_text())
    typer.echo(f"report: {run_dir / 'report.html'}")
