"""EOT through processing: differentiable stand-ins against the real encoders, the EOT model,
attacks through it (budget, range, a closed-form optimum) and sweeps scored after processing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from deepshield.attacks import get_attack
from deepshield.attacks.eot_transforms import (
    CHROMA,
    LUMA,
    ExpectedOverTransforms,
    jpeg_approx,
    processing_spec,
    quant_table,
    stand_in,
    stand_ins,
)
from deepshield.attacks.sweep import AttackSpec, attack_sweep
from deepshield.data import processing as P
from deepshield.errors import ConfigError, InputError


def _photos(size: int = 64) -> torch.Tensor:
    """Six real photographs (scikit-image's astronaut, coffee, chelsea), two crops each:
    [6, 3, size, size] in [0, 1] on the 8-bit grid."""
    out = []
    for img in (skdata.astronaut(), skdata.coffee(), skdata.chelsea()):
        small = Image.fromarray(img).resize((2 * size, 2 * size), Image.BICUBIC)
        t = torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 255
        out += [t[:, :size, :size], t[:, size:, size:]]
    return torch.stack(out)


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference in 8-bit levels."""
    return float((a - b).abs().mean() * 255)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


@pytest.mark.parametrize("quality", [1, 10, 30, 50, 75, 95, 100])
def test_quantisation_tables_equal_the_ones_pillow_writes(quality):
    buf = io.BytesIO()
    Image.fromarray((P.to_uint8(_photos(16)[:1]))[0]).save(buf, "JPEG", quality=quality)
    written = Image.open(buf).quantization  # natural order, luma then chroma
    assert quant_table(LUMA, quality).flatten().tolist() == list(written[0])
    assert quant_table(CHROMA, quality).flatten().tolist() == list(written[1])


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
def test_jpeg_stand_in_is_close_to_pillow_jpeg(quality):
    """Stated tolerance: straight-through rounding within 1.2 levels MAD and 40 dB PSNR of
    Pillow's JPEG, cubic rounding within 1.6 levels; and at most a third of what the real
    JPEG itself changes (a stand-in that skipped the codec would be at 100 %)."""
    x = _photos()
    real = P.pil_roundtrip(x, "JPEG", quality)
    ste, cubic = jpeg_approx(x, quality), jpeg_approx(x, quality, rounding="cubic")
    assert _mad(ste, real) < 1.2 and _psnr(ste, real) > 40
    assert _mad(cubic, real) < 1.6 and _psnr(cubic, real) > 38
    assert _mad(ste, real) < _mad(x, real) / 3
    assert ste.shape == x.shape and ste.min() >= 0 and ste.max() <= 1


def test_jpeg_stand_in_pads_sizes_that_are_not_whole_blocks():
    x = _photos()[:2, :, :37, :50]
    real = P.pil_roundtrip(x, "JPEG", 75)
    assert jpeg_approx(x, 75).shape == x.shape
    assert _mad(jpeg_approx(x, 75), real) < 1.5


def test_jpeg_gradients_flow_and_cubic_rounding_damps_what_quantisation_removes():
    """Both roundings pass a gradient to every pixel. Straight-through: the Jacobian is the
    codec without quantisation (a smooth perturbation passes whole); cubic (Shin & Song): the
    slope 3 (c - round c)^2 is small for the small high-frequency coefficients that JPEG zeroes,
    so a checkerboard at the highest frequency is damped to a small fraction."""
    x = (_photos() * 0.8 + 0.1).requires_grad_(True)  # away from 0 and 1: no clipping
    for rounding in ("ste", "cubic"):
        (grad,) = torch.autograd.grad(jpeg_approx(x, 75, rounding=rounding).sum(), x)
        assert torch.isfinite(grad).all() and (grad != 0).float().mean() > 0.99
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(6, 3, 4, 4, generator=g) - 0.5
    smooth = nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear") * (16 / 255)
    i = torch.arange(64)
    checker = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(6, 3, 64, 64) * (4 / 255)

    def gain(direction: torch.Tensor, rounding: str) -> float:
        fn = lambda t: jpeg_approx(t, 75, rounding=rounding)  # noqa: E731
        _, moved = torch.func.jvp(fn, (x.detach(),), (direction,))
        return float(moved.norm() / direction.norm())

    assert gain(smooth, "ste") == pytest.approx(1, abs=0.05)
    assert gain(checker, "cubic") < 0.2 < gain(smooth, "cubic")


@pytest.mark.parametrize("name,spec", [("resize0.5", "resize:0.5"), ("blur1", "blur:1"),
                                       ("crop:0.9", "crop:0.9")])  # fmt: skip
def test_resize_blur_and_crop_stand_ins_are_the_real_transforms(name, spec):
    x = _photos().requires_grad_(True)
    out = stand_in(name)(x)
    torch.testing.assert_close(out, P.parse_spec(spec)(x.detach()), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_names_read_glued_or_as_processing_specs():
    assert [t.spec for t in stand_ins("jpeg75, resize0.75,blur1,none")] == [
        "jpeg:75",
        "resize:0.75",
        "blur:1",
        "none",
    ]
    chain = stand_in("chain:resize:0.5+jpeg:75")
    x = _photos()[:2]
    torch.testing.assert_close(chain(x), jpeg_approx(P.resize_back(x, 0.5), 75))
    assert processing_spec("jpeg75") == "jpeg:75" and processing_spec("snr:20") == "snr:20"


@pytest.mark.parametrize(
    "names,words",
    [
        ("webp80", "webp has no differentiable stand-in"),
        ("noise:0.1", "noise has no differentiable stand-in"),
        ("jpeg101", "101 is out of range"),
        ("blur0", "0 is out of range"),
        (",", "no EOT transforms given"),
        ("foo:1", "unknown image processing"),
    ],
)
def test_bad_transform_names_are_one_line_config_errors(names, words):
    with pytest.raises(ConfigError, match=words):
        stand_ins(names)


def test_bad_processing_names_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown processing 'foo:1'"):
        processing_spec("foo:1")
    with pytest.raises(ConfigError, match="out of range"):
        processing_spec("snr:200")


class _Linear(nn.Module):
    """A two-class detector with logits (0, w . x + b): w [3, H, W]."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).flatten(1).sum(1) + self.b  # [B]
        return torch.stack([torch.zeros_like(z), z], 1)


def test_eot_model_is_the_log_mean_probability_over_transforms():
    model = _Linear(torch.randn(3, 16, 16) * 0.05, b=0.3)
    x = _photos(16)
    ts = stand_ins("blur1,resize0.5,none")
    expected = torch.stack([model(t(x)).softmax(1) for t in ts]).mean(0).log()
    torch.testing.assert_close(ExpectedOverTransforms(model, ts)(x), expected)


def test_eot_fgsm_reaches_the_closed_form_optimum_after_real_blur():
    """Linear detector z = w . x, w = checkerboard + 0.3: the optimum of z after real blur
    (sigma 1) over the L-inf ball is z - eps ||A^T w||_1 (A: the blur, A^T w its gradient).
    FGSM through the blur stand-in reaches it; plain FGSM (sign w, mostly checkerboard, which
    the blur removes) gets a small part of it."""
    i = torch.arange(16)
    checker = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()
    w = (checker + 0.3).expand(3, 16, 16).clone()
    model = _Linear(w, b=-0.5 * float(w.sum()))  # z = 0 at x: no saturated softmax
    x, y, eps = torch.full((1, 3, 16, 16), 0.5), torch.ones(1, dtype=torch.long), 0.01
    blur = P.parse_spec("blur:1")
    xr = x.clone().requires_grad_(True)
    (at_w,) = torch.autograd.grad(model(blur(xr))[:, 1].sum(), xr)  # A^T w
    optimum = eps * float(at_w.abs().sum())
    fgsm = get_attack("fgsm")

    def gain(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float(model(blur(x))[0, 1] - model(blur(x_adv))[0, 1])

    eot = fgsm(model, x, y, eps, eot_transforms="blur1")
    plain = fgsm(model, x, y, eps)
    assert gain(eot) == pytest.approx(optimum, rel=1e-4)
    assert gain(plain) < 0.5 * optimum
    assert (eot - x).abs().max() <= eps + 1e-7


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize(
    "attack,norm,eps",
    [
        ("pgd", "linf", 8 / 255),
        ("pgd", "l2", 0.5),
        ("apgd", "linf", 4 / 255),
        ("fgsm", "linf", 0.03),
        ("square", "linf", 8 / 255),
    ],
)
def test_attacks_with_eot_stay_in_budget_and_range(attack, norm, eps):
    model, x = _SmallCNN(), _photos(32)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    steps = {"fgsm": None, "square": 100}.get(attack, 5)  # Square: queries
    x_adv = get_attack(attack)(
        model, x, y, eps, norm=norm, steps=steps, eot_transforms="jpeg75,resize0.75,blur1"
    )
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and size.max() > 0
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_eot_on_speech_is_refused():
    model = nn.Sequential(nn.Linear(100, 2))
    with pytest.raises(InputError, match="EOT transforms work on images"):
        get_attack("pgd")(model, torch.zeros(2, 100), torch.zeros(2, dtype=torch.long), 0.1,
                          eot_transforms="jpeg75")  # fmt: skip


def test_sweep_scores_every_point_after_the_real_processing():
    model, x = _SmallCNN(), _photos(32)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    spec = AttackSpec("pgd", (0.0, 4 / 255), steps=2, eot_transforms=("jpeg75",),
                      eval_after="jpeg75").checked()  # fmt: skip
    assert spec.eot_transforms == ("jpeg:75",) and spec.eval_after == "jpeg:75"
    assert spec.to_dict()["eval_after"] == "jpeg:75"
    result = attack_sweep(model, x, y, spec)
    with torch.no_grad():
        clean_after = model(P.pil_roundtrip(x, "JPEG", 75))
    torch.testing.assert_close(result.clean_logits, clean_after)
    torch.testing.assert_close(result.adv_logits[0], clean_after)  # eps 0: the clean point
    assert result.linf[1].max() <= 4 / 255 + 1e-6  # norms of the crafted, unprocessed points


def test_attack_run_records_the_eot_flags_and_reruns_from_its_command(
    tmp_path_factory, monkeypatch
):
    """`deepshield attack RUN --eot-transforms jpeg75 --eval-after jpeg75` on a trained run: the
    result's name, JSON and reproducing command carry both options, and the command run again
    through the CLI gives the same rows."""
    import shlex

    from deepshield.cli import main
    from deepshield.runs.attack_sweep import attack_run
    from test_sweep import trained_tiny_run

    run = trained_tiny_run(tmp_path_factory)
    spec = AttackSpec("pgd", (0.0, 8 / 255), steps=2, eot_transforms=("jpeg75",),
                      eval_after="jpeg75")  # fmt: skip
    record = attack_run(run.path, spec, n=10)
    assert record["name"] == "pgd_eot_jpeg75_after_jpeg75"
    assert record["eot_transforms"] == ["jpeg:75"] and record["eval_after"] == "jpeg:75"
    assert "--eot-transforms jpeg:75 --eval-after jpeg:75" in record["command"]
    argv = shlex.split(record["command"])
    argv[argv.index("--out") + 1] = "again"
    monkeypatch.setattr("sys.argv", argv)
    main()  # returns: exit code 0
    again = run.read_json("attack_again.json")
    assert again["rows"] == record["rows"]


def test_study_attacks_take_the_eot_options():
    from deepshield.studies.config import StudyAttack

    entry = StudyAttack(attack="pgd", eps=["0", "8/255"], eot_transforms=["jpeg75", "blur1"],
                        eval_after="chain:resize:0.75+jpeg:75")  # fmt: skip
    spec = entry.spec(0)
    assert spec.eot_transforms == ("jpeg:75", "blur:1")
    assert spec.eval_after == "chain:resize:0.75+jpeg:75"
    with pytest.raises(ValueError, match="webp has no differentiable stand-in"):
        StudyAttack(attack="pgd", eps=[0.1], eot_transforms=["webp80"])
