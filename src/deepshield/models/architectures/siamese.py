"""Siamese detector: one shared backbone embeds each input; a linear head classifies the embedding.

Training (see `deepshield.train.siamese`) feeds pairs through the same weights and adds a
contrastive loss on the two embeddings to the cross-entropy of each (Hadsell et al., 2006):
    L_sim(Z1, Z2, Y1, Y2) = L_con(Z1, Z2) + CE(Z1, Y1) + CE(Z2, Y2).
Inference is a plain detector: one input in, logits [B, num_classes] out, P(fake) = softmax[:, 1].

The backbone is any registered model, built by `create(inner, num_classes=embed_dim)`, so its own
last Linear layer (with its dropout) is the projection head from its pooled features to the
embedding; image backbones keep their Normalize layer (pixels in [0, 1]), audio backbones their
front end (waveform in [-1, 1]). The backbone runs once per forward pass, so Grad-CAM hooks its
`cam_layer` as in the bare model.

@inproceedings{hadsell2006dimensionality,
  title={Dimensionality Reduction by Learning an Invariant Mapping},
  author={Hadsell, Raia and Chopra, Sumit and LeCun, Yann},
  booktitle={CVPR}, year={2006}}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepshield.errors import ConfigError
from deepshield.models.registry import create, register, spec


class Siamese(nn.Module):
    """x (the backbone's input) -> embedding z [B, embed_dim] -> logits head(z) [B, K].

    `margin` is the contrastive margin its training uses (embeddings are L2-normalised for the
    contrastive term, so distances lie in [0, 2]); `contrastive_weight` scales that term.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int,
        num_classes: int = 2,
        margin: float = 1.0,
        contrastive_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone  # its last Linear maps pooled features -> embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self.num_features = embed_dim
        self.margin = margin
        self.contrastive_weight = contrastive_weight

    @property
    def cam_layer(self) -> str | None:
        """The backbone's Grad-CAM layer, as a dotted path from this module."""
        inner = getattr(self.backbone, "cam_layer", None)
        return None if inner is None else "backbone." + inner

    @property
    def bounds(self) -> tuple[float, float]:
        """The backbone's input range: (-1, 1) for waveforms, (0, 1) for images."""
        return getattr(self.backbone, "bounds", (0.0, 1.0))

    @property
    def frontend_layer(self) -> str | None:
        """Dotted path of an audio backbone's time-frequency front end (None for images)."""
        inner = getattr(self.backbone, "frontend_layer", None)
        if isinstance(inner, str):
            return "backbone." + inner
        has_child = isinstance(getattr(self.backbone, "frontend", None), nn.Module)
        return "backbone.frontend" if has_child else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: the backbone's input (images [B,C,H,W] in [0,1] / waveforms [B,T]) -> z [B, embed_dim]."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor, with_embedding: bool = False) -> Any:
        """x -> logits [B, num_classes]; with_embedding: (logits, z [B, embed_dim]) of one pass."""
        z = self.backbone(x)  # [B, D]
        logits = self.head(z)  # [B, K]
        return (logits, z) if with_embedding else logits


@register(
    "mel_siamese",
    kind="audio",
    input_size=(64600,),
    inner="mel_cnn",
    description="Log-mel CNN in a Siamese detector (= siamese:mel_cnn); waveform input, 16 kHz.",
)
@register("siamese", kind="wrapper", inner="resnet18", description="siamese:resnet18.")
@register(
    "siamese:",
    kind="wrapper",
    description="Siamese detector over any backbone; contrastive + cross-entropy training.",
)
def siamese(
    num_classes: int = 2,
    *,
    inner: str,
    embed_dim: int = 128,
    margin: float = 1.0,
    contrastive_weight: float = 1.0,
    **backbone_kw: Any,
) -> Siamese:
    """Siamese detector over backbone `inner`; `backbone_kw` go to the backbone's builder."""
    if not inner:
        raise ConfigError("siamese: name a backbone after the colon, e.g. siamese:resnet18")
    if spec(inner).kind not in ("image", "audio"):
        raise ConfigError(
            f"siamese:{inner}: the backbone must be an image or audio classifier "
            "(`deepshield models` lists them)"
        )
    if embed_dim < 1 or margin <= 0 or contrastive_weight < 0:
        raise ConfigError(
            f"siamese: embed_dim={embed_dim}, margin={margin}, contrastive_weight="
            f"{contrastive_weight}; use embed_dim >= 1, margin > 0, contrastive_weight >= 0"
        )
    backbone = create(inner, num_classes=embed_dim, **backbone_kw)
    return Siamese(backbone, embed_dim, num_classes, margin, contrastive_weight)
