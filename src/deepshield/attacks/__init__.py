"""deepshield.attacks: one projected-gradient core (`attack_loop`) and the attacks built on it.

x is [B,...] in [0, 1] (or `model.bounds`); every attack returns x_adv of x's shape in that range,
runs the model in eval mode with frozen parameters and restores both afterwards.
"""

from deepshield.attacks.core import StepRule, attack_loop
from deepshield.attacks.cw import cw_l2
from deepshield.attacks.evaluate import RobustAccuracy, robust_accuracy
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.attacks.masks import center_mask, parse_mask, random_patch_mask
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import Budget, SteepestStep
from deepshield.attacks.objectives import classification_loss, margin, misclassified, predicts

__all__ = [
    "Budget",
    "RobustAccuracy",
    "SteepestStep",
    "StepRule",
    "attack_loop",
    "attack_mode",
    "center_mask",
    "classification_loss",
    "cw_l2",
    "fgsm",
    "ifgsm",
    "margin",
    "misclassified",
    "parse_mask",
    "pgd",
    "predicts",
    "random_patch_mask",
    "robust_accuracy",
]
