"""`deepshield calibrate SCAN` and `scan --decision`: a file-level decision fitted on the file
scores of a scan of labelled files. Wilson intervals against their closed forms, labels from
folders and CSVs, folds that never cut a group, out-of-fold verdicts from decisions that never
saw the file, a rescan with the decision equal to the calibrator applied to each file's raw
score, refusals of other settings, and the installed script."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from deepshield.errors import ConfigError
from deepshield.metrics.decision import wilson_interval
from deepshield.runs import scan as sc
from deepshield.runs import scan_calibration as scal
from deepshield.runs.decision import Decision, fit_decision
from test_reliability_inputs import script_env
from test_scan import SCRIPT
from test_sweep import trained_tiny_run

Z = 1.959963984540054
N_PER_CLASS = 8


def test_wilson_interval_matches_its_closed_forms() -> None:
    """k = 0: [0, z^2/(n+z^2)]; k = n mirrors it; k = n/2 is centred on 1/2; n = 0 is [0, 1]."""
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z * Z / (10 + Z * Z), rel=1e-12)
    lo2, hi2 = wilson_interval(10, 10)
    assert (lo2, hi2) == pytest.approx((1 - hi, 1.0), rel=1e-12)
    lo, hi = wilson_interval(5, 10)
    half = Z * math.sqrt(0.25 / 10 + Z * Z / 400) / (1 + Z * Z / 10)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("data/real/a.mp4", 0),
        ("data/FAKE/a.mp4", 1),
        ("data/fake/real/a.jpg", 0),  # the nearest folder wins
        ("asv/bonafide/x.flac", 0),
        ("asv/spoof/x.flac", 1),
        ("data/realistic/a.png", None),
        ("real.mp4", None),  # a file's own name is not a folder
    ],
)
def test_labels_come_from_the_nearest_real_or_fake_folder(path, label) -> None:
    assert scal.path_label(path) == label


def test_folds_keep_groups_whole_and_spread_both_classes() -> None:
    """Each group (a real clip and its fakes) lies in one fold; every fold gets reals and fakes
    when the groups allow; the same seed gives the same folds."""
    groups = [f"p{i // 3}" for i in range(30)]  # 10 groups of 3 files
    y = np.asarray([0 if i % 3 == 0 else 1 for i in range(30)])  # each group: 1 real, 2 fakes
    fold = scal.group_folds(y, groups, 5, seed=0)
    for g in set(groups):
        assert len({int(f) for f, h in zip(fold, groups, strict=True) if h == g}) == 1
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    for f in range(5):
        assert set(y[fold == f].tolist()) == {0, 1}
    assert (scal.group_folds(y, groups, 5, seed=0) == fold).all()
    assert scal.group_folds(y[:3], groups[:3], 5, seed=0).max() == 0  # one group: one fold


def _files(raw: list[float], y: list[int]) -> list[scal.Labelled]:
    pairs = enumerate(zip(raw, y, strict=True))
    return [scal.Labelled(f"f{i}", label, f"f{i}", s) for i, (s, label) in pairs]


def test_out_of_fold_verdicts_come_from_decisions_that_never_saw_the_file() -> None:
    rng = np.random.default_rng(1)
    y = [0] * 20 + [1] * 20
    raw = np.clip(rng.normal(0.35, 0.15, 40) + 0.3 * np.asarray(y), 0, 1).tolist()
    files = _files(raw, y)
    cv, per_file = scal.cross_validated(files, rule="eer", calibration="platt", band=0.05)
    fold = scal.group_folds(np.asarray(y), [f.group for f in files], scal.FOLDS, seed=0)
    for f in range(scal.FOLDS):  # refit without fold f; its files' P(fake) must be that fit's
        train = fold != f
        d = fit_decision(np.asarray(y)[train], np.asarray(raw)[train])
        for i in np.flatnonzero(~train):
            assert per_file[i][0] == pytest.approx(float(d.calibrate([raw[i]])[0]), abs=1e-12)
            assert per_file[i][1] == d.verdict(per_file[i][0])
    verdicts = [v for _, v in per_file]
    fp = sum(v == "fake" for v, label in zip(verdicts, y, strict=True) if label == 0)
    assert cv["reals_called_fake"]["count"] == fp and cv["reals_called_fake"]["of"] == 20
    assert cv["reals_called_fake"]["ci95"] == pytest.approx(list(wilson_interval(fp, 20)))
    assert cv["folds"] == scal.FOLDS and cv["groups"] == "file" and cv["not_estimated"] == 0


def test_separable_scores_have_no_out_of_fold_error_and_chance_scores_a_caution() -> None:
    y = [0] * 10 + [1] * 10
    raw = [0.05 + 0.01 * i for i in range(10)] + [0.8 + 0.01 * i for i in range(10)]
    files = _files(raw, y)
    cv, per_file = scal.cross_validated(files, rule="eer", calibration="platt", band=0.0)
    assert cv["reals_called_fake"]["count"] == 0  # the EER threshold sits at the lowest fake
    fold = scal.group_folds(np.asarray(y), [f.group for f in files], scal.FOLDS, seed=0)
    for i, (_, v) in enumerate(per_file):  # a fake called real lies below every training fake
        if v == "real" and y[i] == 1:
            assert raw[i] < min(
                r for r, k, f in zip(raw, y, fold, strict=True) if k == 1 and f != fold[i]
            )
    assert scal.separation_caution(np.asarray(y), np.asarray(raw)) == ""
    inverted = scal.separation_caution(np.asarray(y), 1 - np.asarray(raw))
    assert "AUC 0.000" in inverted and "does not separate" in inverted


# -- end to end on real photos: FFHQ (real) and StyleGAN2 (fake) faces ---------------------------
@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    """A folder of 8 FFHQ and 8 StyleGAN2 photos under real/ and fake/, scanned whole
    (--faces none) by the tiny run, and the scan calibrated from the folder names."""
    src = shared_path("data", "faces_ffhq_vs_tpdne")
    root = tmp_path_factory.mktemp("labelled")
    for name in ("real", "fake"):
        (root / name).mkdir()
        for f in sorted((src / name).iterdir())[:N_PER_CLASS]:
            shutil.copy(f, root / name / f.name)
    run = trained_tiny_run(tmp_path_factory)
    det = sc.run_detector(run.path, torch.device("cpu"))
    opts = sc.ScanOptions(frames=4, faces="none")
    out = tmp_path_factory.mktemp("cal") / "scan"
    sc.scan([root], out, detector=det, opts=opts)
    fits = scal.calibrate_scan(out)
    return {"root": root, "run": run, "det": det, "opts": opts, "out": out, "fits": fits}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_calibration_is_written_as_a_file_level_decision_for_that_detector(labelled) -> None:
    out, det = labelled["out"], labelled["det"]
    d = Decision.from_dict(json.loads((out / "decision.json").read_text()))
    assert d.level == "file" and d.calibrated and d.val_counts == {"n": 16, "fake": 8, "real": 8}
    assert d.fitted_for["weights_sha256"] == det.weights_sha256
    assert (d.fitted_for["frames"], d.fitted_for["faces"]) == (4, "none")
    assert not (out / "decision_speech.json").exists()  # the scan had no speech detector
    report = json.loads((out / "calibration.json").read_text())["image"]
    rows = {r["path"]: r for r in _csv(out / "scan.csv")}
    assert {f["path"] for f in report["files"]} == set(rows)
    for f in report["files"]:  # the raw file score scan wrote, and the label of its folder
        assert f["score_raw"] == float(rows[f["path"]]["score_raw"])
        assert f["label"] == (1 if "/fake/" in f["path"] else 0)
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert {"decision.json", "calibration.json", "calibration.html"} <= set(manifest)
    page = (out / "calibration.html").read_text()  # the files called wrong out of fold, listed
    wrong = [f for f in report["files"] if f["cv_verdict"] == ("real" if f["label"] else "fake")]
    assert page.count("<td>" + str(labelled["root"])) == len(wrong)
    assert f"{d.threshold:.4f}" in page
    for name in ("scores", "reliability_cv", "roc"):
        assert (out / "plots" / f"calibration_image_{name}.png").is_file()


def test_a_scan_with_the_decision_scores_each_file_as_its_calibrator_says(labelled, tmp_path):
    """Rescanning the labelled files with --decision: P(fake) = calibrator(score_raw), verdicts at
    its threshold, and the verdict counts per class are calibration.json's in-sample counts."""
    out = labelled["out"]
    det, _ = scal.with_decisions(out, labelled["det"], None, labelled["opts"])
    again = tmp_path / "again"
    sc.scan([labelled["root"]], again, detector=det, opts=labelled["opts"])
    d = det.decision
    rows = _csv(again / "scan.csv")
    assert len(rows) == 2 * N_PER_CLASS
    for r in rows:
        p = float(d.calibrate([float(r["score_raw"])])[0])
        assert float(r["score"]) == pytest.approx(p, abs=1e-12)
        assert r["verdict"] == d.verdict(p) and float(r["threshold"]) == d.threshold
    ins = json.loads((out / "calibration.json").read_text())["image"]["in_sample"]
    reals = [r["verdict"] for r in rows if "/real/" in r["path"]]
    fakes = [r["verdict"] for r in rows if "/fake/" in r["path"]]
    assert ins["reals_called_fake"]["count"] == reals.count("fake")
    assert ins["fakes_called_real"]["count"] == fakes.count("real")
    assert ins["reals_unsure"]["count"] == reals.count("unsure")
    settings = json.loads((again / "scan.json").read_text())["settings"]
    assert settings["detector"]["decision"]["level"] == "file"


def test_a_decision_is_refused_for_other_settings_or_another_model(labelled, tmp_path) -> None:
    out, det = labelled["out"], labelled["det"]
    with pytest.raises(ConfigError, match=r"frames 4 \(this scan: 8\)"):
        scal.with_decisions(out, det, None, sc.ScanOptions(frames=8, faces="none"))
    with pytest.raises(ConfigError, match="faces none"):
        scal.with_decisions(out, det, None, sc.ScanOptions(frames=4, faces="largest"))
    other = sc.Detector(**{**det.__dict__, "weights_sha256": "0" * 64})
    with pytest.raises(ConfigError, match="weights_sha256"):
        scal.with_decisions(out, other, None, labelled["opts"])
    run_copy = tmp_path / "run"  # a run's own (crop-level) decision is not a scan's
    shutil.copytree(labelled["run"].path, run_copy)
    from deepshield.runs.decision import calibrate_run

    calibrate_run(run_copy)
    with pytest.raises(ConfigError, match="not fitted on a scan's file scores"):
        scal.with_decisions(run_copy, det, None, labelled["opts"])
    with pytest.raises(ConfigError, match="holds no decision"):
        scal.with_decisions(tmp_path, det, None, labelled["opts"])


def test_a_labels_csv_groups_pairs_and_unlabelled_files_are_left_out(labelled, tmp_path):
    """A CSV naming 6 of each class with a pair per (real, fake) couple and two methods: 12
    files fitted, the rest left out as unlabelled, folds by pair, misses split by method."""
    scan = tmp_path / "scan"
    shutil.copytree(labelled["out"], scan)
    root = labelled["root"]
    reals, fakes = sorted((root / "real").iterdir()), sorted((root / "fake").iterdir())
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "pair", "method"])
        for i in range(6):
            w.writerow([reals[i].as_posix(), "real", f"p{i}", "original"])
            w.writerow([fakes[i].as_posix(), "1", f"p{i}", "ab"[i % 2]])
    elsewhere = tmp_path / "elsewhere.csv"  # the same names, not the scanned files
    shutil.copy(reals[0], tmp_path / reals[0].name)
    elsewhere.write_text(f"file,label\n{reals[0].name},0\n")
    with pytest.raises(ConfigError, match="labels no file of the scan \\(none of its 1 files"):
        scal.calibrate_scan(scan, labels=elsewhere)
    fits = scal.calibrate_scan(scan, labels=labels, folds=3)
    fit = fits["image"]
    assert fit.decision.val_counts == {"n": 12, "fake": 6, "real": 6}
    assert len(fit.left_out) == 4 and all("no label" in w for w in fit.left_out.values())
    cv = fit.cross_validated
    assert cv["groups"] == "pair" and cv["folds"] == 3
    by = cv["fakes_called_real_by_method"]  # the methods split the fakes called real
    assert set(by) == {"a", "b"} and [r["of"] for r in by.values()] == [3, 3]
    assert sum(r["count"] for r in by.values()) == cv["fakes_called_real"]["count"]


def test_a_labels_csv_as_excel_writes_it_labels_as_the_folders_do(labelled, tmp_path) -> None:
    """BOM, CRLF, ';' separators, REAL / FAKE / 1.0 / bonafide, Windows paths, a file listed twice
    and ';;' rows left by Excel: the same 16 files and labels as the folders, same decision."""
    scan = tmp_path / "scan"
    shutil.copytree(labelled["out"], scan)
    root = labelled["root"]
    spellings = {0: ["REAL", "0.0", "bonafide"], 1: ["FAKE", "1.0", "Spoof"]}
    lines = ["File;Label"]
    for label, name in enumerate(("real", "fake")):
        for i, f in enumerate(sorted((root / name).iterdir())):
            sep = "\\" if label else "/"  # the fakes' paths as written on Windows
            lines.append(f"{name}{sep}{f.name};{spellings[label][i % 3]}")
    lines += [lines[1], ";;", ""]  # a repeat with the same label, an empty Excel row
    labels = root / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    try:
        fit = scal.calibrate_scan(scan, labels=labels)["image"]
    finally:
        labels.unlink()
    by_folder = labelled["fits"]["image"]
    assert fit.decision.val_counts == {"n": 16, "fake": 8, "real": 8} and not fit.left_out
    assert fit.decision.threshold == by_folder.decision.threshold
    assert [(f.path, f.label) for f in fit.files] == [(f.path, f.label) for f in by_folder.files]


def test_labels_csv_mistakes_are_one_line_naming_the_lines(labelled, tmp_path) -> None:
    """The installed script: a file labelled both ways, and paths written relative to the
    current folder in a CSV kept elsewhere: exit 2, one line with the line numbers and the fix."""
    root = labelled["root"]
    reals = sorted((root / "real").iterdir())
    both = tmp_path / "both.csv"
    both.write_text(f"file,label\n{reals[0]},real\n{reals[1]},real\n{reals[0]},fake\n")
    done = subprocess.run(
        [SCRIPT, "calibrate", labelled["out"], "--labels", both],
        capture_output=True, text=True, env=script_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "both.csv lines 2 and 4:" in done.stderr and "labelled both real and fake" in done.stderr
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "labels.csv").write_text(f"file,label\nreal/{reals[0].name},0\n")
    done = subprocess.run(
        [SCRIPT, "calibrate", labelled["out"], "--labels", sub / "labels.csv"],
        capture_output=True, text=True, env=script_env(), timeout=120, cwd=root,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"line 2: file 'real/{reals[0].name}' not found" in done.stderr
    assert "relative to the current folder: write ../" in done.stderr


def test_nothing_to_calibrate_is_one_line_and_writes_nothing(labelled, tmp_path) -> None:
    det, opts = labelled["det"], labelled["opts"]
    one_class = tmp_path / "one"
    sc.scan([labelled["root"] / "real"], one_class, detector=det, opts=opts)
    with pytest.raises(ConfigError, match="0 fake files"):
        scal.calibrate_scan(one_class)
    assert not (one_class / "decision.json").exists()
    with pytest.raises(ConfigError, match="not a scan folder"):
        scal.calibrate_scan(labelled["run"].path)
    with pytest.raises(ConfigError, match="--folds 1"):
        scal.calibrate_scan(labelled["out"], folds=1)


def test_nothing_to_calibrate_says_why_the_files_were_left_out(labelled, tmp_path) -> None:
    """Every file failed to decode: the error said '0 real and 0 fake ... (4 left out)' only."""
    for name in ("real", "fake"):
        (tmp_path / "in" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "in" / name / f"{i}.png").write_text("not a picture")
    sc.scan([tmp_path / "in"], tmp_path / "s", detector=labelled["det"], opts=labelled["opts"])
    with pytest.raises(ConfigError, match=r"0 fake files .*\(4 left out: error 4\)"):
        scal.calibrate_scan(tmp_path / "s")


def test_the_installed_script_calibrates_a_scan_and_scans_with_it(labelled, tmp_path) -> None:
    scan = tmp_path / "scan"
    shutil.copytree(labelled["out"], scan)
    env = script_env()
    done = subprocess.run(
        [SCRIPT, "calibrate", scan], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "fitted on 16 files (8 fake, 8 real)" in done.stdout
    assert "5-fold cross-validated (by file)" in done.stdout and "95 % CI" in done.stdout
    bad = subprocess.run(
        [SCRIPT, "calibrate", scan, "--labels", tmp_path / "none.csv"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "none.csv: no such file" in bad.stderr
    photo = sorted((labelled["root"] / "fake").iterdir())[0]
    args = ["scan", photo, "--run", labelled["run"].path, "--faces", "none", "--frames", "4"]
    used = subprocess.run(
        [SCRIPT, *args, "--decision", scan, "--out", tmp_path / "o"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert used.returncode == 0, used.stderr
    refused = subprocess.run(
        [SCRIPT, *args[:-1], "8", "--decision", scan, "--out", tmp_path / "o2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refused.returncode == 2 and "frames 4 (this scan: 8)" in refused.stderr
    assert not (tmp_path / "o2").exists()


def test_speech_files_are_calibrated_on_their_own_and_videos_sound_is_left_out(tmp_path):
    """AASIST-L (official weights) over WaveFake's LJSpeech clips and their vocoded copies:
    decision_speech.json from the audio files' raw scores (now written to scan.csv), and a
    rescan with it equal to its calibrator on each raw score."""
    from test_scan import AASIST_L

    weights = shared_path(*AASIST_L)
    src = shared_path("data", "speech_wavefake_ljspeech")
    root = tmp_path / "clips"
    for name in ("real", "fake"):
        (root / name).mkdir(parents=True)
        for f in sorted((src / name).glob("*.wav"))[:3]:
            shutil.copy(f, root / name / f.name)
    _, speech = sc.detectors(None, [("aasist_l", weights)], None, torch.device("cpu"))
    opts = sc.ScanOptions(frames=2)
    sc.scan([root], tmp_path / "s", detector=None, speech=speech, opts=opts)
    rows = _csv(tmp_path / "s" / "scan.csv")
    assert all(r["score_raw"] == r["score"] for r in rows)  # uncalibrated: raw is the score
    fits = scal.calibrate_scan(tmp_path / "s")
    assert set(fits) == {"audio"} and (tmp_path / "s" / "decision_speech.json").is_file()
    _, calibrated = scal.with_decisions(tmp_path / "s", None, speech, opts)
    sc.scan([root], tmp_path / "again", detector=None, speech=calibrated, opts=opts)
    d = calibrated.decision
    for r in _csv(tmp_path / "again" / "scan.csv"):
        p = float(d.calibrate([float(r["score_raw"])])[0])
        assert float(r["score"]) == pytest.approx(p, abs=1e-12), r["path"]


def test_an_asvspoof_protocol_labels_the_clips_by_utterance_and_groups_speakers(tmp_path):
    """AASIST-L over the 10 ASVspoof 2019 LA eval clips, labelled by their protocol file: every
    clip labelled as the protocol says, folds by speaker, misses split by spoofing system."""
    from deepshield.data.sources.asvspoof import read_protocol
    from test_scan import AASIST_L

    root = shared_path("data", "asvspoof2019_la_eval_samples")
    trials = {t.utterance: t for t in read_protocol(root / "protocol.txt")}
    _, speech = sc.detectors(
        None, [("aasist_l", shared_path(*AASIST_L))], None, torch.device("cpu")
    )
    sc.scan(
        [root / "flac"], tmp_path / "s", detector=None, speech=speech, opts=sc.ScanOptions(frames=1)
    )
    fit = scal.calibrate_scan(tmp_path / "s", labels=root / "protocol.txt", folds=3)["audio"]
    assert len(fit.files) == len(trials) == 10 and not fit.left_out
    for f in fit.files:
        t = trials[Path(f.path).stem]
        assert (f.label, f.group) == (t.label, t.speaker)
        assert f.method == (t.system if t.label else "bonafide")
    assert fit.cross_validated["groups"] == "speaker"  # speakers hold several clips
    assert set(fit.cross_validated["fakes_called_real_by_method"]) == {
        t.system for t in trials.values() if t.label
    }


def test_a_file_with_faces_outside_the_calibration_sizes_is_noted(request, tmp_path) -> None:
    """The decision keeps the 5-95 % range of the calibration files' face widths (here the
    whole 128 px photos, --faces none); a photo halved to 64 px is scanned with a note saying
    its error rates were not measured at that size, the photo itself without one."""
    from PIL import Image

    case = request.getfixturevalue("labelled")
    d = Decision.from_dict(json.loads((case["out"] / "decision.json").read_text()))
    frames = _csv(case["out"] / "scan_frames.csv")
    widths = sorted({float(r["x1"]) - float(r["x0"]) for r in frames})
    assert (
        widths == [128.0]
        and d.conditions["face_px"]["p05"] == d.conditions["face_px"]["p95"] == 128
    )
    photo = sorted((case["root"] / "real").iterdir())[0]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo, folder / "same.png")
    Image.open(photo).resize((64, 64), Image.Resampling.LANCZOS).save(folder / "half.png")
    det, _ = scal.with_decisions(case["out"], case["det"], None, case["opts"])
    sc.scan([folder], tmp_path / "o", detector=det, opts=case["opts"])
    notes = {Path(r["path"]).name: r["note"] for r in _csv(tmp_path / "o" / "scan.csv")}
    assert "faces smaller than in the calibration files (64 px wide" in notes["half.png"]
    assert "calibration files" not in notes["same.png"]
