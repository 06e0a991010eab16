"""Gaussian blur, and blur to a given PSNR: the "blur alone" baseline of a purifier.

A purifier that removes an adversarial perturbation also removes image detail; part of its gain
in recall may come from the detail loss alone. `blur_to_psnr` blurs each image just enough to
lose as much as the purifier did (the same PSNR to the input), so the detector behind the blur
tells how much of the gain a plain low-pass filter would give.

Blur: separable Gaussian kernel exp(-k^2 / (2 sigma^2)), k = -R..R, R = int(4 sigma + 0.5) (scipy's truncate 4; capped at
the image side - 1), normalised to sum 1, reflect padding (scipy.ndimage's "mirror" mode);
sigma 0 is the identity. PSNR falls as sigma grows, so bisection on sigma finds the target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepshield.defenses.dip import psnr
from deepshield.errors import InputError

MAX_SIGMA = 16.0  # px; the bisection's upper end (the radius is capped by the image side anyway)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x: [B, C, H, W] -> Gaussian-blurred [B, C, H, W] (sigma in pixels, >= 0)."""
    if sigma < 0 or not math.isfinite(sigma):
        raise InputError(f"blur sigma {sigma}: give a finite sigma >= 0 (pixels)")
    radius = min(int(4 * sigma + 0.5), x.shape[2] - 1, x.shape[3] - 1)
    if sigma == 0 or radius < 1:
        return x
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(taps**2) / (2 * sigma**2))
    k = k / k.sum()  # [2R + 1]
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)  # rows: [B, C, H + 2R, W]
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)  # cols: [B, C, H, W]


def blur_to_psnr(x: Tensor, target: Tensor, steps: int = 40) -> tuple[Tensor, Tensor]:
    """x: [B, C, H, W] in [0, 1], target: [B] dB -> (blurred [B, C, H, W], sigma [B]).

    Per image, the sigma in [0, MAX_SIGMA] whose blur has PSNR(blur, x) closest above the
    target (bisection, `steps` halvings); an image whose strongest blur stays above the target
    gets MAX_SIGMA, one already below it (target above the blur-free infinity: never) sigma 0.
    """
    if target.shape != (x.shape[0],):
        raise InputError(f"blur_to_psnr: target has shape {tuple(target.shape)}; pass [B]")
    out, sigmas = [], []
    for xi, t in zip(x, target.tolist(), strict=True):
        lo, hi = 0.0, MAX_SIGMA
        for _ in range(steps):
            mid = (lo + hi) / 2
            if float(psnr(gaussian_blur(xi[None], mid), xi[None])) >= t:
                lo = mid  # still above the target: blur more
            else:
                hi = mid
        out.append(gaussian_blur(xi[None], lo)[0])
        sigmas.append(lo)
    return torch.stack(out), torch.tensor(sigmas)
