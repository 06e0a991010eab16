"""The Difference of Logits Ratio losses of APGD (Croce & Hein, ICML 2020, eqs. 5 and 6).

DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), with z_pi1 >= z_pi2 >= ...
the sorted logits; targeted DLR(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).
Both are invariant to shifting and rescaling the logits, so a saturated softmax does not hide the
gradient. DLR needs >= 3 classes and targeted DLR >= 4 (the denominators use z_pi3 and z_pi4).

    @inproceedings{croce2020reliable,
      title={Reliable evaluation of adversarial robustness with an ensemble of diverse
             parameter-free attacks},
      author={Croce, Francesco and Hein, Matthias}, booktitle={ICML}, year={2020}}
"""

from __future__ import annotations

from torch import Tensor

from deepshield.attacks.objectives import as_logits, margin
from deepshield.errors import InputError

_TINY = 1e-12  # the paper's constant: keeps the ratio finite when the top logits tie


def _classes(logits: Tensor, needed: int, name: str) -> None:
    if logits.shape[1] < needed:
        raise InputError(
            f"{name} needs logits of >= {needed} classes, got {logits.shape[1]}: "
            "use the margin loss (loss='margin') for models with fewer classes"
        )


def dlr_loss(output: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR per sample [B]: output logits [B,C] with C >= 3, y labels [B]."""
    logits = as_logits(output)  # [B, C]
    _classes(logits, 3, "the DLR loss")
    top = logits.sort(dim=1, descending=True).values  # [B, C]
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + _TINY)


def targeted_dlr_loss(output: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR per sample [B]: logits [B,C] with C >= 4, true labels y [B], targets [B]."""
    logits = as_logits(output)  # [B, C]
    _classes(logits, 4, "the targeted DLR loss")
    top = logits.sort(dim=1, descending=True).values  # [B, C]
    own = logits.gather(1, y[:, None]).squeeze(1)  # [B]
    aim = logits.gather(1, target[:, None]).squeeze(1)  # [B]
    return -(own - aim) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + _TINY)


def targeted_margin_loss(output: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """-(z_y - z_t) per sample [B]: the targeted DLR's numerator, for models with < 4 classes."""
    logits = as_logits(output)  # [B, C]
    own = logits.gather(1, y[:, None]).squeeze(1)  # [B]
    return logits.gather(1, target[:, None]).squeeze(1) - own
