"""`deepshield scan` (media files -> verdicts) and `deepshield calibrate` (a run's decision)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepshield.cli.app import app
from deepshield.cli.checks import COUNT, amp_option, choice, operating_point
from deepshield.errors import ConfigError


@app.command("calibrate")
def calibrate_cmd(
    run_dir: Path = typer.Argument(
        ...,
        help="A run folder written by `deepshield train` (fitted on its validation split), or "
        "the --out folder of a finished `deepshield scan` of labelled files (fitted on their "
        "file scores).",
    ),
    rule: str = typer.Option(
        "eer",
        "--operating-point",
        help="Threshold rule on validation: eer, fpr=F (e.g. fpr=0.01) or cost.",
        callback=operating_point,
    ),
    calibration: str = typer.Option(
        "platt", "--calibration", help="platt or isotonic.", callback=choice("platt", "isotonic")
    ),
    unsure: float = typer.Option(
        0.05,
        "--unsure",
        help="Half-width of the 'unsure' band around the threshold (P(fake)).",
        min=0.0,
        max=0.49,
    ),
    labels: Path = typer.Option(
        None,
        "--labels",
        help="Scan folder only: a CSV with file (or path, relative to the CSV), label (0/real, "
        "1/fake) and optionally pair and method columns, or an ASVspoof protocol file (files "
        "matched by utterance name); default: each file's real/ or fake/ (bonafide/, spoof/) "
        "folder.",
    ),
    folds: int = typer.Option(
        5, "--folds", help="Scan folder only: cross-validation folds for the error rates.", min=2
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Fit a calibrator and operating threshold; writes decision.json, which scan (and every
    P(fake) shown) then uses. A run: on its validation split. A scan of labelled files: on their
    file scores, per detector, with cross-validated error rates (use it with scan --decision)."""
    from deepshield.runs.decision import DECISION_FILE, calibrate_run

    if not (run_dir / "model.json").is_file():  # not a run: a scan folder (or an error naming it)
        return _calibrate_scan(run_dir, labels, rule, calibration, unsure, folds)
    if labels is not None:
        raise ConfigError(f"--labels {labels}: only for a scan folder; {run_dir} is a run")
    from deepshield.runtime import resolve_device

    d = calibrate_run(
        run_dir,
        rule=rule,
        calibration=calibration,
        band=unsure,
        device=resolve_device(device),
    )
    c = d.val_counts
    typer.echo(
        f"{calibration} calibration, {rule} threshold {d.threshold:.4f} on calibrated "
        f"P(fake) (unsure within +-{d.band:g}), fitted on {c['n']} validation samples "
        f"({c['fake']} fake, {c['real']} real)"
    )
    typer.echo(f"wrote {Path(run_dir) / DECISION_FILE}")


def _calibrate_scan(
    scan_dir: Path, labels: Path | None, rule: str, calibration: str, band: float, folds: int
) -> None:
    """`calibrate SCAN`: one paragraph per detector fitted (scan_calibration)."""
    from deepshield.runs.calibration_report import rate_text
    from deepshield.runs.scan_calibration import (
        CALIBRATION_FILE,
        DECISION_FILES,
        calibrate_scan,
        left_out_counts,
    )

    fits = calibrate_scan(
        scan_dir, labels=labels, rule=rule, calibration=calibration, band=band, folds=folds
    )
    for kind, fit in fits.items():
        d, c = fit.decision, fit.decision.val_counts
        out = left_out_counts(fit.left_out)
        typer.echo(
            f"{d.fitted_for['model']} ({'speech' if kind == 'audio' else kind}): {calibration} "
            f"calibration, {rule} threshold {d.threshold:.4f} on calibrated P(fake) (unsure "
            f"within +-{d.band:g}), fitted on {c['n']} files ({c['fake']} fake, {c['real']} "
            f"real); {len(fit.left_out)} left out{f' ({out})' if out else ''}"
        )
        ins, cv = fit.in_sample, fit.cross_validated
        typer.echo(
            f"  in sample (optimistic): AUC of the raw file scores {ins['auc_raw']:.3f}; reals "
            f"called fake {rate_text(ins['reals_called_fake'])}, fakes called real "
            f"{rate_text(ins['fakes_called_real'])}; unsure: reals {rate_text(ins['reals_unsure'])}, "
            f"fakes {rate_text(ins['fakes_unsure'])}"
        )
        if cv["folds"]:
            typer.echo(
                f"  {cv['folds']}-fold cross-validated (by {cv['groups']}): reals called fake "
                f"{rate_text(cv['reals_called_fake'])}, fakes called real "
                f"{rate_text(cv['fakes_called_real'])}; unsure: reals "
                f"{rate_text(cv['reals_unsure'])}, fakes {rate_text(cv['fakes_unsure'])}"
            )
        if face := d.conditions.get("face_px"):
            typer.echo(
                f"  face widths of these files: {face['p05']:.0f}-{face['p95']:.0f} px for 90 % "
                f"(median {face['median']:.0f}); a scanned file outside is noted"
            )
        if by := cv["fakes_called_real_by_method"]:
            shown = ", ".join(f"{m} {rate_text(r)}" for m, r in by.items())
            typer.echo(f"  fakes called real out of fold, by method: {shown}")
        for why in cv["failed_folds"]:
            typer.echo(f"  note: cross-validation: {why}")
        if d.warning:
            typer.echo(f"warning: {d.fitted_for['model']}: {d.warning}")
    names = [str(scan_dir / DECISION_FILES[k]) for k in fits]
    typer.echo(f"wrote {', '.join(names)}, {scan_dir / CALIBRATION_FILE} and its report")
    typer.echo(f"report: {scan_dir / 'calibration.html'}")
    typer.echo(
        f"use it: deepshield scan FILES ... --decision {scan_dir} (same detector and settings)"
    )


@app.command("scan")
def scan_cmd(
    paths: list[Path] = typer.Argument(..., help="Images, videos, audio files or folders."),
    run_dir: Path = typer.Option(None, "--run", help="An image detector run folder."),
    model: list[str] = typer.Option(
        None,
        "--model",
        help="A registry detector with --weights: an image model (e.g. meso4) or a speech model "
        "(e.g. aasist_l, for audio files and video sound); uncalibrated, threshold 0.5. Give "
        "--model/--weights twice for one of each kind; pairs go by order.",
    ),
    weights: list[Path] = typer.Option(
        None, "--weights", help="Weights file for --model (e.g. Meso4_DF.h5, AASIST-L.pth)."
    ),
    speech_run: Path = typer.Option(
        None,
        "--speech-run",
        help="A speech detector run: scans audio files and video audio tracks.",
    ),
    decision: Path = typer.Option(
        None,
        "--decision",
        help="A scan folder calibrated by `deepshield calibrate SCAN`: its file-level "
        "decisions replace the detectors' own (same weights, frames, faces and tracking).",
    ),
    out: Path = typer.Option(
        Path("scan"), "--out", help="Output folder (resumed when it holds a scan)."
    ),
    frames: int = typer.Option(32, "--frames", help="Frames sampled evenly per video.", **COUNT),
    faces: str = typer.Option(
        "largest",
        "--faces",
        help="largest, all or none (inputs already face crops).",
        callback=choice("largest", "all", "none"),
    ),
    limit: int = typer.Option(
        None, "--limit", help="Scan at most this many files (after --shard).", **COUNT
    ),
    shard: str = typer.Option(
        None, "--shard", help="I/N: only the files whose path hash mod N is I."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    workers: int = typer.Option(
        0,
        "--workers",
        help="Processes that decode files and find faces (0: in this process; a lone video, or "
        "the last of a folder, is shared by them); scoring stays here.",
        min=0,
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local, or ray: files scanned by Ray actors (RAY_ADDRESS or a local instance; "
        "--workers actors, 0: one per GPU, else per CPU). Needs pip install 'deepshield[ray]'.",
        callback=choice("local", "ray"),
    ),
    detect_every: int = typer.Option(
        1,
        "--detect-every",
        help="Search the whole frame for faces every K sampled frames, track them in between.",
        **COUNT,
    ),
    amp: str = amp_option("the scoring of face crops and audio windows"),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace what deepshield wrote in --out for a scan with other settings, or for "
        "another command (a train run's model too); other files are kept.",
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="On a resume, hash every file already in scan.csv again and rescan those whose "
        "SHA-256 changed, whatever their size and time say (like rsync -c); without it only "
        "files whose size or time moved are hashed.",
    ),
) -> None:
    """Score media files with a detector: P(fake), a verdict (fake / real / unsure / no_face /
    error) and the evidence; writes scan.csv, scan_frames.csv, scan.json and report.html."""
    from deepshield import progress
    from deepshield.errors import DataError
    from deepshield.precision import check_amp
    from deepshield.runs import scan as sc
    from deepshield.runtime import resolve_device

    model, weights = model or [], weights or []
    if len(model) != len(weights):
        raise ConfigError(
            f"{len(model)} --model and {len(weights)} --weights: they go in pairs (e.g. "
            "--model meso4 --weights Meso4_DF.h5 --model aasist_l --weights AASIST-L.pth)"
        )
    shard_at = sc.parse_shard(shard)  # flags checked before any model is loaded
    dev = resolve_device(device)
    if engine == "ray":  # no ray, no cluster, an --amp its workers cannot run: one line, no model
        from deepshield.runs.scan_ray import check_workers

        check_workers(amp, workers)  # the workers' device, not --device, scores
    else:
        check_amp(amp, dev)  # fp16 off CUDA: one line
    det, speech = sc.detectors(run_dir, list(zip(model, weights, strict=True)), speech_run, dev)
    opts = sc.ScanOptions(frames=frames, faces=faces, detect_every=detect_every, amp=amp)
    if decision is not None:
        from deepshield.runs.scan_calibration import with_decisions

        det, speech = with_decisions(decision, det, speech, opts)
    summary = sc.scan(
        list(paths),
        out,
        detector=det,
        speech=speech,
        opts=opts,
        limit=limit,
        shard=shard_at,
        progress=lambda files: progress.track(files, "scanning", total=len(files)),
        workers=workers,
        force=force,
        engine=engine,
        verify=verify,
    )
    if summary.single_error:  # one file asked for, and it failed: one line, exit 2
        raise DataError(summary.single_error)
    for d in filter(None, (det, speech)):
        if not d.decision.calibrated:
            typer.echo(f"note: {d.name}: {d.decision.note}")
        if d.decision.warning:
            typer.echo(f"warning: {d.name}: {d.decision.warning}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    n = summary.scanned
    changed = f", {len(summary.changed)} rescanned as changed" if summary.changed else ""
    if verify:
        changed = f", {summary.rehashed} verified by SHA-256, {len(summary.changed)} changed"
    typer.echo(
        f"scanned {n} file{'s' * (n != 1)} ({summary.resumed} already in scan.csv{changed}) "
        f"in {summary.wall_s:.1f} s: {counts}"
    )
    if line := summary.not_scanned_line():
        typer.echo(line)
    typer.echo(f"wrote {summary.out / 'scan.csv'} and {summary.out / 'report.html'}")
