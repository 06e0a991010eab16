"""Fakes that pass as real under attack, with Grad-CAM maps of the detector before and after."""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from deepshield.attacks.registry import get_attack
from deepshield.explain import grad_cam
from deepshield.predict import fake_scores, predict_logits
from deepshield.report.overlay import explanation_grid


def evasion_grid(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    k: int,
    steps: int,
    seed: int,
    batch_size: int = 128,
) -> tuple[Figure | None, dict[str, Any]]:
    """Up to k fakes of x [N,C,H,W] in [0,1] (labels y [N], 1 = fake) detected when clean and
    passed as real after PGD L-inf at `eps`: a figure with the clean fakes (top row) and their
    adversarial versions (bottom row), each next to the Grad-CAM map of its predicted class.

    The first 4k detected fakes are attacked; returns (figure or None when none passed, counts).
    """
    device = next(model.parameters()).device
    fakes = x[y == 1]  # [F, C, H, W]
    scores = fake_scores(predict_logits(model, fakes, batch_size, device))  # [F]
    keep = (scores >= 0.5).nonzero().flatten()[: 4 * k]  # [m]: detected when clean
    tried, p_clean = fakes[keep].to(device), scores[keep]  # [m, C, H, W], [m]
    info: dict[str, Any] = {"eps": eps, "attacked": len(tried), "passed": 0, "shown": 0}
    if len(tried) == 0:
        return None, info
    ones = torch.ones(len(tried), dtype=torch.long, device=device)
    adv = get_attack("pgd")(model, tried, ones, eps, steps=steps, seed=seed)  # [m, C, H, W]
    p_adv = fake_scores(predict_logits(model, adv, batch_size, device))  # [m]
    passed = (p_adv < 0.5).nonzero().flatten()  # [p]
    info["passed"] = len(passed)
    show = passed[:k].cpu()
    info["shown"] = len(show)
    if len(show) == 0:
        return None, info
    images = torch.cat([tried[show.to(device)], adv[show.to(device)]])  # [2s, C, H, W]
    pred = torch.cat([torch.ones(len(show)), torch.zeros(len(show))]).long().to(device)  # [2s]
    maps = grad_cam(model, images, pred).detach().cpu()  # [2s, H, W] in [0, 1]
    titles = [f"fake, P(fake) {p:.2f}" for p in p_clean[show]]
    titles += [f"attacked, P(fake) {p:.2f}" for p in p_adv[show]]
    fig = explanation_grid(
        images.cpu(),
        maps,
        titles,
        ncols=len(show),
        row_labels=["clean: detected", f"PGD {eps * 255:.3g}/255: passed"],
    )
    title = "Grad-CAM of the predicted class: fakes that pass as real under attack"
    fig.suptitle(title, fontsize=10, y=1 + 0.1 / fig.get_figheight(), va="bottom")
    return fig, info
