"""`deepshield calibrate SCAN`: a file-level decision fitted on a scan of labelled files.

A detector from a weights file (MesoNet, AASIST) comes without a calibrator, and a run's own
decision is fitted on validation samples scored one face crop or clip at a time, while a scan's
verdict is made on a file score: the mean over the sampled frames of each frame's highest face
score (audio: the mean over windows). This fits the decision on what the verdict is made from:
the raw file scores (scan.csv `score_raw`) of a finished scan of files whose labels are known,
from a labels CSV (`file` or `path`, `label`, optional `pair`) or from a folder named real /
bonafide or fake / spoof in each file's path. The decision records the detector (weights
SHA-256) and the scan settings (frames, faces, tracking) it was fitted with; `scan --decision
SCAN` applies it to new files scanned the same way, and refuses other settings.

Error rates out of sample: the files are cut into k folds of whole groups (a CSV's `pair` keeps
a real clip with the fakes made from it; otherwise each file is its own group), a decision is
fitted on k - 1 folds and applied to the held-out one, and the reals called fake, the fakes
called real and those left unsure are counted with 95 % Wilson intervals. The rates of the
decision fitted on every file, measured on those same files (in sample), are reported beside
them and are optimistic.

Written in the scan folder (and claimed in its manifest): decision.json (the image detector's),
decision_speech.json (the speech detector's), calibration.json (per detector: counts, the files
used with label, group, raw and calibrated score, verdict and out-of-fold verdict, the files
left out and why, in-sample metrics, the cross-validated rates) and calibration.html (the same
for a reader, with plots: `runs.calibration_report`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepshield.errors import ConfigError, DeepshieldError
from deepshield.metrics import UNSURE_BAND, auc, operating_threshold
from deepshield.metrics.decision import wilson_interval
from deepshield.run import RunDir
from deepshield.runs.calibration_report import write_calibration_report
from deepshield.runs.decision import DECISION_FILE, Decision, decision_metrics, fit_decision

if TYPE_CHECKING:
    from deepshield.runs.scan import Detector, ScanOptions

CALIBRATION_FILE = "calibration.json"
DECISION_FILES = {"image": DECISION_FILE, "audio": "decision_speech.json"}
SLOTS = {"image": "detector", "audio": "speech_detector"}  # scan.json settings key of a kind
LABEL_NAMES = {"real": 0, "bonafide": 0, "bona_fide": 0, "bona-fide": 0, "fake": 1, "spoof": 1}
FOLDS = 5  # cross-validation folds (fewer when there are fewer groups)


@dataclass(frozen=True)
class Labelled:
    """One scanned file used for fitting: its scan.csv path, label (1 fake), group, raw score
    and method (a labels CSV's `method`: how a fake was made; '' when not given)."""

    path: str
    label: int
    group: str
    raw: float
    method: str = ""


@dataclass
class KindCalibration:
    """The decision fitted for one detector of a scan, with the evidence calibration.json keeps."""

    kind: str  # "image" or "audio"
    decision: Decision
    files: list[Labelled]
    left_out: dict[str, str]  # scan.csv path -> why it was not used
    in_sample: dict[str, Any]
    cross_validated: dict[str, Any]
    cv_files: list[tuple[float | None, str | None]]  # per file: out-of-fold P(fake), verdict


def path_label(path: str | Path) -> int | None:
    """0 / 1 from the folder nearest the file named real, bonafide (0) or fake, spoof (1);
    None when no folder of its path is so named."""
    for part in reversed(Path(path).parent.parts):
        label = LABEL_NAMES.get(part.lower())
        if label is not None:
            return label
    return None


def file_labels(paths: list[str], labels_csv: str | Path | None) -> dict[str, tuple[int, str, str]]:
    """scan.csv path -> (label, group, method) of the labelled ones: from the labels CSV
    (matched on the resolved path; group = its `pair`, else the file; method = its `method`), an
    ASVspoof protocol (any other file, `protocol_labels`) or, without one, from the path's
    folders (`path_label`; group = the file, no method)."""
    if labels_csv is None:
        found = ((p, path_label(p)) for p in paths)
        return {p: (label, p, "") for p, label in found if label is not None}
    csv_path = Path(labels_csv)
    if not csv_path.is_file():
        what = "a folder, not a file" if csv_path.is_dir() else "no such file"
        raise ConfigError(f"--labels {csv_path}: {what}; give a CSV with file,label columns")
    if csv_path.suffix.lower() != ".csv":  # an ASVspoof protocol: files named by utterance
        found = protocol_labels(paths, csv_path)
        hint = "its utterances are matched by file name without extension"
    else:
        from deepshield.data.sources.video_folder import read_labels_csv

        listed = {v.path.resolve(): (v.label, v.pair, v.method) for v in read_labels_csv(csv_path)}
        found = {p: listed[q] for p in paths if (q := Path(p).resolve()) in listed}
        hint = (
            f"none of its {len(listed)} files; e.g. {paths[0] if paths else ''} resolves to "
            f"{Path(paths[0]).resolve() if paths else ''}: run calibrate from the folder the "
            "scan ran in (its paths are relative to it), or scan with absolute paths"
        )
    if paths and not found:
        raise ConfigError(f"--labels {csv_path}: labels no file of the scan ({hint})")
    return found


def protocol_labels(paths: list[str], protocol: Path) -> dict[str, tuple[int, str, str]]:
    """scan.csv path -> (label, group, method) from an ASVspoof protocol (`SPEAKER UTTERANCE -
    SYSTEM bonafide|spoof`), a file matched by its name without extension; group = the speaker
    (folds never split a voice), method = the spoofing system (bonafide for bona fide)."""
    from deepshield.data.sources.asvspoof import read_protocol

    by_utt = {
        t.utterance: (t.label, t.speaker, t.system if t.label else "bonafide")
        for t in read_protocol(protocol)
    }
    return {p: by_utt[Path(p).stem] for p in paths if Path(p).stem in by_utt}


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def file_raw(row: dict[str, str], kind: str, settings: dict[str, Any]) -> tuple[float | None, str]:
    """(raw file score, '') of a scan.csv row scored by the `kind` detector, (None, why) when it
    has none, (None, '') when the row is not that detector's file."""
    is_visual = row["kind"] in ("image", "video")
    if kind == "image" and not is_visual:
        return None, ""
    if kind == "audio":
        if row["kind"] == "video":
            if settings.get("detector"):
                return None, ""  # its pictures are the image detector's file
            return None, "a video's sound: its label is the pictures'; calibrate on audio files"
        if row["kind"] != "audio":
            return None, ""
    if row["verdict"] == "error":
        return None, f"error: {row['error']}"
    if row["verdict"] == "no_face":
        return None, "no face in any sampled frame"
    raw = _number(row["score_raw"])
    if raw is None and kind == "audio" and _number(row["score"]) is not None:
        scanned_with = (settings.get(SLOTS[kind]) or {}).get("decision", {})
        if not scanned_with.get("calibrated"):  # an earlier version's row: score is raw
            raw = _number(row["score"])
        else:
            return None, "no raw score (scanned by an earlier version): rescan the file"
    if raw is None:
        return None, f"no score ({row['note'] or 'none given'})"
    return raw, ""


def group_folds(y: np.ndarray, groups: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold index [N] of each file: whole groups dealt in turn to min(folds, groups) folds after
    a seeded shuffle, groups holding reals only, fakes only and both dealt one kind after the
    other (so each fold gets its share of each)."""
    names = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    labels_of = {g: set() for g in names}
    for g, label in zip(groups, y.tolist(), strict=True):
        labels_of[g].add(label)
    k = max(1, min(folds, len(names)))
    fold_of, turn = {}, 0
    for kind in ({0}, {1}, {0, 1}):
        for g in (g for g in order if labels_of[g] == kind):
            fold_of[g] = turn % k
            turn += 1
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


def face_conditions(run: RunDir, files: list[Labelled]) -> dict[str, Any]:
    """{"face_px": 5 %, 50 % and 95 % points of the files' median face widths (px, over every
    face row of a file in scan_frames.csv)} ({} without faces): what scan compares a new file
    with (`Decision.face_size_note`)."""
    from deepshield.runs.scan import FRAME_COLUMNS, complete_rows

    widths: dict[str, list[float]] = {f.path: [] for f in files}
    for r in complete_rows(run.file("scan_frames.csv"), FRAME_COLUMNS):
        if r["path"] in widths and r["x0"] and r["x1"]:
            widths[r["path"]].append(float(r["x1"]) - float(r["x0"]))
    medians = [float(np.median(w)) for w in widths.values() if w]
    if not medians:
        return {}
    p05, p50, p95 = np.percentile(medians, [5, 50, 95]).tolist()
    return {"face_px": {"p05": p05, "median": p50, "p95": p95, "files": len(medians)}}


def separation_caution(y: np.ndarray, raw: np.ndarray) -> str:
    """The caution of a detector whose raw file scores do not rise with fake on the fitting files
    (AUC <= 0.5): calibration cannot make it separate them ('' otherwise)."""
    area = auc(y, raw)
    if area > 0.5:
        return ""
    return (
        f"its raw file scores do not rise with fake on these files (AUC {area:.3f}, 0.5 is "
        "chance): it does not separate this material, and the calibrated P(fake) stays near "
        "the share of fakes (or runs against the raw score)"
    )


def left_out_counts(left: dict[str, str]) -> str:
    """'error 6, no label in x.csv 2': the files left out counted by reason, most first."""
    counts: dict[str, int] = {}
    for why in left.values():
        key = why.split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"count": k, "of": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def _by_method(files: list[Labelled], verdicts: list[str | None]) -> dict[str, dict[str, Any]]:
    """Fakes called real per method (a labels CSV's `method`), when the fakes name two or more."""
    methods = sorted({f.method for f in files if f.label == 1})
    if len(methods) < 2:
        return {}
    out = {}
    for m in methods:
        got = [v for f, v in zip(files, verdicts, strict=True) if f.label == 1 and f.method == m]
        got = [v for v in got if v is not None]
        out[m] = _rate(got.count("real"), len(got))
    return out


def verdict_rates(verdicts: list[str | None], y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Reals called fake, fakes called real and the unsure share of each class, counted with
    95 % Wilson intervals, over the files with a verdict (None: not estimated)."""
    reals = [v for v, label in zip(verdicts, y, strict=True) if label == 0 and v is not None]
    fakes = [v for v, label in zip(verdicts, y, strict=True) if label == 1 and v is not None]
    return {
        "reals_called_fake": _rate(reals.count("fake"), len(reals)),
        "reals_unsure": _rate(reals.count("unsure"), len(reals)),
        "fakes_called_real": _rate(fakes.count("real"), len(fakes)),
        "fakes_unsure": _rate(fakes.count("unsure"), len(fakes)),
    }


def cross_validated(
    files: list[Labelled],
    *,
    rule: str,
    calibration: str,
    band: float,
    folds: int = FOLDS,
    seed: int = 0,
    groups: str = "pair",
) -> tuple[dict[str, Any], list[tuple[float | None, str | None]]]:
    """(out-of-fold error rates, per file (P(fake), verdict) from the decision fitted without its
    fold; (None, None) where a fold's training files could not fit one). `groups`: what the
    files' groups are (pair, speaker), said when some group holds several files."""
    y = np.asarray([f.label for f in files])
    raw = np.asarray([f.raw for f in files], dtype=np.float64)
    fold = group_folds(y, [f.group for f in files], folds, seed)
    k = int(fold.max()) + 1
    out: list[tuple[float | None, str | None]] = [(None, None)] * len(files)
    failed = []
    for f in range(k if k > 1 else 0):
        test, train = fold == f, fold != f
        try:
            d = fit_decision(y[train], raw[train], rule=rule, calibration=calibration, band=band)
        except DeepshieldError as e:  # e.g. a fold's training files hold one class
            failed.append(f"fold {f + 1}: {' '.join(str(e).split())}")
            continue
        for i, p in zip(np.flatnonzero(test), d.calibrate(raw[test]), strict=True):
            out[i] = (float(p), d.verdict(float(p)))
    verdicts = [v for _, v in out]
    by_group = len({f.group for f in files}) < len(files)  # some groups hold several files
    summary = {
        "folds": k if k > 1 else 0,
        "groups": groups if by_group else "file",
        "seed": seed,
        **verdict_rates(verdicts, y),
        "fakes_called_real_by_method": _by_method(files, verdicts),
        "not_estimated": sum(v is None for v in verdicts),
        "failed_folds": failed,
    }
    if k < 2:
        summary["failed_folds"] = ["fewer than 2 groups: nothing to hold out"]
    return summary, out


def _in_sample(decision: Decision, files: list[Labelled]) -> dict[str, Any]:
    """decision_metrics on the fitting files, and the verdict counts of the decision on them."""
    y = np.asarray([f.label for f in files])
    raw = np.asarray([f.raw for f in files], dtype=np.float64)
    verdicts = [decision.verdict(float(p)) for p in decision.calibrate(raw)]
    return {
        **verdict_rates(verdicts, y),
        "auc_raw": auc(y, raw),
        **decision_metrics(y, raw, decision),
    }


def _fitted_for(kind: str, det: dict[str, Any], settings: dict[str, Any], run: RunDir) -> dict:
    """What a scan must share with this scan to use its decision: detector and settings."""
    out = {
        "kind": kind,
        "model": det["model"],
        "weights_sha256": det["weights_sha256"],
        "frames": settings["frames"],
        "scan": str(run.path),
    }
    if kind == "image":
        out |= {"faces": settings["faces"], "detect_every": settings.get("detect_every", 1)}
    return out


def _open_scan(scan_dir: str | Path) -> tuple[RunDir, dict[str, Any]]:
    """The finished scan folder and its settings; ConfigError naming the fix otherwise."""
    run = RunDir(scan_dir)
    if not run.path.is_dir():
        raise ConfigError(f"{run.path}: no such folder; give a scan folder or a run folder")
    if run.manifest()["command"] != "scan":
        raise ConfigError(
            f"{run.path}: not a scan folder (no scan in its manifest); give the --out folder of "
            "`deepshield scan` run on labelled files, or a run folder written by train"
        )
    if not run.is_done("scan"):
        raise ConfigError(
            f"{run.path}: the scan did not finish; run the same scan command again to finish "
            "it, then calibrate"
        )
    return run, run.read_dict("scan.json", ("settings",))["settings"]


def calibrate_scan(
    scan_dir: str | Path,
    *,
    labels: str | Path | None = None,
    rule: str = "eer",
    calibration: str = "platt",
    band: float = UNSURE_BAND,
    folds: int = FOLDS,
    seed: int = 0,
) -> dict[str, KindCalibration]:
    """Fit a file-level decision per detector of a finished scan on its labelled files (module
    doc); write decision.json / decision_speech.json and calibration.json into the scan folder.
    ConfigError (nothing written) when no detector has files of both classes."""
    from deepshield.runs.scan import SCAN_COLUMNS, complete_rows

    operating_threshold([0, 1], [0.0, 1.0], rule)  # a bad rule fails before any work
    if folds < 2:
        raise ConfigError(f"--folds {folds}: give at least 2 (files held out per fold)")
    run, settings = _open_scan(scan_dir)
    rows = complete_rows(run.file("scan.csv"), SCAN_COLUMNS)
    label_of = file_labels([r["path"] for r in rows], labels)
    fits: dict[str, KindCalibration] = {}
    problems = []
    for kind, slot in SLOTS.items():
        det = settings.get(slot)
        if not det:
            continue
        files, left = [], {}
        for r in rows:
            raw, why = file_raw(r, kind, settings)
            if raw is None:
                if why:
                    left[r["path"]] = why
                continue
            if r["path"] not in label_of:
                left[r["path"]] = "no label" + (
                    f" in {labels}" if labels else " (no real/ or fake/ folder in its path)"
                )
                continue
            label, group, method = label_of[r["path"]]
            files.append(Labelled(r["path"], label, group, raw, method))
        n_fake = sum(f.label for f in files)
        n_real = len(files) - n_fake
        if min(n_real, n_fake) < 2:
            why = f": {reasons}" if (reasons := left_out_counts(left)) else ""
            problems.append(
                f"{det['model']}: {n_real} real and {n_fake} fake files with a score and a label "
                f"({len(left)} left out{why})"
            )
            continue
        y = np.asarray([f.label for f in files])
        raw = np.asarray([f.raw for f in files], dtype=np.float64)
        fitted = fit_decision(y, raw, rule=rule, calibration=calibration, band=band)
        decision = dataclasses.replace(
            fitted,
            level="file",
            fitted_for=_fitted_for(kind, det, settings, run),
            caution=separation_caution(y, raw),
            conditions=face_conditions(run, files) if kind == "image" else {},
            note=f"{calibration} calibration and the {rule} threshold fitted on the file scores "
            f"of {len(files)} labelled files scanned in {run.path}",
        )
        grouped = "speaker" if labels and Path(labels).suffix.lower() != ".csv" else "pair"
        cv, per_file = cross_validated(
            files, rule=rule, calibration=calibration, band=band, folds=folds, seed=seed,
            groups=grouped,
        )  # fmt: skip
        fits[kind] = KindCalibration(
            kind, decision, files, left, _in_sample(decision, files), cv, per_file
        )
    if not fits:
        why = "; ".join(problems) or "the scan has no detector"
        raise ConfigError(
            f"{run.path}: nothing to calibrate ({why}); scan at least 2 real and 2 fake files, "
            "labelled by --labels CSV (file,label[,pair]) or by real/ and fake/ folders"
        )
    _write(run, fits, labels)
    return fits


def _write(run: RunDir, fits: dict[str, KindCalibration], labels: Any) -> None:
    """decision files of the fitted kinds (a kind not fitted now loses the one written before)
    and calibration.json."""
    for kind, name in DECISION_FILES.items():
        if kind in fits:
            run.write_json(name, fits[kind].decision.to_dict())
        elif run.exists(name) and name in run.manifest()["files"]:
            run.file(name).unlink()  # an earlier calibration's, no longer true of this scan
            for plot in run.path.glob(f"plots/calibration_{kind}_*.png"):
                plot.unlink()
    report = {}
    for kind, fit in fits.items():
        p = fit.decision.calibrate([f.raw for f in fit.files])
        report[kind] = {
            "decision_file": DECISION_FILES[kind],
            "decision": fit.decision.to_dict(),
            "labels": str(labels) if labels else "real/ and fake/ folders in the paths",
            "in_sample": fit.in_sample,
            "cross_validated": fit.cross_validated,
            "left_out": fit.left_out,
            "files": [
                {"path": f.path, "label": f.label, "group": f.group, "method": f.method}
                | {"score_raw": f.raw}
                | {"p_fake": float(pk), "verdict": fit.decision.verdict(float(pk))}
                | {"cv_p_fake": cv_p, "cv_verdict": cv_v}
                for f, pk, (cv_p, cv_v) in zip(fit.files, p, fit.cv_files, strict=True)
            ],
        }
    run.write_json(CALIBRATION_FILE, report)
    write_calibration_report(run, fits)


# How a refusal reads for the command applying a decision (scan's words are the defaults).
SCAN_WORDS = {
    "here": "this scan",
    "own": "a run's own decision is used with --run",
    "fix": "scan with the detector and settings it was fitted with, or calibrate a scan made "
    "with these",
}


def check_decision(
    decision: Decision, have: dict[str, Any], source: str | Path, words: dict[str, str] = SCAN_WORDS
) -> None:
    """ConfigError naming the difference when `have` (kind, model, weights_sha256, frames,
    faces, detect_every of whoever applies it) is not what `decision` was fitted with (a
    file-level decision holds only for the scores it was fitted on); `words`: `SCAN_WORDS`'s
    phrases for the command applying it."""
    want = decision.fitted_for
    if decision.level != "file" or not want:
        raise ConfigError(
            f"--decision {source}: not fitted on a scan's file scores ({words['own']}); write "
            "one with `deepshield calibrate SCAN`"
        )
    differ = [k for k in want if k != "scan" and k in have and have[k] != want[k]]
    if differ:
        here = words["here"]
        shown = ", ".join(f"{k} {want[k]!s:.16} ({here}: {have[k]!s:.16})" for k in differ)
        raise ConfigError(f"--decision {source}: fitted for {shown}; {words['fix']}")


def file_decisions(
    folder: str | Path, have: dict[str, dict[str, Any] | None], words: dict[str, str] = SCAN_WORDS
) -> dict[str, Decision]:
    """kind -> the file-level decision `calibrate_scan` wrote in `folder` (a decision file names
    its folder) for each kind with detector settings in `have` ("image", "audio"; None: no
    such detector), each checked by `check_decision`; ConfigError when it holds none for them."""
    path = Path(folder)
    run = RunDir(path.parent if path.is_file() else path)
    found = {}
    for kind, name in DECISION_FILES.items():
        if have.get(kind) is None or not run.exists(name):
            continue
        decision = Decision.from_dict(run.read_json(name), str(run.file(name)))
        check_decision(decision, have[kind], run.file(name), words)
        found[kind] = decision
    if not found:
        raise ConfigError(
            f"--decision {folder}: holds no {' or '.join(DECISION_FILES.values())} for the "
            "detectors given; write it with `deepshield calibrate SCAN` on a scan of labelled "
            "files made with the same detector"
        )
    return found


def _settings(det: Detector | None, opts: ScanOptions) -> dict[str, Any] | None:
    """What a file-level decision must have been fitted with to apply to `det` scanning with
    `opts` (None without a detector)."""
    if det is None:
        return None
    have = {"kind": det.kind, "model": det.name, "weights_sha256": det.weights_sha256}
    return have | {"frames": opts.frames, "faces": opts.faces, "detect_every": opts.detect_every}


def with_decisions(
    folder: str | Path, det: Detector | None, speech: Detector | None, opts: ScanOptions
) -> tuple[Detector | None, Detector | None]:
    """The detectors with the file-level decisions `calibrate_scan` wrote in `folder` in place
    of their own (`file_decisions`, checked against each detector and `opts`)."""
    found = file_decisions(
        folder, {"image": _settings(det, opts), "audio": _settings(speech, opts)}
    )
    given = {"image": det, "audio": speech}
    for kind, decision in found.items():
        given[kind] = dataclasses.replace(given[kind], decision=decision)
    return given["image"], given["audio"]
