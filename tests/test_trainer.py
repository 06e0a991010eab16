"""Trainer: learns, selects on validation, is deterministic, resumes exactly, fails clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import TrainingError
from deepshield.run import RunDir
from deepshield.train import Trainer


def toy_splits(n: int = 240, seed: int = 0) -> Splits:
    """Two Gaussian blobs in 8-D; label 1 = shifted mean."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 8, generator=g) + 1.5 * y[:, None].float()
    sets = [TensorSet(x[i::3], y[i::3]) for i in range(3)]
    return Splits("toy", *sets)


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    m.deepshield_spec = {"name": "toy", "num_classes": 2, "kwargs": {}}
    return m


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"lr": 0.01, "batch_size": 16, "epochs": 4, **kw})


def test_learns_and_selects_on_validation(tmp_path):
    run = RunDir.create(tmp_path / "r")
    hist = Trainer(toy_model(), cfg(), run).fit(toy_splits())
    rows = hist["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all(set(r) >= {"train", "val", "test"} for r in rows)
    best = max(rows, key=lambda r: (r["val"]["acc"], -r["val"]["loss"]))
    assert hist["best_epoch"] == best["epoch"]
    assert rows[-1]["test"]["acc"] > 0.8
    assert run.exists("best.safetensors") and run.exists("last.pt") and run.exists("history.json")


def test_same_seed_same_numbers():
    a = Trainer(toy_model(), cfg(epochs=2)).fit(toy_splits())
    b = Trainer(toy_model(), cfg(epochs=2)).fit(toy_splits())
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h["epochs"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_resume_equals_uninterrupted(tmp_path):
    full = Trainer(toy_model(), cfg(epochs=4), RunDir.create(tmp_path / "full"))
    full.fit(toy_splits())
    run = RunDir.create(tmp_path / "cut")
    Trainer(toy_model(), cfg(epochs=2), run).fit(toy_splits())
    resumed = Trainer(toy_model(seed=99), cfg(epochs=4), run)  # different init: must be overwritten
    resumed.fit(toy_splits())
    assert resumed.start_epoch == 3
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert len(run.read_json("history.json")["epochs"]) == 4


def test_nan_loss_is_a_clear_error_and_keeps_checkpoints(tmp_path):
    run = RunDir.create(tmp_path / "r")
    splits = toy_splits()
    Trainer(toy_model(), cfg(epochs=1), run).fit(splits)
    bad = TensorSet(splits.train.x.clone(), splits.train.y)
    bad.x[5, 0] = float("nan")
    with pytest.raises(TrainingError, match="loss is nan; lower --lr"):
        Trainer(toy_model(), cfg(epochs=2), run).fit(Splits("bad", bad, splits.val, splits.test))
    assert len(run.read_json("history.json")["epochs"]) == 1
    assert run.exists("best.safetensors")


def test_penalty_and_batch_transform_hooks_are_used():
    calls = {"transform": 0}

    class L2Logits:
        name = "logit_l2"

        def __call__(self, model, x, y, logits):
            return 1e-3 * logits.pow(2).mean()

    def flip_nothing(model, x, y):
        calls["transform"] += 1
        return x, y

    hist = Trainer(
        toy_model(), cfg(epochs=1), penalties=[L2Logits()], batch_transform=flip_nothing
    ).fit(toy_splits())
    assert calls["transform"] == -(-80 // 16)  # one call per training batch
    assert hist["epochs"][0]["train"]["logit_l2"] > 0


def test_optimizer_names_are_case_insensitive_and_validated():
    assert TrainConfig(optimizer="adamw").optimizer == "AdamW"
    with pytest.raises(Exception, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_cosine_schedule_sets_each_epochs_rate_and_resumes(tmp_path):
    t = Trainer(toy_model(), cfg(epochs=4, scheduler="cosine", lr=0.1))
    assert [round(t.lr_at(e), 6) for e in (1, 2, 3, 4)] == [0.1, 0.085355, 0.05, 0.014645]
    full = Trainer(toy_model(), cfg(epochs=3, scheduler="cosine"), RunDir.create(tmp_path / "a"))
    full.fit(toy_splits())
    run = RunDir.create(tmp_path / "b")
    Trainer(toy_model(), cfg(epochs=1, scheduler="cosine"), run).fit(toy_splits())
    resumed = Trainer(toy_model(), cfg(epochs=3, scheduler="cosine"), run)
    resumed.fit(toy_splits())
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_an_empty_train_or_val_split_is_one_line_not_a_sampler_traceback(tmp_path):
    """A dataset whose options leave no training samples (e.g. video-folder split=test, the whole
    folder as test data) is refused naming the empty split, before any folder is written."""
    from deepshield.errors import DataError

    full = toy_splits()
    none = full.train.subset(torch.tensor([], dtype=torch.long))
    for empty in ("train", "val"):
        parts = {"train": full.train, "val": full.val, "test": full.test, empty: none}
        with pytest.raises(DataError, match=f"the {empty} split is empty"):
            Trainer(toy_model(), cfg(), RunDir.create(tmp_path / empty)).fit(Splits("toy", **parts))
