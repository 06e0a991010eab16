"""`deepshield train-generator` and `deepshield disrupt` (single setting and --config tables)
end to end on photo crops; GAN adversarial training with the disruption as perturbation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from skimage import data as skdata
from typer.testing import CliRunner

from deepshield.cli import main
from deepshield.cli.app import app
from deepshield.data import register_source
from deepshield.data.splits import Splits, TensorSet
from deepshield.disrupt import disruption_perturb
from deepshield.disrupt.config import AdversarialSpec
from deepshield.errors import RunError
from deepshield.models import create
from deepshield.runs.generators import load_generator
from deepshield.train.gan import GANTrainer

EPS = 0.05


def crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n random crops of scikit-image's photos (shrunk 4x): [n, 3, size, size] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    photos = [
        F.avg_pool2d(torch.from_numpy(f()).permute(2, 0, 1)[None].float() / 255, 4)[0]
        for f in (skdata.astronaut, skdata.chelsea, skdata.coffee)
    ]
    out = []
    for k in range(n):
        p = photos[k % 3]
        top = int(torch.randint(p.shape[1] - size + 1, (1,), generator=g))
        left = int(torch.randint(p.shape[2] - size + 1, (1,), generator=g))
        out.append(p[:, top : top + size, left : left + size])
    return torch.stack(out)


@register_source("disrupt-test-crops", description="photo crops for the disruption CLI tests")
def _crops_source(arg: str | None, *, seed: int, n: int = 30, size: int = 32) -> Splits:
    """n crops as uint8; every fourth one labelled fake (those must be ignored)."""
    x = (crops(n, size, seed) * 255).round().to(torch.uint8)
    y = torch.tensor([int(i % 4 == 3) for i in range(n)])
    return Splits("disrupt-test-crops", *(TensorSet(x[i::3], y[i::3]) for i in range(3)))


DATA = ["-d", "disrupt-test-crops", "--data-arg", "n=30", "--data-arg", "size=32"]
TINY_G = ["--model-arg", "conv_dim=8", "--model-arg", "n_res=1", "--steps", "3", "-b", "4"]


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def generator_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "g"
    invoke("train-generator", "-m", "stargan", *TINY_G, *DATA, "--out", out)
    return out


def test_train_generator_writes_a_loadable_run_and_resumes(generator_run: Path) -> None:
    for name in ("model.json", "best.safetensors", "history.json", "metrics.json", "report.html"):
        assert (generator_run / name).is_file(), name
    spec = json.loads((generator_run / "model.json").read_text())
    assert spec["kwargs"] == {"c_dim": 5, "track_running_stats": False, "conv_dim": 8, "n_res": 1}
    assert len(json.loads((generator_run / "history.json").read_text())) == 3
    g = load_generator(generator_run)
    assert g.c_dim == 5 and not g.training
    again = invoke("train-generator", "-m", "stargan", *TINY_G, *DATA, "--out", generator_run)
    assert "reused" in again.output
    other = CliRunner().invoke(
        app, ["train-generator", "-m", "stargan", *TINY_G[:-4], "--steps", "4", *DATA,
              "--out", str(generator_run)],
    )  # fmt: skip
    assert other.exit_code != 0 and "--force" in str(other.exception)


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    args = ["train-generator", "-m", "pix2pix", "--model-arg", "ngf=8", "--model-arg", "depth=5",
            "-b", "2", *DATA]  # fmt: skip
    invoke(*args, "--steps", "4", "--out", tmp_path / "straight")
    from deepshield.disrupt.config import GeneratorConfig
    from deepshield.runs.generators import train_generator

    cfg = yaml.safe_load((tmp_path / "straight" / "config.yaml").read_text())
    full = GeneratorConfig(**{**cfg, "checkpoint_every": 1})

    def interrupt(line: str) -> None:
        if "step 2/4" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(full, tmp_path / "resumed", log=interrupt)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    logs: list[str] = []
    train_generator(full, tmp_path / "resumed", log=logs.append)
    assert any("resumed at step 2" in line for line in logs)
    a = json.loads((tmp_path / "straight" / "history.json").read_text())
    b = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [h["loss_g"] for h in a] == [h["loss_g"] for h in b]


def test_disrupt_cli_writes_metrics_grid_and_report(generator_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = invoke("disrupt", "-g", generator_run, "--method", "pgd", "-n", 3, *DATA, "--out", out)
    assert "disrupted" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 3 and m["classes"] == 5 and m["method"] == "pgd"
    assert 0.9 * EPS <= m["linf"] <= EPS + 1e-6
    assert m["distortion"]["n"] == 15 and m["distortion"]["l2"] > 0
    assert (out / "plots" / "disrupt_grid.png").is_file()
    html = (out / "report.html").read_text()
    assert "Generator disruption" in html and "data:image/png;base64" in html


def test_disrupt_cli_transfer_target_and_weights_file(generator_run: Path, tmp_path: Path) -> None:
    invoke("disrupt", "-g", generator_run, "--transfer", "joint", "--classes", "hair,warm",
           "-n", 2, *DATA, "--out", tmp_path / "t")  # fmt: skip
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["classes"] == 2 and m["transfer"] == "joint" and m["distortion"]["n"] == 4
    weights = generator_run / "best.safetensors"  # beside its model.json
    invoke("disrupt", "-g", weights, "--target", "input", "--classes", "0", "-n", 3, *DATA,
           "--out", tmp_path / "m")  # fmt: skip
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["target"] == "input"
    assert m["to_input"]["l2"] < m["to_input_clean"]["l2"]  # towards "no change" gets closer


def test_bad_inputs_exit_2_with_one_line(
    generator_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((generator_run / "best.safetensors").read_bytes())
    cases = [
        (["disrupt", "-g", str(generator_run), "--classes", "beard", *DATA], "not a class"),
        (["disrupt", "-g", str(lone), *DATA], "--model"),
        (["disrupt", "-g", str(generator_run), "--method", "cw", *DATA], "method"),
        (["disrupt", "-g", str(tmp_path / "nothing"), *DATA], "no such"),
        (["disrupt", *DATA], "--generator"),
        (["train-generator", "-m", "stargan", "--adv", "both", *DATA], "adversarial"),
    ]
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/..., would land here
    for argv, message in cases:
        monkeypatch.setattr("sys.argv", ["deepshield", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, argv
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "runs").exists(), argv  # refused before any folder is written


def test_adversarial_training_hook_disrupts_each_batch_within_eps() -> None:
    seen = []

    def spy(g, x, c):
        x_adv = disruption_perturb(AdversarialSpec(mode="generator", eps=EPS, steps=2))(g, x, c)
        seen.append((x_adv - x).abs().max().item())
        return x_adv

    def run(perturb) -> GANTrainer:
        torch.manual_seed(0)
        g = create("stargan", conv_dim=8, c_dim=5, n_res=1, track_running_stats=False)
        t = GANTrainer(g, crops(8, 32), batch_size=2, perturb=perturb, seed=1)
        t.fit(2)
        return t

    a, b = run(spy), run(spy)
    assert len(seen) == 4 and all(0.9 * EPS <= s <= EPS + 1e-6 for s in seen)
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(p, q)  # the per-step seeds make adversarial training reproducible
    clean = run(None)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(a.generator.parameters(), clean.generator.parameters(), strict=True)
    )


TINY_CONFIG = {
    "dataset": "disrupt-test-crops",
    "data_kwargs": {"n": 30, "size": 32},
    "n_images": 2,
    "batch_size": 8,
    "steps": 2,
    "generators": {
        "sg": {"model": "stargan", "model_kwargs": {"conv_dim": 8, "n_res": 1}, "steps": 2,
               "batch_size": 2, "dataset": "disrupt-test-crops", "data_kwargs": {"n": 30, "size": 32}},
        "ga": {"model": "ganimation", "model_kwargs": {"conv_dim": 8, "n_res": 1}, "steps": 1,
               "batch_size": 2, "dataset": "disrupt-test-crops", "data_kwargs": {"n": 30, "size": 32}},
        "p2p": {"model": "pix2pix", "model_kwargs": {"ngf": 8, "depth": 5}, "steps": 1,
                "batch_size": 2, "dataset": "disrupt-test-crops", "data_kwargs": {"n": 30, "size": 32}},
    },
    "tables": ["methods", "transfer", "minimal_change", "robust"],
    "robust": {"generator": "sg", "steps": 1, "attack": {"steps": 1}},
}  # fmt: skip


def test_config_runs_every_table_into_tables_md_and_the_report(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "run"
    invoke("disrupt", "--config", tmp_path / "tiny.yaml", "--out", out)
    m = json.loads((out / "metrics.json").read_text())
    assert [r["method"] for r in m["methods/sg"]] == ["fgsm", "ifgsm", "pgd"]
    assert all(r["n"] == 10 for r in m["methods/sg"]) and m["methods/p2p"][0]["n"] == 2
    assert [r["attack"] for r in m["transfer/sg"]] == [
        "incorrect class", "iterative", "joint", "correct class"
    ]  # fmt: skip
    assert "transfer/p2p" not in m  # unconditional: no classes to transfer across
    assert m["transfer/sg"][3]["l2"] == pytest.approx(m["methods/sg"][1]["l2"])  # same attack
    ga = {r["attack"]: r for r in m["minimal_change/ga"]}
    assert set(ga) == {"no attack", "output -> input", "attention -> 1", "colour -> input"}
    assert ga["output -> input"]["l2"] < ga["no attack"]["l2"]
    labels = {r["training"] for r in m["robust"]}
    assert labels == {"before (base run)", "fine-tuned, clean", "fine-tuned, adv G",
                      "fine-tuned, adv G+D"}  # fmt: skip
    tables = (out / "tables.md").read_text()
    for title in ("Table 1", "Table 4", "Table 5", "Adversarial training"):
        assert title in tables
    html = (out / "report.html").read_text()
    assert "Table 4" in html and "plots/" not in html  # grids inlined
    assert {p.name for p in (out / "plots").iterdir()} >= {"disrupt_sg.png", "disrupt_ga.png"}
    before = (out / "metrics.json").read_text()
    invoke("disrupt", "--config", tmp_path / "tiny.yaml", "--out", out)  # everything reused
    assert (out / "metrics.json").read_text() == before


def test_force_retrains_a_changed_generator_and_the_fine_tunes_made_from_it(tmp_path: Path) -> None:
    sg = {
        "model": "stargan",
        "model_kwargs": {"conv_dim": 8, "n_res": 1},
        "steps": 1,
        "batch_size": 2,
        "dataset": "disrupt-test-crops",
        "data_kwargs": {"n": 30, "size": 32},
    }
    cfg = {"dataset": "disrupt-test-crops", "data_kwargs": {"n": 30, "size": 32}, "n_images": 2,
           "steps": 1, "methods": ["fgsm"], "tables": ["methods", "robust"],
           "robust": {"generator": "sg", "steps": 1, "modes": ["generator"],
                      "attack": {"steps": 1}},
           "generators": {"sg": sg}}  # fmt: skip
    out = tmp_path / "run"
    fine_tune = out / "generators" / "sg-finetune-generator" / "best.safetensors"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    invoke("disrupt", "--config", tmp_path / "a.yaml", "--out", out)
    before = fine_tune.read_bytes()
    sg["steps"] = 2  # the fine-tunes' own settings are unchanged; their base is not
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    refused = CliRunner().invoke(
        app, ["disrupt", "--config", str(tmp_path / "b.yaml"), "--out", str(out)]
    )
    assert isinstance(refused.exception, RunError) and "--force" in str(refused.exception)
    invoke("disrupt", "--config", tmp_path / "b.yaml", "--out", out, "--force")
    assert json.loads((out / "generators" / "sg" / "metrics.json").read_text())["steps"] == 2
    assert fine_tune.read_bytes() != before  # retrained from the new base, not reused


def test_disrupt_on_an_image_folder_with_the_default_options(
    generator_run: Path, tmp_path: Path
) -> None:
    """Issue 25: the default data options (n, size) crashed a folder dataset."""
    import numpy as np
    from PIL import Image

    for label, count in (("real", 20), ("fake", 4)):
        (tmp_path / "faces" / label).mkdir(parents=True)
        for i in range(count):
            a = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / "faces" / label / f"{i}.png")
    invoke(
        "disrupt", "-g", generator_run, "-d", tmp_path / "faces", "-n", 2, "--out", tmp_path / "o"
    )
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["images"] == 2


def test_force_keeps_a_users_file_in_the_generator_folder(
    generator_run: Path, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "g"
    shutil.copytree(generator_run, out)
    (out / "notes.txt").write_text("mine")
    args = ["train-generator", "-m", "stargan", *TINY_G[:-4], "--steps", "4", *DATA]
    invoke(*args, "--out", out, "--force")
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
