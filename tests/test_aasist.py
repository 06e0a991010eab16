"""AASIST / AASIST-L: official weights load strictly and score real ASVspoof 2019 LA clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from deepshield import models
from deepshield.data import load
from deepshield.errors import ModelError
from deepshield.models.architectures.aasist import SincFilterbank

OFFICIAL = {"aasist": ("AASIST.pth", 297_866), "aasist_l": ("AASIST-L.pth", 85_306)}


def _official(name: str) -> dict[str, torch.Tensor]:
    path = shared_path("data", "pretrained_aasist", OFFICIAL[name][0])
    return torch.load(path, map_location="cpu", weights_only=True)


def _trainable(sd: dict[str, torch.Tensor]) -> int:
    return sum(
        v.numel()
        for k, v in sd.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )


@pytest.mark.parametrize("name", ["aasist", "aasist_l"])
def test_parameter_count_matches_the_official_model(name):
    sd = _official(name)
    paper = OFFICIAL[name][1]
    assert _trainable(sd) == paper  # the official file holds the published count
    unused_bn1 = sum(
        v.numel() for k, v in sd.items() if ".bn1." in k and k.endswith(("weight", "bias"))
    )
    n = models.param_count(models.create(name))
    assert n == paper - unused_bn1  # every trained parameter, none of the bypassed BatchNorm
    assert abs(n - paper) / paper < 0.02


@pytest.mark.parametrize("name", ["aasist", "aasist_l"])
def test_official_weights_load_strictly_with_the_output_flipped(name):
    sd = _official(name)
    m = models.load_weights(
        models.create(name), shared_path("data", "pretrained_aasist", OFFICIAL[name][0])
    )
    own = m.state_dict()
    assert torch.equal(own["gat_spectral.att_weight"], sd["GAT_layer_S.att_weight"])
    assert torch.equal(own["branches.1.hsgal2.att_weightM"], sd["HtrgGAT_layer_ST22.att_weightM"])
    assert torch.equal(own["encoder.5.conv2.weight"], sd["encoder.5.0.conv2.weight"])
    assert torch.equal(own["head.weight"], sd["out_layer.weight"].flip(0))
    assert torch.equal(own["head.bias"], sd["out_layer.bias"].flip(0))
    mapped = m.remap_state_dict(sd)
    assert set(mapped) == set(own)  # nothing left over, nothing missing
    assert m.remap_state_dict(own) is own  # deepshield's own layout passes through


def test_a_checkpoint_with_trained_bn1_is_refused():
    sd = dict(_official("aasist_l"))
    sd["encoder.2.0.bn1.weight"] = sd["encoder.2.0.bn1.weight"] * 1.5
    with pytest.raises(ModelError, match="bn1"):
        models.create("aasist_l").remap_state_dict(sd)


def test_deepshield_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    a = models.create("aasist_l").eval()
    models.save_weights(a, tmp_path / "a.safetensors")
    b = models.load_weights(models.create("aasist_l"), tmp_path / "a.safetensors").eval()
    x = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.fixture(scope="module")
def eval_clips():
    protocol = shared_path("data", "asvspoof2019_la_eval_samples", "protocol.txt")
    return load(f"asvspoof:{protocol}", split="test").test


@pytest.mark.parametrize("name", ["aasist", "aasist_l"])
def test_official_weights_separate_real_asvspoof_eval_clips(name, eval_clips):
    """P(spoof) of every spoofed clip exceeds that of every bona fide clip: EER 0 on the 10."""
    m = models.create(name)
    models.load_weights(m, shared_path("data", "pretrained_aasist", OFFICIAL[name][0])).eval()
    x, y = eval_clips.tensors()  # [10, 64600], the official evaluation input length
    with torch.no_grad():
        p = torch.cat([torch.softmax(m(x[i : i + 2]), 1)[:, 1] for i in range(0, len(x), 2)])
    assert p[y == 1].min() > p[y == 0].max()
    assert p[y == 0].max() < 0.01 and (p[y == 1] > 0.4).all()


def test_forward_shapes_features_and_gradients():
    torch.manual_seed(0)
    m = models.create("aasist_l").eval()
    x = (0.1 * torch.randn(2, 16000)).requires_grad_(True)
    logits = m(x)
    assert logits.shape == (2, 2)
    assert m.forward_features(x).shape == (2, m.num_features) and m.num_features == 160
    logits[:, 1].sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(1) > 0).all()
    cam = {}
    m.get_submodule(m.cam_layer).register_forward_hook(lambda mod, i, o: cam.setdefault("o", o))
    m(x.detach())
    assert cam["o"].shape[:3] == (2, 24, 23)  # [B, channels, sub-bands, time]


def test_sinc_filters_tile_the_spectrum_in_mel_bands():
    """Band-passes are differences of windowed low-passes at mel-spaced edges from 0 to 8 kHz, so
    they sum to a unit impulse; each resolvable band's response peaks at its centre."""
    h = SincFilterbank(70, 128).filters[:, 0].double().numpy()  # [70, 129]
    impulse = np.zeros(129)
    impulse[64] = 1.0
    np.testing.assert_allclose(h.sum(0), impulse, atol=1e-6)
    mel_max = 2595 * np.log10(1 + 8000 / 700)
    edges = 700 * (10 ** (np.linspace(0, mel_max, 71) / 2595) - 1)
    resp = np.abs(np.fft.rfft(h, 8192, axis=1))  # [70, 4097] on a 1.95 Hz grid
    peaks = np.fft.rfftfreq(8192, 1 / 16000)[resp.argmax(1)]
    centres = (edges[:-1] + edges[1:]) / 2
    assert np.abs(peaks - centres)[4:69].max() < 10  # the lowest and the Nyquist band merge


def test_fine_tuning_starts_from_the_official_weights_flipped(tmp_path):
    """`deepshield train -m aasist_l --init AASIST-L.pth`: the remap (and label flip) applies."""
    from safetensors.torch import load_file

    from deepshield.config import TrainConfig
    from deepshield.runs.training import run_training

    path = shared_path("data", "pretrained_aasist", "AASIST-L.pth")
    cfg = TrainConfig(dataset="synthetic-speech", data_kwargs={"n": 12, "length": 4000},
                      model="aasist_l", init=str(path), optimizer="SGD", lr=1e-12, momentum=0,
                      epochs=1, batch_size=4, device="cpu")  # fmt: skip
    run = run_training(cfg, tmp_path / "ft")
    got, sd = load_file(str(run.file("best.safetensors"))), _official("aasist_l")
    torch.testing.assert_close(got["head.weight"], sd["out_layer.weight"].flip(0))
    torch.testing.assert_close(got["encoder.2.conv2.weight"], sd["encoder.2.0.conv2.weight"])
