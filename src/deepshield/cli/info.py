"""`deepshield models` and `deepshield datasets`: what is available."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from deepshield.cli.app import app
from deepshield.cli.checks import COUNT


@app.command("models")
def models_cmd(
    num_classes: int = typer.Option(
        2, "--num-classes", help="Head size used for the counts.", **COUNT
    ),
) -> None:
    """List model names with their parameter counts."""
    from deepshield import models

    table = Table("name", "kind", "parameters", "description")
    for name in models.names():
        s = models.spec(name)
        if name.endswith(":"):
            table.add_row(name + "<backbone>", s.kind, "-", s.description)
            continue
        m = models.create(name, num_classes=num_classes)
        table.add_row(name, s.kind, f"{models.param_count(m):,}", s.description)
    Console().print(table)


@app.command("datasets")
def datasets_cmd(
    specs: list[str] = typer.Argument(None, help="Dataset specs to describe (builds them)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """List dataset sources; with SPECs, show per-split sizes and class balance."""
    from deepshield import data

    if not specs:
        table = Table("name", "modality", "needs", "description")
        for s in data.all_sources():
            names = [f"{s.prefix}:{v}" for v in s.variants] or [s.prefix]
            needs = "built in" if s.builtin else "PATH"
            for n in names:
                table.add_row(
                    n if s.builtin else f"{s.prefix}:PATH", s.modality, needs, s.description
                )
        Console().print(table)
        typer.echo("Describe one (sizes, class balance): deepshield datasets SPEC")
        return
    for spec in specs:
        splits = data.load(spec, seed=seed)
        table = Table(
            "split",
            *splits.classes,
            "total",
            f"{splits.classes[-1]}/{splits.classes[0]}",
            title=f"{spec}",
        )
        for split, c in splits.counts().items():
            ratio = c[splits.classes[-1]] / max(c[splits.classes[0]], 1)
            table.add_row(
                split, *(str(c[k]) for k in splits.classes), str(c["total"]), f"{ratio:.2f}"
            )
        Console().print(table)
        if splits.notes:
            typer.echo(splits.notes)
