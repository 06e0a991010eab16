"""deepshield.explain: saliency, SmoothGrad, Grad-CAM (checked against captum), per-class maps,
the parameter-randomisation sanity check and localisation on a briefly trained toy detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from torch import nn

from deepshield.data.splits import TensorSet
from deepshield.errors import ConfigError, InputError
from deepshield.explain import (
    box_area_share,
    box_mask,
    class_mean_maps,
    grad_cam,
    localization_energy,
    localization_ratio,
    saliency,
    sanity_randomization,
    smoothgrad,
)
from deepshield.explain.sanity import sanity_text, sanity_verdict
from deepshield.models.normalize import Normalized


class SmallCNN(nn.Module):
    """A detector following the model contract: cam_layer, num_features, forward_features."""

    cam_layer = "block2"
    num_features = 16

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)).mean(dim=(2, 3))  # [B, 16]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))  # [B, K]


def small_cnn(seed: int = 0, num_classes: int = 2) -> Normalized:
    torch.manual_seed(seed)
    return Normalized(SmallCNN(num_classes), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class Spectrogram(nn.Module):
    """Waveform [B,T] -> log magnitude STFT [B,F,T'] (torch ops, so gradients reach the waveform)."""

    def __init__(self, n_fft: int = 64, hop: int = 32) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        return torch.log1p(spec.abs())  # [B, F, T']


class ToyAudio(nn.Module):
    """Speech detector: STFT front end, conv, pool, conv (the cam layer, at half resolution)."""

    cam_layer = "conv2"
    frontend_layer = "spec"

    def __init__(self) -> None:
        super().__init__()
        self.spec = Spectrogram()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec(x).unsqueeze(1)  # [B, 1, F, T']
        h = F.max_pool2d(F.relu(self.conv1(s)), 2)  # [B, 4, F/2, T'/2]
        h = F.relu(self.conv2(h))  # [B, 8, F/2, T'/2]
        return self.fc(h.mean(dim=(2, 3)))  # [B, 2]


def images(n: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def captum_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, t, size) -> torch.Tensor:
    attr = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    return LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear")[:, 0]


# -- agreement with captum --------------------------------------------------------------------


def test_saliency_equals_captum_saliency_max_over_channels():
    model, x = small_cnn().eval(), images()
    t = torch.tensor([0, 1, 1, 0])
    ours = saliency(model, x, t)
    ref = Saliency(model).attribute(x.clone().requires_grad_(True), target=t, abs=True).amax(dim=1)
    assert ours.shape == (4, 16, 16)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", [None, "net.block1", "net.block2.0"])
def test_grad_cam_equals_captum_layer_grad_cam(layer):
    model, x = small_cnn().eval(), images()
    t = torch.tensor([1, 0, 1, 1])
    name = layer or model.cam_layer
    ref = captum_grad_cam(model, model.get_submodule(name), x, t, (16, 16))
    raw = grad_cam(model, x, t, layer, normalize=False)
    torch.testing.assert_close(raw, ref, atol=1e-5, rtol=0)
    peak = ref.flatten(1).amax(dim=1).view(-1, 1, 1)
    torch.testing.assert_close(grad_cam(model, x, t, layer), ref / peak, atol=1e-5, rtol=0)


def test_grad_cam_accepts_the_layer_module_itself():
    model, x = small_cnn().eval(), images()
    by_module = grad_cam(model, x, 1, model.net.block1)
    torch.testing.assert_close(by_module, grad_cam(model, x, 1, "net.block1"))


def test_audio_grad_cam_is_at_spectrogram_resolution_and_equals_captum():
    torch.manual_seed(0)
    model, wave = ToyAudio().eval(), torch.rand(3, 1024) * 2 - 1
    spec_size = tuple(model.spec(wave).shape[1:])  # (F, T') = (33, 33)
    cam = grad_cam(model, wave, 1, normalize=False)
    assert cam.shape == (3, *spec_size)
    ref = captum_grad_cam(model, model.conv2, wave, 1, spec_size)
    torch.testing.assert_close(cam, ref, atol=1e-5, rtol=0)
    model.frontend_layer = None  # no declared front end: the layer's own resolution
    assert grad_cam(model, wave, 1).shape == (3, 16, 16)
    assert saliency(model, wave, 1).shape == (3, 1024)


# -- shapes, ranges, batching -----------------------------------------------------------------


def test_grad_cam_lies_in_unit_interval_with_peak_one_and_all_zero_maps_stay_zero():
    model, x = small_cnn().eval(), images(6)
    cam = grad_cam(model, x, 0)
    assert cam.shape == (6, 16, 16) and cam.min() >= 0
    peaks = cam.flatten(1).amax(dim=1)
    assert torch.all(((peaks - 1).abs() < 1e-6) | (peaks == 0))
    with torch.no_grad():
        model.net.block2[0].weight.zero_()
        model.net.block2[0].bias.zero_()
    dead = grad_cam(model, x, 0)
    assert torch.isfinite(dead).all() and (dead == 0).all()


@pytest.mark.parametrize("explain", [saliency, grad_cam])
def test_maps_of_a_batch_equal_maps_of_each_sample(explain):
    model, x = small_cnn().eval(), images(3)
    t = torch.tensor([1, 0, 1])
    single = torch.cat([explain(model, x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(explain(model, x, t), single, atol=1e-6, rtol=1e-5)


def test_target_none_explains_the_predicted_class():
    model, x = small_cnn().eval(), images()
    pred = model(x).argmax(dim=1)
    torch.testing.assert_close(grad_cam(model, x, None), grad_cam(model, x, pred))
    torch.testing.assert_close(saliency(model, x, None), saliency(model, x, pred))


# -- SmoothGrad -------------------------------------------------------------------------------


def test_smoothgrad_with_zero_noise_is_saliency_and_a_seed_fixes_it():
    model, x = small_cnn().eval(), images()
    torch.testing.assert_close(smoothgrad(model, x, 1, n=3, sigma=0.0), saliency(model, x, 1))
    a = smoothgrad(model, x, 1, n=5, seed=7)
    torch.testing.assert_close(a, smoothgrad(model, x, 1, n=5, seed=7))
    assert not torch.allclose(a, smoothgrad(model, x, 1, n=5, seed=8))


def test_smoothgrad_of_a_model_linear_in_x_equals_saliency():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16 * 16, 2))
    x = images()
    torch.testing.assert_close(
        smoothgrad(linear, x, 1, n=4, sigma=0.5), saliency(linear, x, 1), atol=1e-6, rtol=1e-5
    )


# -- the model is left as it was --------------------------------------------------------------


@pytest.mark.parametrize(
    "explain",
    [
        saliency,
        grad_cam,
        lambda m, x, t: smoothgrad(m, x, t, n=2),
        lambda m, x, t: sanity_randomization(m, x, t, "grad_cam", mode="independent", repeats=1),
    ],
)
def test_model_mode_parameters_and_buffers_are_untouched(explain):
    model, x = small_cnn(), images()
    model.train()
    model.net.fc.weight.requires_grad_(False)  # a mixed state must be restored as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain(model, x, torch.tensor([0, 1, 0, 1]))
    assert all(m.training for m in model.modules())
    assert not model.net.fc.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "net.fc.weight")
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()  # BatchNorm running stats included: eval mode was used
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_eval_mode_is_used_during_explanation():
    model, x = small_cnn(), images()
    expected = saliency(model.eval(), x, 1)
    torch.testing.assert_close(saliency(model.train(), x, 1), expected)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "target", "match"),
    [
        (images()[0], 1, "unsqueeze"),
        (torch.ones(2, 3, 16, 16, dtype=torch.uint8), 1, "float tensor"),
        (images().masked_fill(images() > 0.99, float("nan")), 1, "NaN"),
        (images() * 4 - 2, 1, r"\[0,1\]"),
        (images(), 2, "out of range for a model with 2 outputs"),
        (images(), torch.tensor([0, 1]), "one index per sample"),
        (images(), 0.5, "class indices"),
        (torch.rand(2, 5, 16, 16), 1, "model expects images \\[B,3,H,W\\]"),
    ],
)
def test_bad_input_raises_input_error(x, target, match):
    model = small_cnn().eval()
    for explain in (saliency, grad_cam):
        with pytest.raises(InputError, match=match):
            explain(model, x, target)


def test_unknown_layer_lists_candidates():
    with pytest.raises(InputError, match=r"unknown layer 'net\.blok2'.*net\.block2"):
        grad_cam(small_cnn(), images(), 1, "net.blok2")


def test_layers_without_a_feature_map_or_run_twice_are_refused():
    model = small_cnn()
    with pytest.raises(InputError, match="feature map"):
        grad_cam(model, images(), 1, "net.fc")
    bare = SmallCNN()
    bare.cam_layer = None
    with pytest.raises(InputError, match=r"declares no `cam_layer`.*block2"):
        grad_cam(bare, images(), 1)
    shared = nn.Conv2d(3, 3, 3, padding=1)
    twice = nn.Sequential(shared, shared, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(InputError, match="ran 2 times"):
        grad_cam(twice, images(), 1, "0")


# -- per-class mean maps ----------------------------------------------------------------------


def test_class_mean_maps_are_per_class_means_whatever_the_batching():
    model, x = small_cnn().eval(), images(7)
    y = torch.tensor([0, 1, 1, 0, 1, 1, 0])
    maps = grad_cam(model, x, y)
    means = class_mean_maps(model, (x, y), "grad_cam", batch_size=3)
    assert sorted(means) == [0, 1]
    for c in (0, 1):
        torch.testing.assert_close(means[c], maps[y == c].mean(dim=0), atol=1e-6, rtol=1e-5)
    u8 = (x * 255).round().to(torch.uint8)
    from_set = class_mean_maps(model, TensorSet(u8, y), "saliency", batch_size=2)
    direct = saliency(model, u8.float() / 255, y)
    torch.testing.assert_close(from_set[1], direct[y == 1].mean(dim=0), atol=1e-6, rtol=1e-5)
    pred = model(x).argmax(dim=1)
    by_pred = class_mean_maps(model, (x, y), "grad_cam", batch_size=4, target="predicted")
    torch.testing.assert_close(by_pred[0], grad_cam(model, x, pred)[y == 0].mean(dim=0))
    with pytest.raises(ConfigError, match="unknown explanation method"):
        class_mean_maps(model, (x, y), "lime")


# -- localisation: closed-form cases ----------------------------------------------------------


def test_localization_energy_closed_form_cases():
    boxes = torch.tensor([[2, 3, 6, 5], [0, 0, 8, 8]])
    mask = box_mask(boxes, (8, 8))
    assert torch.equal(mask[0], F.pad(torch.ones(2, 4), (2, 2, 3, 3)).bool())
    inside_only = mask.float()
    torch.testing.assert_close(localization_energy(inside_only, boxes), torch.ones(2))
    uniform = torch.ones(2, 8, 8)
    torch.testing.assert_close(localization_energy(uniform, boxes), torch.tensor([8 / 64, 1.0]))
    torch.testing.assert_close(box_area_share(boxes, (8, 8)), torch.tensor([8 / 64, 1.0]))
    torch.testing.assert_close(localization_ratio(uniform, boxes), torch.ones(2))
    assert localization_energy(torch.zeros(2, 8, 8), boxes).eq(0).all()
    with pytest.raises(InputError, match="x1 <= x0"):
        localization_energy(uniform, torch.tensor([[5, 0, 2, 4], [0, 0, 1, 1]]))
    with pytest.raises(InputError, match="negative"):
        localization_energy(-uniform, boxes)


# -- a briefly trained detector: sanity check and localisation --------------------------------


def square_set(n: int, seed: int, size: int = 20, side: int = 5):
    """Noise images in [0,0.5]; label 1 (fake) images carry a bright side x side square at a
    random place. Returns x [n,3,size,size], y [n], boxes [n,4] (x0,y0,x1,y1) of the square."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen) * 0.5
    y = torch.arange(n) % 2
    corner = torch.randint(0, size - side + 1, (n, 2), generator=gen)  # [n, (x0, y0)]
    boxes = torch.cat([corner, corner + side], dim=1)  # [n, 4]
    for i in (y == 1).nonzero().flatten().tolist():
        x0, y0 = corner[i].tolist()
        x[i, :, y0 : y0 + side, x0 : x0 + side] = 1.0
    return x, y, boxes


@pytest.fixture(scope="module")
def trained():
    """SmallCNN trained a few seconds on square_set; its correctly detected test fakes."""
    model = small_cnn(seed=0)
    x, y, _ = square_set(384, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        for i in range(0, len(y), 32):
            loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt, bt = square_set(128, seed=1)
    with torch.no_grad():
        pred = model(xt).argmax(dim=1)
    hit = (yt == 1) & (pred == 1)
    return model, (pred == yt).float().mean().item(), xt[hit], bt[hit]


def test_trained_toy_detector_detects_the_square(trained):
    _, accuracy, fakes, _ = trained
    assert accuracy > 0.9 and len(fakes) >= 40


def test_grad_cam_of_detected_fakes_concentrates_on_the_square(trained):
    model, _, fakes, boxes = trained
    ratio = localization_ratio(grad_cam(model, fakes, 1), boxes)
    assert ratio.min() >= 2.0  # measured: mean 7.3, min 6.5 (box area share 25/400)
    assert localization_ratio(saliency(model, fakes, 1), boxes).mean() > 1.5  # measured 2.2


@pytest.mark.parametrize(("method", "repeats"), [("grad_cam", 8), ("saliency", 3)])
def test_sanity_trained_maps_differ_from_randomised_model_maps(trained, method, repeats):
    model, _, fakes, _ = trained
    result = sanity_randomization(model, fakes, 1, method, seed=0, mode="full", repeats=repeats)
    assert result["passed"] and result["mean"] < 0.5 and result["undefined"] == 0
    assert len(result["spearman"]) == len(fakes) and len(result["mean_per_repeat"]) == repeats


def test_sanity_fails_for_a_map_that_ignores_the_weights(trained):
    model, _, fakes, _ = trained
    brightness = lambda m, x, t: x.mean(dim=1)  # noqa: E731 - an edge-detector-like control
    result = sanity_randomization(model, fakes, 1, brightness, mode="full", repeats=1)
    assert result["mean"] == pytest.approx(1.0) and not result["passed"]


def test_sanity_cascade_goes_top_down_and_is_reproducible(trained):
    model, _, fakes, _ = trained
    a = sanity_randomization(model, fakes[:8], 1, "grad_cam", seed=5, repeats=1)
    assert a["layers"] == ["net.fc", "net.block2.0", "net.block1.1", "net.block1.0"]
    assert len(a["per_layer"]) == 4 and a["per_layer"][-1] == pytest.approx(a["mean"])
    b = sanity_randomization(model, fakes[:8], 1, "grad_cam", seed=5, repeats=1)
    assert a == b
    ind = sanity_randomization(model, fakes[:8], 1, "saliency", mode="independent", repeats=1)
    assert len(ind["per_layer"]) == 4 and not np.isnan(ind["mean"])


class _DeadCam(nn.Module):
    """A detector whose Grad-CAM layer outputs zeros (a ReLU after a conv of bias -1): every map
    of the trained model is constant, so no rank correlation exists."""

    cam_layer = "act"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_sanity_with_only_constant_maps_is_undefined_not_failed():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = sanity_randomization(_DeadCam(), x, 1, "grad_cam", mode="full", repeats=1)
    assert np.isnan(result["mean"]) and result["undefined"] == 3
    assert result["verdict"] == "undefined" and not result["passed"]
    text = sanity_text(result["mean"], result["bound"], result["undefined"])
    assert text.startswith("undefined") and "3 pairs" in text
    assert sanity_verdict(0.2, 0.5) == "pass" and sanity_verdict(0.5, 0.5) == "fail"
    assert sanity_text(0.5, 0.5) == "0.500 (bound 0.5: FAIL)"
