"""APGD's step rule, the DLR losses and the budget invariants of APGD and Square (no data needed).

The schedule and losses are checked against the paper's formulas (computed independently with
exact fractions) and against the reference implementation's code (pyautoattack).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from deepshield.attacks import (
    APGDStep,
    apgd,
    apgd_targeted,
    dlr_loss,
    square_search,
    targeted_dlr_loss,
)
from deepshield.attacks.apgd import checkpoints
from deepshield.errors import InputError


def paper_checkpoints(n: int) -> list[int]:
    """w_j = ceil(p_j n), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * n) for q in p if q <= 1})


def test_checkpoints_for_100_steps_equal_the_reference_implementation():
    """pyautoattack: first check after 0.22 N steps, then intervals shrink by 0.03 N to 0.06 N."""
    reference = pytest.importorskip("pyautoattack.autopgd_base")
    attack = reference.APGDAttack(lambda x: x, n_iter=100, eps=0.1)
    points, k = [0], attack.n_iter_2
    while points[-1] + k <= 100:
        points.append(points[-1] + k)
        k = max(k - attack.size_decr, attack.n_iter_min)
    assert checkpoints(100) == points == [0, 22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("n", [1, 5, 10, 37, 50, 100, 250, 1000])
def test_checkpoints_follow_the_papers_recursion(n):
    assert checkpoints(n) == paper_checkpoints(n)


def run_rule(losses: torch.Tensor, steps: int = 100, eps: float = 1.0) -> list[torch.Tensor]:
    """Feed per-call losses [T, B] to APGDStep (x = call index, grad = 1); eta after each call."""
    rule = APGDStep("linf", eps, steps)
    batch = losses.shape[1]
    rule.reset(torch.zeros(batch, 1), lambda v: v)
    etas = []
    for k, loss in enumerate(losses):
        rule(torch.full((batch, 1), float(k)), torch.ones(batch, 1), loss)
        etas.append(rule.eta.clone())
    return etas


def sequence(increase_at: set[int], length: int = 100) -> torch.Tensor:
    """A loss that rises at the calls in increase_at and falls a little at every other call."""
    values, v = [], 0.0
    for k in range(length):
        v = v + 1.0 if k in increase_at else v - 0.01
        values.append(v)
    return torch.tensor(values)


def test_condition_1_halves_the_step_when_few_steps_raised_the_loss():
    """Checkpoint w_1 = 22 judges calls 1..22: 17 rises >= 0.75 * 22 keeps eta, 16 halves it."""
    rises17, rises16 = set(range(1, 18)), set(range(1, 17))
    losses = torch.stack(
        [sequence(set(range(100))), sequence(set()), sequence(rises17), sequence(rises16)], 1
    )  # [T, 4]
    etas = run_rule(losses[:23])
    assert etas[21].tolist() == [2.0, 2.0, 2.0, 2.0]  # unchanged before the checkpoint
    assert etas[22].tolist() == [2.0, 1.0, 2.0, 1.0]


def test_condition_1_uses_a_strict_inequality():
    """w_2 = 41 -> w_3 = 57 spans 16 calls: exactly 12 = 0.75 * 16 rises is not < 12."""
    rises = set(range(100)) - set(range(42, 46))  # calls 42..45 fall: 12 of 16 rise
    etas = run_rule(sequence(rises)[:, None])
    assert etas[56].item() == 2.0 and etas[57].item() == 2.0
    fewer = set(range(100)) - set(range(42, 47))  # 11 of 16 rise
    assert run_rule(sequence(fewer)[:, None])[57].item() == 1.0


def test_condition_2_halves_when_the_best_loss_stalls_unless_the_step_just_halved():
    """Loss 100 at call 0, then rising from 0: many rises but the best never changes.

    w_1: eta unchanged since w_0 and best stalled -> halve; w_2: halved at w_1 -> keep;
    w_3: not halved at w_2 and still stalled -> halve.
    """
    losses = torch.cat([torch.tensor([100.0]), torch.arange(99.0)])[:, None]
    etas = run_rule(losses)
    assert [etas[k].item() for k in (22, 41, 57)] == [1.0, 1.0, 0.5]


def test_halving_restarts_from_the_best_point_with_its_gradient():
    """At w_1 the step starts at x_best (call 5, gradient -1) with momentum from call 21."""
    rule = APGDStep("linf", 1.0, 100)
    rule.reset(torch.zeros(1, 1), lambda v: v)
    out = None
    for k in range(23):
        loss = torch.tensor([10.0 if k == 5 else 0.0])
        grad = torch.full((1, 1), -1.0 if k == 5 else 1.0)
        out = rule(torch.full((1, 1), float(k)), grad, loss)
    z = 5.0 + 1.0 * -1.0  # eta halved from 2 to 1, direction sign(-1)
    assert out.item() == pytest.approx(5.0 + 0.75 * (z - 5.0) + 0.25 * (5.0 - 21.0))


def test_first_step_has_no_momentum_and_later_steps_do():
    """x1 = P(x0 + 2 eps sign g); x2 = x1 + 0.75 (z - x1) + 0.25 (x1 - x0)."""
    rule = APGDStep("linf", 0.5, 100)
    rule.reset(torch.zeros(1, 1), lambda v: v.clamp(-0.5, 0.5))
    x1 = rule(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1))
    assert x1.item() == 0.5  # 0 + 2 * 0.5, projected onto [-0.5, 0.5]
    x2 = rule(torch.full((1, 1), 0.2), -torch.ones(1, 1), torch.ones(1))
    z = -0.5  # 0.2 - 1.0 projected
    assert x2.item() == pytest.approx(0.2 + 0.75 * (z - 0.2) + 0.25 * (0.2 - 0.0))


def test_l2_step_moves_eta_along_the_normalised_gradient():
    rule = APGDStep("l2", 0.5, 100)
    rule.reset(torch.zeros(1, 2), lambda v: v)
    x1 = rule(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), torch.zeros(1))
    assert x1[0].tolist() == pytest.approx([0.6, 0.8])  # 2 eps = 1 along (3, 4) / 5


def test_dlr_loss_on_a_hand_computed_case():
    """z = (3, 1, 2, 0): sorted 3 > 2 > 1 > 0, denominator z_pi1 - z_pi3 = 2."""
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]] * 2)
    loss = dlr_loss(z, torch.tensor([0, 2]))
    assert loss.tolist() == pytest.approx([-(3 - 2) / 2, -(2 - 3) / 2])


def test_targeted_dlr_loss_on_a_hand_computed_case():
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) with z = (3, 1, 2, 0): denominator 2.5."""
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0]] * 2)
    loss = targeted_dlr_loss(z, torch.tensor([0, 2]), torch.tensor([3, 1]))
    assert loss.tolist() == pytest.approx([-(3 - 0) / 2.5, -(2 - 1) / 2.5])


def test_dlr_losses_equal_the_reference_and_ignore_shift_and_scale():
    reference = pytest.importorskip("pyautoattack.autopgd_base")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g) * 3
    y = torch.randint(0, 10, (64,), generator=g)
    t = (y + torch.randint(1, 10, (64,), generator=g)) % 10
    attack = reference.APGDAttack_targeted(lambda x: x, eps=0.1)
    attack.y_target = t
    assert torch.allclose(dlr_loss(z, y), attack.dlr_loss(z, y), atol=1e-6)
    assert torch.allclose(targeted_dlr_loss(z, y, t), attack.dlr_loss_targeted(z, y), atol=1e-6)
    assert torch.allclose(dlr_loss(7 * z - 2, y), dlr_loss(z, y), atol=1e-5)
    assert torch.allclose(
        targeted_dlr_loss(0.5 * z + 3, y, t), targeted_dlr_loss(z, y, t), atol=1e-5
    )


def test_dlr_losses_refuse_too_few_classes():
    with pytest.raises(InputError, match="margin"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(InputError, match=">= 4 classes"):
        targeted_dlr_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))


def linear_model(classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes)).eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_bad_arguments_raise_input_errors():
    model, x = linear_model(), images(2, 0)
    y = torch.tensor([0, 1])
    with pytest.raises(InputError, match="unknown APGD loss"):
        apgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(InputError, match="rho"):
        apgd(model, x, y, 0.1, rho=1.5)
    with pytest.raises(InputError, match="margin"):
        apgd(linear_model(classes=2), x, y, 0.1, loss="dlr")
    with pytest.raises(InputError, match="image batch"):
        square_search(model, x.flatten(1), y, 0.1)
    with pytest.raises(InputError, match="p_init"):
        square_search(model, x, y, 0.1, p_init=2.0)


def within(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> bool:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return bool((size <= eps * (1 + 1e-5) + 1e-7).all())


@settings(max_examples=12, deadline=None)
@given(
    eps=st.floats(0.0, 0.5),
    norm=st.sampled_from(["linf", "l2"]),
    attack=st.sampled_from(["apgd-ce", "apgd-dlr", "apgd-t", "square"]),
    seed=st.integers(0, 1000),
)
def test_attacks_stay_in_the_budget_and_the_range(eps, norm, attack, seed):
    model, x = linear_model(), images(6, seed)
    y = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(seed))
    if attack == "square":
        result = square_search(model, x, y, eps, norm=norm, queries=15, seed=seed)
        x_adv = result.x_adv
        assert (result.queries <= 15).all()
    elif attack == "apgd-t":
        x_adv = apgd_targeted(model, x, y, eps, norm=norm, steps=5, targets=2, seed=seed)
    else:
        x_adv = apgd(model, x, y, eps, norm=norm, loss=attack[5:], steps=5, seed=seed)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert within(x_adv, x, eps, norm)
    correct = model(x).argmax(1) == y
    assert torch.equal(x_adv[~correct], x[~correct])  # already misclassified: untouched


def test_apgd_respects_a_models_bounds():
    """A model working in [-1, 1] (a generator-style range): x_adv stays inside it."""
    model = linear_model()
    model.bounds = (-1.0, 1.0)
    x = images(8, 1) * 2 - 1
    y = model(x).argmax(1)
    x_adv = apgd(model, x, y, 0.3, steps=10)
    assert x_adv.min() >= -1 and x_adv.max() <= 1 and within(x_adv, x, 0.3, "linf")
    assert x_adv.min() < 0  # the range is really [-1, 1], not [0, 1]


def test_apgd_is_reproducible_and_seed_dependent():
    """L2 (in L-inf the first step of 2 eps takes every start to the same corner of the box)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.Tanh(), nn.Linear(16, 5)).eval()
    x = images(8, 2)
    y = model(x).argmax(1)
    a = apgd(model, x, y, 0.1, norm="l2", steps=10, seed=3)
    b = apgd(model, x, y, 0.1, norm="l2", steps=10, seed=3)
    c = apgd(model, x, y, 0.1, norm="l2", steps=10, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


class _NoEmptyBatches(nn.Module):
    """A model that fails on an empty batch, as some real models do."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = linear_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x) > 0, "empty batch"
        return self.inner(x)


def test_points_misclassified_at_x_are_not_attacked():
    model, x = _NoEmptyBatches(), images(4, 3)
    wrong = (model(x).argmax(1) + 1) % 5
    result = square_search(model, x, wrong, 0.1, queries=20)
    assert torch.equal(result.x_adv, x) and result.queries.tolist() == [0, 0, 0, 0]
    assert torch.equal(apgd(model, x, wrong, 0.1, steps=5), x)
    assert torch.equal(apgd_targeted(model, x, wrong, 0.1, steps=5), x)
