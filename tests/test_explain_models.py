"""Saliency and Grad-CAM work for every detector in the registry: image models give maps at the
image's size, speech models a Grad-CAM map at their front end's (frequency x frame) size."""

from __future__ import annotations

import pytest
import torch

from conftest import shared_path
from deepshield import models
from deepshield.errors import InputError
from deepshield.explain import grad_cam, saliency
from deepshield.explain.grad_cam import frontend_module
from deepshield.explain.layers import recorded

DETECTORS = [n for n in models.names() if models.spec(n).kind != "generator"]
WAVE_LENGTH = 16000  # 1 s at 16 kHz: short, still many frames
# Untrained AASIST: the gradient-weighted channel sum at encoder.5 is negative everywhere, so the
# ReLU leaves no evidence (measured on uniform and Gaussian inputs); the pretrained weights do
# give maps (test below).
ZERO_CAM_UNTRAINED = {"aasist", "aasist_l"}
FIXED_SIZE = {"meso4", "mesoinception4"}  # their Dense layer takes 256 px crops only


def build(name: str) -> torch.nn.Module:
    """An untrained detector; a wrapper named 'x:' gets the small simplenet backbone."""
    torch.manual_seed(0)
    return models.create(name + "simplenet" if name.endswith(":") else name).eval()


def inputs(name: str) -> torch.Tensor:
    """Images in [0,1] at 64 px (xception 96 px, fixed-size models their size) or waveforms."""
    gen = torch.Generator().manual_seed(1)
    if models.spec(name).kind == "audio":
        return torch.rand(2, WAVE_LENGTH, generator=gen) * 1.6 - 0.8  # [2, T] in [-1, 1]
    size = models.spec(name).input_size[-1]
    size = size if name in FIXED_SIZE else min(size, 96)
    return torch.rand(2, 3, size, size, generator=gen)  # [2, 3, S, S]


def test_the_registry_holds_the_detectors_the_issue_names():
    expected = {"mlp3", "simplenet", "vgg11_bn", "resnet18", "shufflenet_v2_x1_0", "xception"}
    expected |= {"xception_detector", "mel_cnn", "aasist", "aasist_l"}
    assert expected <= set(DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
def test_saliency_and_grad_cam_of_every_detector(name):
    model, x = build(name), inputs(name)
    sal = saliency(model, x, 1)
    assert sal.shape == ((x.shape[0], *x.shape[2:]) if x.ndim == 4 else x.shape)
    assert torch.isfinite(sal).all() and sal.min() >= 0 and sal.max() > 0
    if getattr(model, "cam_layer", None) is None:  # no convolution (mlp3): a clear refusal
        with pytest.raises(InputError, match="declares no `cam_layer`"):
            grad_cam(model, x, 1)
        return
    cams = [grad_cam(model, x, t) for t in (0, 1)]
    if x.ndim == 4:
        size = tuple(x.shape[2:])  # [B, H, W] at the image's size
    else:
        frontend = frontend_module(model)
        assert frontend is not None, f"{name} declares no frontend_layer / frontend child"
        with recorded(frontend) as spec, torch.no_grad():
            model(x)
        size = tuple(spec[-1].shape[-2:])  # [B, F, T'] at the front end's size
        assert len(size) == 2 and size[1] > 10  # a time-frequency map, many frames
    for cam in cams:
        assert cam.shape == (x.shape[0], *size)
        assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
        peaks = cam.flatten(1).amax(dim=1)  # each map is scaled to peak 1 or all zero
        assert torch.all(((peaks - 1).abs() < 1e-5) | (peaks == 0))
    if name not in ZERO_CAM_UNTRAINED:
        assert max(float(c.max()) for c in cams) == pytest.approx(1.0)  # some evidence found


@pytest.mark.parametrize(("name", "file"), [("aasist", "AASIST.pth"), ("aasist_l", "AASIST-L.pth")])
def test_grad_cam_of_pretrained_aasist_finds_evidence_for_both_classes(name, file):
    model = models.load_weights(models.create(name), shared_path("data", "pretrained_aasist", file))
    x = inputs(name)
    for t in (0, 1):
        cam = grad_cam(model.eval(), x, t)  # [2, 23 sub-bands, frames]
        assert cam.shape[1] == 23 and cam.shape[2] > 10
        assert torch.all(cam.flatten(1).amax(dim=1) == 1)


@pytest.mark.parametrize("name", ["simplenet", "resnet18", "xception_detector"])
def test_grad_cam_does_not_depend_on_the_other_images_of_the_batch(name):
    model, x = build(name), inputs(name)
    alone = torch.cat([grad_cam(model, x[i : i + 1], 1) for i in range(len(x))])
    torch.testing.assert_close(grad_cam(model, x, 1), alone, atol=1e-5, rtol=1e-4)
