"""Attack sweeps (deepshield.attacks.sweep): numbers equal robust_accuracy and the clean
evaluation, accuracy falls with eps, masks keep outside pixels, transfer crafts on the surrogate,
CW-L2 budgets, 2-process sharding equals one process, bad specs fail before any work."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepshield.attacks import cw_l2, pgd, robust_accuracy
from deepshield.attacks.registry import get_attack
from deepshield.attacks.sweep import AttackSpec, attack_sweep, transfer_sweep
from deepshield.config import TrainConfig
from deepshield.data import TensorSet
from deepshield.errors import ConfigError, InputError
from deepshield.models import create
from deepshield.run import RunDir
from deepshield.runs.attack_sweep import attack_run, load_attack_data, run_config
from deepshield.runs.evaluation import evaluate_model

TINY = TrainConfig(
    dataset="synthetic-faces:easy",
    data_kwargs={"n": 200, "size": 32},
    model="simplenet",
    lr=0.003,
    batch_size=16,
    epochs=6,
    device="cpu",
)


def trained_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A simplenet detector trained on 140 synthetic 32 px images (a few seconds); one folder
    per session, so every test module asking for it reuses the finished run."""
    from deepshield.runs.training import run_training

    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPSHIELD_CACHE", str(base / "cache"))
        return run_training(TINY, base / "tiny-detector")


def tiny_detector(run: RunDir) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The run's model and its 30 test images (x [30,3,32,32] in [0,1], y [30])."""
    batch = load_attack_data(run_config(run))
    return run.load_model("best"), batch.x, batch.y


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny(tiny_run: RunDir) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    return tiny_detector(tiny_run)


def pgd_fn(steps: int = 3, **kw):
    """robust_accuracy's attack_fn: the registry's PGD with the sweep's fixed seed."""
    attack = get_attack("pgd")
    return lambda m, x, y, e: attack(m, x, y, e, steps=steps, norm="linf", seed=0, **kw)


def test_sweep_equals_robust_accuracy(tiny):
    model, x, y = tiny
    eps = [0.0, 2 / 255, 8 / 255]
    spec = AttackSpec("pgd", tuple(eps), steps=3)
    got = attack_sweep(model, x, y, spec, batch_size=8)
    ref = robust_accuracy(model, x, y, pgd_fn(), eps, batch_size=8)
    assert [r["accuracy"] for r in got.rows()] == ref.accuracy
    torch.testing.assert_close(got.adv_logits.softmax(2)[..., 1], ref.scores, rtol=0, atol=1e-6)
    assert ref.accuracy[-1] < ref.accuracy[0]  # the attack did something


def test_eps0_row_equals_clean_evaluation(tiny):
    model, x, y = tiny
    got = attack_sweep(model, x, y, AttackSpec("fgsm", (0.0, 4 / 255)), batch_size=7)
    ref, _ = evaluate_model(model, TensorSet(x, y), num_classes=2)
    row = got.rows()[0]
    assert row["l2_median"] == 0 and row["linf_max"] == 0
    for key in ("accuracy", "auc", "eer", "fake_passed_as_real", "real_flagged_as_fake"):
        assert row[key] == pytest.approx(ref[key], abs=1e-12), key
        assert got.clean()[key] == pytest.approx(ref[key], abs=1e-12), key
    assert row["evasion"] == got.clean()  # nothing attacked at eps 0


def test_pgd_accuracy_falls_with_eps_and_fakes_pass(tiny):
    model, x, y = tiny
    eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    rows = attack_sweep(model, x, y, AttackSpec("pgd", eps, steps=10)).rows()
    acc = [r["accuracy"] for r in rows]
    assert rows[0]["accuracy"] >= 0.7  # a trained detector, not a coin
    assert all(b <= a for a, b in itertools.pairwise(acc)), acc
    assert acc[-1] <= 0.1
    passed = [r["fake_passed_as_real"] for r in rows]
    assert passed[-1] >= 0.8 and passed[-1] > passed[0]
    for r in rows[1:]:  # evasion: reals stay clean, so their error rate is the clean one
        assert r["evasion"]["real_flagged_as_fake"] == rows[0]["real_flagged_as_fake"]
        assert r["evasion"]["fake_passed_as_real"] == r["fake_passed_as_real"]
        assert r["linf_max"] <= r["eps"] + 1e-6


def test_evasion_view_mixes_clean_reals_and_attacked_fakes(tiny):
    model, x, y = tiny
    res = attack_sweep(model, x, y, AttackSpec("fgsm", (0.0, 8 / 255)))
    fake = y == 1
    mixed = torch.where(fake[:, None], res.adv_logits[1], res.clean_logits)
    scores = mixed.softmax(1)[:, 1].numpy()
    from deepshield.metrics import auc

    assert res.rows()[1]["evasion"]["auc"] == pytest.approx(auc(y.numpy(), scores), abs=1e-12)
    assert res.rows()[1]["evasion"]["accuracy"] == pytest.approx(
        float((mixed.argmax(1) == y).float().mean())
    )


@pytest.mark.parametrize("mask", ["center:8", "patch:6"])
def test_mask_leaves_outside_pixels_in_saved_grid(tiny_run, tmp_path, mask):
    spec = AttackSpec("pgd", (0.0, 8 / 255), steps=3, mask=mask)
    record = attack_run(tiny_run.path, spec, n=12, batch_size=12, name=f"m{mask[0]}")
    grid = load_file(str(tiny_run.file(f"attack_{record['name']}_grid.safetensors")))
    clean, adv, m = grid["clean"], grid["adversarial"][1], grid["mask"]  # [k,3,32,32], [k,1,..]
    size = int(mask.split(":")[1])
    assert (m.flatten(1).sum(1) == size * size).all()
    outside = (m == 0).expand_as(clean)
    assert torch.equal(adv[outside], clean[outside])
    assert (adv - clean)[~outside].abs().max() > 1e-3  # inside it moved
    assert torch.equal(grid["adversarial"][0], clean)  # eps 0: clean
    if mask.startswith("center"):  # the centred square: rows/cols 12..19 of 32
        assert m[:, :, 12:20, 12:20].all() and m.sum() == len(m) * 64


def test_transfer_crafts_on_the_surrogate(tiny):
    model, x, y = tiny
    other = create("simplenet", num_classes=2).eval()  # untrained: a different crafter
    spec = AttackSpec("pgd", (0.0, 4 / 255), steps=3)
    white = attack_sweep(model, x, y, spec, batch_size=10)
    same = attack_sweep(model, x, y, spec, surrogate=model, batch_size=10)
    torch.testing.assert_close(same.adv_logits, white.adv_logits, rtol=0, atol=0)
    assert same.surrogate_logits is None
    moved = attack_sweep(model, x, y, spec, surrogate=other, batch_size=10)
    x_adv = torch.cat(
        [pgd(other, x[i : i + 10], y[i : i + 10], 4 / 255, steps=3, seed=0) for i in (0, 10, 20)]
    )
    with torch.no_grad():
        ref = model(x_adv)  # the target evaluated on examples crafted on the surrogate
    torch.testing.assert_close(moved.adv_logits[1], ref, rtol=1e-5, atol=1e-5)
    own = attack_sweep(other, x, y, spec, batch_size=10).rows()[1]["accuracy"]
    assert moved.rows()[1]["surrogate_accuracy"] == own
    assert not torch.equal(moved.adv_logits[1], white.adv_logits[1])


def test_one_crafting_serves_every_target(tiny):
    model, x, y = tiny
    other = create("simplenet", num_classes=2).eval()
    spec = AttackSpec("fgsm", (0.0, 4 / 255))
    both = transfer_sweep(model, {"self": model, "other": other}, x, y, spec, batch_size=16)
    assert both["self"].surrogate_logits is None  # the crafter itself: white-box
    white = attack_sweep(model, x, y, spec, batch_size=16)
    torch.testing.assert_close(both["self"].adv_logits, white.adv_logits, rtol=0, atol=0)
    alone = attack_sweep(other, x, y, spec, surrogate=model, batch_size=16)
    torch.testing.assert_close(both["other"].adv_logits, alone.adv_logits, rtol=0, atol=0)


def test_cw_rows_are_accuracy_within_an_l2_budget(tiny):
    model, x, y = tiny
    x, y = x[:12], y[:12]
    budgets = (0.0, 0.05, 0.2, 50.0)
    rows = attack_sweep(model, x, y, AttackSpec("cw_l2", budgets, steps=10)).rows()
    x_adv = cw_l2(model, x, y, steps=10)
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    with torch.no_grad():
        adv_ok = model(x_adv).argmax(1) == y  # CW returns x where it found nothing
        clean_ok = model(x).argmax(1) == y
    for r, eps in zip(rows, budgets, strict=True):
        ok = torch.where(l2 <= eps, adv_ok, clean_ok) if eps > 0 else clean_ok
        assert r["accuracy"] == pytest.approx(float(ok.float().mean())), eps
        assert r["l2_median"] <= eps or eps == 0
    assert rows[-1]["accuracy"] < rows[0]["accuracy"]


@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        ({"eps": (0.0, -0.1)}, InputError, "eps=-0.1 must be >= 0"),
        ({"eps": ()}, InputError, "no eps given"),
        ({"steps": 0}, InputError, "steps=0"),
        ({"restarts": 0}, InputError, "restarts=0"),
        ({"norm": "l3"}, InputError, "unknown norm 'l3'"),
        ({"attack": "foo"}, ConfigError, "unknown attack 'foo'"),
        ({"mask": "blob:3"}, ConfigError, "mask 'blob:3' is not understood"),
        ({"mask": "center:0"}, InputError, "patch size 0"),
    ],
)
def test_bad_spec_raises_one_line_before_work(kw, error, words):
    with pytest.raises(error) as e:
        AttackSpec(**kw).checked()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_mask_that_does_not_fit_the_images(tiny):
    model, x, y = tiny
    with pytest.raises(InputError, match="patch size 40 does not fit a 32x32 image"):
        attack_sweep(model, x, y, AttackSpec("pgd", (0.0, 0.1), mask="center:40"))


def test_spec_normalises_the_attack_name():
    assert AttackSpec("CW-L2", (0.0, 1.0)).checked().attack == "cw_l2"


# -- sharded over 2 processes (gloo), as under torchrun ------------------------------------------
def _sharded_sweep(run_path: Path) -> dict:
    run = RunDir(run_path)
    batch = load_attack_data(run_config(run))
    model = run.load_model("best")
    spec = AttackSpec("pgd", (0.0, 2 / 255, 8 / 255), steps=3, mask="patch:8")
    res = attack_sweep(model, batch.x[:29], batch.y[:29], spec, batch_size=6)  # 5 batches
    return {
        "rows": res.rows(),
        "adv": res.adv_logits,
        "l2": res.l2,
        "grid": res.grid is not None,
    }


@pytest.mark.timeout(300)
def test_two_process_sweep_equals_one_process(tiny_run, tiny, tmp_path):
    from test_distributed import on_ranks

    ranks = on_ranks(tmp_path, _sharded_sweep, tiny_run.path)
    one = _sharded_sweep(tiny_run.path)
    for r in ranks:
        assert r["rows"] == one["rows"]
        torch.testing.assert_close(r["adv"], one["adv"], rtol=0, atol=1e-6)
        torch.testing.assert_close(r["l2"], one["l2"], rtol=0, atol=1e-6)
    assert [r["grid"] for r in ranks] == [True, False]  # rank 0 holds the first batch


def test_spec_records_what_the_attack_does():
    assert AttackSpec("fgsm", (0.0, 4 / 255), steps=10).checked().steps == 1  # one step
    assert AttackSpec("pgd", (0.0, 4 / 255), steps=7).checked().steps == 7
    assert AttackSpec("cw_l2", (0.0, 0.5)).checked().norm == "l2"  # an L2 attack
    assert AttackSpec("pgd", (0.0, 0.5), norm="l2").checked().norm == "l2"
    assert AttackSpec("pgd", (0.0, 4 / 255)).checked().norm == "linf"
