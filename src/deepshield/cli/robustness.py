"""`deepshield robustness`: a run's detector under everyday processing, and shortcut checks."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app, parse_kv
from deepshield.cli.checks import COUNT, amp_option, split_choice


@app.command("robustness")
def robustness_cmd(
    run_dir: Path = typer.Argument(
        ...,
        help="A run folder written by `deepshield train`, or a scan folder calibrated by "
        "`deepshield calibrate SCAN` (its labelled files processed and scanned again).",
    ),
    grid: str = typer.Option(
        "quick",
        "--grid",
        help="quick, full, or a YAML file listing specs such as jpeg:75 (a scan folder: also "
        "h264:CRF for videos and speech specs such as mp3:0.5).",
    ),
    split: str = typer.Option("test", "--split", help="train, val or test.", callback=split_choice),
    n: int = typer.Option(
        None, "--n", help="Use N samples of the split, class-stratified by --seed.", **COUNT
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the --n draw."),
    shortcuts: bool = typer.Option(
        False, "--shortcuts", help="Also the shortcut checks (reals and fakes stored alike)."
    ),
    dataset: str = typer.Option(None, "-d", "--dataset", help="Score another dataset's split."),
    data_arg: list[str] = typer.Option(None, "--data-arg", help="Dataset option KEY=VALUE."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Scoring batch size.", **COUNT),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda[:N] or auto [cpu]."),
    amp: str = amp_option(),
) -> None:
    """Score the run's split under each setting of a processing grid (real encoders): AUC, EER,
    and error rates at the run's threshold; writes everyday_<grid>.json, a plot and a report
    section. --shortcuts adds shortcuts.json (same re-encoding of both classes). A calibrated
    scan folder: its labelled files processed (photos, videos re-encoded, audio) and scanned
    with its decisions; writes robustness.json."""
    if not (run_dir / "model.json").is_file() and (run_dir / "scan.json").is_file():
        return _scan_grid(run_dir, grid, device, shortcuts or dataset is not None or n is not None)
    if run_dir.is_dir() and not (run_dir / "model.json").is_file():
        from deepshield.errors import ConfigError

        raise ConfigError(
            f"{run_dir}: neither a run (no model.json) nor a scan folder (no scan.json); give a "
            "folder written by `deepshield train`, or the --out folder of a scan of labelled "
            "files calibrated by `deepshield calibrate`"
        )
    from deepshield.precision import autocast
    from deepshield.runs.everyday import run_grid, shortcut_checks
    from deepshield.runtime import resolve_device

    dev = str(resolve_device(device))
    options = {"split": split, "n": n, "seed": seed, "batch_size": batch_size, "device": dev,
               "dataset": dataset, "data_kwargs": parse_kv(data_arg, "--data-arg") or None}  # fmt: skip
    with autocast(amp, dev):  # the scoring forwards; fp16 off CUDA: one line
        summary = run_grid(run_dir, grid, **options, log=_log)
        print(summary["line"])
        result = shortcut_checks(run_dir, **options, log=_log) if shortcuts else None
    if result is not None:
        for row in result["checks"]:
            flag = "  SHORTCUT?" if row["flagged"] else ""
            print(f"shortcut {row['check']}: {row['what']}: AUC {row['auc']:.3f} "
                  f"(change {row['auc'] - result['clean']['auc']:+.3f}){flag}")  # fmt: skip
        for pair in result["pairs"] or []:
            gaps = ", ".join(f"{k} {v:+.3f}" for k, v in pair["gap_fake_minus_real"].items()
                             if v is not None)  # fmt: skip
            print(f"pair {pair['pair']}: video P(fake) fake - real: {gaps}")
    print(f"report: {Path(run_dir) / 'report.html'}")


def _scan_grid(scan_dir: Path, grid: str, device: str, run_only: bool) -> None:
    """`robustness SCAN`: the grid over a calibrated scan's labelled files (scan_robustness)."""
    from deepshield.errors import ConfigError
    from deepshield.runs.scan_robustness import ROBUSTNESS_FILE, line, scan_robustness
    from deepshield.runtime import resolve_device

    if run_only:
        raise ConfigError(
            f"{scan_dir}: a scan folder; --shortcuts, --dataset and --n are for run folders "
            "(the scan's labelled files are used, its settings and precision kept)"
        )
    result = scan_robustness(scan_dir, grid, device=resolve_device(device), log=_log)
    for row in result["settings"]:
        print(line(row))
    print(f"wrote {scan_dir / ROBUSTNESS_FILE}")


def _log(line: str) -> None:
    from deepshield.progress import enabled

    if enabled():
        print(line, flush=True)
