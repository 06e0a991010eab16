"""Proactive losses on hand-computed cases (Asnani et al. 2022 definitions, see losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from deepshield.errors import InputError
from deepshield.proactive import losses


def vec(*values: float) -> torch.Tensor:
    """One template [1, 1, 1, len(values)]."""
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_minmax_rescales_each_sample_and_zeroes_constants() -> None:
    x = torch.cat([vec(2, 4, 6), vec(-1, -1, -1), vec(3, -1, 1)])
    out = losses.minmax(x).flatten(1)
    assert torch.allclose(out[0], torch.tensor([0, 0.5, 1], dtype=torch.float64))
    assert torch.equal(out[1], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(out[2], torch.tensor([1, 0, 0.5], dtype=torch.float64))


def test_bce_hand_cases() -> None:
    # logit 0 -> P = 0.5 -> log 2 whatever the label; logit ln 3 -> P(untouched) = 0.75
    assert losses.bce_loss(torch.zeros(2), torch.tensor([0, 1])).item() == pytest.approx(
        math.log(2)
    )
    s = torch.tensor([math.log(3), math.log(3)])
    expected = (-math.log(0.75) - math.log(0.25)) / 2  # r = 1 then r = 0
    assert losses.bce_loss(s, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-6)


def test_magnitude_is_squared_l2_averaged_over_batch() -> None:
    eta = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    eta[0] = 0.5  # ||.||^2 = 4 * 0.25 = 1
    eta[1, 0, 0, 1] = -3.0  # ||.||^2 = 9
    assert losses.magnitude_loss(eta).item() == pytest.approx((1 + 9) / 2)


def test_low_frequency_energy_hand_cases() -> None:
    h = w = 8
    const = torch.full((1, 1, h, w), 0.25, dtype=torch.float64)
    # All energy at DC: orthonormal DFT -> |F(0,0)|^2 = (0.25 * 8)^2 = 4 = ||eta||^2 (Parseval).
    for k in (1, 3, 8):
        assert losses.low_frequency_loss(const, k).item() == pytest.approx(4.0)
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = ((-1.0) ** (i + j)).to(torch.float64).view(1, 1, h, w)  # Nyquist only
    assert losses.low_frequency_loss(checker, 7).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.low_frequency_loss(checker, 8).item() == pytest.approx(64.0)  # whole spectrum
    wave = torch.cos(2 * math.pi * j.double() / w).view(1, 1, h, w)  # frequency (0, +-1)
    assert losses.low_frequency_loss(wave, 1).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.low_frequency_loss(wave, 3).item() == pytest.approx(h * w / 2)  # = ||wave||^2
    batch = torch.cat([const, wave])
    assert losses.low_frequency_loss(batch, 3).item() == pytest.approx((4.0 + 32.0) / 2)
    with pytest.raises(InputError, match="k=9"):
        losses.low_frequency_loss(const, 9)


def test_separation_is_max_cosine_of_minmaxed_templates() -> None:
    templates = torch.cat([vec(0, 1, 2), vec(2, 0, 1)])  # MinMax: (0, .5, 1), (1, 0, .5)
    recovered = vec(1, 1, 0)  # MinMax (1, 1, 0): cos = .5 / sqrt(2 * 1.25), 1 / sqrt(2 * 1.25)
    assert losses.separation_loss(templates, recovered).item() == pytest.approx(1 / math.sqrt(2.5))
    same = 7 * vec(2, 0, 1) - 3  # MinMax equals template 2's -> cos 1
    both = torch.cat([recovered, same])
    assert losses.separation_loss(templates, both).item() == pytest.approx(
        (1 / math.sqrt(2.5) + 1) / 2
    )


def test_pairwise_sums_cosines_over_pairs() -> None:
    # MinMax: a = (0, .5, 1), b = (1, 0, .5), c = (0, 1, 1)
    templates = torch.cat([vec(0, 1, 2), vec(2, 0, 1), vec(0, 2, 2)])
    ab = 0.5 / 1.25
    ac = 1.5 / math.sqrt(1.25 * 2)
    bc = 0.5 / math.sqrt(1.25 * 2)
    assert losses.pairwise_loss(templates).item() == pytest.approx(ab + ac + bc)
    assert losses.pairwise_loss(templates[:1]).item() == 0.0  # no pair


def test_recovery_is_one_minus_cosine() -> None:
    eta = torch.cat([vec(1, 0), vec(1, 0)])
    recovered = torch.cat([vec(1, 1), vec(2, 0)])
    assert losses.recovery_loss(eta, recovered).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)


def test_losses_give_finite_gradients_on_constant_templates() -> None:
    eta = torch.zeros(3, 1, 4, 4, requires_grad=True)  # MinMax of a constant: 0 / 0 avoided
    rec = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    total = (
        losses.magnitude_loss(eta)
        + losses.low_frequency_loss(eta, 3)
        + losses.separation_loss(eta, rec)
        + losses.pairwise_loss(eta)
        + losses.recovery_loss(eta[:2], rec)
    )
    total.backward()
    assert torch.isfinite(eta.grad).all()
