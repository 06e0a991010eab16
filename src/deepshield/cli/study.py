"""`deepshield study`: train and attack what a study YAML names; write its summary tables."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app


@app.command("study")
def study_cmd(
    config: Path = typer.Argument(..., help="A study YAML, e.g. configs/cifar10_attacks.yaml."),
    out: Path = typer.Option(None, "--out", help="Study folder [runs/studies/<name>]."),
    force: bool = typer.Option(False, "--force", help="Redo sweeps whose results exist."),
) -> None:
    """Train the study's models (complete runs are kept), run its attack sweeps, write
    summary.json and summary.md (one table per attack)."""
    from deepshield.studies import load_study, run_study

    study = load_study(config)
    run_study(study, out, force=force, log=typer.echo)
