"""Gaussian blur, and blur to a given PSNR: the "blur alone" baseline of a purifier.

A purifier that removes an adversarial perturbation also removes image detail; part of its gain
in recall may come from the detail loss alone. `blur_to_psnr` blurs each image just enough to
lose as much as the purifier did (the same PSNR to the input), so the detector behind the blur
tells how much of the gain a plain low-pass filter would give.

Blur: `data.processing.gaussian_blur` (the one Gaussian blur: kernel radius int(4 sigma + 0.5),
scipy's truncate 4) with mirror edges (scipy.ndimage's "mirror"); sigma 0 is the identity. PSNR falls as sigma grows, so bisection on sigma finds the target.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepshield.data import processing
from deepshield.defenses.dip import psnr
from deepshield.errors import InputError

MAX_SIGMA = 16.0  # px; the bisection's upper end


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x: [B, C, H, W] -> Gaussian-blurred [B, C, H, W] (sigma in pixels, >= 0), mirror edges."""
    return processing.gaussian_blur(x, sigma, edges="mirror")


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
