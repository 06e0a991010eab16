"""Protection and detection at a photo's own size, with templates and detector trained at h x w.

`protect_native`: x [B, 3, H, W] with H >= h, W >= w -> clamp(x + up(eta), 0, 1), where up
enlarges the template to H x W by nearest neighbour (pixel centres, `nearest-exact`).
`p_manipulated_native`: the detector scores down(x), down = area (box) averaging to h x w, the
size it was trained and evaluated at. When H, W are multiples of h, w, down(up(eta)) = eta
exactly, so down(protected) = down(x) + eta up to clamping and 8-bit rounding (averaged over
the box): the detector sees what it was evaluated on, a template on an h x w photo. Other
sizes mix neighbouring template values at box edges (docs/proactive.md measures the effect).
A photo smaller than the template cannot carry it: InputError.

Scoring the full-size photo with the fully convolutional detector and a tiled template (the
earlier behaviour) flagged 18 of 20 untouched protected 128-px faces with 32-px templates; the
detector had only seen 32-px content.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepshield.errors import InputError
from deepshield.proactive.detector import ProactiveDetector
from deepshield.proactive.templates import TemplateSet, add_template


def check_size(hw: tuple[int, int], template_hw: tuple[int, int]) -> None:
    """InputError when an image of size hw is smaller than the templates on either side."""
    if hw[0] < template_hw[0] or hw[1] < template_hw[1]:
        raise InputError(
            f"image is {hw[0]}x{hw[1]}, smaller than the {template_hw[0]}x{template_hw[1]} "
            "templates; protect photos at least that large (or train templates at a smaller size)"
        )


def shrink(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """x: [B, C, H, W] -> box (area) average to [B, C, h, w]; identity when the sizes match."""
    if tuple(x.shape[2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="area")


def enlarge(eta: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """eta: [B, C, h, w] -> nearest-neighbour (pixel centres) enlargement [B, C, H, W]."""
    if tuple(eta.shape[2:]) == tuple(hw):
        return eta
    return F.interpolate(eta, size=hw, mode="nearest-exact")


def protect_native(templates: TemplateSet, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1], index: [B] -> clamp(x + up(eta_index), 0, 1) [B, 3, H, W]."""
    check_size((x.shape[2], x.shape[3]), templates.size)
    if index.shape != (x.shape[0],) or bool((index < 0).any() or (index >= templates.n).any()):
        raise InputError(
            f"protect: index {index.tolist()} must hold one value in [0, {templates.n}) per image"
        )
    return add_template(x, enlarge(templates()[index], (x.shape[2], x.shape[3])))


def p_manipulated_native(
    detector: ProactiveDetector, x: torch.Tensor, templates: torch.Tensor
) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1], templates: [n, C, h, w] -> P(manipulated) of down(x) [B]."""
    hw = (templates.shape[2], templates.shape[3])
    check_size((x.shape[2], x.shape[3]), hw)
    return detector.p_manipulated(shrink(x, hw), templates)
