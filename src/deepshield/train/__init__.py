"""Training: the Trainer loop, objectives and penalties, optimizers."""

from deepshield.train.objectives import BatchTransform, CrossEntropy, Objective, Penalty
from deepshield.train.trainer import Trainer

__all__ = ["BatchTransform", "CrossEntropy", "Objective", "Penalty", "Trainer"]
