"""The losses of proactive template learning (Asnani et al., CVPR 2022), one function each.

With eta_i the template added to an image, eta_1..eta_n the set, r the detector's recovered
template and s its logit of P(untouched):

    L_b  binary cross-entropy of sigmoid(s) against r = 1 untouched, r = 0 manipulated
    L_m  ||eta_i||_2^2                                                        (magnitude)
    L_c  sum of |F(eta_i)|^2 over the k x k centre of the shifted 2-D spectrum  (low frequency)
    L_s  max_k cos(MinMax(eta_k), MinMax(r(manipulated)))                     (separation)
    L_p  sum_{i<j} cos(MinMax(eta_i), MinMax(eta_j))                          (set diversity)
    L_r  1 - cos(eta_i, r(untouched))                                         (recovery)

MinMax(x) = (x - min x) / (max x - min x) over one template. L_r is the paper's recovery term
(the encoder must return the template it was given), which the official code weights like the
others. F is the orthonormal 2-D DFT per channel (Parseval: the whole spectrum's energy equals
||eta||^2), shifted so that DC sits at (H // 2, W // 2); the k x k centre spans rows
H // 2 - k // 2 .. H // 2 - k // 2 + k - 1 (and the same for columns). Per-image losses are
averaged over the batch.

@inproceedings{asnani2022proactive,
  title     = {Proactive Image Manipulation Detection},
  author    = {Asnani, Vishal and Yin, Xi and Hassner, Tal and Liu, Sijia and Liu, Xiaoming},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepshield.errors import InputError


def minmax(x: torch.Tensor) -> torch.Tensor:
    """x: [N, ...] -> each sample rescaled to [0, 1]; a constant sample becomes all zeros."""
    flat = x.flatten(1)  # [N, D]
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    return ((flat - lo) / span.clamp_min(1e-12)).view_as(x)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: [N, ...], b: [M, ...] -> cosine similarity matrix [N, M] (0 for a zero vector)."""
    return F.normalize(a.flatten(1), dim=1, eps=1e-12) @ F.normalize(b.flatten(1), dim=1).T


def bce_loss(untouched_logit: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """L_b: untouched_logit [B] (logit of P(untouched)), r [B] in {0, 1} -> mean BCE."""
    return F.binary_cross_entropy_with_logits(untouched_logit, r.to(untouched_logit.dtype))


def magnitude_loss(eta: torch.Tensor) -> torch.Tensor:
    """L_m: eta [B, C, H, W] -> mean over the batch of ||eta_b||_2^2."""
    return eta.pow(2).flatten(1).sum(dim=1).mean()


def low_frequency_loss(eta: torch.Tensor, k: int) -> torch.Tensor:
    """L_c: eta [B, C, H, W] -> mean over the batch of the k x k centre energy of the spectrum."""
    h, w = eta.shape[-2:]
    if not 1 <= k <= min(h, w):
        raise InputError(f"low-frequency window k={k} must lie in [1, {min(h, w)}] for {h}x{w}")
    spectrum = torch.fft.fftshift(torch.fft.fft2(eta, norm="ortho"), dim=(-2, -1))  # [B, C, H, W]
    top, left = h // 2 - k // 2, w // 2 - k // 2
    centre = spectrum[..., top : top + k, left : left + k]  # [B, C, k, k]
    return centre.abs().pow(2).flatten(1).sum(dim=1).mean()


def separation_loss(templates: torch.Tensor, recovered: torch.Tensor) -> torch.Tensor:
    """L_s: templates [n, C, H, W], recovered (from manipulated images) [B, C, H, W] -> mean_b
    max_k cos(MinMax(eta_k), MinMax(r_b))."""
    return _cos(minmax(recovered), minmax(templates)).max(dim=1).values.mean()


def pairwise_loss(templates: torch.Tensor) -> torch.Tensor:
    """L_p: templates [n, C, H, W] -> sum over pairs i < j of cos(MinMax(eta_i), MinMax(eta_j))."""
    sim = _cos(minmax(templates), minmax(templates))  # [n, n]
    return torch.triu(sim, diagonal=1).sum()


def recovery_loss(eta: torch.Tensor, recovered: torch.Tensor) -> torch.Tensor:
    """L_r: eta [B, C, H, W] (added), recovered (from untouched images) [B, C, H, W] -> mean_b
    1 - cos(eta_b, r_b)."""
    return (1 - F.cosine_similarity(eta.flatten(1), recovered.flatten(1), dim=1, eps=1e-12)).mean()
