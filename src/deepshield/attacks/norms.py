"""Perturbation budgets: the L-inf and L2 balls (projection, random start, steepest step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NORMS = ("linf", "l2")
_TINY = 1e-12  # keeps divisions by a zero norm finite


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """v: [B] -> [B,1,...,1], broadcastable against `like` [B,...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def _l2(v: Tensor) -> Tensor:
    """v: [B,...] -> per-sample L2 norm [B]."""
    return v.flatten(1).norm(p=2, dim=1)


@dataclass(frozen=True)
class Budget:
    """The set {delta : ||delta||_norm <= eps}, per sample; norm is "linf" or "l2"."""

    norm: str
    eps: float

    def project(self, delta: Tensor) -> Tensor:
        """delta: [B,...] -> the nearest point of the ball (per sample)."""
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        factor = (self.eps / (_l2(delta) + _TINY)).clamp(max=1.0)  # [B]
        return delta * _per_sample(factor, delta)

    def sample(
        self, like: Tensor, mask: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        """A point drawn uniformly from the ball (restricted to `mask`), shaped like `like`."""
        device = generator.device if generator is not None else like.device
        if self.norm == "linf":
            u = torch.rand(like.shape, generator=generator, device=device, dtype=like.dtype)
            delta = ((2 * u - 1) * self.eps).to(like.device)  # [B,...] in [-eps, eps]
            return delta if mask is None else delta * mask
        g = torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype)
        r = torch.rand(like.shape[0], generator=generator, device=device, dtype=like.dtype)
        g, r = g.to(like.device), r.to(like.device)
        if mask is not None:
            g = g * mask
        dims = (torch.ones_like(like) if mask is None else mask.expand_as(like)).flatten(1).sum(1)
        radius = self.eps * r.pow(1.0 / dims.clamp(min=1))  # [B]: uniform in the d-ball
        return g * _per_sample(radius / (_l2(g) + _TINY), g)

    def norm_of(self, delta: Tensor) -> Tensor:
        """delta: [B,...] -> its size in this budget's norm, [B]."""
        return delta.flatten(1).abs().amax(1) if self.norm == "linf" else _l2(delta)


class SteepestStep:
    """Steepest ascent for a norm, with step size alpha: sign(g) for linf, g/||g||_2 for l2."""

    def __init__(self, norm: str, alpha: float) -> None:
        self.norm = norm
        self.alpha = alpha

    def reset(self, x_adv: Tensor, project) -> None:
        """Nothing to remember between runs (the rule has no state)."""

    def __call__(self, x_adv: Tensor, grad: Tensor, loss: Tensor) -> Tensor:
        """x_adv, grad: [B,...]; loss: [B] (unused) -> x_adv moved alpha along the steepest direction."""
        if self.norm == "linf":
            return x_adv + self.alpha * grad.sign()
        return x_adv + grad * _per_sample(self.alpha / (_l2(grad) + _TINY), grad)
