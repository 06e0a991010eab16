"""`serve --decision SCAN`: the service applies the file-level decision `deepshield calibrate
SCAN` fitted on a scan of labelled files as `scan --decision` applies it (the same P(fake) and
verdict for a photo, a video and an audio file), and refuses in one line, serving nothing, a
decision fitted for other weights or other frames, a run's own (crop-level) decision, and the
run's crop-scale EER threshold beside it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import shared_path
from deepshield import models
from deepshield.run import RunDir
from deepshield.runs import scan as sc
from deepshield.runs.decision import Decision, fit_decision
from deepshield.runs.scan_calibration import calibrate_scan, with_decisions
from deepshield.service.media_uploads import SCORE_BATCH
from test_media_video import write_frames
from test_reliability_inputs import assert_one_error_line, run_in_process
from test_scan import _face_video
from test_service_media import tiny_run

FRAMES = 3
FACES = shared_path("data", "faces_ffhq_vs_tpdne")
MESO4_DF = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")


def _tone(path: Path, hz: float, seconds: float = 0.7) -> Path:
    """A 16 kHz mono WAV of a sine at `hz` with a slow vibrato (speech-run food)."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t + 3 * np.sin(7 * t))).astype(np.float32), 16000)
    return path


def _labelled(root: Path) -> Path:
    """root/real and root/fake: three face photos, a face video and two tones each."""
    for label in ("real", "fake"):
        folder = root / label
        folder.mkdir(parents=True)
        for k in range(3):
            shutil.copy(FACES / label / f"{label}_{k}.png", folder / f"{label}_{k}.png")
        face = np.asarray(Image.open(folder / f"{label}_0.png").convert("RGB"))
        _face_video(folder / "clip.mp4", face, n=4)
        for hz in (170, 260) if label == "real" else (330, 520):
            _tone(folder / f"tone_{hz}.wav", hz)
    return root


def _meso4_df(path: Path) -> Path:
    """A run folder of MesoNet with the authors' DF weights, as `train --init ... -e 0` makes
    (trained weights: a batch's size and layout show in float32's last bits, as they did)."""
    run = RunDir.create(path)
    run.save_model(models.load_weights(models.create("meso4"), MESO4_DF))
    return path


def _rows(out: Path) -> dict[str, dict[str, str]]:
    """scan.csv rows by 'label/name'."""
    with open(out / "scan.csv") as f:
        return {
            f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r for r in csv.DictReader(f)
        }


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An image and a speech run, a scan of the labelled files calibrated (decision.json and
    decision_speech.json), and the same files scanned again with those decisions applied."""
    base = tmp_path_factory.mktemp("served")
    run, speech_run = _meso4_df(base / "image"), tiny_run(base / "speech", "mel_cnn")
    files = _labelled(base / "labelled")
    det = sc.run_detector(run, torch.device("cpu"))
    speech = sc.run_detector(speech_run, torch.device("cpu"), kind="audio")
    opts = sc.ScanOptions(frames=FRAMES)
    sc.scan([files], base / "cal", detector=det, speech=speech, opts=opts)
    calibrate_scan(base / "cal")
    det, speech = with_decisions(base / "cal", det, speech, opts)
    assert det.decision.level == speech.decision.level == "file"
    sc.scan([files], base / "applied", detector=det, speech=speech, opts=opts)
    return {
        "run": run,
        "speech_run": speech_run,
        "files": files,
        "cal": base / "cal",
        "rows": _rows(base / "applied"),
        "decisions": (det.decision, speech.decision),
    }


def _serve(argv: list[object], monkeypatch, capsys) -> tuple[int, str, object]:
    """`deepshield serve ARGV` in process -> (exit code, stderr, the app it would serve)."""
    seen = {}
    code, err = run_in_process(
        ["serve", *map(str, argv)], monkeypatch, capsys, lambda app, **kw: seen.update(app=app)
    )
    return code, err, seen.get("app")


def _post(app, path: Path, mime: str) -> dict:
    r = TestClient(app, base_url="http://localhost").post(
        "/v1/scan", files={"file": (path.name, path.read_bytes(), mime)}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_the_service_answers_as_scan_decision_for_a_photo_a_video_and_audio(
    fitted, monkeypatch, capsys
) -> None:
    argv = [fitted["run"], "--speech-run", fitted["speech_run"], "--frames", FRAMES]
    code, err, app = _serve([*argv, "--decision", fitted["cal"]], monkeypatch, capsys)
    assert code == 0, err
    image, speech = fitted["decisions"]
    health = TestClient(app, base_url="http://localhost").get("/healthz").json()
    assert health["decision_level"] == health["speech"]["decision_level"] == "file"
    assert health["threshold"] == image.threshold
    assert health["speech"]["threshold"] == speech.threshold
    answered = {
        "real/real_1.png": _post(app, fitted["files"] / "real" / "real_1.png", "image/png"),
        "fake/fake_2.png": _post(app, fitted["files"] / "fake" / "fake_2.png", "image/png"),
        "fake/clip.mp4": _post(app, fitted["files"] / "fake" / "clip.mp4", "video/mp4"),
        "real/tone_260.wav": _post(app, fitted["files"] / "real" / "tone_260.wav", "audio/wav"),
    }
    assert SCORE_BATCH == sc.SCORE_BATCH  # the service's crops go in scan's batches
    for name, body in answered.items():
        row = fitted["rows"][name]
        decision = speech if name.endswith(".wav") else image
        # the same crops in the same batches and layout: the same float bits as scan.csv's
        assert (body["p_fake"], body["p_fake_raw"]) == (
            float(row["score"]),
            float(row["score_raw"]),
        )
        # the calibrator on the raw file score, not the mean of calibrated frames or windows
        assert body["p_fake"] == pytest.approx(decision.calibrate([body["p_fake_raw"]])[0])
        assert body["label"] == row["verdict"] == decision.verdict(body["p_fake"]), (name, row)
        # what the answer says of the decision: its level and its warning (few files, caution)
        assert body["decision_level"] == "file" and body["threshold_warning"] == decision.warning
    photo = answered["real/real_1.png"]  # a photo's faces, the frame's score the highest
    assert photo["faces"] and photo["p_fake_raw"] == max(f["p_fake_raw"] for f in photo["faces"])
    Image.new("RGB", (96, 96), (120, 120, 120)).save(blank := fitted["files"].parent / "blank.png")
    body = _post(app, blank, "image/png")  # no face: no score, as scan's no_face row
    assert (body["label"], body["p_fake"], body["faces"]) == ("no_face", None, [])
    # without --decision the same photo is the run's own: the whole photo, uncalibrated
    code, err, own = _serve(argv, monkeypatch, capsys)
    body = _post(own, fitted["files"] / "real" / "real_1.png", "image/png")
    assert code == 0 and not body["calibrated"] and "faces" not in body


def _other_weights(run: Path, to: Path) -> Path:
    """A copy of `run` whose best weights are another seed's."""
    shutil.copytree(run, to)
    torch.manual_seed(1)
    RunDir(to).save_model(models.create("meso4"))
    return to


def _crop_level(run: Path, to: Path) -> Path:
    """A copy of `run` with its own decision.json fitted on scores as a train run's is."""
    shutil.copytree(run, to)
    d = fit_decision([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.7, 0.9])
    RunDir(to).write_json("decision.json", d.to_dict())
    return to


def test_a_decision_fitted_for_other_weights_frames_or_crops_is_refused_in_one_line(
    fitted, monkeypatch, capsys, tmp_path
) -> None:
    run, cal = fitted["run"], fitted["cal"]
    crops = _crop_level(run, tmp_path / "crops")
    cases = [
        ([_other_weights(run, tmp_path / "other"), "--frames", FRAMES, "--decision", cal],
         "fitted for weights_sha256"),
        ([run, "--decision", cal], f"fitted for frames {FRAMES} (this service: 16)"),
        ([run, "--frames", FRAMES, "--decision", cal / "decision.json", "--threshold", "eer"],
         "threshold 'eer': the run's test EER threshold is on scores of single face crops"),
        ([crops, "--decision", crops], "not fitted on a scan's file scores (serve RUN_DIR"),
        ([fitted["speech_run"], "--frames", FRAMES + 1, "--decision", cal],
         "decision_speech.json: fitted for frames 3 (this service: 4)"),
    ]  # fmt: skip
    for argv, words in cases:
        code, err, app = _serve(argv, monkeypatch, capsys)
        assert code == 2 and app is None, (argv, err)
        assert_one_error_line(err, words)


def test_scan_decision_refusals_read_as_before(fitted, tmp_path) -> None:
    """The check scan and serve share keeps scan's words."""
    from deepshield.errors import ConfigError

    det = sc.run_detector(fitted["run"], torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"fitted for frames 3 \(this scan: 32\); scan with"):
        with_decisions(fitted["cal"], det, None, sc.ScanOptions())
    crops = _crop_level(fitted["run"], tmp_path / "crops")
    with pytest.raises(ConfigError, match=r"file scores \(a run's own decision is used with --run"):
        with_decisions(crops, det, None, sc.ScanOptions())


# -- scan settings beyond the defaults: --faces, --detect-every, and the face-width note ----------
def _image_files(files: Path) -> list[Path]:
    """The labelled photos and face videos (no tones: an image-only scan)."""
    return sorted(p for p in files.rglob("*") if p.suffix in (".png", ".mp4"))


def _calibrated(fitted: dict, base: Path, opts: sc.ScanOptions) -> Path:
    """A scan of the labelled photos and videos by the MesoNet run with `opts`, calibrated."""
    det = sc.run_detector(fitted["run"], torch.device("cpu"))
    sc.scan(_image_files(fitted["files"]), base / "cal", detector=det, opts=opts)
    calibrate_scan(base / "cal")
    return base / "cal"


def _applied(fitted: dict, cal: Path, files: list[Path], out: Path, opts, speech=False) -> dict:
    """scan.csv rows by name of `files` scanned with the decision in `cal` (and the speech run
    when `speech`)."""
    det = sc.run_detector(fitted["run"], torch.device("cpu"))
    hearer = sc.run_detector(fitted["speech_run"], torch.device("cpu"), kind="audio")
    det, _ = with_decisions(cal, det, None, opts)
    sc.scan(files, out, detector=det, speech=hearer if speech else None, opts=opts)
    return _rows(out)


def test_a_decision_fitted_with_faces_all_and_tracking_is_served_to_the_bit(
    fitted, monkeypatch, capsys, tmp_path
) -> None:
    """`serve --faces all --detect-every 2` serves a decision calibrated with them: a photo and
    a video (its middle frame's face tracked from the first one's) answer scan.csv's score, raw
    score and verdict to the bit, the video's boxes scan_frames.csv's; the same decision is
    refused by a service that searches every frame or keeps the largest face only."""
    opts = sc.ScanOptions(frames=FRAMES, faces="all", detect_every=2, top_frames=0)
    cal = _calibrated(fitted, tmp_path, opts)
    photo, clip = fitted["files"] / "fake" / "fake_1.png", fitted["files"] / "real" / "clip.mp4"
    rows = _applied(fitted, cal, [photo, clip], tmp_path / "applied", opts)
    argv = [fitted["run"], "--frames", FRAMES, "--decision", cal]
    code, err, app = _serve([*argv, "--faces", "all", "--detect-every", 2], monkeypatch, capsys)
    assert code == 0, err
    health = TestClient(app, base_url="http://localhost").get("/healthz").json()
    assert (health["video"]["faces"], health["video"]["detect_every"]) == ("all", 2)
    for path, mime in ((photo, "image/png"), (clip, "video/mp4")):
        body, row = _post(app, path, mime), rows[f"{path.parent.name}/{path.name}"]
        assert (body["p_fake"], body["p_fake_raw"], body["label"]) == (
            float(row["score"]),
            float(row["score_raw"]),
            row["verdict"],
        )
        assert body["decision_level"] == "file"
    with open(tmp_path / "applied" / "scan_frames.csv") as f:
        boxes = [
            [round(float(r[k]), 1) for k in ("x0", "y0", "x1", "y1")]
            for r in csv.DictReader(f)
            if r["path"].endswith("clip.mp4")
        ]
    assert [f["box"] for fr in body["frames"] for f in fr["faces"]] == boxes and len(boxes) == 3
    for other, words in (
        (["--faces", "all"], "fitted for detect_every 2 (this service: 1)"),
        (["--detect-every", 2], "fitted for faces all (this service: largest)"),
    ):
        code, err, app = _serve([*argv, *other], monkeypatch, capsys)
        assert code == 2 and app is None, err
        assert_one_error_line(err, words)


def test_faces_unlike_the_calibration_files_are_noted_as_scan_notes_them(
    fitted, monkeypatch, capsys, tmp_path
) -> None:
    """A decision calibrated on whole frames (--faces none: 128 px photos, 160 px videos)
    keeps their widths; a photo halved to 64 px, one doubled to 256 px and a 96 px video get
    the note `scan --decision` writes (the same words: scan's note is the service's unsure
    reason, its note, and for the silent video "no audio track" with a speech run beside),
    the photo itself and the 160 px clip none; each answer shows the file-level decision and
    its warning."""
    opts = sc.ScanOptions(frames=FRAMES, faces="none", top_frames=0)  # no overlays: faster
    cal = _calibrated(fitted, tmp_path, opts)
    widths = json.loads((cal / "decision.json").read_text())["conditions"]["face_px"]
    assert (widths["p05"], widths["p95"]) == (128, 160)
    src = fitted["files"] / "real" / "real_2.png"
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(src, new / "same.png")
    face = Image.open(src).convert("RGB")
    face.resize((64, 64), Image.Resampling.LANCZOS).save(new / "half.png")
    face.resize((256, 256), Image.Resampling.LANCZOS).save(new / "double.png")
    small = np.asarray(face.resize((96, 96), Image.Resampling.LANCZOS))
    write_frames(new / "small.mp4", [small] * 4)  # the face photo as a 96 px video
    shutil.copy(fitted["files"] / "fake" / "clip.mp4", new / "clip.mp4")
    rows = _applied(fitted, cal, [new], tmp_path / "applied", opts, speech=True)
    argv = [fitted["run"], "--speech-run", fitted["speech_run"], "--frames", FRAMES]
    code, err, app = _serve([*argv, "--faces", "none", "--decision", cal], monkeypatch, capsys)
    assert code == 0, err
    image = Decision.from_dict(json.loads((cal / "decision.json").read_text()))
    expected = {
        "half.png": "faces smaller than in the calibration files (64 px wide against 128-160 px",
        "double.png": "faces larger than in the calibration files (256 px wide against 128-160",
        "small.mp4": "faces smaller than in the calibration files (96 px wide against 128-160 px",
        "same.png": None,
        "clip.mp4": None,
    }
    for name, words in expected.items():
        mime = "video/mp4" if name.endswith(".mp4") else "image/png"
        body, row = _post(app, new / name, mime), rows[f"new/{name}"]
        assert body["p_fake"] == float(row["score"]) and body["label"] == row["verdict"], name
        said = "; ".join(filter(None, (body["unsure_reason"], body.get("note"))))
        assert said == row["note"], (name, said, row["note"])
        assert (words is None) == ("calibration files" not in said), (name, said)
        if words:
            assert words in body["note"] and "error rates may not hold" in body["note"]
        if name.endswith(".mp4"):  # the speech run's part of a silent video, after the faces'
            assert body["note"].endswith("no audio track") and body["audio_track"] is None
        assert body["decision_level"] == "file" and body["threshold"] == image.threshold
        assert body["threshold_warning"] == image.warning and image.warning
    # without --decision nothing is noted, and a photo is the whole photo as before
    code, err, own = _serve([*argv, "--faces", "none"], monkeypatch, capsys)
    body = _post(own, new / "half.png", "image/png")
    assert code == 0 and "note" not in body and "decision_level" not in body
