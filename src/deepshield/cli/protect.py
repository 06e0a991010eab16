"""`deepshield protect train | apply | detect`: proactive templates against later manipulation."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_kv
from deepshield.cli.checks import COUNT

protect_app = typer.Typer(
    help="Proactive protection: add a learned template before release; detect manipulation later.",
    no_args_is_help=True,
)
app.add_typer(protect_app, name="protect")


@protect_app.command("train")
def train_cmd(
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML config (configs/proactive.yaml); flags override it."
    ),
    out: Path = typer.Option(None, "--out", help="Run folder [runs/proactive-s<seed>]."),
    dataset: str = typer.Option(
        None, "-d", "--dataset", help="Clean images, e.g. synthetic-faces:easy."
    ),
    data_arg: list[str] = typer.Option(
        None, "--data-arg", help="Dataset option KEY=VALUE (repeatable), e.g. n=1200."
    ),
    steps: int = typer.Option(None, "--steps", help="Training steps of each detector.", **COUNT),
    seed: int = typer.Option(None, "--seed", help="Seed [0]."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run made with another config."),
) -> None:
    """Learn a template set with its detector and a passive baseline; evaluate both."""
    from deepshield import data
    from deepshield.config import config_with_flags
    from deepshield.proactive.config import ProactiveConfig
    from deepshield.runs.proactive import run_experiment

    flags = {"dataset": dataset, "steps": steps, "seed": seed}
    data_kwargs = parse_kv(data_arg, "--data-arg") if data_arg else None
    cfg = config_with_flags(ProactiveConfig, config, flags, {"data_kwargs": data_kwargs})
    data.check(cfg.dataset, cfg.data_kwargs)
    out = out or Path("runs") / f"proactive-s{cfg.seed}"
    metrics = run_experiment(cfg, out, force=force, log=typer.echo)
    typer.echo((out / "metrics.md").read_text())
    t = metrics["timings"]
    typer.echo(
        f"{out}: {t['total_s']:.0f} s wall, {t['total_cpu_s']:.0f} s CPU; "
        f"report: {out / 'report.html'}"
    )


def _check_run(run: Path) -> None:
    from deepshield.errors import RunError

    if not (run / "templates.json").is_file() or not (run / "detector.json").is_file():
        raise RunError(
            f"{run}: no templates.json / detector.json; pass a folder written by "
            "`deepshield protect train`"
        )


@protect_app.command("apply")
def apply_cmd(
    images: list[Path] = typer.Argument(..., help="Image files or folders (PNG, JPEG, ...)."),
    run: Path = typer.Option(..., "--run", help="Run folder of `deepshield protect train`."),
    out: Path = typer.Option(..., "--out", help="Folder for the protected PNG files."),
    seed: int = typer.Option(0, "--seed", help="Seed of the template choice."),
) -> None:
    """Add a random template of the set to each image at its own size (the template enlarged by
    nearest neighbour); write lossless PNGs and index.json."""
    import torch

    from deepshield.errors import ConfigError, InputError
    from deepshield.files import write_json
    from deepshield.proactive.image_files import expand, read_image, write_png
    from deepshield.proactive.native import protect_native
    from deepshield.proactive.templates import TemplateSet

    _check_run(run)
    templates = TemplateSet.load(run / "templates")
    files = expand(images)
    stems = [f.stem for f in files]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ConfigError(
            f"several inputs are named {clash[0]}.*; protect them into different --out"
        )
    g = torch.Generator().manual_seed(seed)
    index = {}
    for f in files:
        k = templates.random_indices(1, g)
        with torch.no_grad():
            try:
                protected = protect_native(templates, read_image(f)[None], k)[0]
            except InputError as e:
                raise InputError(f"{f}: {e}") from None
        dest = write_png(out / f"{f.stem}.png", protected)
        index[str(dest)] = {"source": str(f), "template": int(k)}
    write_json(out / "index.json", index)
    typer.echo(f"protected {len(files)} image(s) into {out} (templates used: {out / 'index.json'})")


@protect_app.command("detect")
def detect_cmd(
    images: list[Path] = typer.Argument(..., help="Image files or folders to check."),
    run: Path = typer.Option(..., "--run", help="Run folder of `deepshield protect train`."),
    json_out: Path = typer.Option(None, "--json", help="Also write {path: P(manipulated)} here."),
) -> None:
    """Print P(manipulated) per image (1 = manipulated after protection; 0.5 = threshold), scored
    on the image box-averaged to the templates' size, where the detector was trained."""
    from deepshield.errors import InputError
    from deepshield.files import write_json
    from deepshield.proactive.detector import load_detector
    from deepshield.proactive.image_files import expand, read_image
    from deepshield.proactive.native import p_manipulated_native
    from deepshield.proactive.templates import TemplateSet

    _check_run(run)
    detector = load_detector(run / "detector")
    templates = TemplateSet.load(run / "templates")().detach()
    scores = {}
    for f in expand(images):
        try:
            p = float(p_manipulated_native(detector, read_image(f)[None], templates)[0])
        except InputError as e:
            raise InputError(f"{f}: {e}") from None
        scores[str(f)] = p
        typer.echo(f"{p:.4f}\t{'manipulated' if p >= 0.5 else 'untouched'}\t{f}")
    flagged = sum(p >= 0.5 for p in scores.values())
    typer.echo(
        f"{flagged} of {len(scores)} image(s) called manipulated "
        f"({flagged / len(scores):.3f}); scored at the templates' "
        f"{templates.shape[2]}x{templates.shape[3]} px"
    )
    if json_out:
        write_json(json_out, scores)
