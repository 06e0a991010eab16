"""Mixed precision (`--amp`): bf16 attacks stay in budget and as strong as fp32, bf16 training
learns, fp16 off CUDA is refused in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshield.attacks import pgd
from deepshield.config import TrainConfig, parse_config
from deepshield.data.splits import TensorSet
from deepshield.errors import ConfigError
from deepshield.precision import autocast
from deepshield.train.trainer import Trainer

SIZE = 16
# |success rate bf16 - fp32| of PGD-10 on the same 256 images: bf16 keeps 8 mantissa bits, so
# gradients differ in detail; a weaker attack would lose more than this
TOLERANCE = 0.05


def tiny_net(seed: int = 0) -> nn.Module:
    """[B,3,16,16] in [0,1] -> logits [B,2]."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * (SIZE // 4) ** 2, 2),
    )


def brightness_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [n,3,16,16] in [0,1] whose class is whether the red channel outshines the green."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.8 + 0.1
    y = torch.randint(0, 2, (n,), generator=g)
    shift = (y.float() * 2 - 1).view(-1, 1, 1) * 0.04  # red up and green down for class 1
    x[:, 0] = (x[:, 0] + shift).clamp(0, 1)
    x[:, 1] = (x[:, 1] - shift).clamp(0, 1)
    return x, y


def trained_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny net trained in fp32 to high accuracy, and 256 held-out images it gets right."""
    model = tiny_net()
    x, y = brightness_set(1024, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        for i in range(0, len(y), 64):
            loss = nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = brightness_set(512, seed=2)
    with torch.no_grad():
        right = model(xt).argmax(1) == yt
    assert right.float().mean() > 0.9  # the model works: attacking it means something
    return model, xt[right][:256], yt[right][:256]


def output_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Records the dtype of every forward output of `model` (a forward hook)."""
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_pgd_in_bf16_stays_in_budget_and_as_strong_as_fp32():
    model, x, y = trained_net()
    seen = output_dtypes(model)
    for eps in (4 / 255, 8 / 255, 12 / 255):
        ref = pgd(model, x, y, eps, steps=10)
        with autocast("bf16", "cpu"):
            adv = pgd(model, x, y, eps, steps=10)
        assert torch.bfloat16 in seen and adv.dtype == torch.float32  # amp ran; iterate fp32
        seen.clear()
        assert (adv - x).abs().max() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            ref_rate = (model(ref).argmax(1) != y).float().mean().item()
            amp_rate = (model(adv).argmax(1) != y).float().mean().item()
        assert abs(amp_rate - ref_rate) <= TOLERANCE, (eps, ref_rate, amp_rate)
    assert 0.3 < ref_rate < 0.9  # the largest budget breaks some images, not all: a real test


@pytest.mark.parametrize(
    ("device", "amp", "dtype"),
    [
        ("cpu", "bf16", torch.bfloat16),
        pytest.param("cuda", "bf16", torch.bfloat16, marks=pytest.mark.cuda),
        pytest.param("cuda", "fp16", torch.float16, marks=pytest.mark.cuda),  # GradScaler
    ],
)
def test_mixed_precision_training_learns_in_float32_weights(device, amp, dtype):
    x, y = brightness_set(512, seed=3)
    model = tiny_net(seed=1).to(device)
    seen = output_dtypes(model)
    cfg = TrainConfig(lr=1e-2, batch_size=64, amp=amp, device=device)
    trainer = Trainer(model, cfg, device=torch.device(device))
    ds = TensorSet(x, y)
    before = trainer.evaluate(ds)["loss"]
    losses = [trainer.train_epoch(ds, epoch)["loss"] for epoch in range(1, 5)]
    after = trainer.evaluate(ds)
    assert dtype in seen and (trainer.scaler is not None) == (amp == "fp16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < losses[0] and after["loss"] < before
    assert after["acc"] > 0.8


@pytest.mark.parametrize(
    "make",
    [
        lambda: Trainer(tiny_net(), TrainConfig(amp="fp16"), device=torch.device("cpu")),
        lambda: autocast("fp16", "cpu"),
    ],
    ids=["trainer", "autocast"],
)
def test_fp16_off_cuda_is_refused_in_one_line(make):
    with pytest.raises(ConfigError, match="--amp fp16 needs a CUDA device") as err:
        make()
    assert "\n" not in str(err.value)


def test_amp_is_a_config_field_with_three_values():
    assert parse_config({"amp": "bf16"}, TrainConfig).amp == "bf16"
    assert TrainConfig().amp == "off"
    with pytest.raises(ConfigError, match="amp"):
        parse_config({"amp": "fp8"}, TrainConfig)


# -- channels-last ---------------------------------------------------------------------------------
def test_channels_last_gives_the_contiguous_logits_on_resnet18():
    from deepshield.models import create
    from deepshield.precision import use_channels_last

    torch.manual_seed(0)
    model = create("resnet18", num_classes=2).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert use_channels_last(model, True, (3, 64, 64))
        got = model(x)  # a contiguous input: the pre-hook makes it NHWC
    assert model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_channels_last_leaves_speech_models_and_the_flag_off_alone():
    from deepshield.models import create
    from deepshield.precision import use_channels_last

    speech = create("mel_cnn", num_classes=2, widths=[4, 8], n_mels=32)
    assert not use_channels_last(speech, True, (16000,))  # samples [T]: a 1-D waveform
    image = tiny_net()
    assert not use_channels_last(image, False, (3, SIZE, SIZE))
    for m in (speech, image):
        assert all(p.is_contiguous() for p in m.parameters())
        assert not m._forward_pre_hooks


def test_pgd_on_a_channels_last_model_succeeds_on_the_same_images():
    """Same model, images and seed: the attack's success per image equals the contiguous one's
    and the adversarial images agree to float rounding."""
    from deepshield.precision import use_channels_last

    model, x, y = trained_net()
    ref = pgd(model, x, y, 8 / 255, steps=10)
    use_channels_last(model, True, (3, SIZE, SIZE))
    adv = pgd(model, x, y, 8 / 255, steps=10)
    assert adv.is_contiguous() or adv.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref_broken = model(ref).argmax(1) != y
        broken = model(adv).argmax(1) != y
    assert 0.2 < ref_broken.float().mean() < 0.9  # a real test: some images break, not all
    assert torch.equal(broken, ref_broken)
    # equal but for a few pixels where a near-zero gradient changed sign (at most two steps)
    assert (adv - ref).abs().max() <= 2 * (8 / 255) / 4 + 1e-6


def test_training_in_channels_last_follows_the_contiguous_run():
    from deepshield.precision import use_channels_last

    x, y = brightness_set(256, seed=3)
    losses = []
    for channels_last in (False, True):
        model = tiny_net(seed=1)
        use_channels_last(model, channels_last, (3, SIZE, SIZE))
        trainer = Trainer(model, TrainConfig(lr=1e-2, batch_size=64), device=torch.device("cpu"))
        losses.append([trainer.train_epoch(TensorSet(x, y), e)["loss"] for e in (1, 2)])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
