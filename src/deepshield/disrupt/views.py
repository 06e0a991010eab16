"""A generator as the one-input model the attack core needs: x -> distance-to-reference terms.

`Displacement(generator, classes, references, part)` maps x [B, 3, H, W] to the stacked
differences part(G(x, c_k)) - r_k, [B, K, C, H, W], over the active classes c_k: all K at once
("joint"), or one per step chosen by `select(step)` ("iterative", K = 1 active). The part is the
generator's output image, or, for a generator with `forward_parts(x, c) -> (attention, colour)`
(GANimation), its attention mask [B, 1, H, W] or colour mask [B, 3, H, W].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

PARTS = ("output", "attention", "color")


def is_conditional(generator: nn.Module) -> bool:
    """Whether G takes an attribute vector: G(x, c) with c [B, generator.c_dim]."""
    return hasattr(generator, "c_dim")


def translate(generator: nn.Module, x: Tensor, c: Tensor | None, part: str = "output") -> Tensor:
    """x: [B, 3, H, W] in G's range, c: [B, c_dim] or None -> the part of G(x, c), [B, C, H, W]."""
    if c is None:
        return generator(x)
    if part == "output":
        return generator(x, c)
    attention, color = generator.forward_parts(x, c)  # [B, 1, H, W], [B, 3, H, W]
    return attention if part == "attention" else color


def translate_classes(
    generator: nn.Module, x: Tensor, classes: Tensor | None, part: str = "output"
) -> Tensor:
    """x: [B, 3, H, W], classes: [B, K, c_dim] or None -> parts [B, K, C, H, W] (one batch call)."""
    if classes is None:
        return translate(generator, x, None, part)[:, None]  # [B, 1, C, H, W]
    b, k = classes.shape[:2]
    x_k = x[:, None].expand(-1, k, -1, -1, -1).reshape(b * k, *x.shape[1:])  # [B K, 3, H, W]
    out = translate(generator, x_k, classes.reshape(b * k, -1), part)  # [B K, C, H, W]
    return out.view(b, k, *out.shape[1:])


class Displacement(nn.Module):
    """x [B, 3, H, W] -> part(G(x, c_k)) - r_k for the active classes, [B, K_active, C, H, W].

    classes: [B, K, c_dim] (None for an unconditional G, K = 1); references: [B, K, C, H, W].
    iterative=True makes one class active at a time: class step % K after `select(step)`.
    """

    def __init__(
        self,
        generator: nn.Module,
        classes: Tensor | None,
        references: Tensor,
        part: str = "output",
        iterative: bool = False,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.classes = classes
        self.references = references
        self.part = part
        self.iterative = iterative
        self.active = 0

    def select(self, step: int) -> None:
        """Make class step % K the active one (iterative mode; the core's on_step hook)."""
        self.active = step % self.references.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] -> [B, K_active, C, H, W]."""
        classes, references = self.classes, self.references
        if self.iterative:
            k = slice(self.active, self.active + 1)
            classes = None if classes is None else classes[:, k]
            references = references[:, k]
        return translate_classes(self.generator, x, classes, self.part) - references


def squared_distance(displacement: Tensor, _: object = None) -> Tensor:
    """[B, K, C, H, W] -> sum over k of the mean squared displacement, [B] (the MSE for K = 1)."""
    return displacement.pow(2).flatten(2).mean(2).sum(1)


def as_batch_classes(classes: Tensor, batch: int) -> Tensor:
    """classes: [K, c_dim] (shared) or [B, K, c_dim] -> [B, K, c_dim]."""
    return classes[None].expand(batch, -1, -1) if classes.dim() == 2 else classes


def one_hot_classes(c_dim: int) -> Tensor:
    """The c_dim one-hot attribute vectors, [c_dim, c_dim] (each class alone)."""
    return torch.eye(c_dim)
