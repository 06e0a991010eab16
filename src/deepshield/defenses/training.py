"""The training-time defences a TrainConfig asks for, as Trainer hooks (penalties, batch transform)."""

from __future__ import annotations

from typing import Any

from deepshield.config import TrainConfig
from deepshield.defenses.adversarial_training import AdversarialBatch
from deepshield.defenses.lipschitz import LipschitzPenalty


def training_hooks(cfg: TrainConfig) -> dict[str, Any]:
    """Trainer keyword arguments: penalties=[LipschitzPenalty] when cfg.lipschitz > 0 and
    batch_transform=AdversarialBatch when cfg.adv_train != "none"."""
    penalties = [LipschitzPenalty(cfg.lipschitz)] if cfg.lipschitz > 0 else []
    transform = None
    if cfg.adv_train != "none":
        transform = AdversarialBatch(
            cfg.adv_train, cfg.adv_eps, steps=cfg.adv_steps, alpha=cfg.adv_alpha
        )
    return {"penalties": penalties, "batch_transform": transform}


def is_defended(cfg: TrainConfig) -> bool:
    """Whether the config trains with a defence (Lipschitz penalty or adversarial training)."""
    return cfg.lipschitz > 0 or cfg.adv_train != "none"
