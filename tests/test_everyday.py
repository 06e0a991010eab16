"""`deepshield robustness`: the everyday-processing grid and the shortcut checks on image, speech
and video-folder runs (runs built from untrained models: the numbers are checked against plain
computations, not against a detector's quality)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

from deepshield import models
from deepshield.config import TrainConfig
from deepshield.data import processing
from deepshield.errors import ConfigError
from deepshield.media.encode import check_crf, reencode_h264
from deepshield.run import RunDir
from deepshield.runs import everyday
from deepshield.runs.decision import fit_decision, uncalibrated
from deepshield.runs.everyday import EvalSet, Scoring


def make_run(path: Path, cfg: TrainConfig, seed: int = 0) -> RunDir:
    """A run folder holding cfg and an untrained model (what `train` leaves, minus training)."""
    run = RunDir.create(path)
    run.write_yaml("config.yaml", cfg.model_dump(mode="json"))
    torch.manual_seed(seed)
    run.save_model(models.create(cfg.model, num_classes=2))
    return run


IMAGE = TrainConfig(dataset="synthetic-faces:easy", data_kwargs={"n": 120, "size": 32},
                    model="simplenet", device="cpu")  # fmt: skip
SPEECH = TrainConfig(dataset="synthetic-speech", data_kwargs={"n": 40, "length": 4000},
                     model="mel_cnn", device="cpu")  # fmt: skip


def grid_file(folder: Path, specs: list[str]) -> Path:
    path = folder / "grid.yaml"
    path.write_text("".join(f"- {s}\n" for s in specs))
    return path


def test_processed_scores_are_the_models_p_fake_on_the_processed_batch():
    torch.manual_seed(0)
    model = models.create("simplenet", num_classes=2).eval()
    x, y = torch.rand(11, 3, 32, 32), torch.tensor([0, 1] * 5 + [0])
    step = processing.parse_spec("jpeg:50")
    got = everyday.processed_scores(model, x, y, step, batch_size=4)  # 3 batches
    with torch.no_grad():
        want = model(step(x)).softmax(1)[:, 1].double().numpy()
        plain = model(x).softmax(1)[:, 1].double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.abs(got - plain).max() > 1e-4  # the step was applied
    np.testing.assert_allclose(everyday.processed_scores(model, x, y, None, 4), plain, atol=1e-6)


def test_error_rates_are_counted_at_the_runs_threshold_on_calibrated_scores():
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30)
    raw = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0.001, 0.999)
    decision = fit_decision(y, raw)  # Platt + EER threshold
    data = EvalSet(torch.zeros(60, 1), torch.from_numpy(y), "image", "d", "test", "")
    row = everyday.setting_metrics(y, raw, decision, data)
    p = decision.calibrate(raw)
    assert row["fake_passed_as_real"] == pytest.approx(np.mean(p[y == 1] < decision.threshold))
    assert row["real_flagged_as_fake"] == pytest.approx(np.mean(p[y == 0] >= decision.threshold))
    assert 0 < row["fake_passed_as_real"] < 0.5
    plain = everyday.setting_metrics(y, raw, uncalibrated("test"), data)
    assert plain["fake_passed_as_real"] == pytest.approx(np.mean(raw[y == 1] < 0.5))
    assert row["auc"] == plain["auc"]  # calibration is monotone


def test_image_grid_writes_the_run_and_resumes_after_the_last_finished_setting(tmp_path):
    run = make_run(tmp_path / "run", IMAGE)
    grid = grid_file(tmp_path, ["noise:0", "jpeg:50", "blur:1"])
    calls = []

    def stop_at_blur(line: str) -> None:
        calls.append(line)
        if line.startswith("blur"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        everyday.run_grid(run.path, grid, log=stop_at_blur)
    partial = json.loads((run.path / "everyday_grid.json").read_text())
    assert [r["setting"] for r in partial["rows"]] == ["noise:0", "jpeg:50"]
    assert not run.is_done("everyday_grid")

    calls.clear()
    summary = everyday.run_grid(run.path, grid, log=calls.append)
    assert calls == ["blur:1 ..."]  # the finished settings were kept
    result = json.loads((run.path / "everyday_grid.json").read_text())
    assert [r["setting"] for r in result["rows"]] == ["noise:0", "jpeg:50", "blur:1"]
    assert run.is_done("everyday_grid")
    for f in ("plots/everyday_grid.png", "sections/everyday_grid.html", "report.html"):
        assert (run.path / f).is_file() and f in run.manifest()["files"] + ["report.html"]
    identity = result["rows"][0]  # noise with sigma 0 leaves every image as it is
    for key in everyday.METRICS:
        assert identity[key] == result["clean"][key]
    fresh = make_run(tmp_path / "fresh", IMAGE)
    again = everyday.run_grid(fresh.path, grid)
    assert again["rows"] == summary["rows"]  # resumed = uninterrupted
    assert summary["lowest_auc"]["auc"] == min(r["auc"] for r in summary["rows"])


def test_speech_grid_and_its_bad_specs(tmp_path, monkeypatch):
    run = make_run(tmp_path / "speech", SPEECH)
    summary = everyday.run_grid(run.path, grid_file(tmp_path, ["snr:20", "bandpass:300-3400"]))
    assert [r["setting"] for r in summary["rows"]] == ["snr:20", "bandpass:300-3400"]
    assert json.loads((run.path / "everyday_grid.json").read_text())["modality"] == "speech"
    with pytest.raises(ConfigError, match="unknown speech processing 'jpeg'"):
        everyday.run_grid(run.path, grid_file(tmp_path, ["jpeg:75"]))
    monkeypatch.setattr(processing, "available_codecs", lambda: ["vorbis"])
    with pytest.raises(ConfigError, match="has no mp3"):
        everyday.run_grid(run.path, grid_file(tmp_path, ["mp3:0.5"]))


def test_unavailable_codec_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from deepshield.cli import main

    run = make_run(tmp_path / "speech", SPEECH)
    monkeypatch.setattr(processing, "available_codecs", lambda: [])
    monkeypatch.setattr("sys.argv", ["deepshield", "robustness", str(run.path), "--grid",
                                     str(grid_file(tmp_path, ["opus:0.5"]))])  # fmt: skip
    before = sorted(p.name for p in run.path.rglob("*"))
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "has no opus" in err[0]
    assert sorted(p.name for p in run.path.rglob("*")) == before


class ParityDetector(nn.Module):
    """P(fake) grows with the share of odd 8-bit pixel values: a pure storage trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        odd = ((x * 255).round() % 2).flatten(1).mean(1)  # [B]
        return torch.stack([torch.zeros_like(odd), 20 * (odd - 0.5)], 1)  # [B, 2]


def test_shortcut_check_flags_a_detector_that_reads_the_storage_format():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 128, (40, 3, 32, 32), generator=g) * 2  # even values
    y = torch.tensor([0, 1] * 20)
    x = (levels + y[:, None, None, None]).float() / 255  # fakes stored with odd values
    data = EvalSet(x, y, "image", "parity", "test", "40 images")
    clean, rows = everyday.shortcut_rows(Scoring(ParityDetector(), data, uncalibrated("t")))
    by = {r["setting"]: r for r in rows}
    assert clean["auc"] == 1.0
    assert by["png"]["auc"] == 1.0 and not by["png"]["flagged"]  # lossless: the trace stays
    assert by["jpeg:95"]["flagged"] and by["jpeg:95"]["auc"] < 0.75  # identical JPEG: gone
    assert by["jpeg:95"]["auc_drop"] == clean["auc"] - by["jpeg:95"]["auc"]


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """frames uint8 [T,H,W,3] -> an H.264 MP4 (near-lossless, CRF 10)."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))


def video_folder(root: Path) -> Path:
    """Two pairs of 8-frame 48x48 videos (real smooth, fake with a grain), labels.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for pair in ("p1", "p2"):
        base = rng.integers(60, 200, (1, 6, 6, 3)).repeat(8, 0).repeat(8, 1).repeat(8, 2)
        for label, name in ((0, "real"), (1, "fake")):
            grain = rng.integers(-25, 26, base.shape) * label
            frames = np.clip(base + grain, 0, 255).astype(np.uint8)  # [8, 48, 48, 3]
            (root / name).mkdir(parents=True, exist_ok=True)
            write_video(root / name / f"{pair}.mp4", frames)
            rows.append({"file": f"{name}/{pair}.mp4", "label": label, "pair": pair})
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "pair"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_reencode_keeps_frames_and_size_and_a_higher_crf_writes_fewer_bytes(tmp_path):
    from deepshield.media import probe_video

    src = video_folder(tmp_path / "v") / "fake" / "p1.mp4"
    low, high = (reencode_h264(src, tmp_path / f"{c}.mp4", c) for c in (5, 45))
    for p in (low, high):
        info = probe_video(p)
        assert (info.frames, info.width, info.height) == (8, 48, 48)
    assert high.stat().st_size < low.stat().st_size
    with pytest.raises(ConfigError, match="crf 52"):
        check_crf(52)


def test_video_run_gives_video_level_numbers_and_the_same_crf_pair_check(tmp_path):
    root = video_folder(tmp_path / "videos")
    kw = {"frames": 4, "size": 32, "faces": "none", "split": "test"}
    cfg = TrainConfig(dataset=f"video-folder:{root}", data_kwargs=kw, model="simplenet",
                      device="cpu")  # fmt: skip
    run = make_run(tmp_path / "run", cfg)
    grid = everyday.run_grid(run.path, grid_file(tmp_path, ["jpeg:50"]))
    result = json.loads((run.path / "everyday_grid.json").read_text())
    video = result["clean"]["video"]
    names = {f"{c}/p{i}.mp4" for c in ("real", "fake") for i in (1, 2)}
    assert video["n"] == 4 and set(video["scores"]) == names
    assert grid["rows"][0]["setting"] == "jpeg:50" and result["rows"][0]["video"]["n"] == 4
    checks = everyday.shortcut_checks(run.path, crfs=(23, 40))
    assert [p["pair"] for p in checks["pairs"]] == ["p1", "p2"]
    for pair in checks["pairs"]:
        for v in pair["videos"]:  # as stored: the dataset's own crops, scored the same way
            # float32 scores: batches of other sizes may round the last bit apart (7.5e-9 seen)
            assert v["as stored"] == pytest.approx(video["scores"][v["video"]], abs=1e-6)
            assert 0 <= v["crf 23"] <= 1 and 0 <= v["crf 40"] <= 1
    assert run.is_done("shortcuts") and (run.path / "sections/shortcuts.html").is_file()


def test_cli_prints_the_summary_and_the_shortcut_lines(tmp_path, monkeypatch, capsys):
    from deepshield.cli import main

    run = make_run(tmp_path / "run", IMAGE)
    grid = grid_file(tmp_path, ["jpeg:50"])
    argv = ["deepshield", "robustness", str(run.path), "--grid", str(grid), "--n", "10",
            "--shortcuts"]  # fmt: skip
    monkeypatch.setattr("sys.argv", argv)
    main()
    out = capsys.readouterr().out.splitlines()
    saved = json.loads((run.path / "everyday_grid.json").read_text())
    assert out[0].startswith(f"grid grid (1 settings): AUC {saved['clean']['auc']:.3f}")
    assert [line.split(":")[0] for line in out[1:4]] == ["shortcut format"] * 2 + [
        "shortcut resolution"
    ]
    assert saved["params"]["n"] == 10 and saved["subset"].startswith("10 of 18")
    assert run.is_done("everyday_grid") and run.is_done("shortcuts")


def test_another_dataset_gets_its_own_files_and_command(tmp_path):
    run = make_run(tmp_path / "run", IMAGE)
    grid = grid_file(tmp_path, ["jpeg:50"])
    everyday.run_grid(run.path, grid, dataset="synthetic-faces:hard", data_kwargs={"n": 60})
    saved = json.loads((run.path / "everyday_grid_synthetic-faces_hard.json").read_text())
    assert saved["params"]["dataset"] == "synthetic-faces:hard"
    assert saved["params"]["data_kwargs"] == {"n": 60}  # -d: the flags alone, not the run's
    assert saved["command"].endswith("-d synthetic-faces:hard --data-arg n=60")
    assert saved["subset"].startswith("8 of 8")  # the test split of these 60 images
    assert not (run.path / "everyday_grid.json").exists()
