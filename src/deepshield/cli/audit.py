"""`deepshield audit`: one command that grades a detector's robustness (audit.json, report card)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_kv
from deepshield.cli.checks import amp_option


@app.command("audit")
def audit_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    dataset: str = typer.Option(
        None, "-d", "--dataset", help="Audit on another dataset's test split."
    ),
    data_arg: list[str] = typer.Option(None, "--data-arg", help="Dataset option KEY=VALUE."),
    budget: str = typer.Option(
        "quick", "--budget", help="quick, standard, thorough or minimal (costly models)."
    ),
    surrogate: Path = typer.Option(
        None,
        "--surrogate",
        help="Run folder of the transfer surrogate (default: one trained here, quickly).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the attacks and checks."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    amp: str = amp_option("every item's forwards and gradients"),
    force: bool = typer.Option(False, "--force", help="Recompute items kept in audit.json."),
) -> None:
    """Clean metrics and calibration, white-box and transfer attacks, gradient-masking checks and
    explanation sanity of a run's image or speech detector; writes audit.json and a report card
    into report.html.

    Re-running the same command resumes (finished items are kept); docs/audit.md."""
    from deepshield.audit import audit_run
    from deepshield.runtime import resolve_device

    kwargs = parse_kv(data_arg, "--data-arg") if data_arg else None
    audit = audit_run(
        run_dir,
        budget=budget,
        dataset=dataset,
        data_kwargs=kwargs,
        surrogate=surrogate,
        seed=seed,
        device=resolve_device(device),
        amp=amp,
        force=force,
        log=typer.echo,
    )
    for row in audit["card"]:
        score = "  -  " if row["score"] is None else f"{row['score']:.3f}"
        typer.echo(f"{row['item']:<22} {score}  {row['status']:<7} {row['summary']}")
    typer.echo(f"wrote {Path(audit['run']) / 'audit.json'} and the report card in report.html")
    if any(row["status"] == "error" for row in audit["card"]):
        raise typer.Exit(1)
