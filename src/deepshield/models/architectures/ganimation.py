"""GANimation generator: StarGAN's trunk with an attention head and a colour head.

G(x, c) shares StarGAN's encoder / residual / decoder trunk ([B, 3 + c_dim, H, W] ->
[B, conv_dim, H, W]) and ends in two 7x7 convs: a colour mask C = tanh(.) [B, 3, H, W] in
[-1, 1] and an attention mask A = sigmoid(.) [B, 1, H, W] in [0, 1]. The output image is

    y = (1 - A) * C + A * x          (paper eq. 1; official code: `mask * real + (1 - mask) * color`)

so A weights the *input* pixels: A = 1 keeps x, A = 0 paints the colour mask. `forward` returns
y (what an attack disrupts), `forward_parts` returns (A, C). Images are in [-1, 1] (`bounds`);
y stays in [-1, 1] as a convex mix of two images in that range.

Layout: `main` (trunk, indices as StarGAN's), `color_head.0`, `attention_head.0`. The official
code (albertpumarola/GANimation) names the heads `img_reg` and `attetion_reg` and uses
InstanceNorm without running statistics (the default here); `remap_state_dict` maps those names,
so its generator files load strictly. Official sizes: conv_dim 64, c_dim 17 (action units), 6
residual blocks.

@inproceedings{pumarola2018ganimation,
  title     = {GANimation: Anatomically-aware Facial Animation from a Single Image},
  author    = {Pumarola, Albert and Agudo, Antonio and Martinez, Aleix M. and
               Sanfeliu, Alberto and Moreno-Noguer, Francesc},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages     = {818--833},
  year      = {2018}
}
"""

from __future__ import annotations

import torch
from torch import nn

from deepshield.models.architectures.stargan import (
    check_conditional_input,
    encoder_decoder,
    tile_condition,
)
from deepshield.models.norm_buffers import fit_norm_buffers
from deepshield.models.registry import HALF, register

_OFFICIAL_HEADS = {"img_reg.": "color_head.", "attetion_reg.": "attention_head."}


def mix_attention(att: torch.Tensor, color: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """att: [B, 1, H, W] in [0, 1], color, x: [B, 3, H, W] -> (1 - att) * color + att * x."""
    return (1 - att) * color + att * x


class GANimationGenerator(nn.Module):
    """G(x, c): x [B, 3, H, W] in [-1, 1], c [B, c_dim] -> mixed image [B, 3, H, W] in [-1, 1]."""

    bounds = (-1.0, 1.0)

    def __init__(
        self,
        conv_dim: int = 64,
        c_dim: int = 17,
        n_res: int = 6,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.main = nn.Sequential(*encoder_decoder(3 + c_dim, conv_dim, n_res, track_running_stats))
        self.color_head = nn.Sequential(
            nn.Conv2d(conv_dim, 3, 7, stride=1, padding=3, bias=False), nn.Tanh()
        )
        self.attention_head = nn.Sequential(
            nn.Conv2d(conv_dim, 1, 7, stride=1, padding=3, bias=False), nn.Sigmoid()
        )

    def forward_parts(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] in [-1, 1], c: [B, c_dim] -> (attention [B, 1, H, W] in [0, 1],
        colour [B, 3, H, W] in [-1, 1])."""
        check_conditional_input(x, c, self.c_dim, "ganimation")
        features = self.main(tile_condition(x, c))  # [B, conv_dim, H, W]
        return self.attention_head(features), self.color_head(features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1], c: [B, c_dim] -> (1 - A) * C + A * x, [B, 3, H, W]."""
        att, color = self.forward_parts(x, c)
        return mix_attention(att, color, x)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official head names -> ours; norm buffers fitted to this model (see module doc)."""
        renamed = {}
        for key, value in sd.items():
            for old, new in _OFFICIAL_HEADS.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
            renamed[key] = value
        return fit_norm_buffers(self, renamed)


@register("ganimation", kind="generator", mean=HALF, std=HALF, input_size=(3, 128, 128))
def ganimation(
    num_classes: int = 2,
    conv_dim: int = 64,
    c_dim: int = 17,
    n_res: int = 6,
    track_running_stats: bool = False,
) -> GANimationGenerator:
    """GANimation generator (attention + colour masks), [-1, 1] images; official defaults.

    `num_classes` is unused (a generator has no classes); CPU-fast variant: conv_dim=16, n_res=2.
    """
    return GANimationGenerator(conv_dim, c_dim, n_res, track_running_stats)
