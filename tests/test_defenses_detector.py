"""The adversarial-example detector: dataset construction, training on a toy case, the
generalisation table, the Guarded (protected + detector) model, and its CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshield.config import TrainConfig
from deepshield.data.splits import TensorSet
from deepshield.defenses.adversarial_detector import (
    DetectorConfig,
    Guarded,
    adversarial_pairs,
    parse_attack,
)
from deepshield.errors import ConfigError, RunError
from deepshield.run import RunDir
from deepshield.runs.adversarial_detector import train_adversarial_detector


def linear_classifier(d: int = 3 * 8 * 8, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).eval()


def test_pairs_hold_each_sample_clean_then_attacked():
    model = linear_classifier()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (10, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (10,), generator=g)
    pairs = adversarial_pairs(model, TensorSet(x, y, [f"s{i}" for i in range(10)]), "fgsm", 0.1)
    assert pairs.y.tolist() == [0] * 10 + [1] * 10  # 1 = adversarial
    assert pairs.x.dtype == torch.uint8 and torch.equal(pairs.x[:10], x)
    step = (pairs.x[10:].float() - x.float()).abs()
    assert step.max() <= round(0.1 * 255) + 0.5 and step.float().mean() > 20  # moved, in budget
    assert pairs.names[3] == "s3" and pairs.names[13] == "s3:fgsm"
    with torch.no_grad():
        wrong = model(pairs.x.float() / 255).argmax(1) != torch.cat([y, y])
    assert torch.equal(pairs.meta["fooled"], wrong)
    assert wrong[10:].float().mean() > wrong[:10].float().mean()  # the attack works


def test_guarded_model_is_the_joint_distribution():
    protected, detector = linear_classifier(classes=3, seed=1), linear_classifier(classes=2, seed=2)
    x = torch.rand(4, 3, 8, 8)
    p = torch.softmax(Guarded(protected, detector)(x), dim=1)  # [4, 4]
    p_cls, p_adv = torch.softmax(protected(x), 1), torch.softmax(detector(x), 1)[:, 1]
    expected = torch.cat([p_cls * (1 - p_adv)[:, None], p_adv[:, None]], dim=1)
    assert torch.allclose(p, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "expected"), [("pgd:0.03", ("pgd", 0.03)), ("cw_l2", ("cw_l2", 0.07))]
)
def test_parse_attack(spec, expected):
    assert parse_attack(spec, 0.07) == expected


@pytest.mark.parametrize("spec", ["nope:0.1", "fgsm:big", "fgsm:2"])
def test_parse_attack_rejects_bad_specs(spec):
    with pytest.raises(ConfigError):
        parse_attack(spec)


@pytest.fixture(scope="module")
def protected_run(tmp_path_factory):
    from deepshield.runs.training import run_training

    cfg = TrainConfig(
        dataset="synthetic-faces:easy",
        data_kwargs={"n": 200, "size": 32},
        model="mlp3",
        model_kwargs={"hidden": [32, 16]},
        epochs=2,
        device="cpu",
    )
    return run_training(cfg, tmp_path_factory.mktemp("protected") / "run")


@pytest.fixture(scope="module")
def detector_run(protected_run, tmp_path_factory):
    cfg = DetectorConfig(
        protect=str(protected_run.path),
        attack="fgsm",
        eps=0.1,
        steps=5,
        evaluate=["fgsm:0.1", "fgsm:0.03", "pgd:0.1"],
        train=TrainConfig(model="simplenet", epochs=6, lr=1e-3, device="cpu"),
    )
    out = tmp_path_factory.mktemp("advdet") / "run"
    return cfg, train_adversarial_detector(cfg, out)


def test_detector_learns_the_toy_case_and_reports_unseen_attacks(detector_run):
    _, run = detector_run
    result = run.read_json("detector.json")
    rows = {(r["attack"], r["eps"]): r for r in result["rows"]}
    seen = rows[("fgsm", 0.1)]
    assert seen["seen in training"] and not rows[("fgsm", 0.03)]["seen in training"]
    assert seen["accuracy"] > 0.8 and seen["auc"] > 0.9
    assert seen["n"] == result["counts"]["test"]["total"] == 2 * result["counts"]["test"]["clean"]
    # a smaller perturbation of the same kind is harder to see than the one trained on
    assert rows[("fgsm", 0.03)]["auc"] < seen["auc"]
    assert all(0 <= r["eer"] <= 1 and 0 <= r["attack_success"] <= 1 for r in result["rows"])
    report = run.file("report.html").read_text()
    assert "Adversarial-example detector" in report and run.exists("plots/detector_roc.png")


def test_detector_run_is_reused_and_guards_its_config(detector_run):
    cfg, run = detector_run
    stamp = run.file("detector.json").stat().st_mtime_ns
    assert train_adversarial_detector(cfg, run.path).path == run.path
    assert run.file("detector.json").stat().st_mtime_ns == stamp  # finished: not redone
    with pytest.raises(RunError, match="--force"):
        train_adversarial_detector(cfg.model_copy(update={"eps": 0.2}), run.path)


def test_detector_config_rejects_unknown_attacks():
    with pytest.raises(ConfigError, match="unknown attack"):
        DetectorConfig(protect="x", attack="nope")


def test_defend_detector_cli_passes_its_flags_to_the_study(protected_run, tmp_path):
    from typer.testing import CliRunner

    from deepshield.cli import app

    out = tmp_path / "advdet"
    args = ["defend", "detector", "--protect", str(protected_run.path), "--attack", "fgsm"]
    args += ["--eps", "0.07", "-m", "mlp3", "-e", "1", "--limit", "40"]
    args += ["--evaluate", "fgsm:0.07,pgd:0.03", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = RunDir(out).read_yaml("config.yaml")
    assert (cfg["attack"], cfg["eps"], cfg["limit"]) == ("fgsm", 0.07, 40)
    assert (cfg["train"]["model"], cfg["train"]["epochs"]) == ("mlp3", 1)
    rows = RunDir(out).read_json("detector.json")["rows"]
    assert [(r["attack"], r["eps"], r["seen in training"]) for r in rows] == [
        ("fgsm", 0.07, True),
        ("pgd", 0.03, False),
    ]
    assert "fgsm eps=0.07: " in result.output and "(trained on)" in result.output
    real = sum(r["real attack"] for r in rows)  # each row says whether its attack fooled any image
    assert f"{real} of 2 rows are real attacks" in result.output


def test_force_keeps_a_users_file_in_the_detector_folder(detector_run, tmp_path):
    import shutil

    cfg, run = detector_run
    out = tmp_path / "advdet"
    shutil.copytree(run.path, out)
    (out / "notes.txt").write_text("mine")
    changed = cfg.model_copy(update={"evaluate": ["fgsm:0.1"]})
    train_adversarial_detector(changed, out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert [r["eps"] for r in RunDir(out).read_json("detector.json")["rows"]] == [0.1]
    assert RunDir(out).foreign() == ["notes.txt"]
