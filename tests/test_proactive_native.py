"""Protection at a photo's own size: the detector scores what `protect train` evaluated."""

from __future__ import annotations

import pytest
import torch

from deepshield.errors import InputError
from deepshield.proactive.detector import ProactiveDetector
from deepshield.proactive.native import enlarge, p_manipulated_native, protect_native, shrink
from deepshield.proactive.templates import TemplateSet
from test_proactive_train import crops


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_shrinking_the_enlarged_template_gives_it_back(factor):
    eta = TemplateSet(3, (8, 6), 1, 0.016, seed=2)().detach()
    back = shrink(enlarge(eta, (8 * factor, 6 * factor)), (8, 6))
    assert torch.allclose(back, eta, rtol=0, atol=1e-8)  # float rounding of the box mean


def test_native_path_scores_what_the_template_size_evaluation_scored():
    """On a 4x larger photo (no clamping), down(x + up(eta)) = down(x) + eta: the detector's
    score equals the score of the photo protected at the template size."""
    torch.manual_seed(0)
    templates = TemplateSet(4, (16, 16), 1, 0.016, seed=1)
    detector = ProactiveDetector(1, width=4, depth=2).eval()
    x = 0.1 + 0.8 * crops(5, 64, seed=3)  # [5, 3, 64, 64], inside [0.1, 0.9]: nothing clamps
    index = torch.tensor([0, 1, 2, 3, 0])
    eta = templates().detach()
    with torch.no_grad():
        big = p_manipulated_native(detector, protect_native(templates, x, index), eta)
        small = detector.p_manipulated(templates.protect(shrink(x, (16, 16)), index), eta)
    assert torch.allclose(big, small, atol=1e-5)
    assert (protect_native(templates, x, index) - x).abs().max() <= 0.016 + 1e-7


def test_a_photo_smaller_than_the_templates_is_refused():
    templates = TemplateSet(2, (16, 16), 1, 0.016)
    x = torch.rand(1, 3, 12, 40)
    with pytest.raises(InputError, match="12x40, smaller than the 16x16 templates"):
        protect_native(templates, x, torch.tensor([0]))
    with pytest.raises(InputError, match="smaller than the 16x16"):
        p_manipulated_native(ProactiveDetector(1, 4, 2), x, templates().detach())
