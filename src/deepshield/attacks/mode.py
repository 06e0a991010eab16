"""The model state during an attack: `models.frozen.frozen_eval` (eval, frozen, restored)."""

from __future__ import annotations

from deepshield.models.frozen import frozen_eval as attack_mode

__all__ = ["attack_mode"]
