"""Waveform attacks on speech detectors: the attacks reach the waveform through the front end,
stay in [-1, 1] (the models' `bounds`) and in the budget, and raise the detector's loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from deepshield import data, models

attacks = pytest.importorskip("deepshield.attacks")
if not hasattr(attacks, "pgd"):
    pytest.skip(
        "deepshield.attacks has no pgd yet (attacks branch not merged)", allow_module_level=True
    )


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")  # [B]


@pytest.mark.parametrize("name", ["mel_cnn", "mel_siamese"])
def test_pgd_on_mel_models_stays_in_the_waveform_range_and_budget(name):
    torch.manual_seed(0)
    model = models.create(name).eval()
    assert model.bounds == (-1.0, 1.0)
    x = (0.9 * torch.randn(4, 4000)).clamp(-1, 1)  # many samples at the range's edges
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.01
    x_adv = attacks.pgd(model, x, y, eps, steps=3, seed=0)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= -1 and x_adv.max() <= 1 and (x_adv < 0).any()
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (_loss(model, x_adv, y) > _loss(model, x, y)).all()


@pytest.mark.slow
def test_fgsm_and_pgd_on_official_aasist_l_lower_its_margin_on_real_clips():
    weights = shared_path("data", "pretrained_aasist", "AASIST-L.pth")
    protocol = shared_path("data", "asvspoof2019_la_eval_samples", "protocol.txt")
    model = models.load_weights(models.create("aasist_l"), weights).eval()
    clips = data.load(f"asvspoof:{protocol}", split="test", length=16000).test
    # 1 s crops where P(spoof) is not saturated in float32 (a saturated clip has no gradient)
    x, y = clips.x[[1, 6]], clips.y[[1, 6]]
    assert y.tolist() == [1, 0]

    def margin(x: torch.Tensor) -> torch.Tensor:  # logit of the true class minus the other [B]
        with torch.no_grad():
            out = model(x)
        return out.gather(1, y[:, None])[:, 0] - out.gather(1, 1 - y[:, None])[:, 0]

    eps = 0.001  # about -60 dBFS
    for x_adv in (
        attacks.fgsm(model, x, y, eps),
        attacks.pgd(model, x, y, eps, steps=3, seed=0),
    ):
        assert x_adv.min() >= -1 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert (margin(x_adv) < margin(x) - 1.0).all()
