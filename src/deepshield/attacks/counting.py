"""Cost of an attack: a model wrapper that counts forward and backward passes, in samples."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds the batch size to a CountingModel's `backwards`."""

    @staticmethod
    def forward(ctx, output: Tensor, counter: CountingModel) -> Tensor:
        ctx.counter = counter
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter.backwards += grad.shape[0]
        return grad, None


class CountingModel(nn.Module):
    """model(x) unchanged; counts samples passed forward (`forwards`) and back (`backwards`).

    One APGD step on a batch of 100 images adds 100 to each; a Square query adds 100 forwards.
    The wrapped model's `bounds` (input range) is passed on.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        if hasattr(model, "bounds"):
            self.bounds = model.bounds
        self.forwards = 0
        self.backwards = 0

    def reset(self) -> None:
        """Set both counts to 0."""
        self.forwards = self.backwards = 0

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,...] -> the model's output; forwards += B (and backwards += B on backward)."""
        self.forwards += len(x)
        out = self.model(x)
        return _CountBackward.apply(out, self) if out.requires_grad else out
