"""`deepshield models` and `deepshield datasets`: what is available."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from deepshield.cli.app import app


@app.command("models")
def models_cmd(
    num_classes: int = typer.Option(2, "--num-classes", help="Head size used for the counts."),
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
