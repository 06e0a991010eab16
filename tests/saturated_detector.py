"""A built two-class detector with a saturated "noise is real" region (issue 24), no training.

logit_fake(x) = w . (x - 0.5) - 1 - K * sum_i relu(|x_i - 0.5| - T): a linear detector while
every pixel stays within T of mid-grey, and a steep penalty beyond, so large perturbations
(random noise, or PGD's first big steps) are called "real" with margins of tens. Reals are
mid-grey plus small noise; fakes add +0.02 sign(w). At eps <= T PGD fools it within a few steps;
at eps >> T the sign steps of 2.5 eps / steps jump in and out of the penalty and the last
iterate (and a random start) are not fooled, as on the real FFHQ detector of the issue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

T = 0.03  # the band around mid-grey where the detector is linear
K = 5.0  # penalty slope outside it (> |w| = 1: outside, the penalty's sign wins)
SHAPE = (3, 8, 8)


class SaturatedDetector(nn.Module):
    """x: [B, 3, 8, 8] in [0, 1] -> logits [B, 2] (0 = real, 1 = fake)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randint(0, 2, SHAPE, generator=g).float() * 2 - 1  # [3, 8, 8] of +-1
        self.w = nn.Parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        d = x - 0.5  # [B, 3, 8, 8]
        penalty = (d.abs() - T).clamp(min=0).flatten(1).sum(1)  # [B]
        z = (self.w * d).flatten(1).sum(1) - 1.0 - K * penalty  # [B]
        return torch.stack([torch.zeros_like(z), z], 1)  # [B, 2]


def samples(
    n: int, seed: int = 0, detector: SaturatedDetector | None = None
) -> tuple[Tensor, Tensor]:
    """n images [n, 3, 8, 8] (first half real, second half fake) and labels [n]."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + (torch.rand(n, *SHAPE, generator=g) * 2 - 1) * 0.01  # [n, 3, 8, 8]
    y = (torch.arange(n) >= n // 2).long()  # [n]
    w = (detector or SaturatedDetector()).w.detach()
    x[y == 1] += 0.02 * w
    return x, y
