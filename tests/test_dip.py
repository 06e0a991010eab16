"""Deep Image Prior purification: the grouped network, reconstruction quality, early stopping,
batched == per-image semantics, the Purified wrapper, the paper's table and the CLI."""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepshield.defenses.dip import DipConfig, dip_reconstruct, psnr
from deepshield.defenses.dip_net import DipSkip, init_dip
from deepshield.defenses.purifier import Purified, purification_table
from deepshield.errors import ConfigError, InputError

SMALL = DipConfig(channels=(8, 16, 32, 64), skip=(0, 0, 4, 4), stop_psnr=None)


def photos(size: int = 32) -> torch.Tensor:
    """Two of scikit-image's bundled photographs, resized: [2, 3, size, size] in [0, 1]."""
    from skimage import data as skdata

    out = []
    for img in (skdata.chelsea(), skdata.coffee()):
        im = Image.fromarray(img).convert("RGB").resize((size, size), Image.LANCZOS)
        out.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def test_psnr_matches_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    a, b = torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    expected = [peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=1) for i in (0, 1)]
    assert torch.allclose(psnr(a, b), torch.tensor(expected, dtype=torch.float64))


def test_grouped_network_keeps_images_apart():
    """Output of network 0 has zero gradient w.r.t. the noise and parameters of networks 1, 2."""
    net = init_dip(
        DipSkip(8, (8, 16), (0, 4), groups=3), [torch.Generator().manual_seed(i) for i in range(3)]
    )
    z = torch.rand(1, 3 * 8, 16, 16, requires_grad=True)
    out = net(z).view(3, 3, 16, 16)
    out[0].square().sum().backward()
    assert z.grad[:, :8].abs().sum() > 0 and z.grad[:, 8:].abs().max() == 0
    conv = net.head[0][-1]  # weight [3*3, 8, 1, 1]: rows 3.. belong to networks 1 and 2
    assert conv.weight.grad[:3].abs().sum() > 0 and conv.weight.grad[3:].abs().max() == 0


def test_group_g_is_initialised_as_a_single_network_with_its_generator():
    grouped = init_dip(
        DipSkip(8, (8, 16), (0, 4), groups=2), [torch.Generator().manual_seed(s) for s in (5, 6)]
    )
    single = init_dip(DipSkip(8, (8, 16), (0, 4), groups=1), [torch.Generator().manual_seed(6)])
    for (_, pg), (_, ps) in zip(grouped.named_parameters(), single.named_parameters(), strict=True):
        assert torch.equal(pg[len(pg) // 2 :], ps)


def test_batched_dip_equals_per_image_dip_in_float64():
    """Grouped: B images follow exactly the trajectories they follow one at a time."""
    x = photos(16).double()
    x = torch.cat([x, x.flip(-1)])  # [4, 3, 16, 16]
    cfg = DipConfig(channels=(8, 16), skip=(0, 4), iters=12, stop_psnr=None)
    grouped = dip_reconstruct(x, cfg, mode="grouped", chunk=3, seed=7)
    single = dip_reconstruct(x, cfg, mode="per-image", seed=7)
    assert torch.allclose(grouped.images, single.images, atol=1e-12, rtol=0)
    assert torch.equal(grouped.iters, single.iters)


def test_grouped_result_of_an_image_does_not_depend_on_the_others():
    x = torch.rand(3, 3, 16, 16)
    cfg = DipConfig(channels=(8, 16), skip=(0, 4), iters=15, stop_psnr=None)
    a = dip_reconstruct(x, cfg, mode="grouped", chunk=3)
    x2 = x.clone()
    x2[1] = torch.rand(3, 16, 16)
    b = dip_reconstruct(x2, cfg, mode="grouped", chunk=3)
    assert torch.equal(a.images[[0, 2]], b.images[[0, 2]])
    assert not torch.allclose(a.images[1], b.images[1])
    shared_a = dip_reconstruct(x, cfg, mode="shared", chunk=3)
    shared_b = dip_reconstruct(x2, cfg, mode="shared", chunk=3)
    assert not torch.allclose(shared_a.images[0], shared_b.images[0])  # shared weights interact


def smooth_images(n: int, size: int = 16) -> torch.Tensor:
    """n smooth random images (bilinear upsampling of 4x4 noise): [n, 3, size, size] in [0, 1]."""
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    return nn.functional.interpolate(coarse, size=size, mode="bilinear")


EARLY = DipConfig(channels=(8, 16), skip=(0, 4), iters=60, stop_psnr=24.0)


def test_chunk_one_and_chunk_n_give_the_same_images_with_early_stopping():
    """Each image's seed, noise and stop decision are its own: chunk 1 == chunk 4 (float64),
    with the images stopping at different iterations inside one grouped model."""
    x = smooth_images(4).double()
    one = dip_reconstruct(x, EARLY, mode="grouped", chunk=1, seed=3)
    four = dip_reconstruct(x, EARLY, mode="grouped", chunk=4, seed=3)
    assert len(set(four.iters.tolist())) > 1 and (four.iters < EARLY.iters).all()
    assert torch.equal(one.iters, four.iters)
    assert torch.allclose(one.images, four.images, atol=1e-12, rtol=0)


def test_reading_the_stop_flags_every_k_iterations_changes_only_the_work_done(monkeypatch):
    """check_every=7: the same images and iteration counts as reading every iteration; the loop
    runs on to the next multiple of 7 after the last image stops, never further."""
    x = smooth_images(3)
    forwards = []
    original = DipSkip.forward
    monkeypatch.setattr(DipSkip, "forward", lambda net, z: forwards.append(1) or original(net, z))
    every = dip_reconstruct(x, EARLY, chunk=3, seed=5, check_every=1)
    run_every = len(forwards)
    forwards.clear()
    sparse = dip_reconstruct(x, EARLY, chunk=3, seed=5, check_every=7)
    assert torch.equal(every.images, sparse.images) and torch.equal(every.iters, sparse.iters)
    last = int(every.iters.max())
    assert run_every == last < EARLY.iters
    assert len(forwards) == min(-(-last // 7) * 7, EARLY.iters)


def test_an_observed_fixed_run_gives_every_early_stopped_and_averaged_run():
    """observe sees each iteration's raw output and changes nothing; the output a smoothed,
    early-stopped run keeps is the running average of the observed outputs at the first
    iteration it reaches the target (what benchmarks/dip_sweep.py relies on)."""
    x = smooth_images(3)
    plain = replace(EARLY, stop_psnr=None)
    seen: list[torch.Tensor] = []
    observed = dip_reconstruct(x, plain, chunk=3, seed=5, observe=lambda i, o: seen.append(o))
    assert torch.equal(observed.images, dip_reconstruct(x, plain, chunk=3, seed=5).images)
    assert len(seen) == plain.iters and torch.equal(seen[-1], observed.images)
    cfg = replace(EARLY, smoothing=0.9, stop_psnr=20.0)
    real = dip_reconstruct(x, cfg, chunk=3, seed=5)
    assert (real.iters < cfg.iters).all() and len(set(real.iters.tolist())) > 1
    avg, checked = seen[0], 0
    for i, out in enumerate(seen[1:], start=2):
        avg = avg * 0.9 + out * 0.1
        for j in torch.nonzero(real.iters == i).flatten().tolist():
            assert torch.equal(real.images[j], avg[j])
            checked += 1
    assert checked == len(x)


def test_dip_reconstructs_clean_photographs_above_22_db():
    """Stated bound: 200 iterations reach >= 22 dB on 32x32 photographs (measured 24.3 and
    24.9 dB), at least 4 dB better than their mean colour (18.3 and 13.3 dB)."""
    x = photos(32)
    rec = dip_reconstruct(
        x, DipConfig(channels=(16, 32, 64, 128), skip=(0, 0, 4, 4), iters=200, stop_psnr=None)
    )
    assert (rec.psnr >= 22).all(), rec.psnr
    flat = x.mean((2, 3), keepdim=True).expand_as(x)
    assert (rec.psnr > psnr(flat, x) + 4).all()
    assert rec.images.min() >= 0 and rec.images.max() <= 1 and rec.iters.tolist() == [200, 200]


def test_early_stopping_stops_each_image_at_the_target_psnr():
    x = photos(32)
    cfg = DipConfig(channels=(8, 16, 32, 64), skip=(0, 0, 4, 4), iters=400, stop_psnr=19.0)
    rec = dip_reconstruct(x, cfg)
    assert (rec.psnr >= 19.0).all() and (rec.iters < 400).all()
    assert torch.allclose(rec.psnr, psnr(rec.images, x))
    longer = dip_reconstruct(x, replace(cfg, stop_psnr=None, iters=int(rec.iters.max()) + 20))
    assert (longer.psnr > rec.psnr - 0.5).all()  # it had not reached a plateau yet


@pytest.mark.parametrize(
    ("x", "error"),
    [
        (torch.rand(1, 3, 20, 20), "divisible by 16"),
        (torch.rand(1, 3, 16, 16) * 2, "in [0, 1]"),
        (torch.rand(3, 16, 16), "[B,C,H,W]"),
    ],
)
def test_bad_inputs_are_rejected(x, error):
    with pytest.raises(InputError, match=error.replace("[", r"\[").replace("]", r"\]")):
        dip_reconstruct(x, SMALL)


def test_bad_settings_are_rejected():
    with pytest.raises(ConfigError, match="mode"):
        dip_reconstruct(torch.rand(1, 3, 16, 16), SMALL, mode="parallel")
    with pytest.raises(ConfigError, match="chunk"):
        dip_reconstruct(torch.rand(1, 3, 16, 16), SMALL, chunk=0)
    with pytest.raises(ConfigError, match="iters"):
        DipConfig(iters=0)
    with pytest.raises(ConfigError, match="check_every"):
        dip_reconstruct(torch.rand(1, 3, 16, 16), SMALL, check_every=0)


# -- the purified classifier and the paper's table ---------------------------------------------
class Brightness(nn.Module):
    """A stand-in detector: logit of 'fake' = 20 * (mean brightness - 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * (x.mean((1, 2, 3)) - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_purified_classifies_the_purified_input_and_blocks_gradients():
    model = Brightness()
    darken = lambda x: x * 0.5  # noqa: E731
    wrapped = Purified(model, darken)
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    assert torch.equal(wrapped(x), model(darken(x)))
    out = wrapped(x)[:, 1].sum()
    with pytest.raises(RuntimeError):
        torch.autograd.grad(out, x)


def test_purification_table_selects_and_counts_as_the_paper():
    det = Brightness()
    fakes = torch.tensor([0.8, 0.7, 0.6, 0.4]).view(-1, 1, 1, 1).expand(4, 3, 4, 4)
    fakes_adv = torch.tensor([0.45, 0.55, 0.3, 0.1]).view(-1, 1, 1, 1).expand(4, 3, 4, 4)
    reals = torch.tensor([0.2, 0.45, 0.6]).view(-1, 1, 1, 1).expand(3, 3, 4, 4)
    # caught fakes: 0.8, 0.7, 0.6 (P >= 0.5); their adversarial versions fooling it: 0.45, 0.3
    brighten = lambda x: (x + 0.1).clamp(0, 1)  # noqa: E731
    t = purification_table(det, brighten, fakes, fakes_adv, reals, thresholds=(0.5,))
    assert t["counts"] == {"perturbed": 2, "unperturbed": 3, "reals": 2}
    assert t["attack_success"] == pytest.approx(2 / 3)
    none, purified, blurred = t["rows"]
    assert none["defence"] == "none" and none["recall_perturbed"] == 0.0
    # after +0.1: perturbed 0.55, 0.4 -> one of two called fake; reals 0.3, 0.55 -> one retained
    assert purified["recall_perturbed"] == 0.5 and purified["recall_unperturbed"] == 1.0
    assert purified["real_retained"] == 0.5
    assert torch.equal(t["images"]["purified"], brighten(t["images"]["input"]))
    assert t["psnr"] == pytest.approx([20.0] * 7)  # +0.1 everywhere: MSE 0.01
    # blur leaves a constant image as it is: blur alone is the detector alone
    assert blurred["defence"] == "blur alone"
    assert {k: v for k, v in blurred.items() if k != "defence"} == {
        k: v for k, v in none.items() if k != "defence"
    }


def test_lower_threshold_trades_reals_for_recall():
    det = Brightness()
    fakes = torch.full((2, 3, 4, 4), 0.9)
    fakes_adv = torch.tensor([0.47, 0.44]).view(-1, 1, 1, 1).expand(2, 3, 4, 4)
    reals = torch.tensor([0.46, 0.2]).view(-1, 1, 1, 1).expand(2, 3, 4, 4)
    t = purification_table(det, lambda x: x, fakes, fakes_adv, reals, thresholds=(0.25, 0.5))
    low = next(r for r in t["rows"] if r["threshold"] == 0.25 and r["defence"] == "purified")
    high = next(r for r in t["rows"] if r["threshold"] == 0.5 and r["defence"] == "purified")
    # P(fake): perturbed 0.35 and 0.23, reals 0.31 and 0.00
    assert (low["recall_perturbed"], high["recall_perturbed"]) == (0.5, 0.0)
    assert (low["real_retained"], high["real_retained"]) == (0.5, 1.0)


# -- the CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    from deepshield.config import TrainConfig
    from deepshield.runs.training import run_training

    cfg = TrainConfig(
        dataset="synthetic-faces:easy",
        data_kwargs={"n": 60, "size": 32},
        model="simplenet",
        epochs=1,
        device="cpu",
    )
    return run_training(cfg, tmp_path_factory.mktemp("dip") / "run")


def test_defend_purify_writes_its_table_and_section(detector_run):
    from typer.testing import CliRunner

    from deepshield.cli import app

    args = ["defend", "purify", str(detector_run.path), "--iters", "5", "--n", "3", "--eps", "0.05"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = detector_run.read_json("purify_dip.json")
    assert out["dip"]["iters"] == 5 and out["attack"]["eps"] == 0.05
    assert {r["threshold"] for r in out["rows"]} == {0.25, 0.5}
    assert sum(out["counts"].values()) <= 6
    p = out["psnr"]
    assert p["target"] == 27.0 and p["images"] == sum(out["counts"].values())
    assert 0 <= p["reached"] <= p["images"]
    assert {r["defence"] for r in out["rows"]} == {"none", "purified", "blur alone"}
    assert f"reached by {p['reached']} of {p['images']}" in result.output
    assert "blur alone: recall perturbed" in result.output
    assert not re.search(r"\d\.\d{4,}", result.output)  # 3 decimals at most
    assert "Deep Image Prior purification" in detector_run.file("report.html").read_text()


def test_balanced_preset_is_the_documented_setting_and_reachable_from_the_cli(detector_run):
    """BALANCED (docs/defenses.md, presets table and "Speed goal"): FAST's network, lr and
    noise, 750 iterations, no early stop, no running average; `--preset balanced` runs it."""
    from typer.testing import CliRunner

    from deepshield.cli import app
    from deepshield.defenses.dip import BALANCED, FAST, PRESETS

    assert replace(FAST, iters=750, stop_psnr=None) == BALANCED and PRESETS["balanced"] is BALANCED
    assert (BALANCED.channels, BALANCED.skip) == ((8, 16, 32, 64), (0, 0, 4, 4))
    assert (BALANCED.lr, BALANCED.smoothing, BALANCED.iters, BALANCED.stop_psnr) == (
        0.01, 0.0, 750, None,
    )  # fmt: skip
    doc = (Path(__file__).parents[1] / "docs" / "defenses.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `BALANCED`"))
    assert "(8, 16, 32, 64), skips (0, 0, 4, 4)" in row and "750" in row and "none" in row

    args = ["defend", "purify", str(detector_run.path), "--preset", "balanced", "--iters", "3"]
    result = CliRunner().invoke(app, [*args, "--n", "2"])
    assert result.exit_code == 0, result.output
    out = detector_run.read_json("purify_dip.json")
    assert out["dip"] == {**asdict(BALANCED), "iters": 3, "channels": [8, 16, 32, 64],
                          "skip": [0, 0, 4, 4]}  # fmt: skip
    assert out["psnr"]["target"] is None and "no stop target" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "jpeg"], "--method"),
        (["--preset", "slow"], "--preset"),
        (["--mode", "x"], "mode"),
    ],
)
def test_defend_purify_bad_options_are_one_line(detector_run, args, message, monkeypatch, capsys):
    from deepshield.cli import main

    monkeypatch.setattr(
        "sys.argv", ["deepshield", "defend", "purify", str(detector_run.path), *args]
    )
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip().count("\n") == 0 and message in err


# -- on a CUDA device (pytest -m cuda; skipped without one) ------------------------------------
@pytest.mark.cuda
def test_cuda_dip_is_reproducible_per_image_and_independent_of_the_chunk():
    """Device generators: the same seed gives the same image whatever the chunk (up to the
    grouped convolution's float32 rounding: on the CPU the mean difference is below 1e-4 per
    image, while another seed moves each image by 0.04-0.06), and results stay on the device."""
    x = smooth_images(4).cuda()
    one = dip_reconstruct(x, EARLY, mode="grouped", chunk=1, seed=3)
    four = dip_reconstruct(x, EARLY, mode="grouped", chunk=4, seed=3)
    other = dip_reconstruct(x, EARLY, mode="grouped", chunk=4, seed=4)
    assert one.images.is_cuda and (four.iters < EARLY.iters).all()
    assert (four.psnr >= EARLY.stop_psnr).all()
    assert ((one.iters - four.iters).abs() <= 2).all()
    same = (one.images - four.images).abs().mean((1, 2, 3))  # [4]
    assert (same < 2e-3).all(), same
    assert ((other.images - four.images).abs().mean((1, 2, 3)) > 1e-2).all()


@pytest.mark.cuda
def test_cuda_dip_loop_synchronises_only_every_k_iterations():
    """With check_every=10 the 40-iteration loop makes 36 fewer host synchronisations than with
    check_every=1 (torch's sync debug mode counts them)."""
    import warnings

    x = smooth_images(2).cuda()
    cfg = replace(EARLY, iters=40, stop_psnr=99.0)  # never reached: every read happens

    def syncs(k: int) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                dip_reconstruct(x, cfg, chunk=2, check_every=k)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    every, sparse = syncs(1), syncs(10)
    assert every - sparse == 36, (every, sparse)
