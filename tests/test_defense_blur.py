"""The "blur alone" baseline of purification: Gaussian blur against scipy, blur to a PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from deepshield.defenses.blur import blur_to_psnr, gaussian_blur
from deepshield.defenses.dip import psnr
from deepshield.errors import InputError
from test_dip import photos


@pytest.mark.parametrize("sigma", [0.6, 1.3, 2.7])
def test_blur_matches_scipy_gaussian_filter(sigma):
    x = torch.rand(2, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror")
    assert np.allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)


def test_blur_to_psnr_hits_the_target():
    x = photos(32)
    target = torch.tensor([24.0, 30.0])
    blurred, sigma = blur_to_psnr(x, target)
    reached = psnr(blurred, x)
    assert ((reached >= target) & (reached < target + 0.05)).all(), reached
    assert (sigma > 0).all() and sigma[0] > sigma[1]  # a lower PSNR takes a stronger blur


def test_blur_to_psnr_on_a_cosine_agrees_with_the_closed_form():
    """cos(w i) with w = pi m / (N - 1) is even about both ends, so reflect padding continues it
    exactly: the blur multiplies it by H(w) = sum_k g_k cos(w k), and MSE = (1 - H)^2 mean(c^2)."""
    n, m = 33, 6
    w = math.pi * m / (n - 1)
    c = 0.4 * torch.cos(w * torch.arange(n, dtype=torch.float64))  # [n]
    x = (0.5 + c.view(1, 1, 1, n)).expand(1, 1, n, n).contiguous()
    _, sigma = blur_to_psnr(x, torch.tensor([26.0]))
    s = float(sigma[0])
    taps = torch.arange(-int(4 * s + 0.5), int(4 * s + 0.5) + 1, dtype=torch.float64)
    g = torch.exp(-(taps**2) / (2 * s**2))
    h = float((g * torch.cos(w * taps)).sum() / g.sum())
    closed = -10 * math.log10((1 - h) ** 2 * float(c.square().mean()))
    assert closed == pytest.approx(26.0, abs=0.05)


def test_sigma_zero_is_the_identity_and_negative_is_refused():
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    with pytest.raises(InputError, match="sigma"):
        gaussian_blur(x, -1.0)
