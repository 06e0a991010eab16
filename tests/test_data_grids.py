"""report.grids: image grids and per-class sample grids show the given pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshield.data.splits import TensorSet
from deepshield.errors import InputError
from deepshield.files import atomic_save_figure
from deepshield.report.grids import class_samples, image_grid


def _shown(fig):
    """Arrays drawn in each axes (None where empty), row-major."""
    return [ax.images[0].get_array() if ax.images else None for ax in fig.axes]


def test_image_grid_layout_titles_and_pixels(tmp_path):
    a = torch.rand(3, 3, 5, 4)
    b = torch.rand(2, 1, 5, 4)
    fig = image_grid([a, b], ["first", "second"], col_titles=["c0", "c1", "c2"])
    shown = _shown(fig)
    assert len(shown) == 6 and shown[5] is None  # 2 rows x 3 cols, one empty cell
    assert np.allclose(shown[1], a[1].permute(1, 2, 0).numpy())
    assert np.allclose(shown[4], b[1, 0].numpy())
    assert fig.axes[0].get_ylabel() == "first" and fig.axes[3].get_ylabel() == "second"
    assert [fig.axes[j].get_title() for j in range(3)] == ["c0", "c1", "c2"]
    out = atomic_save_figure(fig, tmp_path / "g.png")
    assert out.stat().st_size > 1000


@pytest.mark.parametrize(
    ("rows", "titles", "match"),
    [
        ([], [], "no rows"),
        ([torch.rand(2, 3, 4, 4)], ["a", "b"], "1 rows but 2 row titles"),
        ([torch.rand(2, 4, 4)], ["a"], r"shape \(2, 4, 4\)"),
        ([torch.rand(2, 3, 4, 4) * 2], ["a"], r"outside \[0,1\]"),
    ],
)
def test_image_grid_bad_input(rows, titles, match):
    with pytest.raises(InputError, match=match):
        image_grid(rows, titles)


def test_class_samples_picks_each_class_by_seed():
    y = torch.tensor([0] * 10 + [1] * 3)
    x = torch.arange(13, dtype=torch.uint8).view(13, 1, 1, 1).expand(13, 3, 2, 2).contiguous()
    ts = TensorSet(x, y)
    fig = class_samples(ts, ["real", "fake"], n_per_class=4, seed=1)
    shown = _shown(fig)
    assert len(shown) == 8 and shown[7] is None  # fake has only 3 images
    real_ids = {round(float(s[0, 0, 0]) * 255) for s in shown[:4]}
    fake_ids = {round(float(s[0, 0, 0]) * 255) for s in shown[4:7]}
    assert len(real_ids) == 4 and real_ids <= set(range(10)) and fake_ids == {10, 11, 12}
    assert fig.axes[0].get_ylabel() == "real (10)" and fig.axes[4].get_ylabel() == "fake (3)"
    again = _shown(class_samples(ts, ["real", "fake"], n_per_class=4, seed=1))
    assert all(np.array_equal(p, q) for p, q in zip(shown[:7], again[:7], strict=True))
