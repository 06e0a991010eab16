"""Adaptive attacks on defences: BPDA through non-differentiable preprocessing.

BPDA (Backward Pass Differentiable Approximation; Athalye, Carlini & Wagner, ICML 2018): the
forward pass runs the real preprocessing g (quantisation, JPEG, a purifier), the backward pass
uses the gradient of a differentiable approximation h ~ g, by default the identity (h(x) = x,
for preprocessing that keeps x roughly unchanged). Wrap the preprocessing, not the classifier:
`nn.Sequential(BPDA(purify), classifier)` is then attacked with any gradient attack. For
randomised defences combine it with EOT: `apgd(..., eot_samples=k)` / `autoattack(...,
version="rand")` average the loss gradient over k forward passes.

    @inproceedings{athalye2018obfuscated,
      title={Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
             Adversarial Examples},
      author={Athalye, Anish and Carlini, Nicholas and Wagner, David}, booktitle={ICML},
      year={2018}}
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from deepshield.errors import InputError

Transform = Callable[[Tensor], Tensor]


class _BPDAFunction(torch.autograd.Function):
    """forward_fn(x) forwards; backward: vector-Jacobian product of backward_fn (or identity)."""

    @staticmethod
    def forward(ctx, x: Tensor, forward_fn: Transform, backward_fn: Transform | None) -> Tensor:
        out = forward_fn(x)
        if backward_fn is None and out.shape != x.shape:
            raise InputError(
                f"BPDA's identity backward needs forward_fn to keep the shape {tuple(x.shape)}, "
                f"got {tuple(out.shape)}: pass backward_fn, a differentiable approximation"
            )
        ctx.save_for_backward(x)
        ctx.backward_fn = backward_fn
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.backward_fn is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(ctx.backward_fn(x), x, grad)
        return grad_x, None, None


class BPDA(nn.Module):
    """y = forward_fn(x); dy/dx taken as d backward_fn(x)/dx (identity when backward_fn is None).

    x: [B,...] -> forward_fn's output. Modules passed in are registered as submodules (so
    .to(), .eval() and attack_mode reach them); no gradient reaches their parameters.
    """

    def __init__(self, forward_fn: Transform, backward_fn: Transform | None = None) -> None:
        super().__init__()
        self.forward_fn = forward_fn
        self.backward_fn = backward_fn

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,...] -> forward_fn(x), differentiable through backward_fn."""
        return _BPDAFunction.apply(x, self.forward_fn, self.backward_fn)
