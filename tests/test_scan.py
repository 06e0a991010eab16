"""`deepshield scan`: a folder of a face photo, a face video and bad inputs scanned with a tiny
calibrated run; the CSV columns, verdicts against the run's decision, video scores recomputed
from the frame rows, no_face rows without a score, one error row per bad file, resume after a
crash, shard partitions, MesoNet with its Keras weights (uncalibrated at 0.5), and the installed
script on a single bad file (exit 2, one line)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from deepshield import media
from deepshield.errors import ConfigError, RunError
from deepshield.run import RunDir
from deepshield.runs import scan as sc
from deepshield.runs.decision import calibrate_run, load_decision
from test_media_faces import _png_header_only
from test_media_video import _mux_sine, write_coded, write_video
from test_reliability_inputs import run_in_process, script_env
from test_speech_evaluation import speech_run  # noqa: F401 (fixture; its toy speech set)
from test_sweep import trained_tiny_run

SCRIPT = Path(sys.executable).parent / "deepshield"
FRAMES = 4


def _face() -> np.ndarray:
    """A 128x128 FFHQ face photo, uint8 [128,128,3] (dlib finds its face)."""
    path = shared_path("data", "faces_ffhq_vs_tpdne", "real", "real_0.png")
    return np.asarray(Image.open(path).convert("RGB"))


def _face_video(path: Path, face: np.ndarray, n: int = 6, *, portrait: bool = False) -> Path:
    """Lossless H.264 4:4:4 MP4: n frames of the face, shifted by i px (10 fps). `portrait`: a
    phone's portrait clip, 160 wide x 200 tall upright, stored on its side (200x160, the face
    turned clockwise) with a display matrix that turns it back (90 degrees counter-clockwise)."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=10, options={"qp": "0"})
    s.width, s.height = (200, 160) if portrait else (160, 160)
    s.pix_fmt = "yuv444p"
    if portrait:
        s.set_display_rotation(90)
    for i in range(n):
        frame = np.full((200 if portrait else 160, 160, 3), 127, np.uint8)
        top = 56 if portrait else 16  # portrait: low in the frame, below row 160
        frame[top + i : top + 128 + i, 16:144] = face
        stored = np.ascontiguousarray(np.rot90(frame, k=-1)) if portrait else frame
        for p in s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A calibrated copy of the tiny run and a folder of media: good, faceless and bad."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    shutil.copytree(trained_tiny_run(tmp_path_factory).path, run)
    calibrate_run(run)
    src = tmp_path_factory.mktemp("media")
    face = _face()
    Image.fromarray(face).save(src / "face.png")
    (src / "clips").mkdir()
    _face_video(src / "clips" / "face.mp4", face)
    Image.new("RGB", (96, 96), (120, 120, 120)).save(src / "blank.png")  # no face
    Image.new("RGB", (1, 1), (200, 10, 10)).save(src / "onepx.png")
    (src / "clips" / "notes.mp4").write_text("this is not a video\n")
    good = write_video(tmp_path_factory.mktemp("v") / "g.mp4", n=30, faststart=True).read_bytes()
    (src / "clips" / "cut.mp4").write_bytes(good[: len(good) // 2])  # truncated
    _png_header_only(src / "huge.png", 12000, 9000)  # over the 100 Mpx limit
    (src / "readme.txt").write_text("junk\n")
    (src / "voice.wav").write_bytes(b"RIFF....")  # audio, but no speech detector given
    _bad_videos(src / "clips", tmp_path_factory.mktemp("v"))
    _png_header_only(src / "giant.png", 20000, 20000)
    _face_video(src / "clips" / "portrait.mp4", face, n=3, portrait=True)
    return {"run": run, "src": src}


def _bad_videos(folder: Path, tmp: Path) -> None:
    """Videos issue 18 lists as bad input: garbled bytes mid-stream, an unknown codec tag, an
    audio-only MP4, a clip of which no frame decodes, and a clip whose frames hold no face."""
    good = write_video(tmp / "g.mp4", n=30, faststart=True).read_bytes()
    data = bytearray(good)
    mid = len(data) // 2
    data[mid : mid + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (folder / "garbled.mp4").write_bytes(bytes(data))
    (folder / "codec.mp4").write_bytes(good.replace(b"avc1", b"zzzz"))
    c = av.open(str(folder / "voice_only.mp4"), "w")
    _mux_sine(c, c.add_stream("aac", rate=48000, layout="stereo"), seconds=0.5)
    c.close()
    start = good.index(b"mdat") + 4  # every packet zeroed: no frame decodes
    (folder / "undecodable.mp4").write_bytes(good[:start] + bytes(len(good) - start))
    write_video(folder / "faceless.mp4", n=8)


@pytest.fixture(scope="module")
def scanned(case, tmp_path_factory) -> dict:
    """One scan of the folder with the calibrated run."""
    det = sc.run_detector(case["run"], torch.device("cpu"))
    out = tmp_path_factory.mktemp("scan") / "out"
    summary = sc.scan([case["src"]], out, detector=det, opts=sc.ScanOptions(frames=FRAMES))
    with open(out / "scan.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    with open(out / "scan_frames.csv") as f:
        frames = list(csv.DictReader(f))
    return {"out": out, "rows": rows, "frames": frames, "summary": summary, "det": det}


def test_csv_has_the_columns_and_one_row_per_media_file(scanned) -> None:
    with open(scanned["out"] / "scan.csv") as f:
        header = next(csv.reader(f))
    for col in ("path", "kind", "score", "verdict", "faces", "frames", "error", "score_raw"):
        assert col in header
    assert "threshold" in header
    names = set(scanned["rows"])
    assert names == {"face.png", "face.mp4", "blank.png", "onepx.png", "notes.mp4", "cut.mp4"} | {
        "huge.png",
        "giant.png",
        "voice.wav",
        "garbled.mp4",
        "codec.mp4",
        "voice_only.mp4",
        "undecodable.mp4",
        "faceless.mp4",
        "portrait.mp4",
    }
    doc = json.loads((scanned["out"] / "scan.json").read_text())
    assert [Path(p).name for p in doc["not_scanned"]] == ["readme.txt"]
    assert doc["settings"]["detector"]["weights_sha256"] == scanned["det"].weights_sha256
    assert doc["settings"]["detector"]["decision"]["calibrated"] is True
    assert len(doc["files"]) == len(names)


def test_verdicts_follow_the_runs_threshold_and_band(scanned, case) -> None:
    d = load_decision(case["run"])
    scored = [r for r in scanned["rows"].values() if r["score"]]
    assert {Path(r["path"]).name for r in scored} == {"face.png", "face.mp4", "portrait.mp4"}
    for r in scored:
        p = float(r["score"])
        expect = (
            "fake"
            if p >= d.threshold + d.band
            else "real"
            if p < d.threshold - d.band
            else "unsure"
        )
        assert r["verdict"] == expect and float(r["threshold"]) == d.threshold
        assert ("unsure band" in r["note"]) == (expect == "unsure")
    img = scanned["rows"]["face.png"]  # one face: the score is the calibrated raw score
    np.testing.assert_allclose(float(img["score"]), d.calibrate([float(img["score_raw"])])[0])


def test_video_score_is_the_mean_of_frame_scores_in_the_frame_csv(scanned) -> None:
    row = scanned["rows"]["face.mp4"]
    mine = [f for f in scanned["frames"] if f["path"] == row["path"]]
    per_frame: dict[int, float] = {}
    for f in mine:
        if f["score"]:
            per_frame[int(f["frame"])] = max(per_frame.get(int(f["frame"]), 0.0), float(f["score"]))
    assert int(row["frames"]) == FRAMES == len({f["frame"] for f in mine})
    assert int(row["frames_with_face"]) == len(per_frame) > 0
    assert float(row["score"]) == pytest.approx(np.mean(list(per_frame.values())))
    assert float(row["score_max"]) == pytest.approx(max(per_frame.values()))
    assert [int(f["frame"]) for f in mine] == sorted(int(f["frame"]) for f in mine)
    out = scanned["out"]
    fid = sc.file_id(row["path"])
    assert (out / "faces" / f"{fid}.jpg").is_file() and list((out / "evidence").glob(f"{fid}_*"))
    html = (out / "report.html").read_text()
    assert "<svg" in html and f"evidence/{fid}_" in html


def test_faceless_images_are_no_face_without_a_score(scanned) -> None:
    for name in ("blank.png", "onepx.png", "faceless.mp4"):
        r = scanned["rows"][name]
        assert (r["verdict"], r["score"], r["error"], r["faces"]) == ("no_face", "", "", "0")
    assert all(not f["score"] for f in scanned["frames"] if f["path"].endswith("blank.png"))
    clip = [f for f in scanned["frames"] if f["path"].endswith("faceless.mp4")]
    assert len(clip) == FRAMES and all(not f["score"] and not f["face"] for f in clip)


def test_portrait_video_is_turned_upright_before_faces_are_searched(scanned, case, tmp_path):
    r = scanned["rows"]["portrait.mp4"]
    assert r["verdict"] != "no_face" and int(r["frames_with_face"]) == int(r["frames"]) == 3
    boxes = [f for f in scanned["frames"] if f["path"] == r["path"]]
    assert all(float(f["x1"]) <= 160 and float(f["y1"]) <= 200 for f in boxes)  # upright frame
    assert all(float(f["y1"]) > 160 for f in boxes)  # only possible in the 160x200 frame
    stored = np.rot90(
        media.read_video_frames(case["src"] / "clips" / "portrait.mp4").images, 3, (1, 2)
    )
    assert all(not media.detect_faces(np.ascontiguousarray(img)) for img in stored)  # on its side


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("notes.mp4", "not a readable video container"),
        ("cut.mp4", "truncated"),
        ("garbled.mp4", "corrupt video data"),
        ("codec.mp4", "codec"),
        ("voice_only.mp4", "no video stream (audio only)"),
        ("undecodable.mp4", "corrupt video data"),
        ("huge.png", "exceeds the limit"),
        ("giant.png", "too large to decode safely"),  # Pillow's own bound, from the header
        ("voice.wav", "--speech-run"),
    ],
)
def test_bad_files_get_an_error_row_and_no_score(scanned, name, words) -> None:
    r = scanned["rows"][name]
    assert r["verdict"] == "error" and r["score"] == "" and words in r["error"]
    assert name in r["error"] and "\n" not in r["error"]


def test_rerun_resumes_and_a_crash_leaves_a_consistent_csv(case, scanned, tmp_path) -> None:
    out = tmp_path / "out"
    shutil.copytree(scanned["out"], out)
    again = sc.scan([case["src"]], out, detector=scanned["det"], opts=sc.ScanOptions(frames=FRAMES))
    assert (again.scanned, again.resumed) == (0, len(scanned["rows"]))
    # a crash while writing face.png's row: its frame rows are in, its scan.csv line half-written
    lines = (out / "scan.csv").read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if "face.png" not in ln]
    face_line = next(ln for ln in lines if "face.png" in ln)
    (out / "scan.csv").write_text("".join(keep) + face_line[:20])
    again = sc.scan([case["src"]], out, detector=scanned["det"], opts=sc.ScanOptions(frames=FRAMES))
    assert again.scanned == 1 and again.rows[0]["path"].endswith("face.png")
    with open(out / "scan.csv") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert sorted(paths) == sorted(r["path"] for r in scanned["rows"].values())
    with open(out / "scan_frames.csv") as f:
        face_frames = [r for r in csv.DictReader(f) if r["path"].endswith("face.png")]
    assert len(face_frames) == 1  # the crashed call's frame row was dropped, not duplicated


def test_shards_partition_the_files_and_limit_takes_the_first(case, scanned, tmp_path) -> None:
    files, _ = sc.list_files([case["src"]])
    names = [str(f) for f in files]
    for n in (2, 3, 5):
        parts = [{p for p in names if sc.in_shard(p, (i, n))} for i in range(n)]
        assert set().union(*parts) == set(names)
        assert sum(len(p) for p in parts) == len(names)  # disjoint
    images = [case["src"] / "face.png", case["src"] / "blank.png", case["src"] / "onepx.png"]
    got = []
    for i in range(2):
        s = sc.scan(images, tmp_path / f"s{i}", detector=scanned["det"], shard=(i, 2))
        got += [r["path"] for r in s.rows]
    assert sorted(got) == sorted(map(str, images))
    first = sc.scan(images, tmp_path / "lim", detector=scanned["det"], limit=2)
    assert [r["path"] for r in first.rows] == [str(p) for p in images[:2]]
    with pytest.raises(ConfigError, match="--shard"):
        sc.parse_shard("2/2")


def test_out_folder_follows_the_run_layers_ownership(case, scanned, tmp_path) -> None:
    """A folder of user files is refused; another detector/decision/sampling needs --force, which
    removes only what the scan wrote; the `scan` marker is set after the last artifact."""
    user = tmp_path / "evidence-notes"
    user.mkdir()
    (user / "notes.txt").write_text("keep me\n")
    for force in (False, True):
        with pytest.raises(RunError, match="did not write"):
            sc.scan([case["src"] / "face.png"], user, detector=scanned["det"], force=force)
    assert (user / "notes.txt").read_text() == "keep me\n" and len(list(user.iterdir())) == 1
    out = tmp_path / "o"
    sc.scan([case["src"] / "face.png"], out, detector=scanned["det"])
    run = RunDir(out)
    assert run.is_done("scan") and run.manifest()["command"] == "scan"
    assert run.foreign() == []  # every file written (thumbnails, overlays) is owned
    (out / "notes.txt").write_text("added by the user\n")
    again = sc.scan([case["src"] / "face.png"], out, detector=scanned["det"])  # complete: resumed
    assert (again.scanned, again.resumed) == (0, 1)
    eight = sc.ScanOptions(frames=8)
    with pytest.raises(RunError, match=r"frames differ.*--force"):
        sc.scan([case["src"] / "blank.png"], out, detector=scanned["det"], opts=eight)
    s = sc.scan([case["src"] / "blank.png"], out, detector=scanned["det"], opts=eight, force=True)
    assert s.scanned == 1 and (out / "notes.txt").read_text() == "added by the user\n"
    with open(out / "scan.csv") as f:
        assert [Path(r["path"]).name for r in csv.DictReader(f)] == ["blank.png"]
    assert not (out / "faces").exists() and RunDir(out).is_done("scan")


def test_meso4_with_keras_weights_scans_uncalibrated_at_one_half(
    case, tmp_path, monkeypatch, capsys
):
    weights = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    argv = ["scan", str(case["src"] / "face.png"), "--model", "meso4", "--weights", str(weights)]
    code, err = run_in_process([*argv, "--out", str(tmp_path / "m")], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "m" / "scan.json").read_text())
    dec = doc["settings"]["detector"]["decision"]
    assert (dec["calibrated"], dec["threshold"], doc["settings"]["detector"]["input_size"]) == (
        False,
        0.5,
        [256, 256],
    )
    assert "uncalibrated" in dec["note"]
    row = doc["files"][0]
    assert 0 <= row["score"] <= 1 and row["score"] == row["score_raw"] and row["faces"] == 1


def _scan_script(path: Path, run: Path, out: Path) -> subprocess.CompletedProcess:
    """`deepshield scan PATH --run RUN --out OUT` through the installed script, as a user."""
    argv = [str(SCRIPT), "--threads", "1", "scan", str(path), "--run", str(run), "--out", str(out)]
    return subprocess.run(argv, env=script_env(), capture_output=True, text=True, timeout=120)


def test_single_bad_file_exits_2_with_one_line_from_the_script(case, tmp_path) -> None:
    bad = case["src"] / "clips" / "notes.mp4"
    done = _scan_script(bad, case["run"], tmp_path / "o")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert str(bad) in lines[0] and "re-encode" in lines[0] and "Traceback" not in done.stderr
    with open(tmp_path / "o" / "scan.csv") as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == ["error"]  # the row is kept


def test_files_a_folder_scan_leaves_out_are_counted_in_one_line(case, tmp_path) -> None:
    """A folder of files scan does not read by their names (broadcast .MXF, notes, a hidden
    folder) said 'scanned 0 files' and nothing else."""
    folder = tmp_path / "in"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "config.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"x")
    for name in ("a.mxf", "b.mxf", "notes.txt", "README"):
        (folder / name).write_bytes(b"x")
    Image.new("RGB", (32, 32)).save(folder / "blank.png")
    done = _scan_script(folder, case["run"], tmp_path / "o")
    assert done.returncode == 0, done.stderr
    note = [line for line in done.stdout.splitlines() if "not scanned" in line]
    assert note == [
        "note: 6 files in the folders not scanned, by name not a photo, video or sound, or hidden "
        "(.mxf 2, hidden 2, .txt 1, no extension 1); listed in scan.json's not_scanned"
    ]
    doc = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert len(doc["not_scanned"]) == 6 and [f["path"] for f in doc["files"]] == [
        str(folder / "blank.png")
    ]


def test_broken_links_and_linked_folders_in_a_folder_are_listed_as_not_scanned(tmp_path):
    """A folder walk does not follow a linked folder (a loop may) nor read a broken link: both
    were left out silently, as if the folder held nothing more; a link to a file is scanned."""
    elsewhere = tmp_path / "evidence"
    elsewhere.mkdir()
    Image.new("RGB", (32, 32)).save(elsewhere / "photo.png")
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "evidence").symlink_to(elsewhere, target_is_directory=True)
    (folder / "moved.jpg").symlink_to(tmp_path / "gone.jpg")
    (folder / "photo.png").symlink_to(elsewhere / "photo.png")
    files, skipped = sc.list_files([folder])
    assert files == [folder / "photo.png"]
    assert skipped == {
        str(folder / "evidence"): "linked folder (not followed)",
        str(folder / "moved.jpg"): "broken link",
    }
    summary = sc.ScanSummary(tmp_path, 0, 0, {}, [], 0.0, 0.0, not_scanned=skipped)
    line = summary.not_scanned_line()
    assert line == (
        "note: 2 files in the folders not scanned, by name not a photo, video or sound, or "
        "hidden, or a link (broken link 1, linked folder (not followed) 1); listed in "
        "scan.json's not_scanned"
    )


def test_a_scan_kept_inside_the_scanned_folder_is_not_scanned_as_media(case, tmp_path) -> None:
    """`scan photos --out photos/scan` run again (a resume), or another scan of the folder: the
    face crops and evidence the first scan wrote were scanned as photos; a user's own
    manifest.json does not hide a folder."""
    folder = tmp_path / "photos"
    (folder / "mine").mkdir(parents=True)
    Image.fromarray(_face()).save(folder / "face.png")
    Image.fromarray(_face()).save(folder / "mine" / "face2.png")
    (folder / "mine" / "manifest.json").write_text('{"name": "a web app"}')
    first = _scan_script(folder, case["run"], folder / "scan")
    assert first.returncode == 0 and "scanned 2 files (0 already" in first.stdout, first.stderr
    assert any((folder / "scan" / "faces").iterdir())  # crops a folder walk would find
    again = _scan_script(folder, case["run"], folder / "scan")
    assert again.returncode == 0 and "scanned 0 files (2 already" in again.stdout, again.stderr
    assert "or a deepshield run's output (deepshield output" in again.stdout
    with open(folder / "scan" / "scan.csv") as f:
        paths = sorted(r["path"] for r in csv.DictReader(f))
    media = [folder / "face.png", folder / "mine" / "face2.png"]
    assert paths == [str(p) for p in media]
    files, skipped = sc.list_files([folder])  # what another scan of the folder would read
    assert files == media and skipped.pop(str(folder / "mine" / "manifest.json")) == ".json"
    assert all(Path(p).is_relative_to(folder / "scan") for p in skipped)
    assert set(skipped.values()) == {sc.RUN_OUTPUT}


def test_a_ts_file_is_scanned_only_when_its_bytes_are_mpeg_ts(tmp_path) -> None:
    """.ts is both MPEG-TS (broadcast captures) and TypeScript: a folder walk reads the bytes."""
    (tmp_path / "app.ts").write_text("export const x: number = 1;\n")
    write_coded(tmp_path / "capture.ts", "libx264", 4, {}, muxer="mpegts")
    files, skipped = sc.list_files([tmp_path])
    assert [f.name for f in files] == ["capture.ts"]
    assert skipped == {str(tmp_path / "app.ts"): ".ts (not MPEG-TS)"}


def test_calibrate_command_writes_decision_json(case, tmp_path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(case["run"], run)
    (run / "decision.json").unlink()
    code, err = run_in_process(
        ["calibrate", str(run), "--operating-point", "fpr=0.1", "--calibration", "isotonic"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    d = load_decision(run)
    assert d.calibrated and d.rule == "fpr=0.1" and d.calibrator.method == "isotonic"
    code, err = run_in_process(
        ["calibrate", str(run), "--operating-point", "best"], monkeypatch, capsys
    )
    assert code == 2 and "operating-point rule 'best'" in err


def test_speech_run_scores_audio_files_and_video_audio_tracks(request, case, tmp_path) -> None:
    import soundfile as sf

    from deepshield.media.audio import fix_length
    from deepshield.predict import fake_scores, predict_logits

    run = tmp_path / "speech"
    shutil.copytree(request.getfixturevalue("speech_run").path, run)  # a tiny mel_cnn run
    d = calibrate_run(run)
    t = np.arange(10400) / 16000  # 2.6 clips of 4000 samples: 3 windows, the last padded
    tone = 0.3 * np.sin(2 * np.pi * (180 + 400 * t) * t)
    sf.write(tmp_path / "voice.wav", tone.astype(np.float32), 16000)
    clip = write_video(tmp_path / "talk.mp4", n=20, audio=True)  # no face in its frames
    speech = sc.run_detector(run, torch.device("cpu"), kind="audio")
    s = sc.scan([tmp_path / "voice.wav", clip], tmp_path / "o", detector=None, speech=speech)
    voice, talk = s.rows
    wave = sf.read(tmp_path / "voice.wav", dtype="float32")[0]
    x = torch.from_numpy(np.stack([fix_length(wave[i : i + 4000], 4000) for i in (0, 4000, 8000)]))
    p = d.calibrate(fake_scores(predict_logits(speech.model, x)).numpy())  # [3]
    assert voice["kind"] == "audio" and voice["frames"] == 3
    assert voice["score"] == pytest.approx(p.mean(), abs=1e-5)
    assert voice["score_max"] == pytest.approx(p.max(), abs=1e-5)
    assert voice["verdict"] == d.verdict(voice["score"])
    assert voice["note"].endswith("; scored 3 windows of 0.25 s (0.65 s of 0.65 s)")
    with open(tmp_path / "o" / "scan_frames.csv") as f:  # each window: its start and P(fake)
        windows = [r for r in csv.DictReader(f) if r["path"] == voice["path"]]
    assert [(int(r["frame"]), float(r["time"]), r["face"]) for r in windows] == [
        (0, 0.0, ""),
        (1, 0.25, ""),
        (2, 0.5, ""),
    ]
    np.testing.assert_allclose([float(r["score"]) for r in windows], p, atol=1e-5)
    assert "cut after" not in voice["note"]  # the reader's one-clip phrase would mislead here
    # without an image detector a video is scanned by its sound alone
    assert talk["kind"] == "video" and talk["verdict"] == d.verdict(talk["score"])
    both_det = sc.run_detector(case["run"], torch.device("cpu"))
    both = sc.scan([clip], tmp_path / "o2", detector=both_det, speech=speech)
    row = both.rows[0]  # faces: none in these frames; the audio track still scored
    assert row["verdict"] == "no_face" and row["audio_score"] == pytest.approx(talk["score"])
    assert row["audio_verdict"] == talk["verdict"]
    mute = write_video(tmp_path / "mute.mp4", n=20)  # a silent video: a note, not an error
    row = sc.scan([mute], tmp_path / "o5", detector=both_det, speech=speech).rows[0]
    assert row["note"] == "no audio track" and not row.get("audio_error")
    assert row.get("audio_verdict") in (None, "")
    voice_only = tmp_path / "voice_only.mp4"  # an audio-only MP4: no picture, its sound scored
    c = av.open(str(voice_only), "w")
    _mux_sine(c, c.add_stream("aac", rate=48000, layout="stereo"), seconds=0.5)
    c.close()
    both = sc.scan([voice_only], tmp_path / "o3", detector=both_det, speech=speech)
    row = both.rows[0]
    assert row["verdict"] == "error" and "audio only" in row["error"]
    assert row["audio_verdict"] == d.verdict(row["audio_score"]) and not row.get("audio_error")
    sf.write(tmp_path / "silence.wav", np.zeros(8000, np.float32), 16000)
    sf.write(tmp_path / "blip.wav", tone[:200].astype(np.float32), 16000)  # under 0.1 s
    silent, blip = sc.scan(
        [tmp_path / "silence.wav", tmp_path / "blip.wav"],
        tmp_path / "o4",
        detector=None,
        speech=speech,
    ).rows
    assert (silent["verdict"], silent["score"]) == ("unsure", None)
    assert "digital silence" in silent["note"]
    assert blip["verdict"] == "error" and "needs at least 0.1 s" in blip["error"]
    with pytest.raises(ConfigError, match="holds a audio model"):
        sc.run_detector(run, torch.device("cpu"))


TIMES = ("seconds", "cpu_seconds")  # the only columns two scans of the same files may differ in


def _rows(out: Path) -> list[dict[str, str]]:
    """scan.csv rows in file order, without the time columns."""
    with open(out / "scan.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(f)]


def _same_scan(out: Path, reference: Path) -> None:
    """`out` holds the scan `reference` holds: rows, frame rows, thumbnails and overlays, and
    the final marker."""
    assert _rows(out) == _rows(reference)
    assert (out / "scan_frames.csv").read_text() == (reference / "scan_frames.csv").read_text()
    for folder in ("faces", "evidence"):
        assert sorted(p.name for p in (out / folder).glob("*.jpg")) == sorted(
            p.name for p in (reference / folder).glob("*.jpg")
        )
    assert RunDir(out).is_done("scan") and RunDir(out).foreign() == []


def _clips(case: dict, folder: Path, n: int) -> Path:
    """`folder` with n copies of the face clip, the face photo and a text file named .mp4."""
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copy(case["src"] / "clips" / "face.mp4", folder / f"c{i:02d}.mp4")
    shutil.copy(case["src"] / "face.png", folder / "face.png")
    shutil.copy(case["src"] / "clips" / "notes.mp4", folder / "notes.mp4")
    return folder


def _script(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SCRIPT), "--threads", "1", *map(str, args)],
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_rows(proc: subprocess.Popen, out: Path, n: int, timeout: float = 120) -> None:
    """Until scan.csv holds n rows (or the process ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        csv_path = out / "scan.csv"
        if csv_path.is_file() and csv_path.read_bytes().count(b"\n") >= n + 1:
            return
        time.sleep(0.01)


def test_workers_give_the_same_rows_in_the_same_order(case, scanned, tmp_path) -> None:
    opts = sc.ScanOptions(frames=FRAMES)
    s = sc.scan([case["src"]], tmp_path / "w", detector=scanned["det"], opts=opts, workers=2)
    assert s.scanned == len(scanned["rows"])
    _same_scan(tmp_path / "w", scanned["out"])
    doc = json.loads((tmp_path / "w" / "scan.json").read_text())
    assert doc["this_call"]["workers"] == 2 and doc["status"] == "complete"


def test_a_lone_video_is_shared_by_the_workers_with_the_serial_rows(
    case, scanned, tmp_path, monkeypatch
) -> None:
    """Each video of the folder scanned alone with 2 workers (SPLIT_BYTES 0): its sampled frames
    cut into 2 runs, one job per worker, and its row the serial scan's, bad videos' error rows
    included; in a folder only the last file is shared (the others keep the workers busy)."""
    monkeypatch.setattr(sc, "SPLIT_BYTES", 0)
    submitted: list[tuple] = []
    pool = sc._pool

    def counting(workers: int):
        made = pool(workers)
        submit = made.submit
        made.submit = lambda fn, *a: submitted.append(a) or submit(fn, *a)
        return made

    monkeypatch.setattr(sc, "_pool", counting)
    opts = sc.ScanOptions(frames=FRAMES)
    videos = sorted((case["src"] / "clips").glob("*.mp4"))
    for i, video in enumerate(videos):
        out = tmp_path / f"v{i}"
        sc.scan([video], out, detector=scanned["det"], opts=opts, workers=2)
        (row,) = _rows(out)
        assert row == {k: v for k, v in scanned["rows"][video.name].items() if k not in TIMES}
    assert [a[-1] for a in submitted] == [(0, 2), (1, 2)] * len(videos)
    submitted.clear()
    sc.scan([case["src"]], tmp_path / "all", detector=scanned["det"], opts=opts, workers=2)
    _same_scan(tmp_path / "all", scanned["out"])
    split = [a[0] for a in submitted if a[-1] != (0, 1)]
    last = max(scanned["rows"], key=lambda n: scanned["rows"][n]["path"])  # folder order
    assert {Path(p).name for p in split} <= {last}


def test_tracking_between_frames_finds_the_face_in_every_frame(case, scanned, tmp_path) -> None:
    clip = case["src"] / "clips" / "face.mp4"
    opts = sc.ScanOptions(frames=6, detect_every=3)
    row = sc.scan([clip], tmp_path / "t", detector=scanned["det"], opts=opts).rows[0]
    full = sc.scan([clip], tmp_path / "f", detector=scanned["det"], opts=sc.ScanOptions(frames=6))
    assert row["frames_with_face"] == full.rows[0]["frames_with_face"] == 6
    with pytest.raises(RunError, match="detect_every differ"):  # other boxes, other scores
        sc.scan([clip], tmp_path / "t", detector=scanned["det"], opts=sc.ScanOptions(frames=6))


@pytest.fixture(scope="module")
def many(case, tmp_path_factory) -> dict[str, Path]:
    """A folder of 12 files (10 clips) and its scan by the installed script, never interrupted:
    the reference of the Ctrl-C and kill -9 tests (all run with these ARGS)."""
    src = _clips(case, tmp_path_factory.mktemp("many") / "src", 10)
    args = ["scan", src, "--run", case["run"], "--frames", "2"]
    reference = tmp_path_factory.mktemp("many") / "ref"
    assert _script(*args, "--out", reference).wait(timeout=300) == 0
    return {"src": src, "args": args, "reference": reference}


NO_RAY = importlib.util.find_spec("ray") is None
RAY = [pytest.mark.slow, pytest.mark.skipif(NO_RAY, reason="ray not installed (deepshield[ray])")]


@pytest.mark.parametrize(
    ("workers", "engine"), [(0, "local"), (2, "local"), pytest.param(2, "ray", marks=RAY)]
)
def test_ctrl_c_exits_130_and_the_script_resumes_the_scan(many, tmp_path, workers, engine):
    args = [*many["args"], "--workers", workers, "--engine", engine]
    out = tmp_path / "o"
    proc = _script(*args, "--out", out)
    _wait_rows(proc, out, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the scan finished before the interrupt arrived")
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err and "Traceback" not in err
    kept = _rows(out)
    assert 2 <= len(kept) < 12 and not RunDir(out).is_done("scan")
    again = _script(*args, "--out", out)
    said, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"({len(kept)} already in scan.csv)" in said
    _same_scan(out, many["reference"])


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("rows", "workers"),
    [(0, 0), (4, 0), (3, 2), pytest.param(1, 0, marks=SLOW), pytest.param(6, 2, marks=SLOW)],
)
def test_kill_9_mid_scan_then_rerun_equals_an_uninterrupted_scan(
    many, tmp_path, rows, workers
) -> None:
    """kill -9 after the given number of rows (and a random delay up to 0.3 s), with or without
    workers, then the same command again: the same scan as one never interrupted."""
    args, out = [*many["args"], "--workers", workers], tmp_path / "o"
    proc = _script(*args, "--out", out)
    _wait_rows(proc, out, rows)
    time.sleep(random.Random(rows).uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # the workers are gone too: their pipes closed
    again = _script(*args, "--out", out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    _same_scan(out, many["reference"])


def test_faces_none_scores_the_whole_image_and_draws_on_it(case, scanned, tmp_path) -> None:
    face = case["src"] / "face.png"
    opts = sc.ScanOptions(faces="none")
    row = sc.scan([face], tmp_path / "o", detector=scanned["det"], opts=opts).rows[0]
    with open(tmp_path / "o" / "scan_frames.csv") as f:
        (frame,) = list(csv.DictReader(f))
    assert row["faces"] == 1 and row["verdict"] in ("fake", "real", "unsure")
    assert [float(frame[k]) for k in ("x0", "y0", "x1", "y1")] == [0, 0, 128, 128]
    h, w = scanned["det"].size
    small = np.asarray(Image.fromarray(_face()).resize((w, h), Image.Resampling.BILINEAR))
    x = torch.from_numpy(small.copy()).permute(2, 0, 1)[None].float() / 255  # [1, 3, h, w]
    raw = scanned["det"].raw_scores(x)[0]  # the whole photo resized, as the detector sees it
    assert row["score_raw"] == pytest.approx(raw, abs=1e-6)
    (overlay,) = (tmp_path / "o" / "evidence").glob("*.jpg")
    assert Image.open(overlay).size == (128, 128)


def test_scan_and_the_service_give_the_same_verdict_by_one_rule(case, scanned, tmp_path) -> None:
    """The same photo through `scan --faces none` and /v1/scan at the same decision: the same
    P(fake) and verdict, with the decision's threshold placed above, on and below the score."""
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from deepshield.service import create_app

    face = case["src"] / "face.png"
    d = load_decision(case["run"])
    p = sc.scan([face], tmp_path / "p", detector=scanned["det"], opts=sc.ScanOptions(faces="none"))
    p = float(p.rows[0]["score"])
    for i, (t, expected) in enumerate(((p + 0.2, "real"), (p + 0.01, "unsure"), (p - 0.2, "fake"))):
        run = tmp_path / f"run{i}"
        shutil.copytree(case["run"], run)
        RunDir(run).write_json("decision.json", replace(d, threshold=t).to_dict())
        det = sc.run_detector(run, torch.device("cpu"))
        opts = sc.ScanOptions(faces="none")
        row = sc.scan([face], tmp_path / f"o{i}", detector=det, opts=opts).rows[0]
        app = create_app(run, decision=load_decision(run))
        client = TestClient(app, base_url="http://127.0.0.1")
        files = {"file": ("face.png", face.read_bytes(), "image/png")}
        r = client.post("/v1/scan", files=files)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["p_fake"] == pytest.approx(float(row["score"]), abs=1e-6)
        assert row["verdict"] == body["label"] == expected, (t, p, row, body)
        assert (row["note"] or None) == body["unsure_reason"]  # the same words for "unsure"


def test_each_row_names_the_exact_bytes_it_came_from(case, scanned) -> None:
    """bytes, mtime and SHA-256 of every scanned file, recomputed here (also for error rows)."""
    import datetime
    import hashlib

    for name, r in scanned["rows"].items():
        path = Path(r["path"])
        assert r["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), name
        assert int(r["bytes"]) == path.stat().st_size
        when = datetime.datetime.fromisoformat(r["mtime"]).timestamp()
        assert when == pytest.approx(path.stat().st_mtime, abs=1e-5)
    doc = json.loads((scanned["out"] / "scan.json").read_text())
    assert all(len(f["sha256"]) == 64 and isinstance(f["bytes"], int) for f in doc["files"])
    assert "SHA-256" in (scanned["out"] / "report.html").read_text()


def test_a_file_changed_since_its_scan_is_rescanned_a_touched_one_is_not(case, scanned, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(case["src"] / "face.png", src / "a.png")
    shutil.copy(case["src"] / "blank.png", src / "b.png")
    out, opts = tmp_path / "out", sc.ScanOptions(frames=FRAMES)
    first = sc.scan([src], out, detector=scanned["det"], opts=opts)
    assert first.scanned == 2
    # b.png touched (same bytes, new time): kept; a.png rewritten with other pixels
    os.utime(src / "b.png", ns=(10**18, 10**18))
    face = np.asarray(Image.open(src / "a.png").convert("RGB")).copy()
    face[:8] = 255 - face[:8]
    Image.fromarray(face).save(src / "a.png")
    again = sc.scan([src], out, detector=scanned["det"], opts=opts)
    assert (again.scanned, again.resumed) == (1, 1)
    assert again.changed == [str(src / "a.png")]
    with open(out / "scan.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png"]  # one row each
    a = next(r for r in rows if r["path"].endswith("a.png"))
    assert a["sha256"] != next(r for r in first.rows if r["path"].endswith("a.png"))["sha256"]
    with open(out / "scan_frames.csv") as f:
        assert sum(r["path"].endswith("a.png") for r in csv.DictReader(f)) == 1
    doc = json.loads((out / "scan.json").read_text())
    assert doc["this_call"]["changed_rescanned"] == [str(src / "a.png")]


def test_verify_rescans_a_file_rewritten_under_its_old_size_and_time(case, scanned, tmp_path):
    """Another face written over a.bmp (an uncompressed bitmap: the same size) and its time
    put back: a plain resume keeps the stale row, `verify` hashes every file and rescans it,
    and records what it did in scan.json even when nothing changed."""
    import hashlib

    from deepshield.files import file_stamp

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    a = src / "a.bmp"
    Image.fromarray(_face()).save(a)
    shutil.copy(case["src"] / "blank.png", src / "b.png")
    det, opts = scanned["det"], sc.ScanOptions(frames=FRAMES)
    first = sc.scan([src], out, detector=det, opts=opts)
    old = next(r for r in first.rows if r["path"] == str(a))
    st = a.stat()
    other = shared_path("data", "faces_ffhq_vs_tpdne", "fake", "fake_0.png")
    Image.open(other).convert("RGB").save(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_stamp(a) == {"bytes": old["bytes"], "mtime": old["mtime"]}
    plain = sc.scan([src], out, detector=det, opts=opts)
    assert (plain.scanned, plain.rehashed, plain.changed) == (0, 0, [])
    assert next(r for r in _rows(out) if r["path"] == str(a))["sha256"] == old["sha256"]  # stale
    checked = sc.scan([src], out, detector=det, opts=opts, verify=True)
    assert (checked.scanned, checked.resumed, checked.rehashed) == (1, 1, 2)
    assert checked.changed == [str(a)]
    row = next(r for r in _rows(out) if r["path"] == str(a))
    assert row["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest() != old["sha256"]
    assert row["verdict"] != "error" and float(row["score"]) != pytest.approx(old["score"])
    assert len(_rows(out)) == 2
    doc = json.loads((out / "scan.json").read_text())
    assert doc["this_call"]["verify"] is True and doc["this_call"]["rehashed"] == 2
    assert doc["this_call"]["changed_rescanned"] == [str(a)]
    again = sc.scan([src], out, detector=det, opts=opts, verify=True)  # nothing changed
    assert (again.scanned, again.rehashed, again.changed) == (0, 2, [])
    doc = json.loads((out / "scan.json").read_text())
    assert (doc["this_call"]["rehashed"], doc["this_call"]["changed_rescanned"]) == (2, [])
    assert RunDir(out).is_done("scan")


def test_verify_rescans_a_file_it_cannot_hash_instead_of_stopping(
    scanned, case, tmp_path, monkeypatch
):
    """A file whose bytes cannot be read for the check (PermissionError, faked here: root reads
    any file) is rescanned, so its new row says what reading it gives; the resume goes on."""
    src, out, opts = tmp_path / "src", tmp_path / "out", sc.ScanOptions(frames=FRAMES)
    src.mkdir()
    for name in ("b.png", "c.png"):
        shutil.copy(case["src"] / "blank.png", src / name)
    sc.scan([src], out, detector=scanned["det"], opts=opts)
    real = sc.file_digest

    def digest(path: Path) -> str:
        if path.name == "b.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(sc, "file_digest", digest)
    checked = sc.scan([src], out, detector=scanned["det"], opts=opts, verify=True)
    assert (checked.rehashed, checked.changed, checked.scanned) == (2, [str(src / "b.png")], 1)


def test_verify_through_the_installed_script(case, scanned, tmp_path) -> None:
    """`scan --help` lists --verify; `scan --verify` on a copy of the module's scan hashes
    every file again, finds none changed and says so in one line, exit 0."""
    env = script_env()
    shown = subprocess.run(
        [str(SCRIPT), "scan", "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "--verify" in shown.stdout, shown.stderr
    out = tmp_path / "copy"
    shutil.copytree(scanned["out"], out)
    argv = [str(SCRIPT), "--threads", "1", "scan", str(case["src"]), "--run", str(case["run"])]
    argv += ["--frames", str(FRAMES), "--out", str(out), "--verify"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    n = len(scanned["rows"])
    assert done.returncode == 0, done.stderr
    assert f"({n} already in scan.csv, {n} verified by SHA-256, 0 changed)" in done.stdout
    this_call = json.loads((out / "scan.json").read_text())["this_call"]
    assert (this_call["verify"], this_call["rehashed"], this_call["scanned"]) == (True, n, 0)


def test_verify_shows_its_hashing_as_a_progress_bar(case, scanned, tmp_path, monkeypatch) -> None:
    """A --verify resume hashes under a bar with one step per file, each file hashed while
    the bar stands on it (it was silent: minutes on a big folder); a plain resume of unmoved
    files hashes nothing and draws no bar."""
    out, n = tmp_path / "copy", len(scanned["rows"])
    shutil.copytree(scanned["out"], out)
    bars, hashed, after_each = [], [], []
    digest = sc._digest

    def bar(items, description, total=None):
        bars.append((description, total))
        for item in items:
            yield item
            after_each.append(len(hashed))  # files hashed once the caller is done with it

    monkeypatch.setattr(sc, "track", bar)
    monkeypatch.setattr(sc, "_digest", lambda p: hashed.append(p) or digest(p))
    opts = sc.ScanOptions(frames=FRAMES)
    sc.scan([case["src"]], out, detector=scanned["det"], opts=opts)
    assert bars == [] and hashed == []
    s = sc.scan([case["src"]], out, detector=scanned["det"], opts=opts, verify=True)
    assert (s.rehashed, s.scanned, bars) == (n, 0, [(sc.VERIFY_BAR, n)])
    assert after_each == list(range(1, n + 1))


def test_a_scan_csv_of_the_earlier_version_is_resumed_and_upgraded(case, scanned, tmp_path):
    """A scan.csv without the identity columns (written before they existed) resumes: its rows
    are kept (empty identity), the header gains the columns, only new files are scanned."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(case["src"] / "blank.png", src / "b.png")
    out, opts = tmp_path / "out", sc.ScanOptions(frames=FRAMES)
    sc.scan([src], out, detector=scanned["det"], opts=opts)
    old = sc.SCAN_COLUMNS[: sc.SCAN_COLUMNS.index("bytes")]
    with open(out / "scan.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "scan.csv", "w", newline="") as f:
        w = csv.DictWriter(f, old, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    shutil.copy(case["src"] / "onepx.png", src / "c.png")
    again = sc.scan([src], out, detector=scanned["det"], opts=opts)
    assert (again.scanned, again.resumed) == (1, 1)
    with open(out / "scan.csv") as f:
        reader = csv.DictReader(f)
        got = {Path(r["path"]).name: r for r in reader}
    assert reader.fieldnames == sc.SCAN_COLUMNS
    assert got["b.png"]["sha256"] == "" and len(got["c.png"]["sha256"]) == 64
    checked = sc.scan([src], out, detector=scanned["det"], opts=opts, verify=True)
    assert checked.changed == [str(src / "b.png")]  # no digest: nothing proves the row's bytes
    assert all(len(r["sha256"]) == 64 for r in _rows(out))


AASIST_L = ("data", "pretrained_aasist", "AASIST-L.pth")
LA_CLIPS = {
    "LA_E_6828287": "fake",
    "LA_E_2834763": "fake",
    "LA_E_6314733": "real",
    "LA_E_3757378": "real",
}  # fmt: skip  (ASVspoof 2019 LA eval protocol: spoof / bona fide)


def test_official_aasist_weights_scan_audio_files_by_model_and_weights(tmp_path) -> None:
    from deepshield.media.audio import model_input, read_audio

    """`--model aasist_l --weights AASIST-L.pth` fills the speech slot: the protocol's spoofs
    are fake and its bona fide clips real (the official output rows are swapped on load), each
    score the model's P(fake) of the clip read, resampled and tiled as the reader does."""
    weights = shared_path(*AASIST_L)
    flac = shared_path("data", "asvspoof2019_la_eval_samples", "flac")
    det, speech = sc.detectors(None, [("aasist_l", weights)], None, torch.device("cpu"))
    assert det is None and speech is not None and speech.size == (64600,)
    files = [flac / f"{u}.flac" for u in LA_CLIPS]
    s = sc.scan(files, tmp_path / "o", detector=None, speech=speech)
    for f, row in zip(files, s.rows, strict=True):
        assert row["kind"] == "audio" and row["verdict"] == LA_CLIPS[f.stem], row
        wave, _ = read_audio(f, rate=16000)
        assert len(wave) < 64600  # one window, tiled to the model's length
        x = model_input(wave, 16000, 16000, 64600)
        with torch.no_grad():
            p = torch.softmax(speech.model(x), 1)[0, 1].item()
        assert row["score"] == pytest.approx(p, abs=1e-5)
    doc = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert doc["settings"]["speech_detector"]["decision"]["calibrated"] is False


def test_ray_amp_is_checked_against_the_workers_device_from_the_clusters_resources() -> None:
    """The actors score on CUDA only when the cluster has GPUs: fp16 is refused on a cluster
    without one, in one line naming the fix; bf16 runs on CPUs (the local engine's rule)."""
    from deepshield.runs.scan_ray import check_workers_amp

    with pytest.raises(ConfigError, match=r"no GPU.*use --amp bf16 or --amp off, or a cluster"):
        check_workers_amp("fp16", {"CPU": 16.0})
    for amp in ("off", "bf16"):
        check_workers_amp(amp, {"CPU": 16.0})
    for amp in ("off", "bf16", "fp16"):
        check_workers_amp(amp, {"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(ConfigError, match="'fp8' is not one of"):
        check_workers_amp("fp8", {"CPU": 1.0, "GPU": 1.0})


def test_two_detectors_of_one_kind_are_refused_in_one_line(case, tmp_path) -> None:
    weights = shared_path(*AASIST_L)
    with pytest.raises(ConfigError, match="two speech detectors"):  # refused before any load
        sc.detectors(None, [("aasist_l", weights)], tmp_path / "never-opened", torch.device("cpu"))
    meso = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    with pytest.raises(ConfigError, match="two image detectors"):
        sc.detectors(case["run"], [("meso4", meso)], None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="give a detector"):
        sc.detectors(None, [], None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="--model stargan: a generator model; scan takes"):
        sc.detectors(None, [("stargan", meso)], None, torch.device("cpu"))  # no KeyError
    with pytest.raises(ConfigError, match="--model meso4 and --model meso4: two image"):
        sc.detectors(None, [("meso4", meso), ("meso4", meso)], None, torch.device("cpu"))


def test_an_image_and_a_speech_model_by_weights_scan_one_folder_together(tmp_path) -> None:
    """`--model meso4 --weights W1 --model aasist_l --weights W2` (the installed script): the
    face photo is scored by MesoNet and the voice clip by AASIST-L in one scan (the second pair
    once replaced the first, and the photo was an error row); unequal pairs are one line."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(shared_path("data", "faces_ffhq_vs_tpdne", "real", "real_0.png"), folder)
    flac = shared_path("data", "asvspoof2019_la_eval_samples", "flac", "LA_E_2834763.flac")
    shutil.copy(flac, folder)
    meso = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    pairs = ["--model", "meso4", "--weights", meso, "--model", "aasist_l"]
    argv = [SCRIPT, "--threads", "1", "scan", folder, *pairs, "--weights", shared_path(*AASIST_L)]
    done = subprocess.run(
        [*map(str, argv), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "o" / "scan.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert rows["real_0.png"]["kind"] == "image" and rows["real_0.png"]["error"] == ""
    assert rows["real_0.png"]["faces"] == "1"
    assert rows["LA_E_2834763.flac"]["verdict"] == LA_CLIPS["LA_E_2834763"]
    doc = json.loads((tmp_path / "o" / "scan.json").read_text())["settings"]
    assert doc["detector"]["model"] == "meso4" and doc["speech_detector"]["model"] == "aasist_l"
    page = (tmp_path / "o" / "report.html").read_text()  # the report names both, with weights
    for role, d in (("Image", doc["detector"]), ("Speech", doc["speech_detector"])):
        assert f"{role} detector <b>{d['model']}</b>" in page
        assert d["weights_sha256"][:12] in page
    odd = subprocess.run(
        [*map(str, argv[:-2]), "--out", str(tmp_path / "p")], capture_output=True, text=True
    )
    assert odd.returncode == 2 and odd.stderr.count("\n") == 1
    assert "2 --model and 1 --weights: they go in pairs" in odd.stderr


def test_a_file_whose_bytes_are_another_kind_than_its_name_is_an_error_row(case, tmp_path):
    """Kinds are told from the bytes, as the service does (`media.types`): a PNG named .mp4 and
    a WAV named .jpg are error rows naming the fix; an MP4 holding only sound named .m4a, and
    an image type sniff does not know (GIF), are not contradictions."""
    import soundfile as sf

    folder = tmp_path / "misnamed"
    folder.mkdir()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(folder / "photo.mp4", format="PNG")
    sf.write(folder / "voice.jpg", np.zeros(1600, np.float32), 16000, format="WAV")
    Image.new("RGB", (64, 64)).save(folder / "still.gif")
    box = av.open(str(folder / "sound.m4a"), "w", format="mp4")
    _mux_sine(box, box.add_stream("aac", rate=16000, layout="mono"), seconds=0.5)
    box.close()
    det = sc.run_detector(case["run"], torch.device("cpu"))
    rows = {Path(r["path"]).name: r for r in sc.scan([folder], tmp_path / "o", detector=det).rows}
    assert rows["photo.mp4"]["verdict"] == "error"
    assert (
        "its bytes are a PNG file (image) but its name says video (.mp4)"
        in (rows["photo.mp4"]["error"])
    )
    assert "its bytes are a WAV file (audio) but its name says image" in rows["voice.jpg"]["error"]
    for name in ("still.gif", "sound.m4a"):
        assert "its bytes" not in (rows[name].get("error") or ""), rows[name]


def test_an_animated_photo_says_only_its_first_frame_was_scanned(case, tmp_path) -> None:
    """An animated GIF or WebP (and a TIFF's pages) is read as its first frame, as Pillow opens
    it; the row says so, or a GIF whose face shows from its second frame on was a silent
    no_face. A camera's MPO JPEG (its second image an HDR gain map or a preview) is one photo."""
    face = np.full((160, 160, 3), 127, np.uint8)
    face[16:144, 16:144] = _face()
    blank = Image.new("RGB", (160, 160), (127, 127, 127))
    folder = tmp_path / "animated"
    folder.mkdir()
    for ext in ("gif", "webp", "tiff"):
        frames = [Image.fromarray(face), blank, Image.new("RGB", (160, 160), (90, 90, 90))]
        frames[0].save(folder / f"face_first.{ext}", save_all=True, append_images=frames[1:])
        blank.save(folder / f"face_later.{ext}", save_all=True, append_images=frames[:1])
    Image.fromarray(face).save(folder / "still.gif")
    gain_map = blank.convert("L").resize((40, 40))
    Image.fromarray(face).save(
        folder / "camera.jpg", format="MPO", save_all=True, append_images=[gain_map]
    )
    det = sc.run_detector(case["run"], torch.device("cpu"))
    rows = {Path(r["path"]).name: r for r in sc.scan([folder], tmp_path / "o", detector=det).rows}
    for ext in ("gif", "webp", "tiff"):
        first, later = rows[f"face_first.{ext}"], rows[f"face_later.{ext}"]
        assert first["verdict"] in ("real", "fake", "unsure") and first["frames"] == 1
        assert "3 frames or pages in the file: only the first was scanned" in first["note"]
        assert later["verdict"] == "no_face" and later["faces"] == 0
        assert "2 frames or pages in the file: only the first was scanned" in later["note"]
    for name in ("still.gif", "camera.jpg"):
        assert rows[name]["verdict"] != "no_face"
        assert "frames or pages" not in (rows[name].get("note") or ""), rows[name]


def test_a_videos_silent_sound_is_noted_after_its_pictures_notes(monkeypatch, tmp_path) -> None:
    """A video whose audio track gets no score (digital silence): "audio: ..." is added to the
    row's note; it used to replace the pictures' notes (unsure band, interlacing, face size)."""
    from dataclasses import replace
    from types import SimpleNamespace

    silent = replace(media.video_score([]), reason="digital silence (every sample is zero)")
    monkeypatch.setattr(sc, "_score_audio", lambda *a: (silent, silent, []))
    row = {"note": "interlaced: top field kept, the other interpolated where it combs"}
    speech = SimpleNamespace(decision=SimpleNamespace(verdict=lambda score: "unsure"))
    sc._add_audio_track(row, tmp_path / "v.mp4", speech, sc.ScanOptions())
    assert not row.get("audio_error"), row
    assert row["audio_verdict"] == "unsure"
    assert row["note"] == (
        "interlaced: top field kept, the other interpolated where it combs; "
        "audio: digital silence (every sample is zero)"
    )
