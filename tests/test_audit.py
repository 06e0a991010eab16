"""`deepshield audit`: audit.json content on a tiny detector (quick budget), the gradient-masking
checks (silent on a plain model, warning on one behind a non-differentiable input quantisation),
the random-noise baseline, resuming after a failed step, and one-line errors."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshield.attacks.norms import Budget
from deepshield.attacks.objectives import margin
from deepshield.attacks.sweep import AttackSpec
from deepshield.audit import BUDGETS, Audit, audit_run, eps_half, masking_checks, random_noise
from deepshield.audit.card import score_card
from deepshield.audit.checks import (
    blackbox_beats_whitebox,
    iterative_weaker_than_single_step,
    large_eps_not_reaching_zero,
    noise_beats_gradient,
    tolerance,
)
from deepshield.errors import InputError
from deepshield.metrics import detector_metrics
from deepshield.models import registry as model_registry
from deepshield.models.architectures.simplenet import SimpleNet
from deepshield.models.registry import HALF, register
from deepshield.predict import fake_scores, predict_logits
from deepshield.run import RunDir
from deepshield.runs.attack_sweep import load_attack_data, run_config
from deepshield.runs.decision import load_decision
from test_attack_cli import cli
from test_sweep import TINY, trained_tiny_run

QUANTIZED = "audit_test_quantized_simplenet"


class QuantizedSimpleNet(SimpleNet):
    """SimpleNet behind round(8x)/8 of its (normalised) input: the gradient is zero almost
    everywhere, a textbook case of gradient masking (Athalye et al., 2018)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(torch.round(x * 8) / 8)


def _quantized(num_classes: int = 2, **kw) -> QuantizedSimpleNet:
    """Test-only: simplenet with a non-differentiable input quantisation."""
    return QuantizedSimpleNet(num_classes=num_classes, **kw)


@pytest.fixture(scope="module")
def quantized_registered() -> Iterator[str]:
    """The quantised model in the registry for this module only (at collection time other
    modules parametrise over every registered model)."""
    register(QUANTIZED, mean=HALF, std=HALF, input_size=(3, 32, 32))(_quantized)
    yield QUANTIZED
    model_registry._REGISTRY.pop(QUANTIZED, None)


# The checks read FGSM, PGD, noise and transfer only: the rest of quick, made smaller.
QUICK_LITE = replace(BUDGETS["quick"], name="quick-lite", cw_n=4, cw_steps=5, sanity_samples=4,
                     explain_samples=16, grid_fakes=2)  # fmt: skip


def quiet(_: str) -> None:
    """An audit log that prints nothing."""


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, dict]:
    """A copy of test_sweep's tiny detector (trained once per session) and its quick audit."""
    run = RunDir(tmp_path_factory.mktemp("audit") / "plain")
    shutil.copytree(trained_tiny_run(tmp_path_factory).path, run.path)
    return run, audit_run(run.path, budget="quick", log=quiet)


@pytest.fixture(scope="module")
def quantized(
    tmp_path_factory: pytest.TempPathFactory, quantized_registered: str
) -> tuple[RunDir, dict]:
    """The same detector trained behind the quantisation layer, and its audit (the quick budget
    with less CW-L2 and explanation work) with the plain detector as transfer surrogate."""
    from deepshield.runs.training import run_training

    out = tmp_path_factory.mktemp("audit") / "quantized"
    run = run_training(TINY.model_copy(update={"model": quantized_registered}), out)
    surrogate = trained_tiny_run(tmp_path_factory).path  # the plain detector
    return run, audit_run(run.path, budget=QUICK_LITE, surrogate=surrogate, log=quiet)


def test_quick_audit_items_equal_the_library_and_the_sweep_files(plain):
    run, audit = plain
    items = audit["items"]
    assert set(items) == {"clean", "fgsm", "pgd_linf", "pgd_l2", "cw_l2", "masking_rerun",
                          "noise", "transfer", "explanations", "everyday", "masking"}  # fmt: skip
    assert items["everyday"]["settings"] == 8  # the quick processing grid (runs.everyday)
    assert set(items["masking_rerun"]) == {"attack", "seconds"}  # nothing suspicious: no re-run
    assert not any("error" in v for v in items.values())

    model = run.load_model("best")
    batch = load_attack_data(run_config(run))
    scores = fake_scores(predict_logits(model, batch.x))
    ref = detector_metrics(batch.y.numpy(), scores.numpy())
    for key in ("accuracy", "auc", "eer", "fake_passed_as_real", "n"):
        assert items["clean"][key] == pytest.approx(ref[key], abs=1e-12), key
    for png in items["clean"]["plots"]:
        assert run.exists(png)

    quick = BUDGETS["quick"]
    for key, ladder in (("fgsm", quick.eps_linf), ("pgd_linf", quick.eps_linf),
                        ("pgd_l2", quick.eps_l2), ("transfer", quick.eps_linf)):  # fmt: skip
        rows = items[key]["rows"]
        assert [r["eps"] for r in rows] == list(ladder)
        written = run.read_json(items[key]["file"])["rows"]  # the audit adds at-threshold rates
        assert [{k: r[k] for k in w} for r, w in zip(rows, written, strict=True)] == written
        assert rows[0]["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)  # eps 0 = clean
        assert items[key]["eps_half"] == eps_half(rows)
    assert items["cw_l2"]["n"] == quick.cw_n and items["pgd_linf"]["n"] == len(batch.y)

    acc = [r["accuracy"] for r in items["pgd_linf"]["rows"]]
    assert all(b <= a for a, b in itertools.pairwise(acc)), acc  # falls with eps
    assert acc[-1] <= 0.05 < acc[0] - 0.5
    passed = [r["fake_passed_as_real"] for r in items["pgd_linf"]["rows"]]
    first = next(r["eps"] for r in items["pgd_linf"]["rows"] if r["fake_passed_as_real"] >= 0.5)
    assert items["pgd_linf"]["eps_half"] == first and passed[-1] == 1.0

    sur = items["transfer"]["surrogate"]
    assert sur["trained_here"] and Path(sur["run"]) == run.path / "audit_surrogate_quick"
    assert RunDir.open(sur["run"]).read_json("model.json")["kwargs"]["widths"] == [12, 24, 48, 96]
    assert "--surrogate" in items["transfer"]["command"]

    on_disk = json.loads(run.file("audit.json").read_text())
    assert on_disk["card"] == audit["card"] and on_disk["command"] == (
        f"deepshield audit {run.path} --budget quick --seed 0"
    )
    html = run.file("report.html").read_text()
    assert "Robustness audit (quick budget): report card" in html
    assert "Gradient-masking checks" in html and "deepshield audit" in html


def test_card_scores_follow_from_the_items(plain):
    _, audit = plain
    card = {r["item"]: r for r in audit["card"]}
    items = audit["items"]
    assert list(card) == ["clean detection", "calibration", "white-box L-inf", "white-box L2",
                          "transfer (black-box)", "gradient masking", "explanations",
                          "everyday processing"]  # fmt: skip
    every = items["everyday"]  # the lowest AUC under real processing; its drop sets the status
    assert card["everyday processing"]["score"] == min(r["auc"] for r in every["rows"])
    drop = every["largest_auc_drop"]
    assert card["everyday processing"]["status"] == (
        "pass" if drop <= 0.05 else "warn" if drop <= 0.15 else "fail"
    )
    (command,) = card["everyday processing"]["commands"]  # the grid's own, with the run's path
    assert command.startswith("deepshield robustness ") and "--grid quick" in command
    assert "RUN_DIR" not in command and command == every["command"]
    assert card["clean detection"]["score"] == items["clean"]["auc"]
    at4 = [next(r for r in items[k]["rows"] if r["eps"] == 4 / 255)["fake_passed_as_real"]
           for k in ("fgsm", "pgd_linf")]  # fmt: skip
    assert card["white-box L-inf"]["score"] == pytest.approx(1 - max(at4))
    assert card["white-box L-inf"]["eps_half"] == min(
        e for e in (items["fgsm"]["eps_half"], items["pgd_linf"]["eps_half"]) if e is not None
    )
    assert card["gradient masking"]["score"] == 1.0 and card["gradient masking"]["status"] == "pass"
    sanity = items["explanations"]["sanity"]
    assert card["explanations"]["score"] == float(sanity["passed"])
    for row in audit["card"]:
        assert row["score"] is None or 0 <= row["score"] <= 1
        assert row["status"] in ("pass", "warn", "fail")
        assert all(c.startswith("deepshield ") for c in row["commands"])


def test_rates_at_the_runs_threshold_are_counts_and_grow_with_eps(plain):
    run, audit = plain
    items = audit["items"]
    decision = load_decision(run.path)
    assert decision.calibrated  # train fitted decision.json on validation
    drawn = load_attack_data(run_config(run), n=BUDGETS["quick"].n, seed=0)  # attack --n draw
    raw = fake_scores(predict_logits(run.load_model("best"), drawn.x)).numpy()
    p, y = decision.calibrate(raw), drawn.y.numpy()
    fakes = np.mean(p[y == 1] < decision.threshold)  # passed: below the threshold
    reals = np.mean(p[y == 0] >= decision.threshold)
    for key in ("fgsm", "pgd_linf", "pgd_l2", "noise", "transfer"):
        clean = items[key]["rows"][0]  # eps 0
        assert clean["fakes_passed_at_threshold"] == pytest.approx(fakes, abs=1e-12), key
        assert clean["reals_flagged_at_threshold"] == pytest.approx(reals, abs=1e-12), key
    for key in ("pgd_linf", "pgd_l2"):  # nested budgets: a fake's P(fake) never rises with eps
        passed = [r["fakes_passed_at_threshold"] for r in items[key]["rows"]]
        assert all(b >= a for a, b in itertools.pairwise(passed)), (key, passed)
    d = items["clean"]["decision"]
    run_point = next(r for r in d["operating_points"] if r["point"] == "run")
    assert items["clean"]["fakes_passed_at_threshold"] == pytest.approx(run_point["fnr"])
    card = {r["item"]: r for r in audit["card"]}
    assert card["calibration"]["score"] == pytest.approx(1 - d["ece_calibrated"])
    html = run.file("report.html").read_text()
    assert "at the run&#x27;s threshold" in html or "at the run's threshold" in html


def test_masking_checks_stay_silent_on_a_plain_detector(plain):
    _, audit = plain
    checks = audit["items"]["masking"]["checks"]
    assert len(checks) == 5
    assert [c["status"] for c in checks] == ["pass"] * 5, checks


def test_masking_warnings_fire_on_a_quantised_input_detector(quantized):
    _, audit = quantized
    items = audit["items"]
    assert items["clean"]["accuracy"] >= 0.7  # it detects; only its gradient is useless
    status = {c["name"]: c["status"] for c in items["masking"]["checks"]}
    assert status["accuracy reaches ~0 at a large eps"] == "warn"
    assert status["white-box attacks beat transfer (black-box)"] == "warn"
    # the stronger re-run (APGD from x, 100 steps) ran at 64/255 and could not remove it
    assert str(64 / 255) in items["masking_rerun"]["pgd_linf"]
    large = {c["name"]: c for c in items["masking"]["checks"]}["accuracy reaches ~0 at a large eps"]
    assert "re-run with APGD-CE" in large["detail"]
    card = {r["item"]: r for r in audit["card"]}
    assert card["gradient masking"]["status"] == "warn"
    assert card["gradient masking"]["score"] < 1
    fgsm = items["fgsm"]["rows"]  # zero gradient: FGSM does not move the images at all
    assert all(r["accuracy"] == fgsm[0]["accuracy"] for r in fgsm)


def rows(accuracies: dict[float, float]) -> list[dict]:
    return [{"eps": e, "accuracy": a} for e, a in accuracies.items()]


def test_checks_on_constructed_sweeps():
    n = 100  # tolerance 0.02
    assert tolerance(n) == 0.02 and tolerance(30) == pytest.approx(2 / 30)
    fgsm = rows({0: 0.9, 0.1: 0.5, 0.2: 0.4})
    assert (
        iterative_weaker_than_single_step(rows({0: 0.9, 0.1: 0.3, 0.2: 0.0}), fgsm, n).status
        == "pass"
    )
    weak = iterative_weaker_than_single_step(rows({0: 0.9, 0.1: 0.3, 0.2: 0.45}), fgsm, n)
    assert weak.status == "warn" and "0.05" in weak.detail
    assert iterative_weaker_than_single_step(None, fgsm, n).status == "skipped"
    assert large_eps_not_reaching_zero(rows({0: 0.9, 0.5: 0.05}), n).status == "pass"
    assert large_eps_not_reaching_zero(rows({0: 0.9, 0.5: 0.06}), n).status == "warn"
    pgd = {"pgd_linf": rows({0: 0.9, 0.1: 0.5})}
    assert noise_beats_gradient(rows({0: 0.9, 0.1: 0.49}), pgd, n).status == "pass"
    assert noise_beats_gradient(rows({0: 0.9, 0.1: 0.47}), pgd, n).status == "warn"
    assert blackbox_beats_whitebox(rows({0: 0.9, 0.1: 0.6}), pgd, n).status == "pass"
    assert blackbox_beats_whitebox(rows({0: 0.9, 0.1: 0.4}), pgd, n).status == "warn"
    rising = masking_checks({"pgd_linf": rows({0: 0.9, 0.1: 0.2, 0.2: 0.3})}, n)
    assert [c.status for c in rising] == ["skipped", "warn", "warn", "skipped", "skipped"]


@pytest.mark.parametrize(("given", "name"), [("autoattack-fast", "autoattack-fast"),
                                             ("AutoAttack", "autoattack"), ("CW-L2", "cw_l2")])  # fmt: skip
def test_budget_attack_names_survive_the_sweeps_double_check(given, name):
    spec = AttackSpec(given, (0.0, 4 / 255)).checked()  # attack_run, then transfer_sweep
    assert spec.checked().attack == name


def test_random_noise_is_the_lowest_margin_of_seeded_uniform_draws():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    x = torch.rand(5, 3, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 1])
    eps = 0.1
    got = random_noise(model, x, y, eps, draws=6, seed=3)
    assert torch.equal(got, random_noise(model, x, y, eps, draws=6, seed=3))
    assert (got - x).abs().max() <= eps + 1e-7 and got.min() >= 0 and got.max() <= 1
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([(x + Budget("linf", eps).sample(x, None, gen)).clamp(0, 1)
                         for _ in range(6)])  # [6, B, 3, 2, 2]  # fmt: skip
    with torch.no_grad():
        margins = torch.stack([margin(model(d), y) for d in draws])  # [6, B]
    best = margins.argmin(0)  # [B]
    torch.testing.assert_close(got, draws[best, torch.arange(5)], rtol=0, atol=0)


def test_failed_step_keeps_earlier_results_and_a_rerun_resumes(plain, tmp_path, monkeypatch):
    source, first = plain
    run = RunDir(tmp_path / "copy")
    shutil.copytree(source.path, run.path)
    saved = run.read_json("audit.json")
    for key in ("transfer", "explanations"):  # as if the audit had stopped before them
        del saved["items"][key]
    run.write_json("audit.json", saved)

    def broken(self):
        raise InputError("explain failed on purpose: nothing to fix")

    monkeypatch.setattr(Audit, "explanations", broken)
    lines: list[str] = []
    audit = audit_run(run.path, budget="quick", log=lines.append)
    assert sum("kept from" in line for line in lines) == 8  # with masking_rerun and everyday
    assert audit["items"]["explanations"]["error"] == "explain failed on purpose: nothing to fix"
    on_disk = run.read_json("audit.json")
    assert on_disk["items"]["transfer"]["rows"] == first["items"]["transfer"]["rows"]  # seeded
    assert on_disk["items"]["pgd_linf"] == first["items"]["pgd_linf"]
    assert {r["item"]: r["status"] for r in on_disk["card"]}["explanations"] == "error"

    def crash(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Audit, "explanations", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        audit_run(run.path, budget="quick", log=quiet)
    assert run.read_json("audit.json")["items"]["transfer"] == on_disk["items"]["transfer"]

    monkeypatch.undo()
    import deepshield.audit.run as audit_module

    def no_sweeps(*a, **k):
        raise AssertionError("a finished sweep was recomputed")

    monkeypatch.setattr(audit_module, "sweep_loaded", no_sweeps)
    lines.clear()
    resumed = audit_run(run.path, budget="quick", log=lines.append)
    assert sum("kept from" in line for line in lines) == 9  # all but the failed step
    assert resumed["items"]["explanations"]["sanity"] == first["items"]["explanations"]["sanity"]
    assert [(r["item"], r["score"], r["status"]) for r in resumed["card"]] == [
        (r["item"], r["score"], r["status"]) for r in first["card"]
    ]


def test_cli_prints_the_card_of_a_finished_audit(plain, monkeypatch, capsys):
    run, audit = plain
    assert cli(monkeypatch, "audit", run.path) == 0  # same settings: every item is kept
    out = capsys.readouterr().out
    assert out.count("kept from") == len(set(audit["items"]) - {"masking"})  # every step's item
    for row in audit["card"]:
        assert row["item"] in out
    assert f"wrote {run.path / 'audit.json'}" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["audit", "{tmp}/nowhere"], "no such run folder"),
        (["audit", "{run}", "--budget", "huge"], "--budget 'huge': use one of quick, standard"),
        (["audit", "{run}", "--surrogate", "{tmp}"], "not a deepshield run"),
    ],
)
def test_bad_input_fails_in_one_line(plain, tmp_path, monkeypatch, capsys, args, match):
    run, _ = plain
    before = run.file("audit.json").read_bytes()
    args = [a.format(tmp=tmp_path, run=run.path) for a in args]
    assert cli(monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and "\n" not in err
    assert run.file("audit.json").read_bytes() == before


def test_the_explanations_item_reuses_the_audits_data_and_model(tmp_path_factory, monkeypatch):
    """The audit loads the dataset and the model once; its Grad-CAM step loads neither again and
    gives the maps a fresh load gives."""
    from deepshield import data
    from deepshield.audit.run import Audit

    run = RunDir(tmp_path_factory.mktemp("audit") / "once")
    shutil.copytree(trained_tiny_run(tmp_path_factory).path, run.path)
    audit = Audit(run.path, budget=QUICK_LITE)
    loads = {"data": 0, "model": 0}  # counted from here: the item, not the audit's setup
    real_load, real_model = data.load, RunDir.load_model

    def counted_load(*a, **k):
        loads["data"] += 1
        return real_load(*a, **k)

    def counted_model(self, *a, **k):
        loads["model"] += 1
        return real_model(self, *a, **k)

    monkeypatch.setattr(data, "load", counted_load)
    monkeypatch.setattr(RunDir, "load_model", counted_model)
    item = audit.explanations()
    assert loads == {"data": 0, "model": 0}
    monkeypatch.undo()
    from deepshield.runs.explain import explain_run

    b = audit.budget
    fresh = explain_run(run.path, "grad_cam", n=b.grid_fakes, max_samples=b.explain_samples,
                        sanity_samples=b.sanity_samples, sanity_repeats=b.sanity_repeats)  # fmt: skip
    assert item["sanity"]["spearman_mean"] == fresh["sanity"]["spearman_mean"]


def test_card_calls_an_undefined_sanity_check_a_warning_not_a_failure():
    san = {"spearman_mean": None, "bound": 0.5, "passed": False, "samples": 4, "repeats": 1,
           "undefined_pairs": 4}  # fmt: skip  # every map constant (audit.json writes NaN as null)
    items = {"explanations": {"sanity": san, "command": "deepshield explain RUN"}}
    row = next(r for r in score_card(items) if r["item"] == "explanations")
    assert row["status"] == "warn" and row["score"] is None
    assert (
        row["summary"].startswith("Grad-CAM sanity check undefined") and "4 pairs" in row["summary"]
    )
    defined = {**san, "spearman_mean": 0.7}
    row = next(r for r in score_card({"explanations": {**items["explanations"], "sanity": defined}})
               if r["item"] == "explanations")  # fmt: skip
    assert row["status"] == "fail" and row["score"] == 0.0
