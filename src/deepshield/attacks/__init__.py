"""deepshield.attacks: one projected-gradient core (`attack_loop`), the attacks built on it,
Square (score-based), the AutoAttack cascade, BPDA for adaptive attacks and a registry by name.

x is [B,...] in [0, 1] (or `model.bounds`); every attack returns x_adv of x's shape in that range,
runs the model in eval mode with frozen parameters and restores both afterwards.
"""

from deepshield.attacks.adaptive import BPDA
from deepshield.attacks.apgd import APGDStep, apgd, apgd_targeted
from deepshield.attacks.autoattack import AutoAttackReport, autoattack
from deepshield.attacks.core import StepRule, attack_loop
from deepshield.attacks.counting import CountingModel
from deepshield.attacks.cw import cw_l2
from deepshield.attacks.dlr import dlr_loss, targeted_dlr_loss
from deepshield.attacks.evaluate import RobustAccuracy, robust_accuracy
from deepshield.attacks.gradient import fgsm, ifgsm, pgd
from deepshield.attacks.masks import center_mask, parse_mask, random_patch_mask
from deepshield.attacks.mode import attack_mode
from deepshield.attacks.norms import Budget, SteepestStep
from deepshield.attacks.objectives import (
    classification_loss,
    detector_aware_loss,
    fooled_undetected,
    margin,
    misclassified,
    predicts,
)
from deepshield.attacks.registry import ATTACKS, Attack, get_attack
from deepshield.attacks.square import SquareResult, square, square_search

__all__ = [
    "ATTACKS",
    "BPDA",
    "APGDStep",
    "Attack",
    "AutoAttackReport",
    "Budget",
    "CountingModel",
    "RobustAccuracy",
    "SquareResult",
    "SteepestStep",
    "StepRule",
    "apgd",
    "apgd_targeted",
    "attack_loop",
    "attack_mode",
    "autoattack",
    "center_mask",
    "classification_loss",
    "cw_l2",
    "detector_aware_loss",
    "dlr_loss",
    "fgsm",
    "fooled_undetected",
    "get_attack",
    "ifgsm",
    "margin",
    "misclassified",
    "parse_mask",
    "pgd",
    "predicts",
    "random_patch_mask",
    "robust_accuracy",
    "square",
    "square_search",
    "targeted_dlr_loss",
]
