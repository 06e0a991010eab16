"""Attribute edits and the paired GAN trainer (training, adversarial hook, checkpoints)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from deepshield.data.edits import EDITS, apply_edit, attributes, sample_attributes
from deepshield.errors import ConfigError, InputError, ModelError, TrainingError
from deepshield.models import create
from deepshield.train.gan import GANTrainer

TINY = {"conv_dim": 8, "c_dim": 5, "n_res": 1, "track_running_stats": False}


def photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random size x size crops of scikit-image's bundled photos, shrunk 3x: [n, 3, s, s]."""
    g = torch.Generator().manual_seed(seed)
    photos = [
        F.avg_pool2d(torch.from_numpy(f()).permute(2, 0, 1)[None].float() / 255, 3)[0]
        for f in (data.astronaut, data.chelsea, data.coffee)
    ]
    crops = []
    for k in range(n):
        p = photos[k % 3]
        top = int(torch.randint(p.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(p.shape[2] - size + 1, (1,), generator=g))
        crops.append(p[:, top : top + size, left : left + size])
    return torch.stack(crops)


# -- edits ------------------------------------------------------------------------------------
def test_edits_are_deterministic_in_range_and_distinct() -> None:
    x = photo_crops(4, 32)
    outs = []
    for name in EDITS:
        c = attributes(name, batch=4)
        y = apply_edit(x, c)
        assert torch.equal(y, apply_edit(x, c))
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert (y - x).abs().mean() > 0.005, name  # each edit visibly changes the image
        outs.append(y)
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j])
    assert torch.equal(apply_edit(x, torch.zeros(4, len(EDITS))), x)


def test_edit_closed_form_cases() -> None:
    grey = torch.full((1, 3, 20, 20), 0.25)
    assert torch.allclose(
        apply_edit(grey, attributes("bright")), torch.full_like(grey, 0.25 ** (1 / 1.6))
    )
    assert torch.allclose(apply_edit(grey, attributes("blur")), grey)  # blurring a constant
    assert torch.allclose(apply_edit(grey, attributes("contrast")), grey)  # all pixels at the mean
    warm = apply_edit(grey, attributes("warm"))[0, :, 0, 0]
    assert torch.allclose(warm, torch.tensor([0.25 + 0.25 * 0.75, 0.25 + 0.05 * 0.75, 0.25 * 0.75]))
    hair = apply_edit(grey, attributes("hair"))
    assert torch.allclose(hair[0, :, 0, 0], 0.4 * 0.25 + 0.6 * torch.tensor([0.95, 0.80, 0.45]))
    assert torch.equal(hair[:, :, 8:], grey[:, :, 8:])  # rows below 40 % of the height untouched


def test_edit_weights_interpolate_and_compose() -> None:
    x = photo_crops(2, 32, seed=1)
    full = apply_edit(x, attributes("warm", batch=2))
    half = apply_edit(x, 0.5 * attributes("warm", batch=2))
    assert torch.allclose(half, (x + full) / 2, atol=1e-6)
    both = apply_edit(x, attributes("bright", "blur", batch=2))
    assert torch.allclose(
        both, apply_edit(apply_edit(x, attributes("bright", batch=2)), attributes("blur", batch=2))
    )
    per_image = torch.stack([attributes("hair")[0], attributes("warm")[0]])  # different c per image
    y = apply_edit(x, per_image)
    assert torch.equal(y[:1], apply_edit(x[:1], attributes("hair")))
    assert torch.equal(y[1:], apply_edit(x[1:], attributes("warm")))


def test_edit_inputs_are_checked() -> None:
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(InputError, match=r"\[2, 5\]"):
        apply_edit(x, torch.zeros(2, 3))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        apply_edit(x * 2, attributes("warm", batch=2))
    with pytest.raises(InputError, match="unknown edit"):
        attributes("beard")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(sample_attributes(8, g1), sample_attributes(8, g2))
    one_hot = sample_attributes(16, g1, multi_hot=False)
    assert torch.equal(one_hot.sum(1), torch.ones(16))


# -- training -----------------------------------------------------------------------------------
def test_small_stargan_learns_the_edits() -> None:
    images = photo_crops(64, 64)
    torch.manual_seed(0)
    g = create("stargan", conv_dim=16, c_dim=5, n_res=2, track_running_stats=False)
    trainer = GANTrainer(g, images, batch_size=4, seed=0)
    before = trainer.evaluate()
    start = time.perf_counter()
    trainer.fit(100)
    seconds = time.perf_counter() - start
    after = trainer.evaluate()
    print(
        f"stargan small: L1 {before['l1']:.4f} -> {after['l1']:.4f} "
        f"(identity {after['l1_identity']:.4f}) in {seconds:.1f} s"
    )
    assert len(trainer.history) == 100 and trainer.step == 100
    assert {"loss_g", "loss_l1", "loss_adv", "loss_d"} <= set(trainer.history[-1])
    assert after["l1"] < 0.6 * before["l1"]
    assert after["l1"] < after["l1_identity"]  # better than returning the input unchanged


def test_unconditional_generator_learns_its_fixed_edit() -> None:
    images = photo_crops(16, 32)
    torch.manual_seed(0)
    g = create("pix2pix", ngf=8, depth=5)
    trainer = GANTrainer(g, images, fixed_edit=("warm",), lambda_adv=0.0, batch_size=4, lr=1e-3)
    assert trainer.discriminator is None
    before = trainer.evaluate()["l1"]
    trainer.fit(30)
    assert trainer.evaluate()["l1"] < 0.7 * before
    assert "loss_d" not in trainer.history[-1]


def test_resume_from_checkpoint_gives_the_same_numbers(tmp_path) -> None:
    images = photo_crops(8, 32)

    def fresh() -> GANTrainer:
        torch.manual_seed(0)
        return GANTrainer(create("stargan", **TINY), images, batch_size=2, seed=3)

    straight = fresh()
    straight.fit(4)
    first = fresh()
    first.fit(2)
    first.save(tmp_path / "gan.safetensors")
    resumed = fresh().load(tmp_path / "gan.safetensors")
    assert resumed.step == 2 and resumed.history == first.history
    resumed.fit(2)
    assert [h["loss_g"] for h in resumed.history] == [h["loss_g"] for h in straight.history]
    for a, b in zip(
        straight.generator.state_dict().values(),
        resumed.generator.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        straight.discriminator.parameters(), resumed.discriminator.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_checkpoint_of_another_architecture_is_refused(tmp_path) -> None:
    images = photo_crops(4, 32)
    trainer = GANTrainer(create("stargan", **TINY), images, batch_size=2)
    trainer.save(tmp_path / "gan.safetensors")
    other = GANTrainer(create("stargan", **{**TINY, "conv_dim": 16}), images, batch_size=2)
    with pytest.raises(ModelError, match="does not fit"):
        other.load(tmp_path / "gan.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read"):
        other.load(tmp_path / "junk.safetensors")


def test_perturb_hook_feeds_the_generator_and_discriminator() -> None:
    images = photo_crops(8, 32)
    calls = []

    def zero_eta(g, x, c):
        calls.append((x.min().item(), x.max().item(), None if c is None else tuple(c.shape)))
        return x.clone()

    def run(perturb=None, mode="generator") -> GANTrainer:
        torch.manual_seed(0)
        t = GANTrainer(
            create("stargan", **TINY), images, batch_size=2, perturb=perturb, adv_mode=mode
        )
        t.fit(2)
        return t

    plain = run()
    hooked = run(zero_eta, "generator+discriminator")
    assert len(calls) == 2 and calls[0][2] == (2, 5) and calls[0][0] >= -1 and calls[0][1] <= 1
    for a, b in zip(plain.generator.parameters(), hooked.generator.parameters(), strict=True):
        assert torch.equal(a, b)  # eta = 0 changes nothing

    def shift(g, x, c):
        return (x + 0.1).clamp(-1, 1)

    g_only, g_and_d = run(shift, "generator"), run(shift, "generator+discriminator")
    pairs = zip(plain.generator.parameters(), g_only.generator.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    pairs = zip(g_only.discriminator.parameters(), g_and_d.discriminator.parameters(), strict=True)
    assert not all(
        torch.equal(a, b) for a, b in pairs
    )  # only the G+D mode shows the discriminator perturbed inputs


def test_trainer_reports_bad_setups() -> None:
    images = photo_crops(4, 32)
    with pytest.raises(ConfigError, match="c_dim=5"):
        GANTrainer(create("stargan", **{**TINY, "c_dim": 3}), images)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        GANTrainer(create("stargan", **TINY), images * 2 - 1)
    with pytest.raises(ConfigError, match="adv_mode"):
        GANTrainer(create("stargan", **TINY), images, adv_mode="both")
    trainer = GANTrainer(
        create("stargan", **TINY), images, batch_size=2, perturb=lambda g, x, c: x[:, :, :16]
    )
    with pytest.raises(InputError, match="same shape"):
        trainer.fit(1)
    nan = GANTrainer(
        create("stargan", **TINY), images, batch_size=2, perturb=lambda g, x, c: x * float("nan")
    )
    with pytest.raises(TrainingError, match="non-finite at step 1"):
        nan.fit(1)
