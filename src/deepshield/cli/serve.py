"""`deepshield serve`: the scan service for one run's detector."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app
from deepshield.cli.checks import PORT


@app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port, 1-65535.", **PORT),
    max_mb: float = typer.Option(20.0, "--max-mb", help="Upload limit in MB (MiB)."),
    threshold: str = typer.Option(
        None, "--threshold", help="P(fake) threshold in [0,1], or 'eer' (the run's) [0.5]."
    ),
    size: int = typer.Option(
        None, "--size", help="Image side (or clip samples) to feed the model [the run's]."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto."),
) -> None:
    """Serve a detector over HTTP: POST /v1/scan, GET /healthz and a drop-a-file page at /."""
    import uvicorn

    from deepshield.errors import ConfigError
    from deepshield.runtime import resolve_device
    from deepshield.service import create_app

    if max_mb <= 0:
        raise ConfigError(f"--max-mb {max_mb}: give a positive upload limit in MB")
    service = create_app(
        run_dir,
        max_bytes=int(max_mb * 1024 * 1024),
        threshold=threshold,
        device=resolve_device(device),
        input_size=size,
    )
    info = service.state.scanner.describe()
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"serving {info['model']} from {run_dir} (threshold {info['threshold']:g}, "
        f"{info['threshold_source']}) at http://{shown}:{port}/"
    )
    uvicorn.run(service, host=host, port=port, log_level="info")
