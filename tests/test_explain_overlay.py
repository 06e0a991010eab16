"""deepshield.report.overlay: heat-map overlays and image / explanation grids."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from deepshield.errors import InputError
from deepshield.report.overlay import (
    explanation_grid,
    heatmap_colors,
    outcome_indices,
    overlay,
)


def batch(n: int = 3, c: int = 3, size: int = 12):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, c, size, size, generator=gen), torch.rand(n, size, size, generator=gen)


def test_overlay_is_an_alpha_blend_of_image_and_colormapped_map():
    img, maps = batch()
    maps[1] *= 5  # overlays rescale each map by its maximum
    rgb = img.permute(0, 2, 3, 1).numpy()
    unit = (maps / maps.flatten(1).amax(dim=1).view(-1, 1, 1)).numpy()
    jet = matplotlib.colormaps["jet"](unit)[..., :3]
    out = overlay(img, maps, alpha=0.3)
    assert out.shape == (3, 12, 12, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, 0.7 * rgb + 0.3 * jet, atol=1e-6)
    np.testing.assert_allclose(overlay(img, maps, alpha=0.0), rgb, atol=1e-6)
    np.testing.assert_allclose(overlay(img, maps, alpha=1.0), jet, atol=1e-6)
    np.testing.assert_allclose(heatmap_colors(unit), jet, atol=1e-6)


def test_overlay_handles_one_image_grey_images_small_maps_zero_maps_and_uint8():
    img, maps = batch(c=1)
    single = overlay(img[0], maps[0], as_uint8=True)
    assert single.shape == (12, 12, 3) and single.dtype == np.uint8
    coarse = overlay(img, maps[:, ::3, ::3].contiguous())  # a 4x4 map on a 12x12 image
    assert coarse.shape == (3, 12, 12, 3)
    zero = overlay(img, torch.zeros(3, 12, 12), alpha=0.5)
    base = matplotlib.colormaps["jet"](0.0)[:3]
    np.testing.assert_allclose(
        zero, 0.5 * img.expand(-1, 3, -1, -1).permute(0, 2, 3, 1) + 0.5 * np.array(base), atol=1e-6
    )


@pytest.mark.parametrize(
    ("images", "maps", "kw", "match"),
    [
        (torch.rand(2, 4, 8, 8), torch.rand(2, 8, 8), {}, "C = 1 or 3"),
        (torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8), {}, "one map"),
        (torch.rand(2, 3, 8, 8), -torch.rand(2, 8, 8), {}, "negative"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"alpha": 1.5}, "alpha"),
    ],
)
def test_overlay_rejects_bad_input(images, maps, kw, match):
    with pytest.raises(InputError, match=match):
        overlay(images, maps, **kw)


def test_outcome_indices_groups_real_and_fake_by_correctness():
    y = torch.tensor([0, 0, 1, 1, 0, 1, 1])
    p = torch.tensor([0, 1, 1, 0, 0, 1, 1])
    assert outcome_indices(y, p, per_group=2) == {
        "real-correct": [0, 4],
        "real-wrong": [1],
        "fake-correct": [2, 5],
        "fake-wrong": [3],
    }


def test_explanation_grid_lays_out_image_overlay_pairs_by_row():
    img, maps = batch(n=5)
    titles = [f"sample {i}" for i in range(5)]
    fig = explanation_grid(img, maps, titles, ncols=2, row_labels=["real", "fake", "more"])
    assert isinstance(fig, Figure)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 3 * 4 and len(shown) == 10
    assert [ax.get_title() for ax in shown[::2]] == titles
    assert [fig.axes[r * 4].get_ylabel() for r in range(3)] == ["real", "fake", "more"]
    np.testing.assert_allclose(shown[1].images[0].get_array(), overlay(img, maps)[0], atol=1e-6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="one title per image"):
        explanation_grid(img, maps, titles[:3])
