"""`deepshield robustness RUN`: a trained detector under everyday processing, and shortcut checks.

The grid (`data.processing`: JPEG, WebP, resize, blur, noise, crop, chains for images; resampling,
noise at an SNR, a telephone band, Vorbis / Opus / MP3 for speech) runs the REAL encoders on the
run's split and scores every setting with the run's model: AUC, EER, and the actual error rates
at the run's threshold on its calibrated P(fake) (decision.json; the explicit uncalibrated
decision when it has none). Files: everyday_<grid>.json, plots/everyday_<grid>.png, the report
section everyday_<grid>; finished settings are kept and a re-run resumes after the last one.
Video-folder runs add video-level numbers (frame score = max over its crops, video score = mean
over its frames, as `metrics.video_metrics`).

The shortcut checks ask whether the detector separates the classes by how their files were stored:
(a) format: both classes through the same lossless (PNG / 16-bit PCM) and the same light lossy
encoder (JPEG 95 / Vorbis at level 0.1); (b) resolution (images: both downscaled to one common
size, half the side, and back; speech: both band-limited to one common rate, 8 kHz); (c) video
runs: each real/fake pair of the split re-encoded with the same x264 CRF (PyAV). Files:
shortcuts.json and the report section shortcuts.

Scoring goes through the attack engine's batch loop (`attacks.evaluate.robust_accuracy`), with the
processing step in place of the attack: one scoring path for attacks and processing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshield.attacks.evaluate import robust_accuracy
from deepshield.data.processing import Transform, grid_specs, parse_spec, pil_roundtrip
from deepshield.errors import ConfigError, RunError
from deepshield.precision import ambient_amp, precision_flags
from deepshield.report.html import figure, table
from deepshield.run import RunDir
from deepshield.runs.decision import Decision, load_decision

SHORTCUT_DROP = 0.10  # an AUC drop above this under identical re-encoding is flagged
PAIR_CRFS = (23, 40)  # the x264 CRFs of FaceForensics++ c23 / c40
METRICS = ("auc", "eer", "fake_passed_as_real", "real_flagged_as_fake")
SPLITS = ("train", "val", "test")
Log = Callable[[str], None]


@dataclass
class EvalSet:
    """The samples a grid processes: x [N,3,H,W] in [0,1] or [N,T] in [-1,1] (16 kHz), y [N];
    video / frame [N] ids of video-folder crops (else None) and the video names."""

    x: torch.Tensor
    y: torch.Tensor
    modality: str  # "image" | "speech"
    dataset: str
    split: str
    note: str
    video: torch.Tensor | None = None
    frame: torch.Tensor | None = None
    video_names: list[str] | None = None


def load_eval_set(
    dataset: str,
    options: dict[str, Any],
    split: str = "test",
    n: int | None = None,
    *,
    seed: int = 0,
    split_seed: int = 0,
) -> EvalSet:
    """`n` samples of `split` of `dataset` (loaded with `options`, split by `split_seed`),
    class-stratified by `seed`; all when n is None."""
    from deepshield import data
    from deepshield.data.splits import stratified_subset

    splits = data.load(dataset, seed=split_seed, **options)
    if splits.num_classes != 2:
        raise RunError(
            f"{dataset} has {splits.num_classes} classes: the robustness grid needs a "
            "two-class detector run (label 1 = fake)"
        )
    modality = "speech" if splits.modality == "audio" else "image"
    if modality == "speech" and splits.sample_rate not in (None, 16000):
        raise ConfigError(
            f"{dataset} is at {splits.sample_rate} Hz; the speech grid works at 16 kHz: "
            "load the data with rate=16000"
        )
    drawn = stratified_subset(splits.split(split), n, seed=seed, classes=splits.classes)
    x, y = drawn.data.tensors()
    meta = drawn.data.meta
    video = "video" in meta and "frame" in meta
    return EvalSet(
        x, y, modality, dataset, split, drawn.note,
        meta["video"] if video else None, meta["frame"] if video else None,
        splits.meta_names.get("video") if video else None,
    )  # fmt: skip


def processed_scores(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: Transform | None, batch_size: int
) -> np.ndarray:
    """Raw P(fake) [N] of `model` on x after `step` (None: x as it is), batch by batch through
    the attack engine's loop, the step standing in for the attack (its budget argument unused)."""
    if step is None:
        result = robust_accuracy(model, x, y, _unused, [0.0], batch_size)
    else:
        result = robust_accuracy(model, x, y, lambda m, xb, yb, e: step(xb), [1.0], batch_size)
    return result.scores[0].double().numpy()


def _unused(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    raise AssertionError("budget 0 is scored without processing")  # pragma: no cover


def setting_metrics(y: Any, raw: Any, decision: Decision, data: EvalSet) -> dict[str, Any]:
    """AUC and EER of raw P(fake) [N]; fakes passed as real and reals flagged as fake at the run's
    threshold on the calibrated P(fake); mean calibrated P(fake) per class; video level when the
    samples are crops of videos holding both classes."""
    from deepshield.metrics import auc, eer
    from deepshield.metrics.decision import rates_at

    y = np.asarray(y).reshape(-1)
    p = decision.calibrate(raw)
    r = rates_at(y, p, decision.threshold)
    row: dict[str, Any] = {
        "auc": auc(y, raw),
        "eer": eer(y, raw)[0],
        "fake_passed_as_real": r["fnr"],
        "real_flagged_as_fake": r["fpr"],
        "mean_p_real": float(p[y == 0].mean()),
        "mean_p_fake": float(p[y == 1].mean()),
    }
    if data.video is not None:
        from deepshield.metrics.video import video_rates

        ids, frames, names = data.video.numpy(), data.frame.numpy(), data.video_names
        row["video"] = video_rates(y, p, ids, frames, names, decision.threshold)
    return row


def grid_label(grid: str | Path) -> str:
    """The name of a grid's files: `quick`, `full`, or the YAML file's stem (plain characters)."""
    text = str(grid)
    if text in ("quick", "full"):
        return text
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).stem).strip("_.") or "grid"


def dataset_tag(dataset: str | None) -> str:
    """ "" for the run's own data; "_<kind>_<folder name>" for another dataset (file names)."""
    if not dataset:
        return ""
    kind, _, arg = dataset.partition(":")
    name = Path(arg).name if arg else ""
    return "_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(p for p in (kind, name) if p))


def _parsed(specs: Sequence[str], modality: str) -> list[Transform]:
    return [parse_spec(s, modality) for s in specs]


def _open(run: RunDir | str | Path) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


@dataclass
class Scoring:
    """What a grid or a shortcut check scores: the model, the samples, the run's decision, and
    (from a run) the parameters its results are keyed by."""

    model: nn.Module
    data: EvalSet
    decision: Decision
    batch_size: int = 64
    params: dict[str, Any] = field(default_factory=dict)


def _context(
    run: RunDir,
    split: str,
    n: int | None,
    seed: int,
    batch_size: int,
    device: str,
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
) -> Scoring:
    from deepshield.attacks.checks import check_count
    from deepshield.run import data_options
    from deepshield.runs.attack_sweep import run_config

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if n is not None:
        check_count("n", n)
    check_count("batch_size", batch_size)
    cfg = run_config(run)
    spec = dataset or cfg.dataset
    options = data_options(cfg.data_kwargs, dataset, data_kwargs)
    data = load_eval_set(spec, options, split, n, seed=seed, split_seed=cfg.seed)
    model = run.load_model("best").to(device)
    decision = load_decision(run.path)
    params = {
        "dataset": spec,
        "data_kwargs": options,
        "split": split,
        "n": n,
        "seed": seed,
        "weights_sha256": run.weights_sha256(),
        "decision": decision.to_dict(),
    }
    amp = ambient_amp(device)  # the caller's autocast; off is left out (older results resume)
    if amp != "off":
        params["amp"] = amp
    return Scoring(model, data, decision, batch_size, params)


def run_grid(
    run: RunDir | str | Path,
    grid: str | Path = "quick",
    *,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Score every setting of `grid` (quick, full or a YAML file of specs) on the run's split (of
    `dataset` with `data_kwargs` merged over the run's, when given), write everyday_<grid>.json,
    its plot and report section; return `grid_summary` (card-ready). Bad grids, specs and options
    raise before anything is written."""
    grid_specs(grid, "image")  # an unknown name or a malformed file fails before the data load
    run = _open(run)
    ctx = _context(run, split, n, seed, batch_size, device, dataset, data_kwargs)
    specs = grid_specs(grid, ctx.data.modality)
    steps = _parsed(specs, ctx.data.modality)
    label = grid_label(grid) + dataset_tag(dataset)
    name, step_name = f"everyday_{label}.json", f"everyday_{label}"
    params = {**ctx.params, "grid": str(grid), "specs": [s.spec for s in steps]}
    done = _resumed(run, name, params)
    run.set_done(step_name, False)
    result = {
        "params": params,
        "label": label,
        "modality": ctx.data.modality,
        "subset": ctx.data.note,
        "decision_note": ctx.decision.note,
        **done,
    }
    if result.get("clean") is None:
        result["clean"] = _score_row("clean", ctx, None)
        run.write_json(name, result)
    kept = {row["setting"] for row in result["rows"]}
    for step in steps:
        if step.spec in kept:
            continue
        if log:
            log(f"{step.spec} ...")
        result["rows"].append(_score_row(step.spec, ctx, step))
        run.write_json(name, result)  # a killed run resumes after this setting
    order = {s.spec: i for i, s in enumerate(steps)}
    result["rows"].sort(key=lambda r: order[r["setting"]])
    result["command"] = _command(run.path, grid, split, n, seed, dataset, data_kwargs)
    result["command"] += precision_flags(params.get("amp", "off"))
    run.write_json(name, result)
    _grid_report(run, label, result)
    run.set_done(step_name)
    return grid_summary(result)


def _resumed(run: RunDir, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """{"clean", "rows"} of an earlier run of the same grid and parameters, else empty ones."""
    if run.exists(name):
        try:
            old = run.read_dict(name, ("params", "rows"))
        except RunError:
            old = {}
        if old.get("params") == params:
            return {"clean": old.get("clean"), "rows": list(old["rows"])}
    return {"clean": None, "rows": []}


def _score_row(setting: str, ctx: Scoring, step: Transform | None) -> dict[str, Any]:
    """The metrics row of one setting (`step` None: the data as stored)."""
    raw = processed_scores(ctx.model, ctx.data.x, ctx.data.y, step, ctx.batch_size)
    return {"setting": setting, **setting_metrics(ctx.data.y, raw, ctx.decision, ctx.data)}


def _command(
    path: Path,
    grid: str | Path,
    split: str,
    n: int | None,
    seed: int,
    dataset: str | None,
    data_kwargs: Mapping[str, Any] | None,
) -> str:
    """The `deepshield robustness` command that reproduces a grid."""
    parts = [f"deepshield robustness {path} --grid {grid} --split {split} --seed {seed}"]
    if n is not None:
        parts.append(f"--n {n}")
    if dataset:
        parts.append(f"-d {dataset}")
    parts += [f"--data-arg {k}={v}" for k, v in (data_kwargs or {}).items()]
    return " ".join(parts)


def kind_and_strength(spec: str) -> tuple[str, float] | None:
    """("jpeg", 75.0) for "jpeg:75"; None for chains and band-passes (no single strength)."""
    kind, _, value = spec.partition(":")
    try:
        return (kind, float(value)) if kind != "chain" else None
    except ValueError:
        return None


def strength_panels(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{kind: (strengths, {metric: values})} of the rows with one strength, for the plot."""
    panels: dict[str, Any] = {}
    for row in rows:
        ks = kind_and_strength(row["setting"])
        if ks is None:
            continue
        xs, series = panels.setdefault(ks[0], ([], {m: [] for m in METRICS}))
        xs.append(ks[1])
        for m in METRICS:
            series[m].append(row[m])
    return panels


STRENGTH_AXIS = {
    "jpeg": "JPEG quality",
    "webp": "WebP quality",
    "resize": "resize factor",
    "crop": "crop fraction",
    "blur": "blur sigma (px)",
    "noise": "noise sigma",
    "resample": "resample rate (Hz)",
    "snr": "SNR (dB)",
    "vorbis": "Vorbis level",
    "opus": "Opus level",
    "mp3": "MP3 level",
}

EXPLAIN = (
    "Each setting applies the real encoder (Pillow for JPEG / WebP, libsndfile for the speech "
    "codecs) to every sample of both classes, then scores it with the run's model. AUC and EER "
    "do not depend on a threshold; 'fakes passed' and 'reals flagged' are the actual error rates "
    "at the run's own threshold, on {score}, so they show what a deployed detector would do. "
    "A detector whose AUC holds but whose error rates move has drifted off its threshold "
    "(recalibrating on processed data helps); a falling AUC means the processing removed what "
    "it looked at."
)


def _grid_report(run: RunDir, label: str, result: dict[str, Any]) -> None:
    """plots/everyday_<label>.png and the report section everyday_<label>."""
    from deepshield.report.plots import plot_strength_panels

    panels = {STRENGTH_AXIS.get(k, k): v for k, v in strength_panels(result["rows"]).items()}
    html = ""
    if panels:
        clean = {m: result["clean"][m] for m in METRICS}
        run.save_plot(plot_strength_panels(panels, clean), f"everyday_{label}")
        html = figure(f"plots/everyday_{label}.png", "metrics against processing strength")
    rows = [_table_row(r, result["clean"]) for r in [result["clean"], *result["rows"]]]
    decision = result["decision_note"]
    score = "the calibrated P(fake)" if result["params"]["decision"]["calibrated"] else (
        "the raw P(fake) (the run has no decision.json)")  # fmt: skip
    text = (
        f"<p class='muted'>{result['subset']} of the {result['params']['split']} split; "
        f"threshold: {decision}. {EXPLAIN.format(score=score)} Dashed lines: clean. Command: "
        f"<code>{result['command']}</code></p>"
    )
    run.add_section(f"everyday_{label}", f"Everyday processing ({label})",
                    table(rows, digits=3) + text + html, order=32)  # fmt: skip


def _table_row(row: dict[str, Any], clean: dict[str, Any]) -> dict[str, Any]:
    out = {
        "setting": row["setting"],
        "AUC": row["auc"],
        "AUC change": row["auc"] - clean["auc"],
        "EER": row["eer"],
        "fakes passed": row["fake_passed_as_real"],
        "reals flagged": row["real_flagged_as_fake"],
    }
    video = row.get("video")
    if video:
        out["video AUC"] = video["auc"]
        out["videos: fakes passed"] = video.get("fake_passed_as_real")
        out["videos: reals flagged"] = video.get("real_flagged_as_fake")
    return out


def grid_summary(result: dict[str, Any]) -> dict[str, Any]:
    """Card-ready: the clean metrics, the setting with the lowest AUC and the one passing the most
    fakes, the largest AUC drop, and one line saying so."""
    clean, rows = result["clean"], result["rows"]
    worst_auc = min(rows, key=lambda r: r["auc"])
    worst_pass = max(rows, key=lambda r: r["fake_passed_as_real"])
    out = {
        "grid": result["params"]["grid"],
        "settings": len(rows),
        "subset": result["subset"],
        "clean": {m: clean[m] for m in METRICS},
        "lowest_auc": {"setting": worst_auc["setting"], "auc": worst_auc["auc"]},
        "most_fakes_passed": {
            "setting": worst_pass["setting"],
            "fake_passed_as_real": worst_pass["fake_passed_as_real"],
        },
        "largest_auc_drop": clean["auc"] - worst_auc["auc"],
        "rows": [{"setting": r["setting"], **{m: r[m] for m in METRICS}} for r in rows],
        "command": result.get("command"),
    }
    passed = worst_pass["fake_passed_as_real"]
    most = (
        f"up to {passed:.3f} under {worst_pass['setting']}"
        if passed > clean["fake_passed_as_real"]
        else "no setting passes more"
    )
    out["line"] = (
        f"{result['label']} grid ({len(rows)} settings): AUC {clean['auc']:.3f} as stored, lowest "
        f"{worst_auc['auc']:.3f} under {worst_auc['setting']}; fakes passed as real at the run's "
        f"threshold {clean['fake_passed_as_real']:.3f} as stored, {most}"
    )
    return out


# ------------------------------------------------------------------------ shortcut checks


def _png(x: torch.Tensor) -> torch.Tensor:
    """Both classes as PNG: the 8-bit image, losslessly (Pillow)."""
    return pil_roundtrip(x, "PNG", 100)


def _pcm16(x: torch.Tensor) -> torch.Tensor:
    """Both classes as 16-bit PCM WAV through libsndfile (lossless but for the 16-bit rounding)."""
    import io

    import soundfile as sf

    rows = []
    for row in x.detach().cpu().numpy():
        buf = io.BytesIO()
        sf.write(buf, row, 16000, format="WAV", subtype="PCM_16")
        buf.seek(0)
        rows.append(sf.read(buf, dtype="float32")[0])
    return torch.from_numpy(np.stack(rows)).to(x.device, x.dtype)


def shortcut_settings(modality: str) -> list[tuple[str, str, Transform]]:
    """(check, what it does, transform) of the format and resolution shortcut checks."""
    if modality == "image":
        return [
            ("format", "both as PNG (lossless control)", Transform("png", _png)),
            ("format", "both as JPEG quality 95", parse_spec("jpeg:95")),
            ("resolution", "both at one common size: half the side, and back",
             parse_spec("resize:0.5")),
        ]  # fmt: skip
    return [
        ("format", "both as 16-bit PCM WAV (lossless control)", Transform("pcm16", _pcm16)),
        ("format", "both as Ogg Vorbis at level 0.1 (light)", parse_spec("vorbis:0.1", "speech")),
        ("resolution", "both at one common rate: 8 kHz, and back",
         parse_spec("resample:8000", "speech")),
    ]  # fmt: skip


MEANING = (
    "Here reals and fakes go through the same encoder, so nothing that tells them apart is added; "
    "a genuine detector keeps its separation under a light, identical re-encoding. A large drop "
    f"(AUC down by more than {SHORTCUT_DROP:.2f}, flagged) under the format check means the "
    "detector told the classes apart partly by how their files were stored (compression, "
    "format) rather than by what was generated: on data where both classes are stored alike, "
    "as in the field, it will do worse than its test numbers say. The lossless control should "
    "change nothing; a change there means the stored data are not plain 8-bit (16-bit) samples. "
    "A large drop under the resolution check means the separation lives in detail finer than "
    "the common size keeps: a shortcut when the two classes were collected at different sizes "
    "or rates (check where the data came from), otherwise a detector that any downscaling "
    "(every upload to a social network) defeats."
)


def shortcut_checks(
    run: RunDir | str | Path,
    *,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    crfs: Sequence[int] = PAIR_CRFS,
    dataset: str | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """The format and resolution checks (and, for video-folder runs, the same-CRF re-encoding of
    each real/fake pair of the split): shortcuts.json and the report section; returns the JSON."""
    from deepshield.media.encode import check_crf

    crfs = [check_crf(c) for c in crfs]
    run = _open(run)
    ctx = _context(run, split, n, seed, batch_size, device, dataset, data_kwargs)
    key = "shortcuts" + dataset_tag(dataset)
    run.set_done(key, False)
    clean, rows = shortcut_rows(ctx, log)
    result: dict[str, Any] = {
        "params": {**ctx.params, "crfs": crfs},
        "subset": ctx.data.note,
        "threshold": SHORTCUT_DROP,
        "clean": clean,
        "checks": rows,
        "pairs": pair_checks(ctx, crfs, log) if ctx.data.video is not None else None,
        "meaning": MEANING,
    }
    result["flagged"] = [r["setting"] for r in result["checks"] if r["flagged"]]
    run.write_json(f"{key}.json", result)
    _shortcut_report(run, key, result)
    run.set_done(key)
    return result


def shortcut_rows(ctx: Scoring, log: Log | None = None) -> tuple[dict, list[dict]]:
    """(the row as stored, one row per format / resolution check with its AUC drop and flag)."""
    clean = _score_row("as stored", ctx, None)
    rows = []
    for check, what, step in shortcut_settings(ctx.data.modality):
        if log:
            log(f"shortcut {check}: {what} ...")
        row = _score_row(step.spec, ctx, step)
        drop = clean["auc"] - row["auc"]
        rows.append({"check": check, "what": what, **row, "auc_drop": drop,
                     "flagged": bool(drop > SHORTCUT_DROP)})  # fmt: skip
    return clean, rows


def _shortcut_report(run: RunDir, key: str, result: dict[str, Any]) -> None:
    rows = [
        {
            "check": r["check"],
            "both classes": r["what"],
            "AUC": r["auc"],
            "AUC change": r["auc"] - result["clean"]["auc"],
            "mean P(fake) reals": r["mean_p_real"],
            "mean P(fake) fakes": r["mean_p_fake"],
            "flag": "SHORTCUT?" if r["flagged"] else "",
        }
        for r in result["checks"]
    ]
    clean = result["clean"]
    head = (
        f"<p>As stored: AUC {clean['auc']:.3f}, mean P(fake) reals {clean['mean_p_real']:.3f}, "
        f"fakes {clean['mean_p_fake']:.3f} ({result['subset']}).</p>"
    )
    html = head + table(rows, digits=3) + f"<p>{result['meaning']}</p>"
    if result["pairs"]:
        html += _pairs_html(result["pairs"])
    if result["flagged"]:
        html = f"<p><b>Possible shortcut: AUC fell by more than {SHORTCUT_DROP:.2f} under "
        html += f"{', '.join(result['flagged'])}.</b></p>" + html
    title = "Shortcut checks: reals and fakes stored alike"
    if key != "shortcuts":
        title += f" ({result['params']['dataset']})"
    run.add_section(key, title, html, order=33)


# -------------------------------------------------------------------- video pairs (CRF)


def _video_root(dataset: str) -> Path | None:
    """The folder (or labels.csv) of a `video-folder:PATH` dataset spec, else None."""
    kind, _, arg = dataset.partition(":")
    return Path(arg).expanduser() if kind == "video-folder" and arg else None


def pair_checks(ctx: Scoring, crfs: Sequence[int], log: Log | None = None) -> list[dict]:
    """Per real/fake pair of the split's videos: each video's score as stored and after both are
    re-encoded at each CRF (x264, PyAV), crops made as the dataset makes them."""
    from deepshield.data.sources.video_folder import list_videos

    root = _video_root(ctx.params["dataset"])
    if root is None or ctx.data.video is None or ctx.data.video_names is None:
        return []
    shown = {ctx.data.video_names[int(v)] for v in ctx.data.video.unique().tolist()}
    videos = [v for v in list_videos(root) if v.name in shown]
    out = []
    for pair in sorted({v.pair for v in videos}):
        members = [v for v in videos if v.pair == pair]
        if {v.label for v in members} != {0, 1}:
            continue
        if log:
            log(f"pair {pair}: re-encoding {len(members)} videos at CRF {list(crfs)} ...")
        out.append(_pair_row(ctx, pair, members, crfs))
    return out


def _pair_row(ctx: Scoring, pair: str, members: list[Any], crfs: Sequence[int]) -> dict:
    """{"pair", "videos": [{name, label, method, "as stored", "crf N": score, ...}]}."""
    from deepshield.media.encode import reencode_h264

    rows = []
    with tempfile.TemporaryDirectory(prefix="deepshield-crf-") as tmp:
        for v in members:
            row = {"video": v.name, "label": v.label, "method": v.method}
            row["as stored"] = _video_score(ctx, v.path)
            for crf in crfs:
                out = reencode_h264(v.path, Path(tmp) / f"{v.label}_{crf}.mp4", crf)
                row[f"crf {crf}"] = _video_score(ctx, out)
            rows.append(row)
    settings = ["as stored", *(f"crf {c}" for c in crfs)]
    gaps = {}
    for s in settings:
        real = [r[s] for r in rows if r["label"] == 0 and r[s] is not None]
        fake = [r[s] for r in rows if r["label"] == 1 and r[s] is not None]
        gaps[s] = float(np.mean(fake) - np.mean(real)) if real and fake else None
    return {"pair": pair, "videos": rows, "gap_fake_minus_real": gaps}


def _video_score(ctx: Scoring, path: Path) -> float | None:
    """Video P(fake) (calibrated): mean over frames of the max over the frame's crops, the crops
    made with the run's dataset options; None without a face."""
    from deepshield.data.sources.video_folder import video_crops
    from deepshield.files import file_digest

    kw = ctx.params["data_kwargs"]
    options = {
        "frames": int(kw.get("frames", 32)),
        "size": int(kw.get("size", 256)),
        "faces": str(kw.get("faces", "largest")),
    }
    arrays = video_crops(path, file_digest(path), **options)
    crops = torch.from_numpy(arrays["crops"]).permute(0, 3, 1, 2).float() / 255  # [K,3,S,S]
    if not len(crops):
        return None
    y = torch.zeros(len(crops), dtype=torch.long)
    p = ctx.decision.calibrate(processed_scores(ctx.model, crops, y, None, ctx.batch_size))
    frames = arrays["frame"]
    per_frame = [p[frames == f].max() for f in np.unique(frames)]
    return float(np.mean(per_frame))


def _pairs_html(pairs: list[dict[str, Any]]) -> str:
    rows = []
    for p in pairs:
        for v in p["videos"]:
            scores = {k: v[k] for k in v if k == "as stored" or k.startswith("crf")}
            rows.append({"pair": p["pair"], "video": v["video"], "label": v["label"], **scores})
        rows.append({"pair": p["pair"], "video": "gap: fake - real", "label": "",
                     **p["gap_fake_minus_real"]})  # fmt: skip
    return (
        "<h3>Video pairs re-encoded alike (x264, PyAV)</h3>"
        + table(rows, digits=3)
        + "<p class='muted'>Video P(fake), calibrated: the mean over sampled frames of the max "
        "over a frame's face crops. 'crf N': both videos of the pair decoded and encoded again "
        "with libx264 at CRF N (preset veryfast), crops made as the dataset makes them. A gap "
        "that shrinks or flips once both share one CRF was carried by the compression "
        "difference, not by the manipulation.</p>"
    )
