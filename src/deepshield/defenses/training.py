"""The training-time defences a TrainConfig asks for, as Trainer hooks (penalties, batch transform)."""

from __future__ import annotations

from typing import Any

from deepshield.config import TrainConfig
from deepshield.defenses.adversarial_training import AdversarialBatch
from deepshield.defenses.lipschitz import LipschitzPenalty
from deepshield.train.augment import Augmenter, BatchChain


def training_hooks(cfg: TrainConfig, rank: int = 0) -> dict[str, Any]:
    """Trainer keyword arguments: penalties=[LipschitzPenalty] when cfg.lipschitz > 0 and
    batch_transform: the augmentations of cfg.augment (`train.augment.Augmenter`, seeded by
    cfg.seed and `rank`), then AdversarialBatch when cfg.adv_train != "none"."""
    penalties = [LipschitzPenalty(cfg.lipschitz)] if cfg.lipschitz > 0 else []
    transforms: list[Any] = []
    if cfg.augment is not None:
        transforms.append(Augmenter(cfg.augment, cfg.seed, rank))
    if cfg.adv_train != "none":
        transforms.append(
            AdversarialBatch(cfg.adv_train, cfg.adv_eps, steps=cfg.adv_steps, alpha=cfg.adv_alpha)
        )
    transform = transforms[0] if len(transforms) == 1 else None
    if len(transforms) > 1:
        transform = BatchChain(transforms)
    return {"penalties": penalties, "batch_transform": transform}


def is_defended(cfg: TrainConfig) -> bool:
    """Whether the config trains with a defence (Lipschitz penalty or adversarial training)."""
    return cfg.lipschitz > 0 or cfg.adv_train != "none"
