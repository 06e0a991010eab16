"""`deepshield audit` on a video-folder run: every attack item also counts whole videos (a video's
score is the mean over its attacked frames of the highest crop score), recounted here from the
model's own scores of the drawn crops and equal to `deepshield attack`'s video-level rows when
the whole split is attacked; the card says the share of fake videos passed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from deepshield.attacks.sweep import AttackSpec
from deepshield.audit import BUDGETS, Audit
from deepshield.audit.card import _sweep_table, score_card
from deepshield.config import TrainConfig
from deepshield.runs.attack_sweep import attack_run
from test_everyday import make_run, video_folder

TINY = replace(BUDGETS["quick"], name="tiny-video", n=16, steps=2, restarts=1,
               eps_linf=(0.0, 4 / 255, 64 / 255), attacks=("fgsm", "pgd_linf"))  # fmt: skip


@pytest.fixture(scope="module")
def video_audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit_video")
    root = video_folder(tmp / "videos")  # 2 pairs, 4 videos
    kw = {"frames": 4, "size": 32, "faces": "none", "split": "test"}
    cfg = TrainConfig(dataset=f"video-folder:{root}", data_kwargs=kw, model="simplenet",
                      device="cpu")  # fmt: skip
    run = make_run(tmp / "run", cfg)
    return run, Audit(run.path, budget=TINY)


def test_attack_items_count_videos_as_deepshield_attack_does(video_audit) -> None:
    run, audit = video_audit
    item = audit.white_box("fgsm")  # 16 crops: the whole test split
    record = attack_run(run.path, AttackSpec("fgsm", list(TINY.eps_linf), seed=0), name="ref")
    got, want = item["video_level"], record["video_level"]
    assert got["threshold"] == want["threshold"] == 0.5  # no decision.json: raw scores at 0.5
    for mine, theirs in zip([got["clean"], *got["rows"]], [want["clean"], *want["rows"]],
                            strict=True):  # fmt: skip
        assert mine["n"] == theirs["n"] == 4
        assert mine["fake_passed_as_real"] == theirs["fake_passed_as_real"]
        for name, score in theirs["scores"].items():
            assert mine["scores"][name] == pytest.approx(score, abs=1e-6)


def test_a_drawn_subset_keeps_each_crops_video(video_audit) -> None:
    _, audit = video_audit
    batch = audit.attacked(8)  # half the crops, class-stratified
    assert batch.video is not None and len(batch.video) == 8
    item = audit.sweep("fgsm", AttackSpec("fgsm", [0.0, 4 / 255], seed=0), 8)
    with torch.no_grad():
        p = audit.model.eval()(batch.x).softmax(1)[:, 1].numpy()
    names = batch.video_names
    clean = item["video_level"]["clean"]
    for v in np.unique(batch.video.numpy()):  # one crop per frame (faces none): the mean
        assert clean["scores"][names[v]] == pytest.approx(p[batch.video.numpy() == v].mean(),
                                                          abs=1e-6)  # fmt: skip
    assert clean["n"] == len(np.unique(batch.video.numpy()))


def test_card_gives_the_share_of_fake_videos_passed(video_audit) -> None:
    _, audit = video_audit
    items = {k: audit.white_box(k) for k in ("fgsm", "pgd_linf")}
    worst = max(item["video_level"]["rows"][1]["fake_passed_as_real"] for item in items.values())
    row = next(r for r in score_card(items) if r["item"].startswith("white-box L-inf"))
    assert f"{100 * worst:.0f}% of the fake videos (4 videos, 16 crops attacked)" in row["summary"]
    html = _sweep_table(items)
    assert "Fake videos passed as real at 0.500 (L-inf)" in html
    assert "Real videos flagged as fake" in html


def test_a_run_of_weights_as_they_are_gets_a_surrogate_trained_for_the_budgets_epochs(
    video_audit, tmp_path
) -> None:
    run, _ = video_audit
    cfg = run.read_config(TrainConfig).model_copy(update={"epochs": 0, "init": str(run.path)})
    audit = Audit(make_run(tmp_path / "e0", cfg).path, budget=TINY)  # `train -e 0 --init ...`
    surrogate = audit._surrogate_config()  # it was a ValidationError (epochs 0 without init)
    assert surrogate.epochs == TINY.surrogate_epochs and surrogate.init is None
