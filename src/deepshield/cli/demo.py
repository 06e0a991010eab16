"""`deepshield demo`: no arguments, no downloads; writes runs/demo/report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(None, "--out", help="Run folder to write [runs/demo]."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train, explain, attack and defend a detector, train a speech detector and disrupt a
    generator, all on built-in data (about a minute on 2 cores); write runs/demo/report.html."""
    from deepshield.demo import run_demo

    ctx = run_demo(out, seed, log=typer.echo)
    total = sum(ctx.timings.values())
    typer.echo(f"[demo] finished in {total:.0f} s")
    typer.echo(f"report: {ctx.out / 'report.html'}")
    typer.echo(f"grade the detector's robustness (~75 CPU-seconds): deepshield audit {ctx.out}")
