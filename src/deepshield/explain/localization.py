"""How much of a map's energy falls inside a known box (e.g. a fake's artefact region)."""

from __future__ import annotations

import torch

from deepshield.errors import InputError


def box_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """boxes [B,4] (x0, y0, x1, y1) in pixels, x1/y1 exclusive -> bool masks [B,H,W].

    A pixel (row i, col j) is inside when its centre (j+0.5, i+0.5) lies in [x0,x1) x [y0,y1);
    for integer boxes that is map[y0:y1, x0:x1]. For a speech map [F,T'], x is time, y frequency.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.ndim == 1:
        boxes = boxes.unsqueeze(0)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"boxes have shape {tuple(boxes.shape)}: pass [B,4] as (x0, y0, x1, y1)")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise InputError(
            "a box has x1 <= x0 or y1 <= y0: pass (x0, y0, x1, y1) with x1 > x0, y1 > y0"
        )
    h, w = size
    cy = torch.arange(h, dtype=torch.float32) + 0.5  # [H]
    cx = torch.arange(w, dtype=torch.float32) + 0.5  # [W]
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))  # each [B,1,1]
    rows = (cy.view(1, -1, 1) >= y0) & (cy.view(1, -1, 1) < y1)  # [B,H,1]
    cols = (cx.view(1, 1, -1) >= x0) & (cx.view(1, 1, -1) < x1)  # [B,1,W]
    return rows & cols  # [B,H,W]


def _masks(maps: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if maps.ndim != 3:
        raise InputError(f"maps have shape {tuple(maps.shape)}: pass [B,H,W]")
    mask = box_mask(boxes, (maps.shape[1], maps.shape[2])).to(maps.device)
    if mask.shape[0] not in (1, maps.shape[0]):
        raise InputError(f"{mask.shape[0]} boxes for {maps.shape[0]} maps: pass one box per map")
    return maps, mask.expand(maps.shape[0], -1, -1)


def localization_energy(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Share of each map's energy inside its box: maps [B,H,W] >= 0, boxes [B,4] -> [B] in [0,1].

    Energy is the sum of map values (Grad-CAM and saliency maps are non-negative); an all-zero
    map has share 0 (no evidence anywhere, so none inside the box).
    """
    maps, mask = _masks(maps, boxes)
    if (maps < 0).any():
        raise InputError("maps have negative values: pass non-negative maps (abs or ReLU first)")
    total = maps.flatten(1).sum(dim=1)  # [B]
    inside = (maps * mask).flatten(1).sum(dim=1)  # [B]
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def box_area_share(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Share of the map's pixels inside each box: the energy share of a uniform map. [B] in (0,1]."""
    mask = box_mask(boxes, size)  # [B,H,W]
    return mask.flatten(1).float().mean(dim=1)


def localization_ratio(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Energy share inside the box over the box's area share: [B]; 1 = no better than a uniform
    map, > 1 = the map concentrates on the box. InputError for a box holding no pixel."""
    energy = localization_energy(maps, boxes)  # [B]
    area = box_area_share(boxes, (maps.shape[1], maps.shape[2])).to(energy.device)  # [B]
    if (area == 0).any():
        raise InputError(
            "a box covers no pixel of the map: pass boxes in the map's pixel coordinates"
        )
    return energy / area
