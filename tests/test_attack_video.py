"""`deepshield attack` on a video-folder run: video-level numbers per budget (every crop of a
video attacked, the video score its frames' mean), checked against the robustness grid's own
scoring of the same clean crops and recounted from the per-video scores."""

from __future__ import annotations

import json

import pytest

from deepshield.attacks.sweep import AttackSpec
from deepshield.config import TrainConfig
from deepshield.runs.attack_sweep import attack_run
from deepshield.runs.everyday import run_grid
from test_everyday import grid_file, make_run, video_folder


def test_attack_on_video_crops_reports_each_budget_at_the_video_level(tmp_path) -> None:
    root = video_folder(tmp_path / "videos")
    kw = {"frames": 4, "size": 32, "faces": "none", "split": "test"}
    cfg = TrainConfig(dataset=f"video-folder:{root}", data_kwargs=kw, model="simplenet",
                      device="cpu")  # fmt: skip
    run = make_run(tmp_path / "run", cfg)
    record = attack_run(run.path, AttackSpec("fgsm", [0.0, 8 / 255]), batch_size=5)
    video = record["video_level"]
    assert video["threshold"] == 0.5 and video["calibrated"] is False  # no decision.json
    run_grid(run.path, grid_file(tmp_path, ["jpeg:50"]))  # another scoring path, same crops
    grid = json.loads((run.path / "everyday_grid.json").read_text())["clean"]["video"]
    assert set(video["clean"]["scores"]) == set(grid["scores"]) and video["clean"]["n"] == 4
    for name, score in grid["scores"].items():
        assert video["clean"]["scores"][name] == pytest.approx(score, abs=1e-6)
        assert video["rows"][0]["scores"][name] == pytest.approx(score, abs=1e-6)  # eps 0
    attacked = video["rows"][1]
    fake_names = [n for n in attacked["scores"] if n.startswith("fake/")]
    reals = [s for n, s in attacked["scores"].items() if n.startswith("real/")]
    fakes = [attacked["scores"][n] for n in fake_names]
    assert attacked["fake_passed_as_real"] == sum(s < 0.5 for s in fakes) / len(fakes)
    assert attacked["real_flagged_as_fake"] == sum(s >= 0.5 for s in reals) / len(reals)
    for name in fake_names:  # the point used per crop is never better for the model than clean
        assert attacked["scores"][name] <= video["clean"]["scores"][name] + 1e-6
    section = (run.path / "sections" / f"attack_{record['name']}.html").read_text()
    assert "videos: fakes passed" in section
