"""Gradient saliency (Simonyan et al., 2014) and SmoothGrad (Smilkov et al., 2017).

@article{simonyan2014deep, title={Deep Inside Convolutional Networks: Visualising Image
  Classification Models and Saliency Maps}, author={Simonyan, K. and Vedaldi, A. and
  Zisserman, A.}, journal={ICLR Workshop}, year={2014}}
@article{smilkov2017smoothgrad, title={SmoothGrad: removing noise by adding noise},
  author={Smilkov, D. and Thorat, N. and Kim, B. and Vi{\'e}gas, F. and Wattenberg, M.},
  journal={arXiv:1706.03825}, year={2017}}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.errors import InputError
from deepshield.explain.context import (
    Target,
    check_input,
    explaining,
    logits_of,
    target_indices,
    target_logits,
)


def _abs_input_gradient(
    model: nn.Module, x: torch.Tensor, target: Target
) -> tuple[torch.Tensor, torch.Tensor]:
    """|d logit_target / d x| with the shape of x, and the target indices used [B]."""
    x = x.detach().clone().requires_grad_(True)
    logits = logits_of(model, x)  # [B, K]
    t = target_indices(target, logits)  # [B]
    (grad,) = torch.autograd.grad(target_logits(logits, t).sum(), x)
    return grad.abs(), t


def _channel_max(grad: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> [B,H,W] (max over channels); a waveform gradient [B,T] stays [B,T]."""
    return grad.amax(dim=1) if grad.ndim == 4 else grad


def saliency(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """Vanilla gradient saliency: max over channels of |d logit_target / d x|.

    x: images [B,C,H,W] in [0,1] -> [B,H,W] >= 0; waveforms [B,T] in [-1,1] -> [B,T] >= 0.
    The gradient is of the target's *logit* (pre-softmax), exactly captum's
    `Saliency(model).attribute(x, target, abs=True)` followed by a max over channels.
    target: int, int64 [B], or None for each sample's predicted class. Unnormalised.
    """
    x = check_input(x)
    with explaining(model):
        grad, _ = _abs_input_gradient(model, x, target)
    return _channel_max(grad).detach()


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    n: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad: mean over `n` noisy copies of |d logit_target / d x|, then max over channels.

    Noise is N(0, (sigma * (max(x_i) - min(x_i)))^2) per sample i, as in Smilkov et al. (sigma is
    the noise level relative to the sample's value range). Same seed, same map. The target of a
    `None` target is the class predicted on the clean x. Shapes as `saliency`; sigma=0 or a
    model linear in x gives exactly `saliency`.
    """
    x = check_input(x)
    if n < 1 or sigma < 0:
        raise InputError(f"smoothgrad needs n >= 1 and sigma >= 0 (got n={n}, sigma={sigma})")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    dims = tuple(range(1, x.ndim))
    spread = (x.amax(dim=dims, keepdim=True) - x.amin(dim=dims, keepdim=True)) * sigma  # [B,1,..]
    total = torch.zeros_like(x)
    with explaining(model):
        if target is None:
            with torch.no_grad():
                target = logits_of(model, x).argmax(dim=1)  # [B]
        for _ in range(n):
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            grad, target = _abs_input_gradient(model, x + noise * spread, target)
            total += grad
    return _channel_max(total / n).detach()
