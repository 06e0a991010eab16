"""`deepshield robustness SCAN`: a calibrated scan's labelled files processed and scanned again.
Settings sorted to the kinds they apply to, a processing that changes nothing (noise 0) giving
the original scores bit for bit, each row's rates recounted from its own scan, re-encoded
videos and transcoded audio, resume, and the installed script."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from deepshield.errors import ConfigError
from deepshield.runs import scan as sc
from deepshield.runs import scan_calibration as scal
from deepshield.runs import scan_robustness as srob
from test_reliability_inputs import script_env
from test_scan import AASIST_L, SCRIPT, _face, _face_video
from test_scan_calibration import labelled  # noqa: F401 (fixture: 8 + 8 photos, calibrated)
from test_sweep import trained_tiny_run


def test_grids_sort_each_setting_to_the_files_it_applies_to(tmp_path) -> None:
    quick = srob.grid_settings("quick")
    kinds = {k for _, k in quick}
    assert kinds == {"photo", "video", "audio"} and ("h264:23", "video") in quick
    assert ("jpeg:50", "photo") in quick and ("snr:20", "audio") in quick
    grid = tmp_path / "g.yaml"
    grid.write_text("- h264:30\n- jpeg:70\n- mp3:0.5\n- chain:resize:0.5+jpeg:60\n")
    assert srob.grid_settings(grid) == [
        ("h264:30", "video"),
        ("jpeg:70", "photo"),
        ("mp3:0.5", "audio"),
        ("chain:resize:0.5+jpeg:60", "photo"),
    ]
    grid.write_text("- h264:60\n")
    with pytest.raises(ConfigError, match="crf 60"):
        srob.grid_settings(grid)
    grid.write_text("- jpg:70\n")
    with pytest.raises(ConfigError, match="nor a speech spec, nor h264:CRF"):
        srob.grid_settings(grid)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_photos_under_a_grid_rows_recounted_and_identity_exact(request, tmp_path) -> None:
    """noise:0 leaves every pixel (PNG originals): the copies score exactly as the originals;
    jpeg:50's row is recounted from its own scan.csv and calibration.json's verdicts."""
    case = request.getfixturevalue("labelled")
    scan = tmp_path / "scan"
    shutil.copytree(case["out"], scan)
    grid = tmp_path / "g.yaml"
    grid.write_text("- noise:0\n- jpeg:50\n")
    result = srob.scan_robustness(scan, grid)
    rows = {r["setting"]: r for r in result["settings"]}
    assert set(rows) == {"none", "noise:0", "jpeg:50"}
    report = json.loads((scan / "calibration.json").read_text())["image"]
    same = rows["noise:0"]
    assert same["scored"] == 16 and same["verdicts_changed"] == 0
    assert same["mean_abs_change_p_fake"] == same["mean_abs_change_raw"] == 0.0
    assert same["auc_raw"] == rows["none"]["auc_raw"]
    for key in ("reals_called_fake", "fakes_called_real", "reals_unsure", "fakes_unsure"):
        assert same[key] == report["in_sample"][key] == rows["none"][key]
    jpeg = _rows(scan / "robustness" / "jpeg_50" / "scan.csv")
    labels = {f"{i:06d}": (f["label"], f["verdict"]) for i, f in enumerate(report["files"])}
    assert len(jpeg) == len(labels) == 16
    called = [(labels[Path(r["path"]).name[:6]], r["verdict"]) for r in jpeg]
    fp = sum(v == "fake" for (label, _), v in called if label == 0)
    changed = sum(v != old for (_, old), v in called)
    assert rows["jpeg:50"]["reals_called_fake"]["count"] == fp
    assert rows["jpeg:50"]["verdicts_changed"] == changed
    assert not (scan / "robustness" / ".work" / "jpeg_50").exists()  # copies deleted
    again = srob.scan_robustness(scan, grid)  # finished settings are read back, not redone
    assert again == result


def test_a_scan_of_relative_paths_run_from_elsewhere_is_one_line(request, tmp_path, monkeypatch):
    """Scanned as `scan labelled/`, then robustness from another folder: every copy failed as
    'file not found' and each row said 0/16 scored, with exit 0."""
    case = request.getfixturevalue("labelled")
    monkeypatch.chdir(case["root"].parent)
    sc.scan([Path(case["root"].name)], tmp_path / "s", detector=case["det"], opts=case["opts"])
    scal.calibrate_scan(tmp_path / "s")
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text("- noise:0\n")
    with pytest.raises(ConfigError, match="none of its 16 labelled files is found from here"):
        srob.scan_robustness(tmp_path / "s", grid)
    assert not (tmp_path / "s" / "robustness.json").exists()


@pytest.mark.slow
def test_a_grid_run_after_calibrating_again_uses_the_new_decision_and_files(request, tmp_path):
    """noise:0 copies score as the originals, so their row equals the in-sample 'none' row; after
    calibrate again (no unsure band, a CSV labelling 12 of the 16 files) a rerun reused the
    copies' old verdicts, and matched copies to files by index (another file's score)."""
    case = request.getfixturevalue("labelled")
    scan = tmp_path / "scan"
    shutil.copytree(case["out"], scan)
    grid = tmp_path / "g.yaml"
    grid.write_text("- noise:0\n")
    keys = ("reals_called_fake", "fakes_called_real", "reals_unsure", "fakes_unsure")
    labels = tmp_path / "labels.csv"
    files = (
        sorted((case["root"] / "real").iterdir())[:6]
        + sorted((case["root"] / "fake").iterdir())[2:]
    )
    labels.write_text("file,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    for calibrate in ({}, {"band": 0.0, "labels": labels}):
        if calibrate:
            scal.calibrate_scan(scan, **calibrate)
        rows = {r["setting"]: r for r in srob.scan_robustness(scan, grid)["settings"]}
        assert (
            rows["noise:0"]["scored"]
            == rows["none"]["scored"]
            == len(files) + 4 * (not calibrate.get("labels"))
        )
        assert rows["noise:0"]["verdicts_changed"] == 0
        assert [rows["noise:0"][k] for k in keys] == [rows["none"][k] for k in keys]
    assert rows["none"]["reals_unsure"]["count"] == 0  # the last decision: no unsure band


def test_videos_are_reencoded_and_audio_transcoded_then_scored(tmp_path, tmp_path_factory):
    """Two real and two fake face clips (calibrated on a tiny run) under h264:30, and WaveFake
    clips with AASIST-L under mp3:0.5: every copy is scored, each kind on its own rows."""
    root = tmp_path / "media"
    face = _face()
    for name, shift in (("real", 0), ("fake", 6)):
        (root / name).mkdir(parents=True)
        for i in range(2):
            _face_video(root / name / f"c{i}.mp4", np.roll(face, shift + i, axis=1), n=3)
    src = shared_path("data", "speech_wavefake_ljspeech")
    for name in ("real", "fake"):
        for f in sorted((src / name).glob("*.wav"))[:2]:
            shutil.copy(f, root / name / f.name)
    det = sc.run_detector(trained_tiny_run(tmp_path_factory).path, torch.device("cpu"))
    _, speech = sc.detectors(
        None, [("aasist_l", shared_path(*AASIST_L))], None, torch.device("cpu")
    )
    opts = sc.ScanOptions(frames=2)
    sc.scan([root], tmp_path / "s", detector=det, speech=speech, opts=opts)
    scal.calibrate_scan(tmp_path / "s", folds=2)
    grid = tmp_path / "g.yaml"
    grid.write_text("- h264:30\n- mp3:0.5\n")
    result = srob.scan_robustness(tmp_path / "s", grid)
    rows = {(r["kind"], r["setting"]): r for r in result["settings"]}
    assert set(rows) == {
        ("video", "none"),
        ("audio", "none"),
        ("video", "h264:30"),
        ("audio", "mp3:0.5"),
    }
    assert rows[("video", "h264:30")]["scored"] == 4 and rows[("audio", "mp3:0.5")]["scored"] == 4
    copies = _rows(tmp_path / "s" / "robustness" / "h264_30" / "scan.csv")
    assert all(r["path"].endswith(".mp4") and r["kind"] == "video" for r in copies)
    sounds = _rows(tmp_path / "s" / "robustness" / "mp3_0.5" / "scan.csv")
    assert all(r["path"].endswith(".wav") and r["kind"] == "audio" for r in sounds)


def test_an_uncalibrated_scan_and_run_only_flags_are_one_line(request, tmp_path) -> None:
    case = request.getfixturevalue("labelled")
    bare = tmp_path / "bare"
    sc.scan([case["root"] / "real"], bare, detector=case["det"], opts=case["opts"])
    with pytest.raises(ConfigError, match="no calibration; run `deepshield calibrate"):
        srob.scan_robustness(bare)
    env = script_env()
    done = subprocess.run(
        [SCRIPT, "robustness", case["out"], "--shortcuts"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (
        done.returncode == 2 and "--shortcuts, --dataset and --n are for run folders" in done.stderr
    )


def test_a_folder_neither_run_nor_scan_is_named_as_such(tmp_path) -> None:
    """`robustness photos/` and `calibrate SCAN --labels photos/`: the errors said 'pass a folder
    written by train' (scan folders are taken too) and 'no such file' (it is a folder)."""
    (tmp_path / "photos").mkdir()
    done = subprocess.run(
        [SCRIPT, "robustness", tmp_path / "photos"],
        capture_output=True, text=True, env=script_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "neither a run (no model.json) nor a scan folder (no scan.json)" in done.stderr
    with pytest.raises(ConfigError, match=r"--labels .*photos: a folder, not a file"):
        scal.file_labels(["a.png"], tmp_path / "photos")
