"""Template sets: value range, application range and tiling, save/load, detector files."""

from __future__ import annotations

import json

import pytest
import torch

from deepshield.errors import InputError, ModelError
from deepshield.proactive.detector import ProactiveDetector, load_detector, save_detector
from deepshield.proactive.templates import TemplateSet, add_template, tile_to


def test_templates_stay_within_eps_whatever_the_raw_values() -> None:
    ts = TemplateSet(n=4, size=(8, 8), channels=3, eps_max=0.02, seed=1)
    with torch.no_grad():
        ts.raw.mul_(1e4)  # as if the optimiser ran away
    eta = ts()
    assert eta.shape == (4, 3, 8, 8)
    assert eta.abs().max() <= 0.02 + 1e-7
    assert eta.abs().max() > 0.0199  # tanh saturates at the bound, not below it


def test_protect_adds_the_indexed_template_and_stays_in_range() -> None:
    ts = TemplateSet(n=3, size=(8, 8), channels=1, eps_max=0.05, seed=0)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[0] = 0.0  # clamped from below
    x[1] = 1.0  # clamped from above
    x[2:] = x[2:] * 0.8 + 0.1  # far from the bounds: exact sum
    index = torch.tensor([0, 1, 2, 1])
    y = ts.protect(x, index)
    assert y.min() >= 0 and y.max() <= 1
    eta = ts()[index]  # [4, 1, 8, 8], same on R, G, B
    assert torch.allclose(y[2:], x[2:] + eta[2:], atol=1e-7)
    assert torch.equal(y[0], eta[0].clamp_min(0).expand(3, -1, -1))
    assert torch.equal(y[1], (1 + eta[1]).clamp_max(1).expand(3, -1, -1))
    assert ((y - x).abs() <= 0.05 + 1e-7).all()


def test_protect_tiles_the_template_over_other_image_sizes() -> None:
    ts = TemplateSet(n=2, size=(4, 6), seed=3)
    x = torch.full((1, 3, 10, 9), 0.5)
    y = ts.protect(x, torch.tensor([1]))
    delta = (y - x)[0, 0]  # [10, 9]
    eta = ts()[1, 0]  # [4, 6]
    assert torch.allclose(delta[:4, :6], eta, atol=1e-7)
    assert torch.allclose(delta[4:8, 6:9], eta[:, :3], atol=1e-7)  # period 4 x 6
    assert torch.allclose(delta[8:10, :6], eta[:2], atol=1e-7)
    small = ts.protect(torch.full((1, 3, 3, 2), 0.5), torch.tensor([0]))
    assert torch.allclose(small[0, 0] - 0.5, ts()[0, 0, :3, :2], atol=1e-7)
    assert tile_to(torch.zeros(2, 1, 4, 6), 10, 9).shape == (2, 1, 10, 9)


def test_protect_rejects_bad_input() -> None:
    ts = TemplateSet(n=2, size=(4, 4))
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(InputError, match="index"):
        ts.protect(x, torch.tensor([0, 2]))
    with pytest.raises(InputError, match="one index per image"):
        ts.protect(x, torch.tensor([0]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        add_template(x * 2, ts()[:2])
    with pytest.raises(InputError, match="RGB"):
        add_template(torch.rand(2, 1, 4, 4), ts()[:2])
    with pytest.raises(InputError, match="eps_max"):
        TemplateSet(n=2, size=(4, 4), eps_max=0)


def test_template_set_save_load_round_trip(tmp_path) -> None:
    ts = TemplateSet(n=5, size=(6, 7), channels=3, eps_max=0.04, seed=2)
    weights, meta = ts.save(tmp_path / "set")
    assert weights.name == "set.safetensors" and meta.name == "set.json"
    back = TemplateSet.load(tmp_path / "set.safetensors")
    assert (back.n, back.channels, back.size, back.eps_max) == (5, 3, (6, 7), 0.04)
    assert torch.equal(back(), ts())
    info = json.loads(meta.read_text())
    info["n"] = 4
    meta.write_text(json.dumps(info))
    with pytest.raises(ModelError, match="do not match"):
        TemplateSet.load(tmp_path / "set")
    meta.write_text("{not json")
    with pytest.raises(ModelError, match="not a readable template set"):
        TemplateSet.load(tmp_path / "set")
    with pytest.raises(ModelError, match="missing"):
        TemplateSet.load(tmp_path / "other")


def test_detector_outputs_and_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    net = ProactiveDetector(channels=3, width=8, depth=3)
    x = torch.rand(2, 3, 24, 40)
    s, r = net(x)
    assert s.shape == (2,) and r.shape == (2, 3, 24, 40)
    net.eval()
    p = net.p_manipulated(x, batch_size=1)
    assert torch.allclose(p, torch.sigmoid(-net(x)[0]), atol=1e-6)  # 1 - P(untouched)
    # With a template set the classifier also reads max_k cos(r, eta_k), eta_k tiled to 24 x 40.
    eta = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[0, -1] = 1.0  # s = sqrt(D) * best match + bias
        s, r = net(x, eta)
    tiled = eta.repeat(1, 1, 3, 5).flatten(1)  # [4, 3 * 24 * 40]
    cos = torch.nn.functional.cosine_similarity(r.flatten(1)[:, None], tiled[None], dim=2)
    assert torch.allclose(s, cos.amax(dim=1) * (3 * 24 * 40) ** 0.5 + net.fc.bias, atol=1e-4)
    assert torch.allclose(net.p_manipulated(x, eta), torch.sigmoid(-s), atol=1e-6)
    save_detector(net, tmp_path / "det")
    back = load_detector(tmp_path / "det.json")
    assert back.config == {"channels": 3, "width": 8, "depth": 3}
    assert torch.equal(back(x)[0], net(x)[0])
    (tmp_path / "det.json").write_text('{"format": "other"}')
    with pytest.raises(ModelError, match="not a"):
        load_detector(tmp_path / "det")
