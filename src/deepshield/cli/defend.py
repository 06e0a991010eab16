"""`deepshield defend detector|purify|compare|attack-detector`: defences of a trained detector
and their adaptive evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_floats
from deepshield.cli.checks import COUNT, LINF, PROBABILITIES, model_name, split_choice

defend_app = typer.Typer(
    help="Defences: adversarial-example detector, DIP purification, robustness comparison, "
    "detector-aware attacks.",
    no_args_is_help=True,
)
app.add_typer(defend_app, name="defend")


@defend_app.command("detector")
def detector_cmd(
    protect: Path = typer.Option(None, "--protect", help="Run folder of the protected model."),
    attack: str = typer.Option(None, "--attack", help="Attack to train on [fgsm]."),
    eps: str = typer.Option(None, "--eps", help="Its L-inf budget [0.07].", callback=LINF),
    model: str = typer.Option(
        None, "-m", "--model", help="Detector model [resnet18_cifar].", callback=model_name
    ),
    epochs: int = typer.Option(None, "-e", "--epochs", help="Training epochs [5].", **COUNT),
    limit: int = typer.Option(None, "--limit", help="At most N samples per split (>= 2).", min=2),
    evaluate: str = typer.Option(
        None,
        "--evaluate",
        help="Held-out attacks, ATTACK[:EPS] comma-separated "
        "[fgsm:0.07,fgsm:0.03,fgsm:0.1,pgd:0.07,cw_l2].",
    ),
    seed: int = typer.Option(None, "--seed", help="Seed [0]."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
    out: Path = typer.Option(None, "--out", help="Run folder [runs/advdet-<attack>-<eps>]."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run folder."),
) -> None:
    """Train a detector of adversarial examples crafted against a protected model; report its
    accuracy, AUC and EER on held-out data and on attacks it never saw."""
    from deepshield.config import config_with_flags
    from deepshield.defenses.adversarial_detector import DetectorConfig, real_attack_note
    from deepshield.runs.adversarial_detector import train_adversarial_detector

    if protect is None and config is None:
        from deepshield.errors import ConfigError

        raise ConfigError("no protected model: pass --protect RUN_DIR (a `deepshield train` run)")
    flags = {
        "protect": str(protect) if protect else None,
        "attack": attack,
        "eps": parse_floats(eps, "--eps")[0] if eps else None,
        "limit": limit,
        "evaluate": [s.strip() for s in evaluate.split(",") if s.strip()] if evaluate else None,
    }
    given = {"model": model, "epochs": epochs, "seed": seed}  # --seed 0 is a seed
    train = {k: v for k, v in given.items() if v is not None}
    cfg = config_with_flags(DetectorConfig, config, flags, {"train": train})
    out = out or Path("runs") / f"advdet-{cfg.attack}-{cfg.eps:g}"
    run = train_adversarial_detector(cfg, out, force=force)
    rows = run.read_json("detector.json")["rows"]
    for row in rows:
        eps_text = "" if row["eps"] is None else f" eps={row['eps']:g}"
        broke = (
            f"fools {row['successes']} of {row['attacked']}, detected "
            f"{row['detected_successes']:.4f} of those"
            if row["real attack"]
            else f"NOT A REAL ATTACK: fools none of {row['attacked']}"
        )
        typer.echo(
            f"{row['attack']}{eps_text}: {broke}; accuracy {row['accuracy']:.4f}, AUC "
            f"{row['auc']:.4f}, EER {row['eer']:.4f}"
            + (" (trained on)" if row["seen in training"] else "")
        )
    typer.echo(real_attack_note(rows))
    typer.echo(f"report: {run.file('report.html')}")


@defend_app.command("purify")
def purify_cmd(
    run_dir: Path = typer.Argument(..., help="A detector run folder (`deepshield train`)."),
    method: str = typer.Option("dip", "--method", help="Purification method: dip."),
    iters: int = typer.Option(
        None, "--iters", help="Maximum DIP iterations per image [fast 500, paper 1500].", **COUNT
    ),
    stop_psnr: float = typer.Option(
        None,
        "--stop-psnr",
        help="Stop an image at this PSNR to its input, dB [fast 27, balanced and paper off].",
    ),
    preset: str = typer.Option(
        "fast",
        "--preset",
        help="fast (early stop), balanced (750 iterations) or paper (Gandhi & Jain's setting).",
    ),
    mode: str = typer.Option("grouped", "--mode", help="grouped, per-image or shared."),
    chunk: int = typer.Option(16, "--chunk", help="Images per grouped/shared model.", **COUNT),
    attack: str = typer.Option("fgsm", "--attack", help="Attack perturbing the fakes."),
    eps: str = typer.Option("0.02", "--eps", help="Its L-inf budget.", callback=LINF),
    n: int = typer.Option(32, "--n", help="Fakes and reals drawn from the split.", **COUNT),
    threshold: str = typer.Option(
        "0.25,0.5", "--threshold", help="P(fake) thresholds in [0, 1].", callback=PROBABILITIES
    ),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Deep Image Prior purification: recall on perturbed and unperturbed fakes, reals retained."""
    from dataclasses import replace

    from deepshield.defenses.dip import PRESETS
    from deepshield.defenses.purifier import psnr_line
    from deepshield.errors import ConfigError
    from deepshield.runs.purify import purify_run

    if method != "dip":
        raise ConfigError(f"--method {method!r}: the purification method available is dip")
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: use {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if iters is not None:
        cfg = replace(cfg, iters=iters)
    if stop_psnr is not None:
        cfg = replace(cfg, stop_psnr=stop_psnr)
    result = purify_run(
        run_dir,
        cfg=cfg,
        mode=mode,
        chunk=chunk,
        attack=attack,
        eps=parse_floats(eps, "--eps")[0],
        n=n,
        thresholds=parse_floats(threshold, "--threshold"),
        split=split,
        seed=seed,
    )
    c = result["counts"]
    typer.echo(
        f"selected: {c['perturbed']} perturbed fakes (fooling the detector), "
        f"{c['unperturbed']} unperturbed fakes, {c['reals']} reals (called right)"
    )
    typer.echo(psnr_line(result))
    for r in result["rows"]:
        typer.echo(
            f"t={r['threshold']:g} {r['defence']:>10}: recall perturbed "
            f"{share(r['recall_perturbed'])}, unperturbed {share(r['recall_unperturbed'])}, "
            f"reals retained {share(r['real_retained'])}"
        )
    typer.echo(f"wrote {Path(run_dir) / 'purify_dip.json'} and {Path(run_dir) / 'report.html'}")


def share(v: float | None) -> str:
    """A share in [0, 1] to 3 decimals; "n/a" when no image was in its group."""
    return "n/a" if v is None else f"{v:.3f}"


@defend_app.command("compare")
def compare_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run folders, same dataset."),
    eps: str = typer.Option(
        "8/255", "--eps", help="L-inf budget(s), comma-separated.", callback=LINF
    ),
    attack: str = typer.Option("pgd", "--attack", help="Attack (fgsm, ifgsm, pgd)."),
    steps: int = typer.Option(10, "--steps", help="Attack steps.", **COUNT),
    limit: int = typer.Option(
        None, "--limit", "--n", help="At most N test samples, class-stratified (seed 0).", **COUNT
    ),
) -> None:
    """Clean, white-box and transfer accuracy of several detectors at the same eps; the table
    goes into the first run's folder and report."""
    from deepshield.runs.robustness import compare_runs

    rows = compare_runs(
        run_dirs, parse_floats(eps, "--eps"), attack=attack, steps=steps, limit=limit
    )
    for r in sorted(rows, key=lambda r: (r["eps"], r["rank"])):
        typer.echo(
            ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
        )
    for model, to in {r["model"]: r["collapsed"] for r in rows if r.get("collapsed")}.items():
        typer.echo(
            f"{model} is COLLAPSED (calls >= 95 % of the clean images {to}): ranked below every "
            "working model"
        )
    typer.echo(f"wrote {run_dirs[0] / 'robustness_compare.json'}")


@defend_app.command("attack-detector")
def attack_detector_cmd(
    run_dir: Path = typer.Argument(
        ..., help="An adversarial-example detector run (defend detector)."
    ),
    eps: str = typer.Option(
        "0.03,0.07", "--eps", help="L-inf budgets, comma-separated.", callback=LINF
    ),
    steps: int = typer.Option(20, "--steps", help="PGD steps.", **COUNT),
    n: int = typer.Option(
        500, "--n", help="N samples of the split, class-stratified by --seed.", **COUNT
    ),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Non-adaptive (FGSM, PGD on the classifier) vs detector-aware PGD (classifier and detector
    attacked together): accuracy, share detected, share fooled and undetected."""
    from deepshield.runs.adaptive import attack_detector_run

    result = attack_detector_run(
        run_dir, eps=parse_floats(eps, "--eps"), steps=steps, n=n, split=split, seed=seed
    )
    for r in result["rows"]:
        kind = "detector-aware " if r["detector-aware"] else ""
        typer.echo(
            f"{kind}{r['attack']} eps={r['eps']:g}: broke {r['attack broke']}, "
            f"accuracy {r['accuracy']:.4f}, detected "
            f"{r['detected']:.4f}, fooled and undetected {r['fooled, undetected']:.4f}"
            + ("" if r["success"] is None else f" (success {r['success']:.4f})")
        )
    typer.echo(f"wrote {Path(run_dir) / 'adaptive_detector.json'}")
