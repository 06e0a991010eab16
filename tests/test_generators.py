"""Image-translation generators: official layouts, shapes and ranges, GANimation's mix, gradients."""

from __future__ import annotations

import pytest
import torch

from deepshield.errors import InputError, ModelError
from deepshield.models import create, load_weights, param_count, save_weights, spec
from deepshield.models.architectures.ganimation import mix_attention
from deepshield.models.architectures.pix2pix import UnetGenerator
from deepshield.models.discriminators import PatchDiscriminator

SMALL = {  # CPU-fast variants at 64 px
    "stargan": {"conv_dim": 16, "c_dim": 5, "n_res": 2},
    "ganimation": {"conv_dim": 16, "c_dim": 5, "n_res": 2},
    "pix2pix": {"ngf": 16, "depth": 5},
    "cyclegan": {"ngf": 16, "n_blocks": 2},
}


def _run(name: str, g: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if name in ("stargan", "ganimation"):
        c = torch.zeros(x.shape[0], g.c_dim)
        c[:, 1] = 1
        return g(x, c)
    return g(x)


def _official_stargan_keys(n_res: int = 6) -> list[str]:
    """The key list of yunjey/stargan's Generator, written out from its layer order."""
    norm = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["main.0.weight"] + [f"main.1.{k}" for k in norm]
    keys += ["main.3.weight"] + [f"main.4.{k}" for k in norm]
    keys += ["main.6.weight"] + [f"main.7.{k}" for k in norm]
    for i in range(9, 9 + n_res):
        for conv, nrm in ((0, 1), (3, 4)):
            keys += [f"main.{i}.main.{conv}.weight"] + [f"main.{i}.main.{nrm}.{k}" for k in norm]
    up = 9 + n_res
    keys += [f"main.{up}.weight"] + [f"main.{up + 1}.{k}" for k in norm]
    keys += [f"main.{up + 3}.weight"] + [f"main.{up + 4}.{k}" for k in norm]
    return [*keys, f"main.{up + 6}.weight"]


def test_stargan_official_config_layout_and_param_count() -> None:
    with torch.device("meta"):  # shapes only: no memory, no init time
        g = create("stargan")
    assert param_count(g) == 8_430_528  # yunjey/stargan CelebA generator
    sd = g.state_dict()
    assert list(sd) == _official_stargan_keys()
    assert sd["main.0.weight"].shape == (64, 3 + 5, 7, 7)
    assert sd["main.9.main.0.weight"].shape == (256, 256, 3, 3)
    assert sd["main.15.weight"].shape == (256, 128, 4, 4)  # ConvTranspose2d: [in, out, k, k]
    assert sd["main.21.weight"].shape == (3, 64, 7, 7)
    assert spec("stargan").kind == "generator"
    assert type(g).__name__ == "StarGANGenerator"  # create() does not wrap generators


def test_stargan_loads_pre_041_checkpoint_strictly(tmp_path) -> None:
    """An official-style .ckpt (torch.save of the state dict, no num_batches_tracked) loads."""
    torch.manual_seed(0)
    src = create("stargan", **SMALL["stargan"])
    with torch.no_grad():  # give the running statistics non-default values
        for name, buf in src.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "200000-G.ckpt")
    dst = load_weights(create("stargan", **SMALL["stargan"]), tmp_path / "200000-G.ckpt")
    src.eval(), dst.eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(_run("stargan", src, x), _run("stargan", dst, x))

    # The same file in a model without running statistics: they are dropped, weights kept.
    per_image = load_weights(
        create("stargan", **SMALL["stargan"], track_running_stats=False), tmp_path / "200000-G.ckpt"
    )
    assert torch.equal(per_image.main[0].weight, src.main[0].weight)


def test_weights_of_wrong_config_are_refused(tmp_path) -> None:
    save_weights(create("stargan", **SMALL["stargan"]), tmp_path / "g.safetensors")
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(create("stargan", conv_dim=16, c_dim=5, n_res=3), tmp_path / "g.safetensors")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_load_round_trip(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    g = create(name, **SMALL[name]).eval()
    save_weights(g, tmp_path / "g.safetensors")
    torch.manual_seed(2)
    h = load_weights(create(name, **SMALL[name]).eval(), tmp_path / "g.safetensors")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(_run(name, g, x), _run(name, h, x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_ranges_and_bounds(name: str) -> None:
    torch.manual_seed(0)
    g = create(name, **SMALL[name])
    assert g.bounds == (-1.0, 1.0)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    for mode in (g.train, g.eval):
        mode()
        y = _run(name, g, x)
        assert y.shape == (3, 3, 64, 64)
        assert torch.isfinite(y).all() and y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_the_input(name: str) -> None:
    torch.manual_seed(0)
    g = create(name, **SMALL[name]).eval()
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    _run(name, g, x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() > 0  # every image gets a gradient


def test_conditional_generator_uses_c() -> None:
    torch.manual_seed(0)
    g = create("stargan", **SMALL["stargan"]).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    a, b = torch.eye(5)[:1], torch.eye(5)[1:2]
    assert not torch.allclose(g(x, a), g(x, b))


@pytest.mark.parametrize("name", ["stargan", "ganimation"])
def test_conditional_generators_reject_bad_inputs(name: str) -> None:
    g = create(name, **SMALL[name])
    x = torch.zeros(2, 3, 64, 64)
    with pytest.raises(InputError, match=r"\[2, 5\]"):
        g(x, torch.zeros(2, 4))
    with pytest.raises(InputError, match="divisible by 4"):
        g(torch.zeros(2, 3, 62, 64), torch.zeros(2, 5))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        g(torch.zeros(2, 1, 64, 64), torch.zeros(2, 5))


def test_unconditional_generators_reject_bad_sizes() -> None:
    with pytest.raises(InputError, match="2\\^depth = 32"):
        create("pix2pix", **SMALL["pix2pix"])(torch.zeros(1, 3, 48, 48))
    with pytest.raises(InputError, match="divisible by 4"):
        create("cyclegan", **SMALL["cyclegan"])(torch.zeros(1, 3, 66, 64))


# -- GANimation -------------------------------------------------------------------------------
def test_ganimation_mix_hand_made_case() -> None:
    x = torch.full((1, 3, 2, 2), 0.8)
    color = torch.full((1, 3, 2, 2), -0.4)
    att = torch.tensor([[[[0.0, 1.0], [0.25, 0.5]]]])  # [1, 1, 2, 2]
    y = mix_attention(att, color, x)
    assert torch.allclose(y[0, :, 0, 0], torch.full((3,), -0.4))  # att = 0 -> colour
    assert torch.allclose(y[0, :, 0, 1], torch.full((3,), 0.8))  # att = 1 -> input
    assert torch.allclose(y[0, :, 1, 0], torch.full((3,), 0.75 * -0.4 + 0.25 * 0.8))
    assert torch.allclose(y[0, :, 1, 1], torch.full((3,), 0.2))


def test_ganimation_forward_is_the_mix_of_its_parts() -> None:
    torch.manual_seed(0)
    g = create("ganimation", **SMALL["ganimation"]).eval()
    x, c = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 5)
    att, color = g.forward_parts(x, c)
    assert att.shape == (2, 1, 64, 64) and color.shape == (2, 3, 64, 64)
    assert att.min() >= 0 and att.max() <= 1 and color.min() >= -1 and color.max() <= 1
    assert torch.allclose(g(x, c), (1 - att) * color + att * x)


def test_ganimation_official_defaults_and_head_names(tmp_path) -> None:
    with torch.device("meta"):
        g = create("ganimation")  # conv_dim 64, c_dim 17, 6 blocks
    sd = g.state_dict()
    assert sd["main.0.weight"].shape == (64, 3 + 17, 7, 7)
    assert sd["color_head.0.weight"].shape == (3, 64, 7, 7)
    assert sd["attention_head.0.weight"].shape == (1, 64, 7, 7)
    assert not any("running" in k for k in sd)  # the official code tracks no statistics
    # A file with the official head names (albertpumarola/GANimation) loads strictly.
    torch.manual_seed(3)
    src = create("ganimation", **SMALL["ganimation"])
    official = {
        k.replace("color_head.", "img_reg.").replace("attention_head.", "attetion_reg."): v
        for k, v in src.state_dict().items()
    }
    assert "attetion_reg.0.weight" in official
    torch.save(official, tmp_path / "net_epoch_30_id_G.pth")
    dst = load_weights(
        create("ganimation", **SMALL["ganimation"]), tmp_path / "net_epoch_30_id_G.pth"
    )
    x, c = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 5)
    assert torch.equal(src.eval()(x, c), dst.eval()(x, c))


# -- pix2pix / CycleGAN / PatchGAN: reference implementation's sizes --------------------------
def test_pix2pix_matches_reference_parameter_counts() -> None:
    # junyanz/pytorch-CycleGAN-and-pix2pix issue #1152 (1 -> 1 channels, ngf 64, batch norm):
    # "unet_256: [Network G] Total number of parameters : 54.408 M", "unet_64 (6 downs): 29.238 M".
    with torch.device("meta"):
        unet_256 = UnetGenerator(64, 8, in_channels=1, out_channels=1)
        unet_64 = UnetGenerator(64, 6, in_channels=1, out_channels=1)
    assert round(param_count(unet_256) / 1e6, 3) == 54.408
    assert round(param_count(unet_64) / 1e6, 3) == 29.238
    # Same issue: D for those runs (input_nc + output_nc = 2): n_layers 3 -> 2.765 M, 2 -> 0.662 M.
    assert round(param_count(PatchDiscriminator(2, 64, 3)) / 1e6, 3) == 2.765
    assert round(param_count(PatchDiscriminator(2, 64, 2)) / 1e6, 3) == 0.662


def test_pix2pix_reference_layout() -> None:
    with torch.device("meta"):
        g = create("pix2pix")  # unet_256
    sd = g.state_dict()
    assert sd["model.model.0.weight"].shape == (64, 3, 4, 4)
    assert sd["model.model.1.model.1.weight"].shape == (128, 64, 4, 4)
    assert sd["model.model.3.weight"].shape == (128, 3, 4, 4)  # outermost ConvTranspose2d
    assert "model.model.3.bias" in sd and "model.model.0.bias" not in sd
    dropouts = [m for m in g.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 8 - 5  # the 8 ngf -> 8 ngf middle levels, as the reference


def test_cyclegan_resnet_9blocks_parameter_count() -> None:
    with torch.device("meta"):
        g = create("cyclegan")
    ngf, c = 64, 3
    conv = lambda i, o, k, bias=True: i * o * k * k + (o if bias else 0)  # noqa: E731
    expected = conv(c, ngf, 7) + conv(ngf, 2 * ngf, 3) + conv(2 * ngf, 4 * ngf, 3)
    expected += 9 * 2 * conv(4 * ngf, 4 * ngf, 3)
    expected += conv(4 * ngf, 2 * ngf, 3) + conv(2 * ngf, ngf, 3) + conv(ngf, c, 7)
    assert param_count(g) == expected == 11_378_179  # instance norm without affine: no params
    assert "model.10.conv_block.5.weight" in g.state_dict()
