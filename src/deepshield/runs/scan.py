"""`deepshield scan`: media files -> a calibrated P(fake) and a verdict per file, with evidence.

Per file (image, video, audio): faces found and cropped as the detector was trained (media),
each face scored, calibrated by the run's decision; frame score = max over faces, video score =
mean over frames with a face; verdict fake / real / unsure from the decision's threshold and
band; `no_face` and `error` rows never get a score. Outputs in the --out folder: scan.csv (one
row per file, appended per file: a crash or Ctrl-C leaves a consistent CSV and a rerun skips
the files in it), scan_frames.csv (one row per sampled frame and face), faces/ and evidence/
(face thumbnails and Grad-CAM overlays on the original frames), scan.json and report.html.
The folder is a run folder (`deepshield.run`): it owns only the files its manifest lists, and
the `scan` marker is set after the last artifact. With `workers`, files are decoded, their faces
found and cropped in worker processes; the main process scores the crops, in file order.
With `engine="ray"`, Ray actors holding a detector replica run `scan_file` (`scan_ray`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import io
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from deepshield import media
from deepshield.errors import ConfigError, DataError, DeepshieldError, RunError
from deepshield.files import (
    atomic_write_bytes,
    atomic_write_csv,
    file_digest,
    file_identity,
    file_stamp,
    write_json,
)
from deepshield.media.audio import AUDIO_EXTENSIONS, NoAudioTrackError
from deepshield.media.extract import CropOptions, FileFaces
from deepshield.media.faces import Face, FaceMode
from deepshield.media.track import score_track
from deepshield.media.types import misnamed, sniff_file
from deepshield.precision import autocast, check_amp
from deepshield.progress import track
from deepshield.run import MANIFEST, RunDir, is_run_folder, open_run
from deepshield.runs.decision import Decision, load_decision

if TYPE_CHECKING:
    from deepshield.models.registry import ModelSpec

IMAGE_EXTENSIONS = (*media.images.IMAGE_EXTENSIONS, ".tif", ".tiff", ".gif")
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
    "bytes",
    "mtime",
    "sha256",
    "audio_score_raw",
]
FRAME_COLUMNS = ["path", "frame", "time", "face", "x0", "y0", "x1", "y1", "score", "score_raw"]
OUTPUTS = ("scan.csv", "scan_frames.csv", "scan.json", "report.html", "faces/", "evidence/")
COMMAND = "scan"  # the command recorded in the folder's manifest, and its final marker
OVERLAY_SIDE = 480  # longer side of a saved Grad-CAM overlay, px
ENGINES = ("local", "ray")  # where files are scanned: this machine, or Ray actors (scan_ray)
SCORE_BATCH = 64  # face crops per forward pass
SPLIT_BYTES = 1 << 20  # a video this large may be shared by the workers (`video_parts`)
RUN_OUTPUT = "deepshield output"  # why a file inside a run or scan folder is not scanned


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
    def raw_scores(self, x: torch.Tensor, amp: str = "off") -> np.ndarray:
        """Model input [N, ...] -> raw P(fake) float64 [N], the forward in `amp` precision."""
        from deepshield.predict import fake_scores, predict_logits

        with autocast(amp, self.device):
            logits = predict_logits(self.model, x, device=self.device)  # float32
        return fake_scores(logits).double().numpy()


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
        sample_rate=sc.sample_rate,
    )


SPEECH_RATE = 16000  # the rate of the registry's speech models (AASIST, mel_cnn)


def detector_spec(name: str) -> ModelSpec:
    """The registry spec of `name`; ConfigError unless it is an image or a speech detector."""
    from deepshield import models

    spec = models.spec(name)
    if spec.kind not in ("image", "audio"):
        raise ConfigError(
            f"--model {name}: a {spec.kind} model; scan takes image or speech detectors"
        )
    return spec


def file_detector(name: str, weights: str | Path, device: torch.device) -> Detector:
    """A registry detector with a weights file, uncalibrated at 0.5: an image model (e.g. meso4
    + Meso4_DF.h5) or a speech model (e.g. aasist_l + the official AASIST-L.pth), which sees
    16 kHz clips of its registry length."""
    from deepshield import models

    weights = Path(weights)
    if not weights.is_file():
        raise ConfigError(f"--weights {weights}: no such file; give the detector's weights file")
    spec = detector_spec(name)
    model = models.load_weights(models.create(name), weights).to(device).eval()
    digest = file_digest(weights)
    decision = load_decision(None)
    if spec.kind == "audio":
        (length,) = spec.input_size[-1:]
        return Detector(
            model, name, "audio", (length,), 2, str(weights), digest, decision, device, SPEECH_RATE
        )
    size = tuple(spec.input_size[-2:])
    return Detector(model, name, "image", size, 2, str(weights), digest, decision, device)


def detectors(
    run_dir: str | Path | None,
    pairs: list[tuple[str, str | Path]],
    speech_run: str | Path | None,
    device: torch.device,
) -> tuple[Detector | None, Detector | None]:
    """(image detector, speech detector) from the scan's flags: --run and --speech-run folders,
    and (model, weights) pairs, each filling the slot of its kind (e.g. meso4 and aasist_l
    together); ConfigError when a slot is given twice or none is given, before any model is
    loaded."""

    given: dict[str, list[str]] = {"image": [], "audio": []}
    if run_dir is not None:
        given["image"].append("--run")
    if speech_run is not None:
        given["audio"].append("--speech-run")
    for name, _ in pairs:
        given[detector_spec(name).kind].append(f"--model {name}")
    for kind, flags in given.items():
        if len(flags) > 1:
            what = "image" if kind == "image" else "speech"
            raise ConfigError(f"{' and '.join(flags)}: two {what} detectors; give one")
    if not pairs and run_dir is None and speech_run is None:
        raise ConfigError(
            "give a detector: --run RUN_DIR, --model NAME --weights FILE (an image model such "
            "as meso4, or a speech model such as aasist_l; one of each may be given) or "
            "--speech-run RUN_DIR"
        )
    det = run_detector(run_dir, device) if run_dir is not None else None
    speech = run_detector(speech_run, device, kind="audio") if speech_run is not None else None
    for name, weights in pairs:
        from_file = file_detector(name, weights, device)
        if from_file.kind == "image":
            det = from_file
        else:
            speech = from_file
    return det, speech


# -- files -------------------------------------------------------------------------------------
def file_kind(path: Path) -> str | None:
    """'image' / 'video' / 'audio' from the extension; None for other files."""
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in media.VIDEO_EXTENSIONS:
        return "video"
    return "audio" if ext in AUDIO_EXTENSIONS else None


def list_files(paths: list[str | Path]) -> tuple[list[Path], dict[str, str]]:
    """(files to scan in order, files skipped -> why: 'hidden', their extension, a link not
    followed or a deepshield run's output): named files as given, folders walked recursively
    (sorted; only media extensions, hidden files and folders, .ts files that are not MPEG-TS,
    broken links, linked folders and the output of deepshield runs inside, such as this scan's
    own --out, skipped). ConfigError for a missing path."""
    files, skipped = [], {}
    for p in map(Path, paths):
        if p.is_dir():
            runs = {
                m.parent for m in p.rglob(MANIFEST) if m.parent != p and is_run_folder(m.parent)
            }
            for f in sorted(q for q in p.rglob("*") if q.is_file() or q.is_symlink()):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    skipped[str(f)] = "hidden"
                elif not f.exists():
                    skipped[str(f)] = "broken link"
                elif f.is_dir():  # rglob does not walk into a linked folder (a loop may)
                    skipped[str(f)] = "linked folder (not followed)"
                elif runs.intersection(f.parents):
                    skipped[str(f)] = RUN_OUTPUT
                elif file_kind(f) is None:
                    skipped[str(f)] = f.suffix.lower() or "no extension"
                elif f.suffix.lower() == ".ts" and sniff_file(f) != "mpegts":
                    skipped[str(f)] = ".ts (not MPEG-TS)"  # e.g. TypeScript source
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
    per file, media bounds, `detect_every` k (faces searched in the whole frame on every
    k-th sampled frame, tracked around their last box in between; 1 = every frame) and `amp`,
    the precision face crops and audio windows are scored in (`deepshield.precision`; the
    Grad-CAM evidence is drawn in float32)."""

    frames: int = 32
    faces: FaceMode = "largest"
    top_frames: int = 3  # frames per file with a Grad-CAM overlay (0: no thumbnail, no overlay)
    limits: media.MediaLimits = field(default_factory=media.MediaLimits)
    detect_every: int = 1
    amp: str = "off"


@dataclass(order=True)
class _Kept:
    """A frame kept for the evidence: its score first (heap order), then what to draw."""

    score: float
    index: int
    image: np.ndarray = field(compare=False)  # the frame's view (longer side <= OVERLAY_SIDE)
    face: Face = field(compare=False)
    crop: np.ndarray = field(compare=False)


def file_id(path: str) -> str:
    """A file's name in faces/ and evidence/: the first 16 hex digits of sha1(path)."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Extraction:
    """A photo's or video's frames and faces (or the one-line error that stopped it), with the
    wall and CPU seconds it took where it was made (a worker process)."""

    faces: FileFaces | None
    error: str | None
    wall_s: float = 0.0
    cpu_s: float = 0.0


def _crop_options(det: Detector, opts: ScanOptions) -> CropOptions:
    """How the detector's face crops are made: square at its input height."""
    return CropOptions(size=det.size[0], mode=opts.faces, detect_every=opts.detect_every)


def extract(
    path: str,
    kind: str,
    crop: CropOptions,
    frames: int,
    limits: media.MediaLimits,
    part: tuple[int, int] = (0, 1),
) -> Extraction:
    """Decode `path` (its `part` of a video's sampled frames), find and crop its faces (a
    worker's job); errors become `error`."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        got = media.file_faces(
            path, kind, crop, frames=frames, view_side=OVERLAY_SIDE, limits=limits, part=part
        )
        faces, error = got, None
    except Exception as e:  # the file's row says what went wrong; the scan goes on
        faces, error = None, one_line(e)
    return Extraction(faces, error, time.perf_counter() - start, time.process_time() - cpu)


def _crops_input(det: Detector, crops: list[np.ndarray]) -> torch.Tensor:
    """uint8 crops [S,S,3] -> [N,3,H,W] in [0, 1] at the detector's input size."""
    x = media.crops_to_tensor(crops)  # [N, 3, S, S]
    if tuple(x.shape[2:]) != det.size:
        x = torch.nn.functional.interpolate(x, size=det.size, mode="bilinear", antialias=True)
    return x


def _face_scores(det: Detector, crops: list[np.ndarray], amp: str) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated, raw) P(fake) float64 [N] of N face crops, scored SCORE_BATCH at a time in
    `amp` precision."""
    if not crops:
        return np.zeros(0), np.zeros(0)
    raw = np.concatenate(
        [
            det.raw_scores(_crops_input(det, crops[i : i + SCORE_BATCH]), amp)
            for i in range(0, len(crops), SCORE_BATCH)
        ]
    )
    return det.decision.calibrate(raw), raw


def _score_visual(
    det: Detector, path: Path, got: FileFaces, opts: ScanOptions, out: RunDir
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(row fields, frame rows) of an image or video; thumbnails and overlays saved in out."""
    frame_rows: list[dict[str, Any]] = []
    frame_p: list[float | None] = []
    frame_raw: list[float | None] = []
    kept: list[_Kept] = []
    p_all, raw_all = _face_scores(det, [c for ff in got.frames for c in ff.crops], opts.amp)
    at = 0
    for ff, view in zip(got.frames, got.views, strict=True):
        index, t, faces = ff.index, ff.time, ff.faces
        if not faces:
            frame_p.append(None)
            frame_raw.append(None)
            frame_rows.append({"path": str(path), "frame": index, "time": t})
            continue
        p, raw = p_all[at : at + len(faces)], raw_all[at : at + len(faces)]  # [F]
        at += len(faces)
        frame_p.append(media.frame_score(p))
        frame_raw.append(media.frame_score(raw))
        for k, (face, pk, rk) in enumerate(zip(faces, p, raw, strict=True)):
            x0, y0, x1, y1 = face.box
            frame_rows.append(
                {"path": str(path), "frame": index, "time": t, "face": k, "x0": x0, "y0": y0}
                | {"x1": x1, "y1": y1, "score": float(pk), "score_raw": float(rk)}
            )
        best = int(np.argmax(p))
        item = _Kept(float(p[best]), index, view, faces[best], ff.crops[best])
        (heapq.heappush if len(kept) < opts.top_frames else heapq.heappushpop)(kept, item)
    agg_raw = media.video_score(frame_raw)
    agg = det.decision.file_score(media.video_score(frame_p), agg_raw)
    row: dict[str, Any] = {
        "faces": at,
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
        row["verdict"], row["note"] = det.decision.explained_verdict(agg.score)
        if det.decision.conditions:  # a file-level decision: faces unlike its files noted
            add_note(row, det.decision.face_size_note(media.median_face_width(got.frames)))
        full = (got.width, got.height)
        _save_evidence(det, str(path), sorted(kept, reverse=True), out, opts, full)
    add_note(row, media.interlace_note(got.interlaced))
    if got.photo_frames > 1:  # animated, or TIFF pages: the others were not looked at
        add_note(row, f"{got.photo_frames} frames or pages in the file: only the first was scanned")
    return row, frame_rows


def add_note(row: dict[str, Any], text: str | None) -> None:
    """Append `text` (when there is one) to the row's note, "; " between notes."""
    if text:
        row["note"] = "; ".join(filter(None, (row.get("note"), text)))


def _save_evidence(
    det: Detector,
    path: str,
    kept: list[_Kept],
    out: RunDir,
    opts: ScanOptions,
    full: tuple[int, int],
) -> None:
    """The top face's thumbnail (faces/<id>.jpg) and a Grad-CAM overlay of the fake class on each
    kept frame (evidence/<id>_<frame>.jpg), drawn on the frame around the crop; `full` is the
    (width, height) of the frame the face boxes refer to; nothing with `opts.top_frames` 0."""
    if not kept:
        return
    fid = file_id(path)
    _save_jpeg(kept[0].crop, out.output(f"faces/{fid}.jpg"))
    if getattr(det.model, "cam_layer", None) is None:
        return  # a model without a conv layer: no Grad-CAM
    for k in kept:
        pic = _overlay_on_frame(det, k, opts, full)
        _save_jpeg(pic, out.output(f"evidence/{fid}_{k.index}.jpg"))


def _overlay_on_frame(
    det: Detector, k: _Kept, opts: ScanOptions, full: tuple[int, int]
) -> np.ndarray:
    """uint8 [h,w,3]: the frame's view with Grad-CAM of the fake class over the face crop's
    square (from the full frame's coordinates, scaled to the view) and the face box drawn."""
    from deepshield.explain import grad_cam
    from deepshield.report.overlay import overlay

    x = _crops_input(det, [k.crop]).to(det.device)  # [1, 3, H, W]
    target = 0 if det.num_classes == 1 else 1
    with torch.enable_grad():
        cam = grad_cam(det.model, x, target)[0].detach().cpu()  # [H, W] in [0, 1]
    h, w = k.image.shape[:2]
    s = w / full[0]  # view px per frame px
    left, top, side = (0, 0, 0) if opts.faces == "none" else media.crop_box(k.face.box, *full)
    left, top, side = round(left * s), round(top * s), max(1, round(side * s)) if side else 0
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
        box = [v * s for v in k.face.box]
        ImageDraw.Draw(pic).rectangle(box, outline=(255, 255, 255), width=max(2, w // 300))
    return np.asarray(pic)


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=88)
    atomic_write_bytes(path, buf.getvalue())


def _score_audio(
    speech: Detector, path: Path, opts: ScanOptions
) -> tuple[media.VideoScore, media.VideoScore, list[dict[str, Any]]]:
    """(calibrated, raw) P(fake) of the file's first audio track (`media.track.score_track`: mean
    and max over at most `opts.frames` windows of the run's clip length; calibrated as the
    decision's level says, `Decision.file_score`) and its windows' scan_frames.csv rows (frame =
    window, time = its start in s, no face); a degenerate track gets no score and no window,
    with the `reason`; otherwise `reason` holds the reader's record of the file."""

    def scores(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        raw = speech.raw_scores(x, opts.amp)  # [W]
        return speech.decision.calibrate(raw), raw

    window, rate = speech.size[0], speech.sample_rate
    track = score_track(
        path, window=window, model_rate=rate, max_windows=opts.frames, scores=scores
    )
    windows = [
        {"path": str(path), "frame": i, "time": round(a, 3), "score": p, "score_raw": r}
        for i, ((a, _), p, r) in enumerate(
            zip(track.spans, track.window_p, track.window_raw, strict=True)
        )
    ]
    return speech.decision.file_score(track.p, track.raw), track.raw, windows


def one_line(e: BaseException) -> str:
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
    out: RunDir,
    got: Extraction | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(scan.csv row, scan_frames.csv rows) of one file; errors become the row's `error`.
    `got`: the file's frames and faces made by a worker (made here when None); its time is
    added to the row's."""
    kind = file_kind(path) or "unknown"
    row: dict[str, Any] = {"path": str(path), "kind": kind}
    with contextlib.suppress(OSError):  # an unreadable file gets its error row below
        row.update(file_identity(path))
    frames: list[dict[str, Any]] = []
    start, cpu = time.perf_counter(), time.process_time()
    before = (got.wall_s, got.cpu_s) if got is not None else (0.0, 0.0)
    try:
        why = misnamed(path, kind) if kind != "unknown" else None
        if why:  # the service refuses such an upload alike (media.types)
            raise DataError(why)
        if kind in ("image", "video") and det is not None:
            row["threshold"] = det.decision.threshold
            if got is None:
                crop = _crop_options(det, opts)
                got = extract(str(path), kind, crop, opts.frames, opts.limits)
            if got.error is not None:
                raise DataError(got.error)
            fields, frames = _score_visual(det, path, got.faces, opts, out)
            row.update(fields)
        elif kind == "audio" or (kind == "video" and speech is not None):  # sound only
            if speech is None:
                raise ConfigError(f"{path}: an audio file; pass --speech-run RUN to scan it")
            row["threshold"] = speech.decision.threshold
            agg, raw, frames = _score_audio(speech, path, opts)
            row.update(score=agg.score, score_raw=raw.score, score_max=agg.max)
            row.update(frames=agg.frames, note=agg.reason)
            if agg.score is None:
                row["verdict"] = "unsure"  # degenerate: agg.reason says why
            else:
                row["verdict"], why = speech.decision.explained_verdict(agg.score)
                row["note"] = "; ".join(filter(None, (why, agg.reason)))
        elif kind in ("image", "video"):
            raise ConfigError(f"{path}: no image detector given; pass --run or --model")
        else:
            raise DataError(
                f"{path}: not an image, video or audio file (extension {path.suffix or 'none'}); "
                "give a photo, a video or an audio file"
            )
    except Exception as e:  # one bad file becomes a row; the scan goes on
        row.update(verdict="error", error=one_line(e), score=None, score_raw=None)
        frames = []
    if kind == "video" and det is not None and speech is not None:  # even when no picture
        _add_audio_track(row, path, speech, opts)
    row["seconds"] = round(time.perf_counter() - start + before[0], 3)  # wall
    row["cpu_seconds"] = round(time.process_time() - cpu + before[1], 3)  # all threads, both
    return row, frames


def _add_audio_track(row: dict[str, Any], path: Path, speech: Detector, opts: ScanOptions) -> None:
    """audio_score / audio_verdict of a video's audio track (audio_error when it cannot be read;
    "no audio track" in `note` when it has none)."""
    try:
        agg, raw, _ = _score_audio(speech, path, opts)  # its frames rows are the picture's
        row.update(audio_score=agg.score, audio_verdict=speech.decision.verdict(agg.score))
        row["audio_score_raw"] = raw.score
        if agg.score is None:  # the pictures' notes kept
            row["audio_verdict"] = "unsure"
            add_note(row, f"audio: {agg.reason}")
    except NoAudioTrackError:  # a silent video: a fact, not an error
        add_note(row, "no audio track")
    except Exception as e:  # a bad audio track is noted; the visual verdict stands
        row["audio_error"] = one_line(e)


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
    """Rows of a CSV this scan wrote, after cutting a partial last line; a CSV of an earlier
    version (the first of `columns` only) is rewritten with them all, new cells empty;
    ConfigError when its header is anything else (a file from another tool)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        with open(path, "r+b") as f:  # the line a crash interrupted
            f.truncate(cut)
        data = data[:cut]
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    names = reader.fieldnames or []
    if data and names != columns and names != columns[: len(names)]:
        raise ConfigError(
            f"{path}: its columns {reader.fieldnames} are not a scan's {columns[:4]}...; "
            "give another --out"
        )
    rows = [{c: r.get(c) or "" for c in columns} for r in reader]
    if data and names != columns:  # written by an earlier version: upgraded in place
        atomic_write_csv(path, columns, rows)
    return rows


def _rehash(path: Path, row: dict[str, str], verify: bool) -> bool:
    """Whether a resume hashes `path` again to compare it with its scan.csv row: with `verify`
    every file still there (a row without a digest, an earlier version's, then differs); else
    only one whose size or time moved and whose row has a digest. A file that is gone is not
    hashed: its row stays as the record of what was scanned."""
    if not path.is_file():
        return False
    if verify:
        return True
    if not row["sha256"]:
        return False
    return file_stamp(path) != {"bytes": int(row["bytes"]), "mtime": row["mtime"]}


def _digest(path: Path) -> str | None:
    """The file's SHA-256; None when it cannot be read (it is rescanned: its row says why)."""
    try:
        return file_digest(path)
    except OSError:
        return None


VERIFY_BAR = "checking SHA-256 of scanned files"  # the progress bar of a resume's hashing


def resume_state(
    out: RunDir, files: list[Path], verify: bool = False
) -> tuple[set[str], list[str], int]:
    """(paths already in scan.csv, paths of `files` rescanned because their SHA-256 is no
    longer their row's, how many files were hashed to tell). `verify`: every file of `files`
    with a row is hashed (else only those whose size or time moved). The rows of changed files
    are dropped; so are frame rows of files not in scan.csv (a crash between the two appends)."""
    rows = complete_rows(out.file("scan.csv"), SCAN_COLUMNS)
    listed = {str(f) for f in files}
    hashed = [r for r in rows if r["path"] in listed and _rehash(Path(r["path"]), r, verify)]
    # a bar over the hashing (minutes on a big folder with --verify); none when none is hashed
    check = track(hashed, VERIFY_BAR, total=len(hashed)) if hashed else hashed
    stale = {r["path"] for r in check if _digest(Path(r["path"])) != r["sha256"]}
    if stale:  # scan.csv first: a crash before the frames leaves rows the next call drops
        atomic_write_csv(
            out.output("scan.csv"), SCAN_COLUMNS, [r for r in rows if r["path"] not in stale]
        )
    done = {r["path"] for r in rows} - stale
    frames = complete_rows(out.file("scan_frames.csv"), FRAME_COLUMNS)
    keep = [r for r in frames if r["path"] in done]
    if len(keep) < len(frames):
        atomic_write_csv(out.output("scan_frames.csv"), FRAME_COLUMNS, keep)
    return done, sorted(stale), len(hashed)


# -- worker processes ----------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter after the command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _worker_start(main: int) -> None:
    """In a worker: Ctrl-C is left to the main process (which stops the workers), and the
    worker exits once the main process `main` is gone (killed with -9: the forkserver, the
    workers' parent, waits for them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while _alive(main):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _pool(workers: int) -> Any:
    """`workers` processes that run `extract` (forkserver: no copy of the main's threads)."""
    from concurrent.futures import ProcessPoolExecutor

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload([__name__])  # imported once, then forked per worker
    return ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_start, initargs=(os.getpid(),)
    )


def _stop(pool: Any) -> None:
    """Stop the workers now (Ctrl-C, an error): queued jobs are dropped, running ones killed."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public kill
        proc.terminate()


def video_parts(
    path: Path, kind: str | None, opts: ScanOptions, workers: int, remaining: int
) -> int:
    """How many workers share one file: all `workers` for a video of SPLIT_BYTES or more among
    the last `remaining` < `workers` files of the scan (a lone long video, the tail of a folder;
    before that the files keep the workers busy one each), when faces are searched in every
    sampled frame (tracking runs through the frames in order); else 1."""
    if kind != "video" or not workers > 1 or remaining >= workers or opts.detect_every != 1:
        return 1
    try:
        return workers if path.stat().st_size >= SPLIT_BYTES else 1
    except OSError:
        return 1  # the file's row says what went wrong


def extractions(
    files: list[Path], det: Detector | None, opts: ScanOptions, workers: int
) -> Iterator[Extraction | None]:
    """Per file, in order: its frames and faces made by one of `workers` processes (at most
    2 x workers files ahead; a long video's sampled frames shared by all of them, `video_parts`),
    or None (no workers, or a file without pictures to look at: `scan_file` does it)."""
    if workers < 1 or det is None:
        yield from (None for _ in files)
        return
    crop = _crop_options(det, opts)
    pool = _pool(workers)
    pending: deque[Any] = deque()
    jobs, submitted = iter(files), 0
    try:
        while True:
            while len(pending) < 2 * workers:
                f = next(jobs, None)
                if f is None:
                    break
                submitted += 1
                kind = file_kind(f)
                job = (str(f), kind, crop, opts.frames, opts.limits)
                if kind not in ("image", "video"):
                    pending.append(None)
                    continue
                n = video_parts(f, kind, opts, workers, len(files) - submitted + 1)
                pending.append([pool.submit(extract, *job, (i, n)) for i in range(n)])
            if not pending:
                return
            job = pending.popleft()
            yield _joined([_result(p) for p in job]) if job is not None else None
    finally:
        _stop(pool)


def _scanned(
    files: list[Path],
    det: Detector | None,
    speech: Detector | None,
    opts: ScanOptions,
    run: RunDir,
    workers: int,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Per file, in order: (row, frame rows), scored here, decoded by `workers` processes."""
    work = extractions(files, det, opts, workers)
    with contextlib.closing(work):
        for f, got in zip(files, work, strict=True):
            yield scan_file(f, det, speech, opts, run, got)


def _joined(parts: list[Extraction]) -> Extraction:
    """One file's Extraction from its parts' (the first error wins; wall: the longest part,
    they ran side by side; CPU: all of them)."""
    if len(parts) == 1:
        return parts[0]
    wall, cpu = max(p.wall_s for p in parts), sum(p.cpu_s for p in parts)
    error = next((p.error for p in parts if p.error is not None), None)
    got = None if error else media.join_parts([p.faces for p in parts if p.faces is not None])
    return Extraction(got, error, wall, cpu)


def _result(job: Any) -> Extraction:
    """A worker's Extraction; RunError when the worker process died (the scan so far is kept)."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return job.result()
    except BrokenProcessPool as e:
        raise RunError(
            f"a scan worker process died ({e}); the rows so far are kept: re-run to resume "
            "(with --workers 0 the progress shows the file it stops at)"
        ) from e


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
    changed: list[str] = field(default_factory=list)  # rescanned: the file changed since
    rehashed: int = 0  # files already in scan.csv hashed again to tell whether they changed
    not_scanned: dict[str, str] = field(default_factory=dict)  # folders' files skipped -> why

    def not_scanned_line(self) -> str | None:
        """One line on the folders' files that were not scanned (extension, hidden or a link not
        followed), or None."""
        if not self.not_scanned:
            return None
        kinds: dict[str, int] = {}
        for why in self.not_scanned.values():
            kinds[why] = kinds.get(why, 0) + 1
        n = len(self.not_scanned)
        shown = ", ".join(
            f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        )
        why = "by name not a photo, video or sound, or hidden"
        if RUN_OUTPUT in kinds:
            why = "by name not a photo, video or sound, hidden, or a deepshield run's output"
        if {"broken link", "linked folder (not followed)"} & kinds.keys():
            why += ", or a link"
        return (
            f"note: {n} file{'s' * (n != 1)} in the folders not scanned, {why} ({shown}); "
            "listed in scan.json's not_scanned"
        )


def _config(settings: dict[str, Any]) -> dict[str, Any]:
    """What a scan's results depend on (the folder's config.yaml): detectors (their weights
    and decision, wherever they lie), frames, faces, tracking and precision; not shard, limit
    or workers. `amp` is left out when off, so a scan made before --amp existed (float32)
    resumes with the same flags."""
    keys = ("detector", "speech_detector", "frames", "faces", "detect_every", "amp")
    unplaced = (
        {**v, "source": None} if isinstance(v, dict) else v for v in map(settings.get, keys)
    )
    config = dict(zip(keys, unplaced, strict=True))
    return config if config["amp"] != "off" else {k: v for k, v in config.items() if k != "amp"}


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
    workers: int = 0,
    force: bool = False,
    engine: str = "local",
    verify: bool = False,
) -> ScanSummary:
    """Scan files and folders into the run folder `out`; files already in its scan.csv are
    skipped (resume) unless they changed since: hashed again when their size or time moved,
    or, with `verify`, all of them (rsync -c), and rescanned when their SHA-256 differs. `force`
    replaces a scan made with other settings (only its own files). `engine` "ray": the files
    are scanned by `workers` Ray actors (`scan_ray`), same outputs."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: give one of {', '.join(ENGINES)}")
    opts = opts or ScanOptions()
    if engine == "ray":  # no ray, no cluster, an --amp its workers cannot run: nothing written
        from deepshield.runs.scan_ray import check_workers

        check_workers(opts.amp, workers)  # the workers' device scores, not the detector's
    else:
        for d in filter(None, (detector, speech)):  # fp16 off CUDA: one line, nothing written
            check_amp(opts.amp, d.device)
    files, skipped = list_files(paths)
    single = len(paths) == 1 and len(files) == 1 and not Path(paths[0]).is_dir()
    files = [f for f in files if in_shard(str(f), shard)][:limit]
    settings = {
        "detector": detector.describe() if detector else None,
        "speech_detector": speech.describe() if speech else None,
        "frames": opts.frames,
        "faces": opts.faces,
        "detect_every": opts.detect_every,
        "amp": opts.amp,
        "shard": list(shard) if shard else None,
        "limit": limit,
    }
    run, complete = open_run(out, COMMAND, _config(settings), force=force)
    run.claim(*OUTPUTS)
    wall, cpu = time.perf_counter(), time.process_time()  # the hashing of a resume included
    done, changed, rehashed = resume_state(run, files, verify)
    todo = [f for f in files if str(f) not in done]
    rows = []
    record = bool(todo) or not complete or verify  # a verification is recorded, changed or not
    if record:
        run.set_done(COMMAND, False)  # cleared before any artifact changes
        write_json(run.output("scan.json"), {"settings": settings, "status": "running"})
        if engine == "ray":
            from deepshield.runs.scan_ray import ray_scanned

            work = ray_scanned(todo, detector, speech, opts, run, workers)
        else:
            work = _scanned(todo, detector, speech, opts, run, workers)
        with contextlib.closing(work):
            for _, (row, frame_rows) in zip(
                progress(todo) if progress else todo, work, strict=True
            ):
                append_rows(run.output("scan_frames.csv"), FRAME_COLUMNS, frame_rows)
                append_rows(run.output("scan.csv"), SCAN_COLUMNS, [row])  # last: it counts
                rows.append(row)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    all_rows = complete_rows(run.file("scan.csv"), SCAN_COLUMNS)
    counts: dict[str, int] = {}
    for r in all_rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    resumed = len(files) - len(todo)
    summary = ScanSummary(
        run.path,
        len(rows),
        resumed,
        counts,
        rows,
        wall,
        cpu,
        changed=changed,
        rehashed=rehashed,
        not_scanned=skipped,
    )
    if record:
        _finish(
            run,
            settings,
            counts,
            skipped,
            summary,
            all_rows,
            {"workers": workers, "engine": engine, "verify": verify},
        )
    if single:
        only = next((r for r in all_rows if r["path"] == str(files[0])), None) if files else None
        if only is not None and only["verdict"] == "error":
            summary.single_error = only["error"]
    return summary


def _finish(
    run: RunDir,
    settings: dict[str, Any],
    counts: dict[str, int],
    skipped: dict[str, str],
    summary: ScanSummary,
    rows: list[dict[str, str]],
    how: dict[str, Any],
) -> None:
    """scan.json and report.html from every row, then the final marker; `how`: workers,
    engine, verify."""
    from deepshield.runs.scan_report import write_report

    this_call = {"scanned": summary.scanned, "resumed": summary.resumed}
    this_call |= {"rehashed": summary.rehashed, "changed_rescanned": summary.changed} | how
    write_json(
        run.output("scan.json"),
        {
            "settings": settings,
            "status": "complete",
            "counts": counts,
            "not_scanned": list(skipped),
            "this_call": this_call
            | {"wall_s": round(summary.wall_s, 3), "cpu_s": round(summary.cpu_s, 3)},
            "files": [_typed(r) for r in rows],
        },
    )
    write_report(run, settings, rows)
    run.set_done(COMMAND)


NUMBER_COLUMNS = {"faces": int, "frames": int, "frames_with_face": int, "bytes": int}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A scan.csv row with numbers as numbers and empty cells as None."""
    text = {"path", "kind", "verdict", "error", "audio_verdict", "audio_error", "note"}
    text |= {"mtime", "sha256"}
    return {
        k: None if v == "" else v if k in text else NUMBER_COLUMNS.get(k, float)(v)
        for k, v in row.items()
    }
