"""Adaptive attacks on the defences: the detector-aware objective against a Guarded model, BPDA
and EOT threats on a purified model, and their CLI (`deepshield attack --purify/--adaptive`,
`deepshield defend attack-detector`), plus the newer registry attacks through `deepshield attack`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deepshield.attacks import pgd
from deepshield.attacks.objectives import detector_aware_loss, fooled_undetected
from deepshield.attacks.square import SquareResult
from deepshield.attacks.sweep import AttackSpec, attack_sweep, transfer_sweep
from deepshield.defenses.adaptive import (
    DEFENDER_SEED,
    PurifierThreat,
    detector_attack_table,
    purifier_attack_models,
    purifier_threat,
)
from deepshield.defenses.adversarial_detector import Guarded
from deepshield.defenses.dip import DipConfig
from deepshield.defenses.purifier import DipPurifier, Purified
from deepshield.errors import ConfigError
from deepshield.runs.attack_sweep import load_attack_data, run_config
from test_attack_cli import cli
from test_sweep import trained_tiny_run

D, EPS = 48, 0.1  # toy images [3, 4, 4]


class Linear(nn.Module):
    """logits = x.flatten(1) @ weight.T + bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def toy_guard() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-class linear classifier and a linear detector that has learnt the plain attack's
    direction s; clean images sit on the detector's blind side (s . (x - 0.5) = 0).

    Classifier: z1 - z0 = g . (x - 0.5) - 0.3 eps D, g = s on half of the pixels and 0.1 s on
    the others. Plain L-inf PGD moves every pixel by eps s: fooled (0.55 eps D > 0.3 eps D) and
    flagged (s . delta = eps D). Moving the strong half along s and the weak half against it
    fools the classifier (0.45 eps D) with s . delta = 0: unflagged. Returns (classifier,
    detector, x [64,3,4,4], y [64] all 0).
    """
    g = torch.Generator().manual_seed(0)
    s = torch.where(torch.rand(D, generator=g) < 0.5, -1.0, 1.0)  # [D]
    strong = (torch.arange(D) < D // 2).float()
    direction = s * (strong + 0.1 * (1 - strong))  # [D]
    margin = 0.3 * EPS * D
    classifier = Linear(
        torch.stack([torch.zeros(D), direction]),
        torch.tensor([0.0, -margin - 0.5 * float(direction.sum())]),
    ).eval()
    c = 4.0  # detector log-odds: c (s . (x - 0.5) / (eps D) - 1/2)
    detector = Linear(
        torch.stack([torch.zeros(D), c * s / (EPS * D)]),
        torch.tensor([0.0, -c / 2 - c / 2 * float(s.sum()) / (EPS * D)]),
    ).eval()
    x = 0.5 + 0.05 * torch.randn(64, D, generator=g)
    x = x - ((x - 0.5) @ s / D)[:, None] * s  # [64, D], s . (x - 0.5) = 0
    return classifier, detector, x.view(64, 3, 4, 4), torch.zeros(64, dtype=torch.long)


def test_detector_aware_pgd_fools_classifier_and_detector_where_plain_pgd_is_caught():
    classifier, detector, x, y = toy_guard()
    rows = detector_attack_table(classifier, detector, x, y, [EPS], steps=20)
    clean, fgsm, plain, aware = rows
    assert (clean["accuracy"], clean["detected"]) == (1.0, 0.0)
    for caught in (fgsm, plain):  # fooled, but flagged: no success
        assert caught["accuracy"] == 0.0 and caught["detected"] == 1.0
        assert caught["success"] == 0.0
    assert aware["detector-aware"] and aware["attack"] == "pgd"
    assert aware["success"] > 0.95 and aware["detected"] < 0.05 and aware["accuracy"] < 0.05

    guarded = Guarded(classifier, detector)
    x_adv = pgd(guarded, x, y, EPS, steps=20, loss_fn=detector_aware_loss, seed=0)
    with torch.no_grad():
        out = guarded(x_adv)
        wrong = classifier(x_adv).argmax(1) != y
        passed = detector(x_adv).softmax(1)[:, 1] < 0.5
    assert torch.equal(fooled_undetected(out, y), out.argmax(1) == 1)  # class 1: wrong, passed
    assert (wrong & passed).float().mean() > 0.95
    assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_detector_aware_loss_is_the_log_odds_of_a_wrong_unrejected_class():
    g = torch.Generator().manual_seed(3)
    out = torch.randn(500, 5, generator=g, dtype=torch.float64) * 3  # 4 classes + "rejected"
    y = torch.randint(0, 4, (500,), generator=g)
    loss = detector_aware_loss(out, y)
    success = fooled_undetected(out, y)
    two = torch.randn(500, 3, generator=g) * 3  # 2 classes + "rejected": one wrong class
    y2 = torch.randint(0, 2, (500,), generator=g)
    assert torch.equal(
        detector_aware_loss(two, y2) > 0,
        fooled_undetected(two, y2) & (two.softmax(1).gather(1, (1 - y2)[:, None]).squeeze(1) > 0.5),
    )
    p = out.softmax(1)
    wrong = p[:, :4].sum(1) - p.gather(1, y[:, None]).squeeze(1)  # P(wrong class, passed)
    assert torch.allclose(loss, torch.log(wrong) - torch.log(1 - wrong), atol=1e-5)
    own_or_reject = torch.cat([out.gather(1, y[:, None]), out[:, 4:]], 1)
    assert torch.equal(
        success, out[:, :4].scatter(1, y[:, None], -1e9).amax(1) > own_or_reject.amax(1)
    )


# -- purifier threats ---------------------------------------------------------------------------
def posterise(x: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in purifier: 9 grey levels per channel (zero gradient almost everywhere)."""
    return torch.round(x * 8) / 8


def test_bpda_threat_gets_through_a_stand_in_purifier_that_blocks_gradients():
    g = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(3, D, generator=g), torch.zeros(3)).eval()
    x = torch.rand(64, 3, 4, 4, generator=g)
    with torch.no_grad():
        y = model(posterise(x)).argmax(1)
    crafter, defended = purifier_attack_models(model, posterise, posterise, "bpda")
    assert isinstance(defended, Purified) and defended.model is model
    assert purifier_attack_models(model, posterise, posterise, "none")[0] is model

    xr = x.clone().requires_grad_(True)
    assert torch.equal(crafter(xr), defended(x))  # forward: the real purifier
    (grad,) = torch.autograd.grad(crafter(xr)[:, 0].sum(), xr)
    assert torch.equal(grad, model.weight[0].detach().view(1, 3, 4, 4).expand_as(x))  # identity
    with pytest.raises(RuntimeError):  # the defended model gives no gradient at all
        torch.autograd.grad(defended(xr)[:, 0].sum(), xr)

    x_adv = pgd(crafter, x, y, 0.1, steps=20, seed=0)
    with torch.no_grad():
        accuracy = (defended(x_adv).argmax(1) == y).float().mean()
    assert accuracy < 0.25  # measured on the purifying model: 0.125 (clean: 1.0)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


TINY_DIP = DipConfig(channels=(4, 8), skip=(0, 2), depth=4, iters=2, stop_psnr=None)


def purifiers(model: nn.Module) -> list[DipPurifier]:
    return [m.forward_fn for m in model.modules() if hasattr(m, "forward_fn")] + [
        m.purifier for m in model.modules() if isinstance(m, Purified)
    ]


def test_dip_threats_seed_the_defender_apart_and_redraw_only_for_eot():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for adaptive in ("bpda", "eot"):
        crafter, defended = PurifierThreat(adaptive, TINY_DIP).models(model, seed=5)
        attacker, defender = purifiers(crafter)[0], purifiers(defended)[0]
        assert (attacker.seed, defender.seed) == (5, DEFENDER_SEED + 5)
        assert attacker.reseed == (adaptive == "eot") and not defender.reseed
        first, second = crafter(x), crafter(x)
        assert torch.equal(first, second) == (adaptive == "bpda")
        assert torch.equal(defended(x), defended(x))  # the defence itself is deterministic
        assert not torch.equal(first, defended(x))  # other random draws than the defender's


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ((None, "bpda", None, None), "--adaptive needs a defence"),
        ((None, None, 4, None), "--eot-samples needs a defence"),
        (("jpeg", None, None, None), "--purify 'jpeg'"),
        (("dip", "bdpa", None, None), "--adaptive 'bdpa'"),
        (("dip", "bpda", 4, None), "--eot-samples needs --adaptive eot"),
        (("dip", "eot", 0, None), "--eot-samples 0"),
        (("dip", None, None, 0), "--dip-iters 0"),
    ],
)
def test_purifier_threat_rejects_bad_flag_combinations(flags, words):
    with pytest.raises(ConfigError, match=words):
        purifier_threat(*flags)


def test_purifier_threat_defaults():
    assert purifier_threat(None, None, None) == (None, 1)
    threat, passes = purifier_threat("dip", None, None)
    assert threat.adaptive == "bpda" and passes == 1 and threat.dip.iters == 500
    threat, passes = purifier_threat("dip", "eot", None, 50)
    assert (threat.adaptive, passes, threat.dip.iters) == ("eot", 8, 50)


# -- the CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """The trained detector of test_sweep (the same folder: trained once per session)."""
    return trained_tiny_run(tmp_path_factory)


def drawn(run, n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The run's model and the `--n n` draw of its test split (class-stratified, seed 0)."""
    batch = load_attack_data(run_config(run), n=n, seed=0)
    return run.load_model("best"), batch.x, batch.y


def same_rows(written: list[dict], ref: list[dict]) -> bool:
    """The library's row keys of the written rows (which add success statistics) equal ref."""
    got = [{k: r[k] for k in want} for r, want in zip(written, ref, strict=True)]
    return got == json.loads(json.dumps(ref))


@pytest.mark.parametrize(("attack", "steps"), [("apgd", 5), ("apgd-t", 5), ("square", 30)])
def test_attack_command_runs_the_registry_attacks_as_the_library(
    tiny_run, monkeypatch, attack, steps
):
    model, x, y = drawn(tiny_run, 8)
    args = ["attack", tiny_run.path, "--attack", attack, "--eps", "0,8/255", "--n", "8"]
    args += ["--steps", str(steps)]
    assert cli(monkeypatch, *args, "--out", f"reg_{attack}") == 0  # names kept apart
    rec = json.loads(tiny_run.file(f"attack_reg_{attack}.json").read_text())
    assert rec["attack"] == attack and rec["steps"] == steps
    ref = attack_sweep(model, x, y, AttackSpec(attack, (0, 8 / 255), steps=steps))
    assert same_rows(rec["rows"], ref.rows())
    assert f"--attack {attack}" in rec["command"]


@pytest.mark.parametrize(("attack", "default"), [("square", 5000), ("apgd", 100), ("pgd", 10)])
def test_attack_command_defaults_to_the_attacks_own_step_count(
    tiny_run, monkeypatch, attack, default
):
    import deepshield.attacks.registry as registry

    seen = []

    def record(model, x, y, eps, **kw):  # stands in for the attack the registry calls
        seen.append(kw.get("queries", kw.get("steps")))
        return SquareResult(x, torch.zeros(len(x), dtype=torch.long)) if attack == "square" else x

    # the sweep runs Square through square_search, which also returns the queries it spent
    monkeypatch.setattr(registry, "square_search" if attack == "square" else attack, record)
    assert cli(monkeypatch, "attack", tiny_run.path, "--attack", attack, "--eps", "0,8/255",
               "--n", "4", "--out", f"default_steps_{attack}") == 0  # fmt: skip
    rec = json.loads(tiny_run.file(f"attack_default_steps_{attack}.json").read_text())
    # the registry entry's default is filled in and recorded (issue 17.4: what ran is written)
    assert rec["steps"] == default and f"--steps {default}" in rec["command"]
    assert seen == [default]  # one batch, one nonzero eps


def test_purified_attack_command_equals_the_library_threat(tiny_run, monkeypatch, capsys):
    args = ["attack", tiny_run.path, "--eps", "0,8/255", "--steps", "2", "--n", "2",
            "--purify", "dip", "--adaptive", "eot", "--eot-samples", "2", "--dip-iters", "2"]  # fmt: skip
    assert cli(monkeypatch, *args) == 0
    rec = json.loads(tiny_run.file("attack_pgd_dip_eot.json").read_text())
    assert rec["defence"]["adaptive"] == "eot" and rec["defence"]["dip"]["iters"] == 2
    assert rec["eot_samples"] == 2
    for flag in ("--purify dip", "--adaptive eot", "--eot-samples 2", "--dip-iters 2"):
        assert flag in rec["command"]
    threat, passes = purifier_threat("dip", "eot", 2, 2)
    model, x, y = drawn(tiny_run, 2)
    crafter, defended = threat.models(model, seed=0)
    spec = AttackSpec("pgd", (0, 8 / 255), steps=2, eot_samples=passes)
    ref = transfer_sweep(crafter, {"model": defended}, x, y, spec)["model"]
    assert same_rows(rec["rows"], ref.rows())
    html = tiny_run.file("report.html").read_text()
    assert "DIP-purified model, adaptive: eot" in html and "Deep Image Prior purification" in html
    assert "crafting model accuracy" in html


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--adaptive", "eot"], "--adaptive needs a defence to adapt to: add --purify dip"),
        (["--purify", "dip", "--adaptive", "bpda", "--eot-samples", "4"], "needs --adaptive eot"),
        (["--purify", "dip", "--adaptive", "random"], "--adaptive 'random': use one of"),
        (["--purify", "median"], "the purifier available is dip"),
        (["--purify", "dip", "--surrogate", "."], "--surrogate and --purify do not combine"),
        (["--attack", "apgd_t"], "did you mean apgd-t"),
    ],
)
def test_adaptive_flags_fail_in_one_line_before_any_work(
    tiny_run, monkeypatch, capsys, args, words
):
    import deepshield.runs.attack_sweep as sweep_run

    def no_data(*a, **k):
        raise AssertionError("loaded data despite bad flags")

    monkeypatch.setattr(sweep_run.data, "load", no_data)
    if "--surrogate" in args:
        args = [a if a != "." else str(tiny_run.path) for a in args]
    assert cli(monkeypatch, "attack", tiny_run.path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err, err


@pytest.fixture(scope="module")
def detector_run(tiny_run, tmp_path_factory):
    """An adversarial-example detector run guarding the tiny detector (untrained weights: the
    CLI's numbers are checked against the library, not for quality)."""
    from deepshield import models
    from deepshield.run import RunDir

    run = RunDir.create(tmp_path_factory.mktemp("advdet") / "run")
    run.write_yaml("config.yaml", {"protect": str(tiny_run.path), "attack": "fgsm", "eps": 0.05})
    torch.manual_seed(0)
    run.save_model(models.create("mlp3", num_classes=2, hidden=[16, 8]))
    return run


def test_defend_attack_detector_writes_the_table_of_the_library(
    tiny_run, detector_run, monkeypatch, capsys
):
    args = [
        "defend",
        "attack-detector",
        detector_run.path,
        "--eps",
        "0.05",
        "--steps",
        "3",
        "--n",
        "10",
    ]
    assert cli(monkeypatch, *args) == 0
    result = detector_run.read_json("adaptive_detector.json")
    model, x, y = drawn(tiny_run, 10)
    rows = detector_attack_table(model, detector_run.load_model(), x, y, [0.05], steps=3)
    assert result["rows"] == json.loads(json.dumps(rows))
    assert [(r["attack"], r["detector-aware"]) for r in rows] == [
        ("clean", False),
        ("fgsm", False),
        ("pgd", False),
        ("pgd", True),
    ]
    assert "deepshield defend attack-detector" in result["command"]
    assert "Adaptive (detector-aware) attack" in detector_run.file("report.html").read_text()
    assert capsys.readouterr().out.count("fooled and undetected") == 4


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--eps", "0"], "eps=0.0 must be > 0"), (["--steps", "0"], "'--steps'"),
     (["--split", "dev"], "'dev' is not one of train, val, test"), (["--n", "0"], "'--n'")],
)  # fmt: skip
def test_defend_attack_detector_bad_flags_are_one_line(
    detector_run, monkeypatch, capsys, args, words
):
    assert cli(monkeypatch, "defend", "attack-detector", detector_run.path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err
