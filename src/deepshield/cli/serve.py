"""`deepshield serve`: the scan service for one run's detector (and a speech run beside it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepshield.cli.app import app
from deepshield.cli.checks import COUNT, PORT, choice

if TYPE_CHECKING:  # annotations only: loaded when the command runs
    from deepshield.runs.decision import Decision
    from deepshield.service.media_uploads import MediaRules

TOKEN_ENV = "DEEPSHIELD_TOKEN"


@app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `deepshield train`."),
    speech_run: Path = typer.Option(
        None,
        "--speech-run",
        help="A speech detector's run served beside the image run RUN_DIR: it answers audio "
        "uploads and scores a video's sound (its own decision.json; --threshold, --unsure and "
        "--size are RUN_DIR's).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port, 1-65535.", **PORT),
    max_mb: float = typer.Option(20.0, "--max-mb", help="Upload limit in MB (MiB)."),
    threshold: str = typer.Option(
        None,
        "--threshold",
        help="P(fake) threshold in [0,1], or 'eer' (the run's) [decision.json's, else 0.5].",
    ),
    unsure: float = typer.Option(
        None,
        "--unsure",
        help="Half-width of the 'unsure' band around the threshold [decision.json's, else 0.05].",
        min=0.0,
        max=0.49,
    ),
    size: int = typer.Option(
        None, "--size", help="Image side (or clip samples) to feed the model [the run's].", **COUNT
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto."),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        help="A Host name the service answers besides loopback and --host (repeatable; '*': "
        "any, which opens it to DNS rebinding).",
    ),
    token: str = typer.Option(
        None,
        "--token",
        envvar=TOKEN_ENV,
        help=f"Bearer token every request must carry (or ${TOKEN_ENV}); required with a --host "
        "beyond loopback.",
    ),
    decode_mpx: float = typer.Option(
        None,
        "--decode-mpx",
        help="Megapixels decoded at once across requests; past it uploads wait, then get 503 "
        "[33.6: two images at the 4096x4096 limit].",
        min=1.0,
    ),
    frames: int = typer.Option(
        16,
        "--frames",
        help="Frames of a video upload scanned, evenly spaced (and at most that many windows of "
        "the clip length of audio, as scan --frames).",
        **COUNT,
    ),
    faces: str = typer.Option(
        "largest",
        "--faces",
        help="Faces of a video frame scored: largest, all or none (the whole frame), as scan "
        "--faces; a photo's too under a file-level --decision.",
        callback=choice("largest", "all", "none"),
    ),
    detect_every: int = typer.Option(
        1,
        "--detect-every",
        help="Search a video's whole frame for faces every K sampled frames and track them in "
        "between, as scan --detect-every.",
        **COUNT,
    ),
    max_seconds: float = typer.Option(
        None,
        "--max-seconds",
        help="Longest video or audio upload accepted in seconds, checked from its header before "
        "decoding (default: 120 for video, 600 for audio).",
        min=0.1,
    ),
    decision: Path = typer.Option(
        None,
        "--decision",
        help="A scan folder holding the file-level decision `deepshield calibrate SCAN` wrote "
        "(decision.json for RUN_DIR, decision_speech.json for --speech-run): P(fake) is its "
        "calibrator on the raw file score, as `scan --decision` gives, a photo's faces scored as "
        "a video frame's; refused unless fitted for these weights, --frames, --faces and "
        "--detect-every.",
    ),
) -> None:
    """Serve a detector over HTTP: POST /v1/scan, GET /healthz and a drop-a-file page at /."""
    import uvicorn

    from deepshield.errors import ConfigError
    from deepshield.runs.decision import load_decision
    from deepshield.runtime import resolve_device
    from deepshield.service import create_app
    from deepshield.service.app import DECODE_BUDGET
    from deepshield.service.guards import allowed_hosts_for, is_loopback
    from deepshield.service.media_uploads import MediaRules

    if max_mb <= 0:
        raise ConfigError(f"--max-mb {max_mb}: give a positive upload limit in MB")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} listens beyond this machine: pass --token TOKEN (or set "
            f"${TOKEN_ENV}) so that only clients holding it are answered"
        )
    rules = MediaRules(frames=frames, faces=faces, detect_every=detect_every)
    rules = rules.with_max_seconds(max_seconds)
    decisions = {run_dir: load_decision(run_dir)}
    if speech_run is not None:
        decisions[speech_run] = load_decision(speech_run)
    if decision is not None:
        decisions |= _file_decisions(decision, run_dir, speech_run, rules)
    service = create_app(
        run_dir,
        max_bytes=int(max_mb * 1024 * 1024),
        threshold=threshold,
        unsure=unsure,
        device=resolve_device(device),
        input_size=size,
        allowed_hosts=allowed_hosts_for(host, tuple(allowed_host or ())),
        token=token or None,
        decode_budget=DECODE_BUDGET if decode_mpx is None else int(decode_mpx * 1e6),
        decision=decisions[run_dir],
        media_rules=rules,
        speech_run=speech_run,
        speech_decision=decisions.get(speech_run),
    )
    served = [(service.state.scanner.describe(), run_dir)]
    if speech_run is not None:
        served.append((service.state.speech.describe(), speech_run))
    shown = f"[{host}]" if ":" in host else host
    what = " and ".join(_served(info, path) for info, path in served)
    typer.echo(f"serving {what} at http://{shown}:{port}/")
    for info, _ in served:
        who = f"{info['model']}: " if len(served) > 1 else ""
        if not info["calibrated"]:
            typer.echo(f"note: {who}{info['calibration']}")
        if info["threshold_warning"]:
            typer.echo(f"warning: {who}{info['threshold_warning']}")
    uvicorn.run(service, host=host, port=port, log_level="info")


def _served(info: dict, run_dir: Path) -> str:
    """'MODEL from RUN (threshold T, source; unsure in [lo, hi))' for the startup line."""
    lo, hi = info["unsure_band"]
    return (
        f"{info['model']} from {run_dir} (threshold {info['threshold']:.7g}, "
        f"{info['threshold_source']}; unsure in [{lo:.4g}, {hi:.4g}))"
    )


# How a refused --decision reads for the service (`runs.scan_calibration.check_decision`).
SERVE_WORDS = {
    "here": "this service",
    "own": "serve RUN_DIR already uses the run's own decision.json",
    "fix": "serve the run whose scan it was fitted on (`scan --run RUN_DIR`: a --weights file "
    "has another digest than a run made of it) with --frames, --faces and --detect-every as "
    "that scan's, or calibrate a scan made with these",
}


def _file_decisions(
    folder: Path, run_dir: Path, speech_run: Path | None, rules: MediaRules
) -> dict[Path, Decision]:
    """Run folder -> the file-level decision in `folder` fitted for its weights and the
    service's frames, faces and tracking (`file_decisions`); ConfigError in one line
    otherwise."""
    from deepshield.run import RunDir
    from deepshield.runs.scan_calibration import file_decisions
    from deepshield.service.app import check_pair
    from deepshield.service.scanner import run_kind

    if speech_run is not None:
        check_pair(str(run_dir), str(speech_run))
    slots = {run_kind(str(run_dir))[1]: run_dir} | ({"audio": speech_run} if speech_run else {})
    have = {
        kind: {"kind": kind, "model": run_kind(str(run))[0]}
        | {"weights_sha256": RunDir.open(run).weights_sha256(), "frames": rules.frames}
        | {"faces": rules.faces, "detect_every": rules.detect_every}
        for kind, run in slots.items()
    }
    found = file_decisions(folder, have, SERVE_WORDS)
    return {slots[kind]: d for kind, d in found.items()}
