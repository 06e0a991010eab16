"""`deepshield scan`: media files -> a calibrated P(fake) and a verdict per file, with evidence.

Per file (image, video, audio): faces found and cropped as the detector was trained (media),
each face scored, calibrated by the run's decision; frame score = max over faces, video score =
mean over frames with a face; verdict fake / real / unsure from the decision's threshold and
band; `no_face` and `error` rows never get a score. Outputs in the --out folder: scan.csv (one
row per file, appended per file: a crash or Ctrl-C leaves a consistent CSV and a rerun skips
the files in it), scan_frames.csv (one row per sampled frame and face), faces/ and evidence/
(face thumbnails and Grad-CAM overlays on the original frames), scan.json and report.html.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from deepshield import media
from deepshield.errors import ConfigError, DataError, DeepshieldError
from deepshield.files import atomic_write_bytes, atomic_write_text, write_json
from deepshield.media.audio import AUDIO_EXTENSIONS, read_audio
from deepshield.media.degenerate import degenerate_reason
from deepshield.media.faces import Face, FaceMode
from deepshield.runs.decision import Decision, load_decision

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SCAN_COLUMNS = [
    "path",
    "kind",
    "score",
    "verdict",
    "faces",
    "frames",
    "error",
    "score_raw",
    "threshold",
    "frames_with_face",
    "score_max",
    "score_top_k",
    "audio_score",
    "audio_verdict",
    "audio_error",
    "note",
    "seconds",
    "cpu_seconds",
]
FRAME_COLUMNS = ["path", "frame", "time", "face", "x0", "y0", "x1", "y1", "score", "score_raw"]
OWN_FILES = ("scan.csv", "scan_frames.csv", "scan.json", "report.html")
OWN_DIRS = ("faces", "evidence")
OVERLAY_SIDE = 480  # longer side of a saved Grad-CAM overlay, px
AUDIO_RATE = 16000  # audio tracks are read at this rate, then resampled to the run's


# -- the output folder -------------------------------------------------------------------------
class ScanFolder:
    """The scan's --out folder, created and written only through this class (the one place to
    switch to the run layer's ownership manifest). A folder holding anything a scan does not
    write is refused, so no file a scan did not write is touched."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path}: is a file; give a folder for the scan's outputs")
        self.path.mkdir(parents=True, exist_ok=True)
        foreign = sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in OWN_FILES + OWN_DIRS
            and not (p.name.startswith(".") and p.name.endswith(".tmp"))  # atomic writes' temps
        )
        if foreign:
            raise ConfigError(
                f"--out {self.path}: holds files a scan did not write ({', '.join(foreign[:3])}); "
                "give an empty or new folder (or one a previous scan wrote, to resume it)"
            )

    def file(self, name: str) -> Path:
        """Path of one of the scan's files: OWN_FILES, or OWN_DIRS/<file> (folder created)."""
        top, _, rest = name.partition("/")
        if not (name in OWN_FILES or (top in OWN_DIRS and rest and "/" not in rest)):
            raise ValueError(f"{name!r} is not a file the scan writes")
        path = self.path / name
        if rest:
            path.parent.mkdir(exist_ok=True)
        return path


# -- detectors ---------------------------------------------------------------------------------
@dataclass
class Detector:
    """A detector ready to score: model (eval, on `device`), input `size` (H, W) or (T,),
    where it came from, its weights' SHA-256 and the decision that turns scores into verdicts."""

    model: nn.Module
    name: str
    kind: str
    size: tuple[int, ...]
    num_classes: int
    source: str
    weights_sha256: str
    decision: Decision
    device: torch.device
    waveform: Callable[[np.ndarray, int], torch.Tensor] | None = None  # speech: [T] -> [1, T']
    sample_rate: int = 16000  # speech: the rate the model was trained at

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings: name, kind, input size, source, weights digest, decision."""
        return {
            "model": self.name,
            "kind": self.kind,
            "input_size": list(self.size),
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            "decision": self.decision.to_dict(),
        }

    @torch.no_grad()
    def raw_scores(self, x: torch.Tensor) -> np.ndarray:
        """Model input [N, ...] -> raw P(fake) float64 [N]."""
        from deepshield.predict import fake_scores, predict_logits

        return fake_scores(predict_logits(self.model, x, device=self.device)).double().numpy()


def run_detector(run_dir: str | Path, device: torch.device, kind: str = "image") -> Detector:
    """The best model of a run folder, its input size (the service's rule) and its decision."""
    from deepshield.service.scanner import Scanner

    sc = Scanner(str(run_dir), device=device)
    if sc.kind != kind:
        flag = "--run" if kind == "image" else "--speech-run"
        raise ConfigError(f"{flag} {run_dir}: holds a {sc.kind} model; give a {kind} detector run")
    return Detector(
        sc.model,
        sc.name,
        sc.kind,
        sc.input_size,
        sc.num_classes,
        str(run_dir),
        sc.run.weights_sha256(),
        load_decision(run_dir),
        device,
        sc.waveform if sc.kind == "audio" else None,
        sc.sample_rate,
    )


def file_detector(name: str, weights: str | Path, device: torch.device) -> Detector:
    """A registry model with a weights file (e.g. meso4 + Meso4_DF.h5); uncalibrated at 0.5."""
    from deepshield import models

    weights = Path(weights)
    if not weights.is_file():
        raise ConfigError(f"--weights {weights}: no such file; give the detector's weights file")
    spec = models.spec(name)
    if spec.kind != "image":
        raise ConfigError(f"--model {name}: a {spec.kind} model; scan takes image detectors here")
    model = models.load_weights(models.create(name), weights).to(device).eval()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    decision = load_decision(None)
    size = tuple(spec.input_size[-2:])
    return Detector(model, name, "image", size, 2, str(weights), digest, decision, device)


# -- files -------------------------------------------------------------------------------------
def file_kind(path: Path) -> str | None:
    """'image' / 'video' / 'audio' from the extension; None for other files."""
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in media.VIDEO_EXTENSIONS:
        return "video"
    return "audio" if ext in AUDIO_EXTENSIONS else None


def list_files(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """(files to scan in order, files skipped): named files as given, folders walked recursively
    (sorted; only media extensions, hidden files skipped). ConfigError for a missing path."""
    files, skipped = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                hidden = any(part.startswith(".") for part in f.relative_to(p).parts)
                if hidden or file_kind(f) is None:
                    skipped.append(str(f))
                else:
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such file or folder; check the path")
    return files, skipped


def in_shard(path: str, shard: tuple[int, int] | None) -> bool:
    """Shard (i, n), 0 <= i < n: the file's sha1(path) mod n == i (stable across runs)."""
    if shard is None:
        return True
    i, n = shard
    return int(hashlib.sha1(path.encode("utf-8")).hexdigest(), 16) % n == i


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N; ConfigError naming --shard otherwise."""
    if text is None:
        return None
    i, sep, n = text.partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (-1, 0)
    if not sep or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard {text!r}: give I/N with 0 <= I < N (e.g. 0/4 ... 3/4)")
    return shard


# -- scoring one file --------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanOptions:
    """How files are scanned: frames (and audio windows) per file, face mode, Grad-CAM frames
    per file, media bounds."""

    frames: int = 32
    faces: FaceMode = "largest"
    top_frames: int = 3  # frames per file with a Grad-CAM overlay
    limits: media.MediaLimits = field(default_factory=media.MediaLimits)


@dataclass(order=True)
class _Kept:
    """A frame kept for the evidence: its score first (heap order), then what to draw."""

    score: float
    index: int
    image: np.ndarray = field(compare=False)
    face: Face = field(compare=False)
    crop: np.ndarray = field(compare=False)


def file_id(path: str) -> str:
    """A file's name in faces/ and evidence/: the first 16 hex digits of sha1(path)."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def _frames(path: Path, kind: str, opts: ScanOptions) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time s, uint8 [H,W,3]) of a photo (one frame) or a video's sampled frames."""
    if kind == "image":
        yield 0, 0.0, media.read_media_image(path, opts.limits)
        return
    info = media.probe_video(path, opts.limits)
    indices = media.sample_indices(info.frames, frames=opts.frames)
    yield from media.iter_video_frames(info, indices, opts.limits)


def _crops_input(det: Detector, crops: list[np.ndarray]) -> torch.Tensor:
    """uint8 crops [S,S,3] -> [N,3,H,W] in [0, 1] at the detector's input size."""
    x = media.crops_to_tensor(crops)  # [N, 3, S, S]
    if tuple(x.shape[2:]) != det.size:
        x = torch.nn.functional.interpolate(x, size=det.size, mode="bilinear", antialias=True)
    return x


def _score_visual(
    det: Detector, path: Path, kind: str, opts: ScanOptions, out: ScanFolder
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(row fields, frame rows) of an image or video; thumbnails and overlays saved in out."""
    frame_rows: list[dict[str, Any]] = []
    frame_p: list[float | None] = []
    frame_raw: list[float | None] = []
    kept: list[_Kept] = []
    faces_total = 0
    for index, t, img in _frames(path, kind, opts):
        faces, crops = media.face_crops(img, det.size[0], mode=opts.faces)
        if not faces:
            frame_p.append(None)
            frame_raw.append(None)
            frame_rows.append({"path": str(path), "frame": index, "time": t})
            continue
        raw = det.raw_scores(_crops_input(det, crops))  # [F]
        p = det.decision.calibrate(raw)  # [F]
        faces_total += len(faces)
        frame_p.append(media.frame_score(p))
        frame_raw.append(media.frame_score(raw))
        for k, (face, pk, rk) in enumerate(zip(faces, p, raw, strict=True)):
            x0, y0, x1, y1 = face.box
            frame_rows.append(
                {"path": str(path), "frame": index, "time": t, "face": k, "x0": x0, "y0": y0}
                | {"x1": x1, "y1": y1, "score": float(pk), "score_raw": float(rk)}
            )
        best = int(np.argmax(p))
        item = _Kept(float(p[best]), index, img, faces[best], crops[best])
        (heapq.heappush if len(kept) < opts.top_frames else heapq.heappushpop)(kept, item)
    agg = media.video_score(frame_p)
    agg_raw = media.video_score(frame_raw)
    row: dict[str, Any] = {
        "faces": faces_total,
        "frames": agg.frames,
        "frames_with_face": agg.frames_with_face,
        "score": agg.score,
        "score_raw": agg_raw.score,
        "score_max": agg.max,
        "score_top_k": agg.top_k_mean,
    }
    if agg.score is None:
        row["verdict"] = "no_face"
    else:
        row["verdict"] = det.decision.verdict(agg.score)
        _save_evidence(det, str(path), sorted(kept, reverse=True), out, opts)
    return row, frame_rows


def _save_evidence(
    det: Detector, path: str, kept: list[_Kept], out: ScanFolder, opts: ScanOptions
) -> None:
    """The top face's thumbnail (faces/<id>.jpg) and a Grad-CAM overlay of the fake class on each
    kept frame (evidence/<id>_<frame>.jpg), drawn on the original frame around the crop."""
    fid = file_id(path)
    _save_jpeg(kept[0].crop, out.file(f"faces/{fid}.jpg"))
    if getattr(det.model, "cam_layer", None) is None:
        return  # a model without a conv layer: no Grad-CAM
    for k in kept:
        _save_jpeg(_overlay_on_frame(det, k, opts), out.file(f"evidence/{fid}_{k.index}.jpg"))


def _overlay_on_frame(det: Detector, k: _Kept, opts: ScanOptions) -> np.ndarray:
    """uint8 [h,w,3]: the frame (longer side <= OVERLAY_SIDE) with Grad-CAM of the fake class
    over the face crop's square and the face box drawn."""
    from deepshield.explain import grad_cam
    from deepshield.report.overlay import overlay

    x = _crops_input(det, [k.crop]).to(det.device)  # [1, 3, H, W]
    target = 0 if det.num_classes == 1 else 1
    with torch.enable_grad():
        cam = grad_cam(det.model, x, target)[0].detach().cpu()  # [H, W] in [0, 1]
    h, w = k.image.shape[:2]
    left, top, side = (0, 0, 0) if opts.faces == "none" else media.crop_box(k.face.box, w, h)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = (h, w) if not side else (min(top + side, h), min(left + side, w))
    size = (h, w) if not side else (side, side)
    sq = torch.nn.functional.interpolate(cam[None, None], size=size, mode="bilinear")[0, 0]
    region = torch.tensor(k.image[y0:y1, x0:x1]).permute(2, 0, 1).float() / 255  # [3, h', w']
    heat = sq[y0 - top : y1 - top, x0 - left : x1 - left] if side else sq  # [h', w']
    frame = k.image.copy()
    frame[y0:y1, x0:x1] = overlay(region, heat, alpha=0.4, as_uint8=True)
    pic = Image.fromarray(frame)
    if side:
        ImageDraw.Draw(pic).rectangle(k.face.box, outline=(255, 255, 255), width=max(2, w // 300))
    scale = min(1.0, OVERLAY_SIDE / max(w, h))
    if scale < 1.0:
        pic = pic.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(pic)


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=88)
    atomic_write_bytes(path, buf.getvalue())


def _score_audio(speech: Detector, path: Path, opts: ScanOptions) -> media.VideoScore:
    """Calibrated P(fake) of the file's first audio track: mean (and max) over windows of the
    run's clip length, at most `opts.frames` of them evenly spaced (the last window, when shorter
    than half a clip, is left out unless it is the only one; a short clip is tiled). Read by the
    one audio reader; a degenerate track (`media.degenerate`) gets no score, with the `reason`;
    otherwise `reason` holds the reader's record of the file."""
    wave, record = read_audio(path, rate=AUDIO_RATE)  # mono [T]
    step = max(1, round(speech.size[0] * AUDIO_RATE / speech.sample_rate))  # samples per window
    record = replace(record, kept_samples=min(len(wave), step), clip_samples=step)
    reason = degenerate_reason(record)
    if reason:
        return media.VideoScore(None, None, None, 1, 0, 0, f"{reason}: nothing to judge")
    starts = np.arange(0, max(len(wave) - step // 2, 1), step)
    if len(starts) > opts.frames:
        starts = starts[np.linspace(0, len(starts) - 1, opts.frames).round().astype(int)]
    x = torch.cat([speech.waveform(wave[s : s + step], AUDIO_RATE) for s in starts])  # [W, T']
    scores = media.video_score(speech.decision.calibrate(speech.raw_scores(x)).tolist())
    return replace(scores, reason=record.summary())


def _one_line(e: BaseException) -> str:
    """The error of a file as one line: a DeepshieldError's message (file + fix), else the
    unexpected error's type and message."""
    if isinstance(e, DeepshieldError):
        return " ".join(str(e).split())
    return " ".join(f"unexpected {type(e).__name__}: {e}; please report it with the file".split())


def scan_file(
    path: Path,
    det: Detector | None,
    speech: Detector | None,
    opts: ScanOptions,
    out: ScanFolder,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scan.csv row, scan_frames.csv rows) of one file; errors become the row's `error`."""
    kind = file_kind(path) or "unknown"
    row: dict[str, Any] = {"path": str(path), "kind": kind}
    frames: list[dict[str, Any]] = []
    start, cpu = time.perf_counter(), time.process_time()
    try:
        if kind in ("image", "video") and det is not None:
            row["threshold"] = det.decision.threshold
            fields, frames = _score_visual(det, path, kind, opts, out)
            row.update(fields)
        elif kind == "audio" or (kind == "video" and speech is not None):  # sound only
            if speech is None:
                raise ConfigError(f"{path}: an audio file; pass --speech-run RUN to scan it")
            row["threshold"] = speech.decision.threshold
            agg = _score_audio(speech, path, opts)
            row.update(score=agg.score, score_max=agg.max, frames=agg.frames, note=agg.reason)
            row["verdict"] = speech.decision.verdict(agg.score) or "unsure"
        elif kind in ("image", "video"):
            raise ConfigError(f"{path}: no image detector given; pass --run or --model")
        else:
            raise DataError(
                f"{path}: not an image, video or audio file (extension {path.suffix or 'none'}); "
                "give a photo, a video or an audio file"
            )
    except Exception as e:  # one bad file becomes a row; the scan goes on
        row.update(verdict="error", error=_one_line(e), score=None, score_raw=None)
        frames = []
    if kind == "video" and det is not None and speech is not None:  # even when no picture
        _add_audio_track(row, path, speech, opts)
    row["seconds"] = round(time.perf_counter() - start, 3)  # wall
    row["cpu_seconds"] = round(time.process_time() - cpu, 3)  # all threads of the process
    return row, frames


def _add_audio_track(row: dict[str, Any], path: Path, speech: Detector, opts: ScanOptions) -> None:
    """audio_score / audio_verdict of a video's audio track (audio_error when it has none)."""
    try:
        agg = _score_audio(speech, path, opts)
        row.update(audio_score=agg.score, audio_verdict=speech.decision.verdict(agg.score))
        if agg.score is None:
            row.update(audio_verdict="unsure", note=f"audio: {agg.reason}")
    except Exception as e:  # a bad audio track is noted; the visual verdict stands
        row["audio_error"] = _one_line(e)


# -- CSV files that survive a crash --------------------------------------------------------------
def _cell(v: Any) -> Any:
    return "" if v is None else v


def append_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Append rows (header first when new) with one O_APPEND write + fsync; a partial last line
    left by a crash is cut by `complete_rows` when the scan reopens the file."""
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        w.writeheader()
    w.writerows({c: _cell(r.get(c)) for c in columns} for r in rows)
    data = buf.getvalue().encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Rows of a CSV this scan wrote, after cutting a partial last line; ConfigError when its
    header is not `columns` (a file from another version or tool)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with open(path, "r+b") as f:  # the line a crash interrupted
            f.truncate(cut)
        data = data[:cut]
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    if data and reader.fieldnames != columns:
        raise ConfigError(
            f"{path}: its columns {reader.fieldnames} are not a scan's {columns[:4]}...; "
            "give another --out"
        )
    return list(reader)


def resume_state(out: ScanFolder) -> set[str]:
    """Paths already in scan.csv; frame rows of files not in it (a crash between the two
    appends) are dropped from scan_frames.csv."""
    done = {r["path"] for r in complete_rows(out.file("scan.csv"), SCAN_COLUMNS)}
    frames_csv = out.file("scan_frames.csv")
    frames = complete_rows(frames_csv, FRAME_COLUMNS)
    keep = [r for r in frames if r["path"] in done]
    if len(keep) < len(frames):
        buf = io.StringIO()
        w = csv.DictWriter(buf, FRAME_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(keep)
        atomic_write_text(frames_csv, buf.getvalue())
    return done


# -- the workflow --------------------------------------------------------------------------------
@dataclass
class ScanSummary:
    """What a scan call did: rows written now, skipped as already scanned, verdict counts."""

    out: Path
    scanned: int
    resumed: int
    counts: dict[str, int]
    rows: list[dict[str, Any]]
    wall_s: float
    cpu_s: float
    single_error: str | None = None


def _check_settings(out: ScanFolder, settings: dict[str, Any]) -> None:
    """A scan.json from an earlier call must hold the same detector, decision and sampling."""
    import json

    path = out.file("scan.json")
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("settings", {})
    except (json.JSONDecodeError, AttributeError):
        return

    def same(key: str) -> bool:  # a detector is its weights and decision, wherever it lies
        a, b = old.get(key), settings.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            return {**a, "source": None} == {**b, "source": None}
        return a == b

    diff = [k for k in ("detector", "speech_detector", "frames", "faces") if not same(k)]
    if diff:
        raise ConfigError(
            f"--out {out.path}: holds a scan made with other settings ({', '.join(diff)}); "
            "give another --out, or the same settings to resume it"
        )


def scan(
    paths: list[str | Path],
    out: str | Path,
    *,
    detector: Detector | None,
    speech: Detector | None = None,
    opts: ScanOptions | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: Callable[[list[Path]], Any] | None = None,
) -> ScanSummary:
    """Scan files and folders into `out`; files already in its scan.csv are skipped (resume)."""
    from deepshield.runs.scan_report import write_report

    opts = opts or ScanOptions()
    files, skipped = list_files(paths)
    single = len(paths) == 1 and len(files) == 1 and not Path(paths[0]).is_dir()
    files = [f for f in files if in_shard(str(f), shard)][:limit]
    folder = ScanFolder(out)
    settings = {
        "detector": detector.describe() if detector else None,
        "speech_detector": speech.describe() if speech else None,
        "frames": opts.frames,
        "faces": opts.faces,
        "shard": list(shard) if shard else None,
        "limit": limit,
    }
    _check_settings(folder, settings)
    done = resume_state(folder)
    todo = [f for f in files if str(f) not in done]
    write_json(folder.file("scan.json"), {"settings": settings, "status": "running"})
    wall, cpu = time.perf_counter(), time.process_time()
    rows = []
    for f in progress(todo) if progress else todo:
        row, frame_rows = scan_file(f, detector, speech, opts, folder)
        append_rows(folder.file("scan_frames.csv"), FRAME_COLUMNS, frame_rows)
        append_rows(
            folder.file("scan.csv"), SCAN_COLUMNS, [row]
        )  # last: the file counts as scanned
        rows.append(row)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    all_rows = complete_rows(folder.file("scan.csv"), SCAN_COLUMNS)
    counts: dict[str, int] = {}
    for r in all_rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = ScanSummary(folder.path, len(rows), len(files) - len(todo), counts, rows, wall, cpu)
    write_json(
        folder.file("scan.json"),
        {
            "settings": settings,
            "status": "complete",
            "counts": counts,
            "not_scanned": skipped,
            "this_call": {"scanned": len(rows), "resumed": summary.resumed}
            | {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)},
            "files": [_typed(r) for r in all_rows],
        },
    )
    write_report(folder, settings, all_rows)
    if single:
        only = next((r for r in all_rows if r["path"] == str(files[0])), None) if files else None
        if only is not None and only["verdict"] == "error":
            summary.single_error = only["error"]
    return summary


NUMBER_COLUMNS = {"faces": int, "frames": int, "frames_with_face": int}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A scan.csv row with numbers as numbers and empty cells as None."""
    text = {"path", "kind", "verdict", "error", "audio_verdict", "audio_error", "note"}
    return {
        k: None if v == "" else v if k in text else NUMBER_COLUMNS.get(k, float)(v)
        for k, v in row.items()
    }
