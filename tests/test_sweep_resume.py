"""Attack sweeps that a user can wait for: each budget is written as it finishes, an interrupted
sweep resumes at the next unfinished budget with the numbers of an uninterrupted one, attacks
report their steps to the progress bar, and attack tables give the actual error rates at the
run's operating threshold."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from deepshield import progress
from deepshield.attacks import pgd
from deepshield.attacks import sweep as sweep_module
from deepshield.attacks.sweep import AttackSpec, attack_sweep
from deepshield.run import RunDir
from deepshield.runs import attack_sweep as sweep_run
from deepshield.runs.attack_sweep import attack_run, load_attack_data, run_config
from deepshield.runs.decision import calibrate_run, load_decision
from test_sweep import trained_tiny_run

SPEC = AttackSpec("pgd", (0.0, 2 / 255, 6 / 255), steps=2)
VOLATILE = ("name", "seconds", "command")


class Interrupted(Exception):
    """Stands for Ctrl-C / a killed job after a budget was written."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A copy of the session's tiny detector run (these tests add a decision.json to it)."""
    source = trained_tiny_run(tmp_path_factory)
    copy = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(source.path, copy)
    return RunDir.open(copy)


def _spy_attack(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the eps of every batch the sweep attacks."""
    seen: list[float] = []
    real = sweep_module.get_attack

    def spied(name: str):
        entry = real(name)

        def run(model, x, y, eps, **kw):
            seen.append(eps)
            return entry.run(model, x, y, eps, **kw)

        return dataclasses.replace(entry, run=run)

    monkeypatch.setattr(sweep_module, "get_attack", spied)
    return seen


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def test_interrupted_sweep_resumes_at_next_budget(tiny_run, monkeypatch):
    whole = attack_run(tiny_run.path, SPEC, n=12, batch_size=5, name="whole")
    real_save = sweep_run.BudgetFiles.save

    def save_then_stop(self, k, tensors):
        real_save(self, k, tensors)
        if k == 1:  # budget 1 (2/255) written, then the job dies
            raise Interrupted

    monkeypatch.setattr(sweep_run.BudgetFiles, "save", save_then_stop)
    with pytest.raises(Interrupted):
        attack_run(tiny_run.path, SPEC, n=12, batch_size=5, name="cut")
    folder = tiny_run.file("attack_cut_budgets")
    assert sorted(p.name for p in folder.iterdir()) == [
        "0.safetensors",
        "1.safetensors",
        "key.json",
    ]
    assert not tiny_run.exists("attack_cut.json")
    budget1 = (folder / "1.safetensors").read_bytes()

    monkeypatch.setattr(sweep_run.BudgetFiles, "save", real_save)
    seen = _spy_attack(monkeypatch)
    saved = []

    def record_then_save(self, k, tensors):
        saved.append((k, (folder / "1.safetensors").read_bytes()))
        real_save(self, k, tensors)

    monkeypatch.setattr(sweep_run.BudgetFiles, "save", record_then_save)
    resumed = attack_run(tiny_run.path, SPEC, n=12, batch_size=5, name="cut")
    assert set(seen) == {6 / 255}  # only the unfinished budget was attacked (3 batches)
    assert [k for k, _ in saved] == [2] and saved[0][1] == budget1  # budget 1 untouched
    assert _stable(resumed) == _stable(whole)
    assert not folder.exists()  # the finished sweep's artifacts hold the results


def test_changed_settings_do_not_reuse_budgets(tiny_run, monkeypatch):
    real_save = sweep_run.BudgetFiles.save

    def save_then_stop(self, k, tensors):
        real_save(self, k, tensors)
        if k == 1:
            raise Interrupted

    monkeypatch.setattr(sweep_run.BudgetFiles, "save", save_then_stop)
    with pytest.raises(Interrupted):
        attack_run(tiny_run.path, SPEC, n=12, batch_size=5, name="changed")
    monkeypatch.setattr(sweep_run.BudgetFiles, "save", real_save)
    seen = _spy_attack(monkeypatch)
    other = dataclasses.replace(SPEC, seed=1)  # another seed: other examples at every budget
    attack_run(tiny_run.path, other, n=12, batch_size=5, name="changed")
    assert sorted(set(seen)) == [2 / 255, 6 / 255]


def test_attacks_report_each_step(monkeypatch):
    ticks = []
    monkeypatch.setattr(progress, "_tick", lambda: ticks.append(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 0, 1])
    pgd(model, x, y, 0.1, steps=4, restarts=2)
    assert len(ticks) == 8


def test_progress_bar_shows_steps(monkeypatch):
    monkeypatch.setattr(progress, "enabled", lambda: True)
    descriptions = []
    items = progress.track(range(2), "pgd eps 0.1")
    for _ in items:
        progress.tick()
        progress.tick()
        descriptions.append(progress._tick is not None)
    assert descriptions == [True, True] and progress._tick is None  # restored after the bar


def _p_fake(logits: torch.Tensor) -> np.ndarray:
    return logits.softmax(1)[:, 1].double().numpy()


def test_rates_at_the_run_threshold(tiny_run):
    spec = AttackSpec("fgsm", (0.0, 8 / 255))
    tiny_run.file("decision.json").unlink(missing_ok=True)  # training wrote one: drop it first
    plain = attack_run(tiny_run.path, spec, name="plain_threshold")
    clean, attacked = plain["rows"]
    # uncalibrated: raw P(fake) at 0.5, the same rule as fake_passed_as_real
    assert plain["decision"]["calibrated"] is False
    for row in plain["rows"]:
        assert row["fakes_passed_at_threshold"] == pytest.approx(row["fake_passed_as_real"])
        assert row["reals_flagged_at_threshold"] == pytest.approx(row["real_flagged_as_fake"])
    assert attacked["fakes_passed_at_threshold"] > clean["fakes_passed_at_threshold"]

    decision = calibrate_run(tiny_run.path, rule="fpr=0.05")
    assert load_decision(tiny_run.path).threshold == decision.threshold
    got = attack_run(tiny_run.path, spec, name="calibrated_threshold")
    model = tiny_run.load_model("best")
    batch = load_attack_data(run_config(tiny_run), seed=spec.seed)
    result = attack_sweep(model, batch.x, batch.y, spec)
    y = result.y.numpy()
    for k, row in enumerate(got["rows"]):
        p = decision.calibrate(_p_fake(result.adv_logits[k]))
        assert row["fakes_passed_at_threshold"] == pytest.approx(
            np.mean(p[y == 1] < decision.threshold)
        )
        assert row["reals_flagged_at_threshold"] == pytest.approx(
            np.mean(p[y == 0] >= decision.threshold)
        )
        assert row["p_fake_calibrated_mean"] == pytest.approx(p.mean())
    assert got["decision"]["calibrated"] is True
    assert got["decision"]["threshold"] == pytest.approx(decision.threshold)
    html = tiny_run.file("report.html").read_text()
    assert "fakes passed at run threshold" in html
