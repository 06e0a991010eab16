"""Training augmentations by everyday processing: real encoders per sample, probabilities,
seeding (same seed, same batches; a resumed run draws what an uninterrupted one does), configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshield.config import AUGMENT_PRESETS, AugmentConfig, TrainConfig, parse_config
from deepshield.data import processing as P
from deepshield.data.splits import Splits, TensorSet
from deepshield.defenses.training import training_hooks
from deepshield.errors import ConfigError
from deepshield.run import RunDir
from deepshield.train import Trainer
from deepshield.train.augment import Augmenter, BatchChain, check_augment


def _images(b: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images [B,3,H,W] in [0,1] on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size // 4, size // 4, generator=g)
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round() / 255


def _aug(seed: int = 0, **ops) -> Augmenter:
    return Augmenter(AugmentConfig.model_validate(ops), seed)


def _run(aug: Augmenter, x: torch.Tensor, epoch: int = 1) -> torch.Tensor:
    aug.set_epoch(epoch)
    return aug(nn.Identity(), x, torch.zeros(len(x), dtype=torch.long))[0]


@pytest.mark.parametrize(
    "ops,real",
    [
        ({"jpeg": {"p": 1, "quality": [75, 75]}}, lambda x: P.pil_roundtrip(x, "JPEG", 75)),
        ({"resize": {"p": 1, "scale": [0.5, 0.5]}}, lambda x: P.resize_back(x, 0.5)),
        ({"blur": {"p": 1, "sigma": [1, 1]}}, lambda x: P.gaussian_blur(x, 1.0)),
        ({"jpeg": {"p": 0}, "blur": {"p": 0}}, lambda x: x),
    ],
)
def test_fixed_strength_equals_the_real_transform(ops, real):
    x = _images()
    torch.testing.assert_close(_run(_aug(**ops), x), real(x), rtol=0, atol=1e-6)


def test_speech_snr_bandpass_and_codec_are_the_real_ones():
    t = torch.arange(16000, dtype=torch.float32) / 16000
    x = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (200, 440, 1000)])  # [3, T]
    noisy = _run(_aug(snr={"p": 1, "db": [20, 20]}), x)
    snr = 10 * torch.log10(x.pow(2).mean(1) / (noisy - x).pow(2).mean(1))
    torch.testing.assert_close(snr, torch.full((3,), 20.0), rtol=0, atol=1e-3)
    band = _run(_aug(bandpass={"p": 1, "band": [300, 3400]}), x)
    torch.testing.assert_close(band, P.bandpass(x, 300, 3400))
    coded = _run(_aug(codec={"p": 1, "codecs": ["vorbis"], "level": [0.5, 0.5]}), x)
    torch.testing.assert_close(coded, P.codec_roundtrip(x, "vorbis", 0.5))


def test_each_sample_is_processed_with_probability_p():
    """p = 0.3 on 2000 samples: the processed share lies within 4 binomial sd of 0.3."""
    x = torch.rand(2000, 3, 8, 8)
    out = _run(_aug(noise={"p": 0.3, "sigma": [0.05, 0.1]}), x)
    share = float(((out - x).flatten(1).abs().amax(1) > 0).float().mean())
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5


def test_jpeg_quality_is_drawn_per_sample_inside_the_range():
    """Every processed sample equals Pillow's JPEG at one quality of [40, 60]: reproduced by
    trying each quality of the range (and none outside it fits)."""
    x = _images(6)
    out = _run(_aug(jpeg={"p": 1, "quality": [40, 60]}), x)
    found = []
    for xi, oi in zip(x.split(1), out.split(1), strict=True):
        fits = [q for q in range(1, 101) if torch.equal(P.pil_roundtrip(xi, "JPEG", q), oi)]
        assert fits and all(40 <= q <= 60 for q in fits)
        found.append(fits[0])
    assert len(set(found)) > 1  # not one quality for the whole batch


def test_same_seed_same_batches_and_epochs_differ():
    ops = AUGMENT_PRESETS["image"]
    x = _images()
    a, b = _run(_aug(0, **ops), x, epoch=3), _run(_aug(0, **ops), x, epoch=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, _run(_aug(0, **ops), x, epoch=4))
    assert not torch.equal(a, _run(_aug(1, **ops), x, epoch=3))


def _image_splits(n: int = 96) -> Splits:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 16, 16, generator=g) * 0.6 + 0.2 * y[:, None, None, None]).clamp(0, 1)
    return Splits("toy-images", *[TensorSet(x[i::3], y[i::3]) for i in range(3)])


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    m.deepshield_spec = {"name": "toy", "num_classes": 2, "kwargs": {}}
    return m


def test_augmented_training_resumes_as_if_uninterrupted(tmp_path):
    cfg = lambda epochs: TrainConfig(lr=0.01, batch_size=16, epochs=epochs,  # noqa: E731
                                     augment=AUGMENT_PRESETS["image"])  # fmt: skip
    full = Trainer(_model(), cfg(3), RunDir.create(tmp_path / "full"),
                   **training_hooks(cfg(3)))  # fmt: skip
    full.fit(_image_splits())
    run = RunDir.create(tmp_path / "cut")
    Trainer(_model(), cfg(1), run, **training_hooks(cfg(1))).fit(_image_splits())
    torch.manual_seed(123)  # a new process: other global random state
    resumed = Trainer(_model(), cfg(3), run, **training_hooks(cfg(3)))
    resumed.fit(_image_splits())
    assert resumed.start_epoch == 2
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_augmentations_run_before_adversarial_training():
    cfg = TrainConfig(augment={"blur": {"p": 1, "sigma": [1, 1]}}, adv_train="fgsm-rs")
    chain = training_hooks(cfg)["batch_transform"]
    assert isinstance(chain, BatchChain)
    assert [type(t).__name__ for t in chain.transforms] == ["Augmenter", "AdversarialBatch"]


@pytest.mark.parametrize(
    "augment,words",
    [
        ({"jpeg": {"quality": [0, 50]}}, "augment.jpeg.quality: .*JPEG quality \\[0, 50\\]"),
        ({"jpeg": {"quality": [80, 50]}}, "runs backwards"),
        ({"blur": {"p": 1.5}}, "augment.blur.p"),
        ({"blur": {"sigma": [-1, 1]}}, "blur sigma"),
        ({"resize": {"scale": [0.5, 2]}}, "resize scale"),
        ({"snr": {"db": [10, 200]}}, "SNR"),
        ({"bandpass": {"band": [3400, 300]}}, "low < high"),
        ({"codec": {"codecs": ["aac"]}}, "augment.codec.codecs"),
        ({"jpg": {}}, "augment.jpg: Extra inputs"),
    ],
)
def test_bad_augment_configs_name_the_field(augment, words):
    with pytest.raises(ConfigError, match=words):
        parse_config({"augment": augment}, TrainConfig, "train.yaml")


def test_image_augmentations_on_speech_are_refused_before_training():
    with pytest.raises(ConfigError, match=r"augment\.jpeg does not apply"):
        check_augment(AugmentConfig.model_validate({"jpeg": {}}), [16000])
    with pytest.raises(ConfigError, match=r"augment\.snr does not apply"):
        check_augment(AugmentConfig.model_validate({"snr": {}}), [3, 32, 32])
    check_augment(AugmentConfig.model_validate(AUGMENT_PRESETS["speech"]), [16000])


def test_presets_are_valid_configs():
    for preset in AUGMENT_PRESETS.values():
        assert parse_config({"augment": preset}, TrainConfig).augment is not None
