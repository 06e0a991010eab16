"""`deepshield metrics SCORES`: ASVspoof 5 and detector metrics of any system's score file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from deepshield.cli.app import app


@app.command("metrics")
def metrics_cmd(
    scores: Path = typer.Argument(
        ...,
        help="Score file: ASVspoof 5 CM or SASV, ASVspoof 2019 'utt src key score', ASVspoof "
        "2021 'utt score' (with --keys), or deepshield's P(fake) CSV (utt,label,p_fake).",
    ),
    keys: Path = typer.Option(
        None,
        "--keys",
        help="Key file: ASVspoof 5 CM/SASV keys, an ASVspoof 2019 protocol or ASVspoof 2021 "
        "trial metadata.",
    ),
    orientation: str = typer.Option(
        None,
        "--orientation",
        help="bonafide-high (ASVspoof convention, default for ASVspoof files) or fake-high "
        "(P(fake) files are fake-high).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """EER, minDCF, actDCF, Cllr, minCllr, AUC, AP (and a-DCF, min t-DCF, t-EER for SASV files)."""
    from deepshield.metrics import read_trials, score_summary

    summary = score_summary(read_trials(scores, keys, orientation))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"{scores} ({summary['format']}, {summary['orientation']}): "
        f"{summary['n_bonafide']} bona fide, {summary['n_spoof']} spoof"
    )
    for key, value in summary.items():
        if key in ("format", "orientation", "n_bonafide", "n_spoof", "undefined"):
            continue
        shown = f"{value:.6f}" if value is not None else f"undefined ({summary['undefined'][key]})"
        typer.echo(f"  {key:9s} {shown}")
