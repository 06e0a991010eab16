"""Training-time defences: the Lipschitz penalty, adversarial training, robustness tables, and
the `deepshield train` / `deepshield defend compare` wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepshield.attacks import pgd
from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.defenses.adversarial_training import AdversarialBatch
from deepshield.defenses.lipschitz import LipschitzPenalty, input_gradient
from deepshield.defenses.robustness import accuracy_on, robustness_table
from deepshield.defenses.training import training_hooks
from deepshield.errors import ConfigError
from deepshield.train.trainer import Trainer


class Flat(nn.Module):
    """A tiny smooth classifier on [B,C,H,W] images (tanh hidden layer)."""

    def __init__(self, d: int, hidden: int = 8, classes: int = 2, bn: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.bn(self.fc1(x.flatten(1)))))


# -- Lipschitz penalty ----------------------------------------------------------------------------
def test_lipschitz_penalty_equals_the_closed_form_of_a_linear_model():
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(5, 3, 2, 2, generator=gen), torch.tensor([0, 1, 2, 1, 0])
    w, b = model[1].weight.detach(), model[1].bias.detach()
    p = torch.softmax(x.flatten(1) @ w.T + b, dim=1)  # [5, 3]
    grad = (p - F.one_hot(y, 3).float()) @ w  # [5, 12]: d CE / d x = W^T (softmax - onehot)
    expected = 0.3 * grad.square().sum(1).mean()
    got = LipschitzPenalty(0.3)(model, x, y, model(x))
    assert torch.allclose(got, expected, rtol=1e-5)


def test_input_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = Flat(12).double()
    x, y = torch.rand(3, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 1])
    grad = input_gradient(model, x, y, create_graph=False)
    h, v = 1e-6, torch.randn_like(x)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(z), y, reduction="sum")

    fd = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
    assert torch.allclose((grad * v).sum(), fd, rtol=1e-6)


def test_lipschitz_penalty_parameter_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = Flat(12).double()
    x, y = torch.rand(4, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    penalty = LipschitzPenalty(0.5)
    params = list(model.parameters())
    grads = torch.autograd.grad(penalty(model, x, y, model(x)), params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True))
    h = 1e-6

    def value_at(scale: float) -> torch.Tensor:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(scale * h * d)
        out = penalty(model, x, y, model(x)).detach()
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(scale * h * d)
        return out

    fd = (value_at(1.0) - value_at(-1.0)) / (2 * h)
    assert analytic.abs() > 1e-4  # a direction in which the penalty really changes
    assert torch.allclose(analytic, fd, rtol=1e-5)


def test_lipschitz_penalty_leaves_batch_norm_statistics_alone():
    model = Flat(12, bn=True).train()
    x, y = torch.rand(6, 3, 2, 2), torch.tensor([0, 1] * 3)
    logits = model(x)  # the training forward: updates the statistics once
    before = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    LipschitzPenalty(1.0)(model, x, y, logits)
    assert torch.equal(model.bn.running_mean, before[0])
    assert torch.equal(model.bn.num_batches_tracked, before[1])


def test_lipschitz_training_step_backpropagates_through_batch_norm():
    """The training loss and the penalty share the batch-norm buffers: one backward must work
    (the statistics are not modified in place) and count the batch once."""
    model = Flat(12, bn=True).train()
    x, y = torch.rand(6, 3, 2, 2), torch.tensor([0, 1] * 3)
    logits = model(x)
    after_one = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    loss = nn.functional.cross_entropy(logits, y) + LipschitzPenalty(1.0)(model, x, y, logits)
    loss.backward()
    assert model.fc1.weight.grad.abs().sum() > 0
    assert torch.equal(model.bn.running_mean, after_one[0])
    assert torch.equal(model.bn.num_batches_tracked, after_one[1])


def test_lipschitz_weight_must_be_positive():
    with pytest.raises(ConfigError, match="--lipschitz"):
        LipschitzPenalty(0.0)


# -- toy data on which robust and non-robust features differ -----------------------------------------
def toy_splits(n: int = 256, seed: int = 0) -> Splits:
    """[N,3,4,4] images: pixel row 0 carries a strong, noisy label signal (+-0.25, noise 0.3),
    the other 36 pixels a weak one (+-0.04, noise 0.1). Together the weak pixels predict well
    but an L-inf attack of 0.1 erases them; only the strong row survives it."""

    def part(m: int, s: int) -> TensorSet:
        g = torch.Generator().manual_seed(s)
        y = torch.randint(0, 2, (m,), generator=g)
        sign = (2 * y - 1).float().view(-1, 1, 1, 1)
        x = 0.5 + 0.04 * sign + 0.1 * torch.randn(m, 3, 4, 4, generator=g)
        x[:, :, 0, :] = 0.5 + 0.25 * sign[..., 0] + 0.3 * torch.randn(m, 3, 4, generator=g)
        return TensorSet(x.clamp(0, 1), y)

    return Splits(name="toy", train=part(n, seed), val=part(64, seed + 1), test=part(200, seed + 2))


def train_toy(cfg: TrainConfig, splits: Splits) -> nn.Module:
    torch.manual_seed(cfg.seed)
    model = Flat(48, hidden=16)
    Trainer(model, cfg, None, **training_hooks(cfg)).fit(splits)
    return model.eval()


TOY = {"epochs": 8, "batch_size": 32, "lr": 0.01, "seed": 0, "device": "cpu"}


def test_adversarial_training_is_measurably_more_robust_than_plain_training():
    splits = toy_splits()
    plain = train_toy(TrainConfig(**TOY), splits)
    robust = train_toy(TrainConfig(**TOY, adv_train="pgd", adv_eps=0.1, adv_steps=5), splits)
    fast = train_toy(TrainConfig(**TOY, adv_train="fgsm-rs", adv_eps=0.1), splits)
    x, y = splits.test.tensors()
    rows = robustness_table({"plain": plain, "pgd": robust, "fgsm-rs": fast}, x, y, 0.1)
    acc = {r["model"]: r for r in rows}
    assert acc["plain"]["clean"] > 0.9  # the weak pixels suffice on clean data...
    assert acc["plain"]["white-box"] < 0.7  # ...but PGD at 0.1 erases them
    assert acc["pgd"]["white-box"] > acc["plain"]["white-box"] + 0.2
    assert acc["fgsm-rs"]["white-box"] > acc["plain"]["white-box"] + 0.2


def test_lipschitz_training_flattens_the_decision_function_and_adds_robustness():
    splits = toy_splits()
    plain = train_toy(TrainConfig(**TOY), splits)
    smooth = train_toy(TrainConfig(**TOY, lipschitz=1.0), splits)
    x, y = splits.test.tensors()

    def margin_slope(m: nn.Module) -> float:
        """Mean ||d (z_1 - z_0) / dx||_2: the local Lipschitz constant of the logit margin."""
        xr = x.clone().requires_grad_(True)
        z = m(xr)
        (g,) = torch.autograd.grad((z[:, 1] - z[:, 0]).sum(), xr)
        return float(g.flatten(1).norm(dim=1).mean())

    assert margin_slope(smooth) < 0.5 * margin_slope(plain)
    rows = {r["model"]: r for r in robustness_table({"p": plain, "l": smooth}, x, y, 0.1)}
    assert rows["l"]["clean"] > 0.9
    assert rows["l"]["white-box"] > rows["p"]["white-box"] + 0.15


# -- adversarial batches ----------------------------------------------------------------------
def test_pgd_batches_stay_in_budget_and_raise_the_loss():
    torch.manual_seed(0)
    model = Flat(48, hidden=16)
    x, y = toy_splits(n=64).train.tensors()
    x_adv, y_adv = AdversarialBatch("pgd", 0.05, steps=5)(model, x, y)
    assert torch.equal(y_adv, y)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert model.training  # the attack restored the mode it found


def test_fgsm_rs_is_wong_et_al_step():
    """Random start in the eps ball, one signed-gradient step of 1.25 eps, projection."""
    torch.manual_seed(0)
    model = Flat(48, hidden=16).eval()
    x, y = toy_splits(n=16).train.tensors()
    eps = 8 / 255
    got, _ = AdversarialBatch("fgsm-rs", eps, generator=torch.Generator().manual_seed(3))(
        model, x, y
    )
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    start = (x + (2 * u - 1) * eps).clamp(0, 1).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    delta = (start.detach() + 1.25 * eps * g.sign() - x).clamp(-eps, eps)
    expected = (x + delta).clamp(0, 1)
    assert torch.allclose(got, expected, atol=1e-7)
    assert AdversarialBatch("fgsm-rs", eps).steps == 1


@pytest.mark.parametrize(
    ("method", "eps", "match"), [("free", 0.1, "--adv-train"), ("pgd", 0.0, "--adv-eps")]
)
def test_adversarial_batch_rejects_bad_settings(method, eps, match):
    with pytest.raises(ConfigError, match=match):
        AdversarialBatch(method, eps)


def test_train_config_rejects_an_unknown_adversarial_training():
    from deepshield.config import parse_config

    with pytest.raises(ConfigError, match="adv_train"):
        parse_config({"adv_train": "free"}, TrainConfig)


# -- the training run and the CLI -------------------------------------------------------------
@pytest.fixture(scope="module")
def defended_runs(tmp_path_factory):
    """A plain and a Lipschitz-regularised run of mlp3 on a small synthetic-faces set."""
    from deepshield.runs.training import run_training

    root = tmp_path_factory.mktemp("defended")
    common = {
        "dataset": "synthetic-faces:easy",
        "data_kwargs": {"n": 60, "size": 32},
        "model": "mlp3",
        "model_kwargs": {"hidden": [32, 16]},
        "epochs": 1,
        "device": "cpu",
    }
    plain = run_training(TrainConfig(**common), root / "plain")
    smooth = run_training(TrainConfig(**common, lipschitz=0.1, adv_eps=0.03), root / "smooth")
    return plain, smooth


def test_a_defended_run_records_its_penalty_and_robustness(defended_runs):
    plain, smooth = defended_runs
    history = smooth.read_json("history.json")
    assert history["epochs"][0]["train"]["lipschitz"] > 0
    rob = smooth.read_json("robustness.json")
    assert rob["eps"] == 0.03 and 0 <= rob["white-box"] <= rob["clean"] <= 1
    assert "Robustness of the defended detector" in smooth.file("report.html").read_text()
    assert not plain.exists("robustness.json")  # an undefended run is not attacked


def test_defend_compare_writes_white_box_and_transfer_columns(defended_runs):
    from typer.testing import CliRunner

    from deepshield.cli import app

    plain, smooth = defended_runs
    args = ["defend", "compare", str(smooth.path), str(plain.path), "--eps", "0.03"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = smooth.read_json("robustness_compare.json")["rows"]
    assert [r["model"] for r in rows] == ["smooth", "plain"]
    assert rows[0]["defence"] == "lipschitz 0.1" and rows[1]["defence"] == "none"
    assert set(rows[0]) >= {"clean", "white-box", "from plain"}
    assert all(0 <= r["white-box"] <= r["clean"] for r in rows)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--adv-train", "pgd", "--eps", "8/255", "--adv-steps", "2"], ("pgd", 8 / 255, 0.0)),
        (["--lipschitz", "0.5", "--adv-train", "fgsm-rs", "--eps", "0.02"], ("fgsm-rs", 0.02, 0.5)),
    ],
)
def test_train_cli_defence_flags_reach_the_run(flags, expected, tmp_path):
    from typer.testing import CliRunner

    from deepshield.cli import app
    from deepshield.run import RunDir

    args = ["train", "-d", "synthetic-faces:easy", "--data-arg", "n=40", "--data-arg", "size=32"]
    args += ["-m", "mlp3", "-e", "1", "--device", "cpu", "--out", str(tmp_path / "r"), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "r")
    cfg = run.read_yaml("config.yaml")
    assert (cfg["adv_train"], cfg["lipschitz"]) == (expected[0], expected[2])
    assert math.isclose(cfg["adv_eps"], expected[1])
    assert math.isclose(run.read_json("robustness.json")["eps"], expected[1])
    train = run.read_json("history.json")["epochs"][0]["train"]
    assert ("lipschitz" in train) == (expected[2] > 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--adv-train", "free"], "adv_train"),
        (["train", "--adv-eps", "x"], "--adv-eps"),
        (["defend", "purify", "/nonexistent/run"], "no such run folder"),
        (["defend", "detector"], "--protect"),
        (["defend", "compare", "/nonexistent/a"], "two or more"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, monkeypatch, capsys):
    from deepshield.cli import main

    monkeypatch.setattr("sys.argv", ["deepshield", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.strip().count("\n") == 0 and message in err


def test_penalty_weight_and_eps_reach_the_hooks():
    hooks = training_hooks(TrainConfig(lipschitz=0.2, adv_train="pgd", adv_eps=0.05, adv_steps=3))
    (pen,) = hooks["penalties"]
    assert pen.lam == 0.2
    batch = hooks["batch_transform"]
    assert (batch.eps, batch.steps) == (0.05, 3) and math.isclose(batch.alpha, 2.5 * 0.05 / 3)
    assert training_hooks(TrainConfig()) == {"penalties": [], "batch_transform": None}


def test_pgd_reference_for_the_toy_model_is_the_attack_core():
    """robustness_table's white-box numbers are those of attacks.pgd (same seed)."""
    torch.manual_seed(0)
    model = Flat(48, hidden=16).eval()
    x, y = toy_splits(n=32).test.tensors()
    (row,) = robustness_table({"m": model}, x, y, 0.05)
    x_adv = pgd(model, x, y, 0.05, steps=10, seed=0)
    assert row["white-box"] == accuracy_on(model, x_adv, y)
