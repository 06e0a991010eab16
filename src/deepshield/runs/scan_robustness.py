"""`deepshield robustness SCAN`: a calibrated scan's labelled files under everyday processing,
scored with the scan's detectors and file-level decisions.

Each setting of the grid makes a processed copy of every labelled file of its kind, with the real
encoders: photos (decoded upright, as scan reads them) through `data.processing`'s image specs
(`jpeg:75`, `resize:0.5`, `chain:resize:0.75+jpeg:75`, ...) and stored as PNG (lossless, so the
copy holds exactly the processed pixels); videos re-encoded with x264 at a constant rate factor
(`h264:CRF`, `media.encode.reencode_h264`; audio dropped, frames as decoded); audio files
(mono 16 kHz, as scan reads them) through the speech specs (`mp3:0.5`, `resample:8000`, ...) and
stored as 16-bit WAV. The copies are scanned like the originals (same detector, frames, faces,
tracking, precision and `scan --decision`), and each setting reports, over the files of its
kind: the AUC of the raw file scores, reals called fake, fakes called real and the unsure
shares at the decision's threshold with 95 % Wilson intervals, the files whose verdict changed
from the original's and the mean |change| of P(fake); the originals' row ("none") comes from
calibration.json. A named grid (quick, full) holds photo, video and speech settings, each run
on the files of its kind; a YAML grid lists specs of any kind.

The decision's own files are used, so the rates at "none" are in sample (the rows below it are
not: processing is new to the decision). Files: robustness.json in the scan folder; the copies'
scans in robustness/<setting>/ (each a scan folder: resumed after an interruption, settings
finished before are kept); the processed copies are made in robustness/.work/ and deleted once
their setting is scanned.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deepshield.errors import ConfigError, DeepshieldError
from deepshield.files import write_json
from deepshield.run import RunDir, file_tag, is_run_folder
from deepshield.runs.scan_calibration import CALIBRATION_FILE, DECISION_FILES, verdict_rates

ROBUSTNESS_FILE = "robustness.json"
FOLDER = "robustness"
BASIS = "basis.json"  # in FOLDER: the decisions and files its scans were made for
# x264 constant rate factors: 23 its default and FF++'s c23, 40 FF++'s c40
VIDEO_GRIDS = {"quick": ["h264:23", "h264:32", "h264:40"], "full": [f"h264:{c}" for c in (18, 23, 28, 32, 36, 40, 45)]}  # fmt: skip
KINDS = ("photo", "video", "audio")


def grid_settings(grid: str | Path) -> list[tuple[str, str]]:
    """(spec, kind) of each setting: a named grid's image specs for photos, x264 CRFs for videos
    and speech specs for audio files; a YAML list's specs each sorted to its kind by parsing.
    ConfigError naming a bad spec."""
    from deepshield.data.processing import IMAGE_GRIDS, grid_specs, parse_spec
    from deepshield.media.encode import check_crf

    if str(grid) in IMAGE_GRIDS:
        image = [(s, "photo") for s in grid_specs(grid, "image")]
        video = [(s, "video") for s in VIDEO_GRIDS[str(grid)]]
        return image + video + [(s, "audio") for s in grid_specs(grid, "speech")]
    out = []
    for spec in grid_specs(grid, "image"):  # the YAML list (its errors name the file)
        kind, _, value = spec.partition(":")
        if kind.strip() == "h264":
            try:
                check_crf(int(value))
            except ValueError:
                check_crf(value)  # type: ignore[arg-type]  # its message names the value
            out.append((f"h264:{int(value)}", "video"))
            continue
        try:
            out.append((parse_spec(spec, "image").spec, "photo"))
        except ConfigError as image_error:
            try:
                out.append((parse_spec(spec, "speech").spec, "audio"))
            except ConfigError:
                raise ConfigError(
                    f"{image_error} (nor a speech spec, nor h264:CRF for videos)"
                ) from None
    return out


def media_kind(row_kind: str) -> str:
    """scan.csv's kind (image, video, audio) -> the grid's (photo, video, audio)."""
    return "photo" if row_kind == "image" else row_kind


def process_file(src: Path, dst: Path, spec: str, kind: str) -> Path:
    """Write the processed copy of `src` at `dst` (suffix set by kind): the file it wrote."""
    import torch

    from deepshield.data.processing import parse_spec, to_uint8

    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "video":
        from deepshield.media.encode import reencode_h264

        return reencode_h264(src, dst.with_suffix(".mp4"), int(spec.split(":")[1]))
    if kind == "photo":
        from PIL import Image

        from deepshield.media import read_media_image

        x = torch.from_numpy(read_media_image(src).copy()).permute(2, 0, 1)[None].float() / 255
        out = dst.with_suffix(".png")
        Image.fromarray(to_uint8(parse_spec(spec, "image")(x))[0]).save(out)
        return out
    import soundfile as sf

    from deepshield.media.audio import read_audio

    wave, _ = read_audio(src, rate=16000)  # mono float32 [T] in [-1, 1], as scan reads it
    y = parse_spec(spec, "speech")(torch.from_numpy(np.asarray(wave))[None])[0].numpy()
    out = dst.with_suffix(".wav")
    sf.write(out, np.clip(y, -1, 1), 16000, subtype="PCM_16")
    return out


def _summary(
    files: list[dict[str, Any]], got: dict[str, dict[str, str]], failed: dict[str, str]
) -> dict[str, Any]:
    """One setting's numbers over `files` (calibration.json entries of one kind) from the rows
    of their processed copies (`got`: original path -> scan.csv row; `failed`: original path ->
    why no copy could be made)."""
    from deepshield.metrics import auc

    y, raw, verdicts, changed, moved, moved_raw = [], [], [], 0, [], []
    lost = {"not_processed": len(failed), "error": 0, "no_face": 0}
    for f in files:
        row = got.get(f["path"])
        if row is None or row["verdict"] in ("error", "no_face"):
            if row is not None:
                lost[row["verdict"]] += 1
            continue
        y.append(f["label"])
        raw.append(float(row["score_raw"]))
        verdicts.append(row["verdict"])
        changed += row["verdict"] != f["verdict"]
        moved.append(abs(float(row["score"]) - f["p_fake"]))
        moved_raw.append(abs(float(row["score_raw"]) - f["score_raw"]))
    labels = np.asarray(y)
    return {
        "files": len(files),
        "scored": len(y),
        "lost": lost,
        "not_processed": dict(list(failed.items())[:20]),
        "auc_raw": auc(labels, raw) if len(set(y)) == 2 else None,
        **verdict_rates(verdicts, labels),
        "verdicts_changed": changed,
        "mean_abs_change_p_fake": float(np.mean(moved)) if moved else None,
        "mean_abs_change_raw": float(np.mean(moved_raw)) if moved_raw else None,
    }


def _original(files: list[dict[str, Any]]) -> dict[str, Any]:
    """The 'none' row of a kind: the originals' in-sample verdicts (calibration.json)."""
    got = {f["path"]: {"verdict": f["verdict"], "score_raw": f["score_raw"], "score": f["p_fake"]}
           for f in files}  # fmt: skip
    return _summary(files, got, {})


def _detectors(settings: dict[str, Any], scan_dir: Path, device: Any, opts: Any) -> tuple:
    """The scan's detectors (from their recorded sources) with its file-level decisions."""
    from deepshield.runs import scan as sc
    from deepshield.runs.scan_calibration import with_decisions

    made = []
    for slot, kind in (("detector", "image"), ("speech_detector", "audio")):
        d = settings.get(slot)
        if not d:
            made.append(None)
        elif Path(d["source"]).is_dir():
            made.append(sc.run_detector(d["source"], device, kind=kind))
        else:
            made.append(sc.file_detector(d["model"], d["source"], device))
    return with_decisions(scan_dir, made[0], made[1], opts)


def scan_robustness(
    scan_dir: str | Path,
    grid: str | Path = "quick",
    *,
    device: Any = "cpu",
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run the grid on a calibrated scan's labelled files (module doc); write robustness.json;
    return it. ConfigError when the scan has no calibration or the grid a bad spec."""
    import torch

    from deepshield.runs import scan as sc

    run = RunDir(scan_dir)
    if not (run.exists(CALIBRATION_FILE) and any(map(run.exists, DECISION_FILES.values()))):
        raise ConfigError(
            f"{run.path}: no calibration; run `deepshield calibrate {run.path}` on this scan of "
            "labelled files first"
        )
    settings = run.read_dict("scan.json", ("settings",))["settings"]
    report = run.read_dict(CALIBRATION_FILE)
    rows = {r["path"]: r["kind"] for r in _scan_rows(run)}
    by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for fitted in report.values():
        for f in fitted["files"]:
            by_kind[media_kind(rows[f["path"]])].append(f)
    todo = [(s, k) for s, k in grid_settings(grid) if by_kind[k]]
    paths = [Path(f["path"]) for fs in by_kind.values() for f in fs]
    if paths and not any(p.is_file() for p in paths):  # some gone: counted per setting
        raise ConfigError(
            f"{run.path}: none of its {len(paths)} labelled files is found from here (e.g. "
            f"{paths[0]}): run robustness from the folder the scan ran in (its paths are "
            "relative to it), or scan with absolute paths"
        )
    opts = sc.ScanOptions(
        frames=settings["frames"],
        faces=settings["faces"],
        detect_every=settings.get("detect_every", 1),
        amp=settings.get("amp", "off"),
        top_frames=0,  # no Grad-CAM overlays for the copies
    )
    det, speech = _detectors(settings, run.path, torch.device(device), opts)
    run.claim(f"{FOLDER}/", ROBUSTNESS_FILE)
    _drop_stale(run, {"decisions": [run.read_dict(n) for n in DECISION_FILES.values()
                                    if run.exists(n)],
                      "files": {k: [f["path"] for f in v] for k, v in by_kind.items()}}, log)  # fmt: skip
    result: dict[str, Any] = {"grid": str(grid), "settings": []}
    for kind in KINDS:
        if by_kind[kind]:
            result["settings"].append({"setting": "none", "kind": kind} | _original(by_kind[kind]))
    for spec, kind in todo:
        tag = file_tag(spec).strip("_")
        out = run.path / FOLDER / tag
        got, failed = _scanned(run, spec, kind, tag, by_kind[kind], out, (det, speech), opts)
        row = {"setting": spec, "kind": kind} | _summary(by_kind[kind], got, failed)
        result["settings"].append(row)
        log(line(row))
        write_json(run.output(ROBUSTNESS_FILE), result)  # after each setting: progress kept
    write_json(run.output(ROBUSTNESS_FILE), result)
    return result


def _drop_stale(run: RunDir, basis: dict[str, Any], log: Callable[[str], None]) -> None:
    """Forget the settings' scans made for other decisions or files (calibrate run again since:
    their verdicts are the old decision's, and copies are matched to files by index); record
    `basis` (the decisions and files the scans in robustness/ are made for) in BASIS."""
    folder = run.path / FOLDER
    if folder.is_dir():
        try:
            kept = RunDir(folder).read_json(BASIS)
        except DeepshieldError:  # absent (an earlier version) or damaged: not known to match
            kept = None
        if kept != json.loads(json.dumps(basis)):
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if is_run_folder(sub):
                    RunDir(sub).remove_owned()
            shutil.rmtree(folder / ".work", ignore_errors=True)
            log(f"{run.path}: calibrated again since the last robustness run; scanning again")
    write_json(folder / BASIS, basis)


def _scan_rows(run: RunDir) -> list[dict[str, str]]:
    from deepshield.runs.scan import SCAN_COLUMNS, complete_rows

    return complete_rows(run.file("scan.csv"), SCAN_COLUMNS)


def _scanned(
    run: RunDir,
    spec: str,
    kind: str,
    tag: str,
    files: list[dict[str, Any]],
    out: Path,
    detectors: tuple[Any, Any],
    opts: Any,
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(original path -> scan.csv row of its processed copy, original path -> why no copy was
    made); the copies are made and scanned unless the setting's scan finished before. A copy
    is named by its file's index, so a rerun makes the same paths and the scan resumes."""
    from deepshield.runs import scan as sc
    from deepshield.runs.scan import SCAN_COLUMNS, complete_rows

    work = run.path / FOLDER / ".work" / tag
    failed: dict[str, str] = {}
    if not RunDir(out).is_done(sc.COMMAND):
        made = []
        for i, f in enumerate(files):
            src = Path(f["path"])
            try:
                made.append(process_file(src, work / f"{i:06d}_{src.name}", spec, kind))
            except Exception as e:  # the file is counted as not processed; the grid goes on
                failed[f["path"]] = sc.one_line(e)
        det, speech = detectors
        sc.scan(made, out, detector=det, speech=speech, opts=opts)
        shutil.rmtree(work, ignore_errors=True)
    rows = complete_rows(out / "scan.csv", SCAN_COLUMNS)
    index = {Path(r["path"]).name[:6]: r for r in rows}  # the copy's index -> its row
    got = {f["path"]: index[f"{i:06d}"] for i, f in enumerate(files) if f"{i:06d}" in index}
    return got, failed


def _pct(r: dict[str, Any]) -> str:
    return "n/a" if not r["of"] else f"{100 * r['rate']:.1f} %"


def line(row: dict[str, Any]) -> str:
    """One printed line of a setting."""
    a = "n/a" if row["auc_raw"] is None else f"{row['auc_raw']:.3f}"
    dp, draw = row["mean_abs_change_p_fake"], row["mean_abs_change_raw"]
    return (
        f"{row['kind']:5} {row['setting']:28} {row['scored']:4}/{row['files']:<4} AUC {a}  "
        f"reals called fake {_pct(row['reals_called_fake'])}, fakes called real "
        f"{_pct(row['fakes_called_real'])}, unsure {_pct(row['reals_unsure'])} / "
        f"{_pct(row['fakes_unsure'])}; verdicts changed {row['verdicts_changed']}"
        + ("" if dp is None else f", mean |dP| {dp:.3f} (raw {draw:.3f})")
    )
