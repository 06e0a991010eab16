"""Disruption metrics (Ruiz et al. 2020, Table 1): how far a disrupted output is from a reference.

Per image, in the generator's range ([-1, 1]): L1 = mean |y_adv - y|, L2 = mean (y_adv - y)^2,
and "disrupted" = L2 >= threshold (0.05, the paper's; 0.0125 in [0, 1] pixels). With y the clean
output G(x, c), larger is a stronger disruption; with y the input x, the same numbers measure
how much the generator still changes the image (the minimal-change variant: lower is better).
"""

from __future__ import annotations

from torch import Tensor

from deepshield.errors import InputError


def distortion(y_adv: Tensor, y: Tensor, threshold: float = 0.05) -> dict[str, Tensor]:
    """y_adv, y: [B, ...] -> {"l1": [B], "l2": [B], "disrupted": [B] bool (l2 >= threshold)}."""
    if not isinstance(y_adv, Tensor) or not isinstance(y, Tensor) or y_adv.shape != y.shape:
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (y_adv, y)]
        raise InputError(f"distortion: shapes {shapes[0]} and {shapes[1]} differ: pass two [B,...]")
    if y.dim() < 2 or len(y) == 0:
        raise InputError(f"distortion: shape {tuple(y.shape)} is not a batch [B, ...] with B >= 1")
    diff = (y_adv.detach() - y.detach()).flatten(1).double()  # [B, D]
    l2 = diff.pow(2).mean(1)  # [B]
    return {"l1": diff.abs().mean(1), "l2": l2, "disrupted": l2 >= threshold}


def mean_distortion(per_image: dict[str, Tensor]) -> dict[str, float]:
    """Averages of `distortion`'s output: mean l1, mean l2, share disrupted in [0, 1]; plus n."""
    return {
        "l1": per_image["l1"].mean().item(),
        "l2": per_image["l2"].mean().item(),
        "disrupted": per_image["disrupted"].double().mean().item(),
        "n": len(per_image["l1"]),
    }
