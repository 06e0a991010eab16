"""Proactive config, manipulations, training loop and evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

from deepshield.config import load_config, parse_config
from deepshield.data.edits import EDITS, apply_edit, attributes
from deepshield.errors import ConfigError, InputError
from deepshield.proactive import manipulations as manip
from deepshield.proactive.config import BenignSpec, GeneratorSpec, ProactiveConfig
from deepshield.proactive.evaluate import detection_metrics, evaluate, image_quality
from deepshield.proactive.training import DetectorTrainer, apply_benign

ROOT = Path(__file__).resolve().parents[1]


def crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random size x size crops of two bundled photos, shrunk 4x: [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    photos = [
        F.avg_pool2d(torch.from_numpy(f()).permute(2, 0, 1)[None].float() / 255, 4)[0]
        for f in (data.astronaut, data.coffee)
    ]
    out = []
    for k in range(n):
        p = photos[k % 2]
        top = int(torch.randint(p.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(p.shape[2] - size + 1, (1,), generator=g))
        out.append(p[:, top : top + size, left : left + size])
    return torch.stack(out)


def tiny_cfg(**kw) -> ProactiveConfig:
    base = {"n": 3, "width": 4, "depth": 2, "steps": 3, "batch_size": 4, "k": 3}
    base.update(seen=["blur", "bright"], unseen=["warm"])
    return ProactiveConfig.model_validate({**base, **kw})


# -- config -----------------------------------------------------------------------------------
def test_shipped_config_validates() -> None:
    cfg = load_config(ROOT / "configs" / "proactive.yaml", ProactiveConfig)
    assert set(cfg.seen).isdisjoint(cfg.unseen)
    assert all(g in cfg.generators for g in cfg.seen + cfg.unseen if g not in EDITS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seen": ["blurr"]}, "unknown manipulation"),
        ({"seen": ["blur"], "unseen": ["blur"]}, "both seen and unseen"),
        ({"seen": [], "unseen": ["warm"]}, "at least one"),
        ({"generators": {"warm": {"arch": "pix2pix", "edits": ["warm"]}}}, "clash"),
        ({"generators": {"g": {"arch": "pix2pix", "edits": ["tan"]}}}, "unknown edit"),
        ({"lambdas": {"q": 1.0}}, "lambdas.q"),
    ],
)
def test_config_errors_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(change, ProactiveConfig, source="test.yaml")
    assert "\n" not in str(e.value)


# -- manipulations ----------------------------------------------------------------------------
class CodedGenerator(nn.Module):
    """A 'conditional generator' whose output reveals the attribute vector it was given."""

    c_dim = len(EDITS)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (c.argmax(dim=1).float() / 4 * 2 - 1).view(-1, 1, 1, 1).expand_as(x)


def test_edit_and_conditional_generator_manipulations() -> None:
    x = crops(6, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(manip.Edit("blur")(x, g), apply_edit(x, attributes("blur", batch=6)))
    coded = manip.GeneratorEdit("coded", CodedGenerator(), ["bright", "contrast"])
    out = coded(x, torch.Generator().manual_seed(1))
    picked = {round(float(v) * 4) for v in out[:, 0, 0, 0]}  # edit index per image
    assert picked <= {EDITS.index("bright"), EDITS.index("contrast")} and len(picked) == 2
    assert torch.equal(out, coded(x, torch.Generator().manual_seed(1)))


def test_apply_mixed_uses_each_manipulation_per_image() -> None:
    x = crops(16, 16)
    ms = [manip.Edit("blur"), manip.Edit("warm")]
    out = manip.apply_mixed(x, ms, torch.Generator().manual_seed(0))
    g = torch.Generator()
    blur, warm = ms[0](x, g), ms[1](x, g)
    is_blur = (out - blur).flatten(1).abs().amax(1) < 1e-6
    is_warm = (out - warm).flatten(1).abs().amax(1) < 1e-6
    assert bool((is_blur ^ is_warm).all()) and is_blur.any() and is_warm.any()


def test_generators_are_cached_by_spec(tmp_path: Path) -> None:
    spec = GeneratorSpec(
        arch="stargan", kwargs={"conv_dim": 4, "n_res": 1}, edits=["blur"], steps=1, batch_size=2
    )
    x, msgs = crops(4, 16), []
    first = manip.load_or_train_generators(
        {"sg": spec}, ["sg", "blur"], x, tmp_path, 0, msgs.append
    )
    again = manip.load_or_train_generators({"sg": spec}, ["sg"], x, tmp_path, 0, msgs.append)
    assert list(first) == ["sg"] and "training" in msgs[0] and "loaded" in msgs[2]
    quality = manip.read_quality(tmp_path, "sg")  # logged as msgs[1]
    assert quality["l1_identity"] > 0 and f"{quality['l1']:.4f}" in msgs[1]
    for a, b in zip(
        first["sg"].state_dict().values(), again["sg"].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    more = spec.model_copy(update={"steps": 2})
    manip.load_or_train_generators({"sg": more}, ["sg"], x, tmp_path, 0, msgs.append)
    assert "training" in msgs[3]
    (tmp_path / "sg.json").write_text("{not json")  # unreadable cache entry: retrain
    manip.load_or_train_generators({"sg": more}, ["sg"], x, tmp_path, 0, msgs.append)
    assert "training" in msgs[5]
    out = manip.build(["sg"], {"sg": spec}, again)["sg"](x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


# -- training ---------------------------------------------------------------------------------
def test_apply_benign_probability_and_gradient() -> None:
    x = crops(6, 16).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    assert apply_benign(x, BenignSpec(p=0.0), g) is x
    y = apply_benign(x, BenignSpec(p=1.0, resize_scale=(0.5, 0.5)), g)
    assert ((y - x).flatten(1).abs().amax(1) > 0).all()  # every image processed
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_trainer_is_seeded_and_trains_templates_only_when_proactive() -> None:
    x, cfg = crops(12, 16), tiny_cfg()
    ms = [manip.Edit(n) for n in cfg.seen]
    a = DetectorTrainer(cfg, x, ms)
    start = a.templates().detach().clone()
    a.fit(3)
    b = DetectorTrainer(cfg, x, ms)
    b.fit(3)
    assert a.history == b.history  # same seed, same numbers
    assert set(a.history[0]) == {"step", "b", "m", "c", "s", "p", "r", "total", "acc"}
    assert not torch.equal(a.templates(), start)
    assert a.templates().abs().max() <= cfg.eps_max
    passive = DetectorTrainer(cfg, x, ms, proactive=False)
    passive.fit(1)
    assert passive.templates is None and set(passive.history[0]) == {"step", "b", "total", "acc"}
    with pytest.raises(InputError, match="no manipulation"):
        DetectorTrainer(cfg, x, [])


# -- evaluation -------------------------------------------------------------------------------
class MeanScore:
    """A stand-in detector: P(manipulated) = mean pixel value."""

    def p_manipulated(self, x: torch.Tensor, templates: torch.Tensor | None) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def test_image_quality_closed_form() -> None:
    x = torch.full((2, 3, 16, 16), 0.5)
    q = image_quality(x, x + 0.01)  # MSE 1e-4 -> 40 dB
    assert q["psnr"] == pytest.approx(40.0) and q["psnr_min"] == pytest.approx(40.0)
    noisy = x + 0.1 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert 0.99 < q["ssim"] < 1  # a constant offset barely changes structure
    assert image_quality(x, noisy.clamp(0, 1))["ssim"] < 0.5


def test_detection_metrics_on_a_known_scorer() -> None:
    dark, bright = torch.full((4, 3, 8, 8), 0.2), torch.full((4, 3, 8, 8), 0.8)
    bright[0] = 0.1  # one manipulated image scores below every untouched one
    m = detection_metrics(MeanScore(), dark, {"up": bright, "same": dark.clone()}, {"g": ["up"]})
    assert m["untouched_kept"] == 1.0  # 0.2 < 0.5
    assert m["manipulations"]["up"] == {"auc": 0.75, "accuracy": pytest.approx((1 + 0.75) / 2)}
    assert m["manipulations"]["same"]["auc"] == 0.5
    assert m["groups"]["g"]["auc"] == 0.75


def test_evaluate_reports_every_benign_operation() -> None:
    x, cfg = crops(8, 16), tiny_cfg()
    ms = {n: manip.Edit(n) for n in cfg.seen + cfg.unseen}
    trainer = DetectorTrainer(cfg, crops(8, 16, seed=1), [ms[n] for n in cfg.seen])
    groups = {"seen": cfg.seen, "unseen": cfg.unseen}
    out = evaluate(x, ms, groups, trainer.templates, trainer.detector, trainer.detector,
                   benign=("none", "jpeg50"))  # fmt: skip
    assert out["quality"]["psnr"] >= 20 * torch.log10(torch.tensor(1 / cfg.eps_max)).item()
    for det in ("proactive", "passive"):
        assert set(out[det]) == {"none", "jpeg50"}
        assert set(out[det]["none"]["groups"]) == {"seen", "unseen"}


@pytest.mark.slow
def test_short_training_finds_blurred_images_at_35_db() -> None:
    """Blur removes the high-frequency template: after 600 steps (the config's) it is found perfectly."""
    cfg = tiny_cfg(width=16, depth=4, steps=600, batch_size=16, n=4, k=5, eps_max=0.016)
    ms = {n: manip.Edit(n) for n in ("blur", "bright", "warm")}
    trainer = DetectorTrainer(cfg, crops(200, 32), [ms["blur"], ms["bright"]])
    trainer.fit(cfg.steps)
    out = evaluate(crops(60, 32, seed=1), ms, {"seen": cfg.seen, "unseen": cfg.unseen},
                   trainer.templates, trainer.detector, trainer.detector, benign=("none",))  # fmt: skip
    assert out["proactive"]["none"]["manipulations"]["blur"]["auc"] > 0.95
    assert out["proactive"]["none"]["groups"]["seen"]["auc"] > 0.75
    assert out["quality"]["psnr"] > 35
