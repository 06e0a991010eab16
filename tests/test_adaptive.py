"""Adaptive attacks: BPDA through non-differentiable preprocessing, EOT over randomised models."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from deepshield.attacks import BPDA, CountingModel, SteepestStep, apgd, attack_loop, autoattack, pgd
from deepshield.attacks.norms import Budget
from deepshield.attacks.objectives import classification_loss
from deepshield.errors import InputError
from test_autoattack import accuracy, cifar_test, train_cnn

EPS = 8 / 255


class Quantize(nn.Module):
    """round(x * 8) / 8: 9 grey levels per channel; its gradient is zero almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8


@functools.cache
def quantized_cnn() -> nn.Module:
    """A small CNN trained on real CIFAR-10 behind the quantisation layer (index 0)."""
    return train_cnn(preprocess=Quantize())


def test_bpda_finds_adversarial_examples_where_pgd_sees_no_gradient():
    model = quantized_cnn()
    through_bpda = nn.Sequential(BPDA(model[0]), *model[1:])  # same layers, identity backward
    x, y = cifar_test(200)
    clean = accuracy(model, x, y)
    assert clean > 0.3

    x_req = x[:16].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(classification_loss(model(x_req), y[:16]).sum(), x_req)
    assert grad.abs().max() == 0  # plain PGD is blind here

    plain = pgd(model, x, y, EPS, steps=20, seed=0)
    adaptive = pgd(through_bpda, x, y, EPS, steps=20, seed=0)
    adaptive_apgd = apgd(through_bpda, x, y, EPS, steps=20, seed=0)
    assert accuracy(model, plain, y) > clean - 0.1  # only the random start moved x
    assert accuracy(model, adaptive, y) < clean / 3  # evaluated on the real (quantising) model
    assert accuracy(model, adaptive_apgd, y) < clean / 3
    for x_adv in (plain, adaptive, adaptive_apgd):
        assert (x_adv - x).abs().max() <= EPS + 1e-6


def test_bpda_forward_is_exact_and_backward_is_the_approximation():
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    weight = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))

    def step(v: torch.Tensor) -> torch.Tensor:
        return (v > 0.5).float()

    def smooth(v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(10 * (v - 0.5))

    out = BPDA(step)(x)
    assert torch.equal(out, step(x.detach()))
    (g_identity,) = torch.autograd.grad((weight * out).sum(), x)
    assert torch.equal(g_identity, weight)

    (g_smooth,) = torch.autograd.grad((weight * BPDA(step, smooth)(x)).sum(), x)
    (expected,) = torch.autograd.grad((weight * smooth(x)).sum(), x)
    assert torch.allclose(g_smooth, expected)


def test_bpda_registers_modules_and_refuses_a_shape_change_without_backward_fn():
    purifier = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Dropout(0.5))
    wrapped = BPDA(purifier)
    assert purifier in list(wrapped.modules())
    wrapped.eval()
    assert not purifier[1].training
    with pytest.raises(InputError, match="backward_fn"):
        BPDA(lambda v: v.mean(1))(torch.rand(2, 3, 4, 4))


class NoisyLinear(nn.Module):
    """logits = W (x + scale * noise) + b, noise from its own generator (a random defence)."""

    def __init__(self, seed: int, scale: float = 0.3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3 * 4 * 4, 5)
        self.noise = torch.Generator().manual_seed(seed)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.noise)
        return self.linear((x + self.scale * noise).flatten(1))


def test_eot_steps_along_the_mean_gradient_of_k_forward_passes():
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    model = NoisyLinear(seed=5)
    x_adv = attack_loop(
        model, x, y, budget=Budget("l2", 10.0), step=SteepestStep("l2", 0.5), steps=1,
        objective=classification_loss, eot_samples=4,
    )  # fmt: skip

    model.noise.manual_seed(5)  # replay the same 4 noise draws by hand
    grads = []
    for _ in range(4):
        xr = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(classification_loss(model(xr), y).sum(), xr)[0])
    mean = torch.stack(grads).mean(0)  # [B, 3, 4, 4]
    expected = x + 0.5 * mean / mean.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(x_adv, expected.clamp(0, 1), atol=1e-6)
    assert not torch.allclose(grads[0], mean, atol=1e-4)  # one pass alone differs from the mean


def test_eot_multiplies_the_passes_of_apgd_and_of_the_rand_cascade():
    """Slight noise, so that every point stays classified as at the start (all 6 attacked)."""
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    counted = CountingModel(NoisyLinear(seed=1, scale=1e-4))
    with torch.no_grad():
        y = counted(x).argmax(1)
    counted.reset()
    apgd(counted, x, y, 1e-3, steps=10, eot_samples=3)
    assert counted.backwards == 6 * 10 * 3
    counted.reset()
    _, report = autoattack(counted, x, y, 1e-3, version="rand", eot_samples=2)
    assert report.stages == ["clean", "apgd-ce", "apgd-dlr"]
    left = int(report.robust[1].sum())  # the points APGD-DLR attacks
    assert counted.backwards == (6 + left) * 100 * 2


class RandomPhase(nn.Module):
    """logits = W x + amp * V sin(freq * x + phase), phase ~ U(0, 2 pi) drawn on every pass.

    The random term barely moves the logits (amp small) but dominates the gradient (amp * freq
    large) and averages out over passes: one pass's gradient is mostly noise, the mean of many
    is close to W's (randomised gradient obfuscation in its simplest form).
    """

    def __init__(self, d: int = 48, classes: int = 3, amp: float = 0.02, freq: float = 300.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(classes, d, generator=g))
        self.mix = nn.Parameter(torch.randn(classes, d, generator=g))
        self.noise = torch.Generator().manual_seed(1)
        self.amp, self.freq = amp, freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # [B, D]
        phase = 2 * torch.pi * torch.rand(x.shape, generator=self.noise)  # [B, D]
        return x @ self.weight.T + self.amp * torch.sin(self.freq * x + phase) @ self.mix.T


def mean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int = 50) -> float:
    """Accuracy of a randomised model averaged over `passes` forward passes."""
    with torch.no_grad():
        return float(
            torch.stack([(model(x).argmax(1) == y).float().mean() for _ in range(passes)]).mean()
        )


def test_eot_beats_single_pass_gradients_on_a_randomised_model():
    model = RandomPhase()
    x = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = (x.flatten(1) @ model.weight.T).argmax(1)  # the mean model's classes
    assert mean_accuracy(model, x, y) > 0.95
    single = pgd(model, x, y, 0.05, steps=10, seed=0)
    eot = pgd(model, x, y, 0.05, steps=10, seed=0, eot_samples=16)
    mean_model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3, bias=False))
    mean_model[1].weight.data = model.weight.data.clone()
    oracle = pgd(mean_model, x, y, 0.05, steps=10, seed=0)  # the gradient EOT estimates
    acc_single, acc_eot = mean_accuracy(model, single, y), mean_accuracy(model, eot, y)
    acc_oracle = mean_accuracy(model, oracle, y)
    assert acc_eot < acc_single - 0.15  # measured: 0.79 single pass, 0.52 with EOT-16
    assert acc_eot < acc_oracle + 0.1  # EOT gets close to attacking the noiseless model
    for x_adv in (single, eot):
        assert (x_adv - x).abs().max() <= 0.05 + 1e-6
