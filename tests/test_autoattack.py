"""APGD, Square and the AutoAttack cascade on a CNN trained on real CIFAR-10, vs pyautoattack.

The CNN (three stride-2 convs, ~30 k parameters) trains for 6 epochs on the 4,660 lossless
CIFAR-10 training images of ../shared (~10 s on one core, ~45 % test accuracy); attacks use
L-inf eps 2/255 (robust accuracy ~20 %, so attacks of different strength give different
numbers) or L2 eps 0.2. The reference (pyautoattack, a packaging of Croce & Hein's code) runs
on the same model and images. The 0.5-point check of the full cascades is marked slow.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from cifar_cnn import cifar, train_cnn
from deepshield.attacks import (
    ATTACKS,
    CountingModel,
    apgd,
    apgd_targeted,
    autoattack,
    fgsm,
    get_attack,
    pgd,
    square_search,
)
from deepshield.attacks.autoattack import autoattack_stages, cascade
from deepshield.attacks.objectives import margin
from deepshield.errors import ConfigError, InputError

EPS = 2 / 255
EPOCHS = 6


def reference(module: str):
    return pytest.importorskip(f"pyautoattack{module}")


@functools.cache
def trained_cnn() -> nn.Module:
    return train_cnn()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return trained_cnn()


def cifar_test(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = cifar()
    return data["x_test"][:n], data["y_test"][:n]


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def within(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> bool:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return bool((size <= eps + 1e-6).all()) and x_adv.min() >= 0 and x_adv.max() <= 1


def test_model_is_a_real_cifar_classifier(model):
    """Guard for the comparisons: far above chance (10 %) on the real test images."""
    assert accuracy(model, *cifar_test(932)) > 0.35


@pytest.mark.parametrize(("norm", "eps", "loss"), [("linf", EPS, "ce"), ("l2", 0.2, "dlr")])
def test_apgd_matches_the_reference(model, norm, eps, loss):
    x, y = cifar_test(150)
    ours = apgd(model, x, y, eps, norm=norm, loss=loss, seed=0)
    ref = reference(".autopgd_base").APGDAttack(
        model, n_iter=100, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], loss=loss, seed=0
    )
    theirs = ref.perturb(x, y)
    assert within(ours, x, eps, norm)
    assert accuracy(model, ours, y) < accuracy(model, x, y) - 0.1
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.02


def test_apgd_targeted_matches_the_reference(model):
    x, y = cifar_test(100)
    ours = apgd_targeted(model, x, y, EPS, targets=2, seed=0)
    ref = reference(".autopgd_base").APGDAttack_targeted(
        model, n_iter=100, eps=EPS, n_target_classes=2, seed=0
    )
    theirs = ref.perturb(x, y)
    assert within(ours, x, EPS, "linf")
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.02


@pytest.mark.parametrize(("norm", "eps"), [("linf", EPS), ("l2", 0.5)])
def test_square_matches_the_reference(model, norm, eps):
    x, y = cifar_test(150)
    ours = square_search(model, x, y, eps, norm=norm, queries=300, seed=0)
    ref = reference(".square").SquareAttack(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], n_queries=300, eps=eps, seed=0
    )
    torch.manual_seed(0)
    theirs = ref.perturb(x, y)
    assert within(ours.x_adv, x, eps, norm)
    assert accuracy(model, ours.x_adv, y) < accuracy(model, x, y) - 0.05
    assert abs(accuracy(model, ours.x_adv, y) - accuracy(model, theirs, y)) <= 0.02


def test_square_spends_at_most_its_queries_and_lowers_the_margin(model):
    x, y = cifar_test(64)
    counter = CountingModel(model)
    result = square_search(counter, x, y, EPS, queries=100, seed=1)
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
        after = margin(model(result.x_adv), y)
        start = square_search(model, x, y, EPS, queries=1, seed=1).x_adv  # the stripes alone
        before = margin(model(start), y)
    assert within(result.x_adv, x, EPS, "linf")
    assert (result.queries <= 100).all() and (result.queries[~clean_correct] == 0).all()
    assert (result.queries[clean_correct] >= 1).all()
    fooled = after < 0
    assert (result.queries[clean_correct & ~fooled] == 100).all()  # unfooled: whole budget
    # per-sample accounting: queries + the one clean check per sample = every forward pass
    # (no probe pass for the labels: issue 17.6)
    assert counter.forwards == len(x) + result.queries.sum().item()
    assert counter.backwards == 0
    assert (after[clean_correct] <= before[clean_correct]).all()
    assert (after[clean_correct] < before[clean_correct]).float().mean() > 0.5


def test_cascade_never_loses_a_point_a_stage_fooled(model):
    """Stages: APGD-CE, one that returns x (fools nothing), FGSM. Deterministic stages alone
    fool a subset of what the cascade fools; flags only fall; the report matches x_adv."""
    x, y = cifar_test(120)

    def apgd_ce(m, xs, ys):
        return apgd(m, xs, ys, EPS, steps=10, seed=0)

    def fgsm_stage(m, xs, ys):
        return fgsm(m, xs, ys, EPS)

    stages = [("apgd-ce", apgd_ce), ("nothing", lambda m, xs, ys: xs), ("fgsm", fgsm_stage)]
    x_adv, report = cascade(model, x, y, stages, batch_size=50)
    with torch.no_grad():
        final_correct = model(x_adv).argmax(1) == y
        alone = {n: model(fn(model, x, y)).argmax(1) == y for n, fn in stages if n != "nothing"}
    assert report.stages == ["clean", "apgd-ce", "nothing", "fgsm"]
    assert (report.robust[1:] <= report.robust[:-1]).all()  # per point, never back to robust
    assert torch.equal(report.robust[-1], final_correct)
    assert report.accuracy[-1] == pytest.approx(final_correct.float().mean().item())
    assert report.accuracy[2] == report.accuracy[1]
    assert torch.equal(report.robust[1], alone["apgd-ce"])  # stage 1 sees what APGD alone sees
    for correct in alone.values():
        assert not (final_correct & ~correct).any()  # fooled alone -> fooled in the cascade
    assert within(x_adv, x, EPS, "linf")


def test_cascade_skips_stages_once_every_point_is_fooled(model):
    x, y = cifar_test(20)

    def unreachable(m, xs, ys):
        raise AssertionError("a stage ran on an empty batch")

    stages = [("pgd", lambda m, xs, ys: pgd(m, xs, ys, 0.5, steps=5)), ("next", unreachable)]
    _, report = cascade(model, x, y, stages)
    assert report.accuracy[1:] == [0.0, 0.0]


def test_autoattack_report_and_first_stage(model):
    x, y = cifar_test(100)
    x_adv, report = autoattack(model, x, y, EPS, version="fast", seed=0)
    assert report.stages == ["clean", "apgd-ce", "apgd-dlr"]
    assert report.accuracy[0] == pytest.approx(accuracy(model, x, y))
    assert report.accuracy[1] == pytest.approx(accuracy(model, apgd(model, x, y, EPS), y))
    assert report.accuracy[-1] == pytest.approx(accuracy(model, x_adv, y))
    assert report.accuracy[2] <= report.accuracy[1] < report.accuracy[0]
    assert within(x_adv, x, EPS, "linf")
    d = report.as_dict()
    assert d["robust_accuracy"] == report.accuracy[-1] and len(d["stages"]) == 3


def test_fast_cascade_matches_the_reference_cascade_on_a_small_batch(model):
    """Same stages both sides: APGD-CE then APGD-DLR (100 steps each), 150 images."""
    x, y = cifar_test(150)
    x_adv, report = autoattack(model, x, y, EPS, version="fast", seed=0)
    aa = reference("").AutoAttack(
        model, attacks=["apgd-ce", "apgd-dlr"], eps=EPS, seed=0, version="custom"
    )
    aa.verbose = False
    theirs, _ = aa.run_standard_evaluation(x, y, batch_size=500)
    assert within(x_adv, x, EPS, "linf")
    assert abs(report.accuracy[-1] - accuracy(model, theirs, y)) <= 0.02


def test_two_class_models_fall_back_to_margin_losses(model):
    """Classes 0 and 1 of the CNN as a 2-class detector: DLR needs 3 classes, APGD-T 4."""
    x, y = cifar_test(932)
    keep = y < 2
    detector = nn.Sequential(model, _FirstTwo())
    x, y = x[keep][:80], y[keep][:80]
    x_adv, report = autoattack(detector, x, y, 4 * EPS, version="fast")
    assert report.stages == ["clean", "apgd-ce", "apgd-margin"]
    assert report.accuracy[-1] < report.accuracy[0] - 0.2
    assert within(x_adv, x, 4 * EPS, "linf")
    names = [n for n, _ in autoattack_stages("standard", "linf", EPS, 2, 0, 1)]
    assert names == ["apgd-ce", "apgd-t-margin", "square"]
    x_t = apgd_targeted(detector, x, y, 4 * EPS, steps=20)  # its one target: the other class
    assert accuracy(detector, x_t, y) < report.accuracy[0] - 0.2
    with pytest.raises(InputError, match="margin"):
        apgd(detector, x, y, 4 * EPS, loss="dlr")


class _FirstTwo(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :2]  # [B, 2]


def test_counting_model_counts_samples_and_changes_nothing(model):
    x, y = cifar_test(8)
    counter = CountingModel(model)
    x_adv = pgd(counter, x, y, EPS, steps=5, seed=0)
    assert torch.equal(x_adv, pgd(model, x, y, EPS, steps=5, seed=0))
    # 5 steps, then the final iterate (best iterate); no probe pass for the labels (17.6)
    assert counter.forwards == 8 * 5 + 8
    assert counter.backwards == 8 * 5
    counter.reset()
    assert counter.forwards == counter.backwards == 0


def test_registry_runs_every_attack_with_one_signature_and_inputs_are_checked():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = net(x).argmax(1)
    for name, fn in ATTACKS.items():
        if name == "cw_l2":  # unbounded minimal-L2 search: eps does not apply
            continue
        for norm, eps in (("linf", 0.5), ("l2", 5.0)):
            if norm == "l2" and name in ("fgsm", "ifgsm"):
                with pytest.raises(InputError, match="L-inf attack"):
                    fn(net, x, y, eps, norm=norm)
                continue
            x_adv = fn(net, x, y, eps, norm=norm, seed=0)  # default steps / queries
            assert within(x_adv, x, eps, norm), name
            assert accuracy(net, x_adv, y) < 1.0, name  # a large budget on a linear model
    wave_model = nn.Linear(16, 3)
    wave = torch.rand(5, 16, generator=torch.Generator().manual_seed(1))
    with pytest.raises(InputError, match="version='fast'"):
        autoattack(wave_model, wave, wave_model(wave).argmax(1), 0.1)
    x_wave, _ = autoattack(wave_model, wave, wave_model(wave).argmax(1), 0.1, version="fast")
    assert x_wave.shape == wave.shape
    assert get_attack("apgd") is ATTACKS["apgd"]
    with pytest.raises(ConfigError, match="did you mean autoattack"):
        get_attack("autoatack")


@pytest.mark.slow
def test_full_cascades_match_the_reference_within_half_a_point_on_932_images(model):
    """Reference standard (APGD-CE, APGD-T, FAB-T, Square) vs ours; fast at <= 1/5 the passes."""
    x, y = cifar_test(932)
    counted = CountingModel(model)
    aa = reference("").AutoAttack(counted, eps=EPS, seed=0)
    theirs, _ = aa.run_standard_evaluation(x, y, batch_size=500)
    ref_acc, ref_passes = accuracy(model, theirs, y), counted.forwards + counted.backwards
    for version in ("standard", "fast"):
        counted.reset()
        _, report = autoattack(counted, x, y, EPS, version=version, seed=0)
        assert abs(report.accuracy[-1] - ref_acc) <= 0.005, (version, report.accuracy, ref_acc)
        if version == "fast":
            assert 5 * (counted.forwards + counted.backwards) <= ref_passes
