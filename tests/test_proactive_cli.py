"""`deepshield protect train | apply | detect` end to end on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from deepshield.cli import main
from deepshield.cli.app import app
from deepshield.data import register_source
from deepshield.data.splits import Splits, TensorSet
from deepshield.proactive.detector import load_detector
from deepshield.proactive.image_files import read_image
from deepshield.proactive.native import shrink
from deepshield.proactive.templates import TemplateSet
from test_proactive_train import crops


@register_source("proactive-test-crops", description="photo crops for the proactive CLI tests")
def _crops_source(arg: str | None, *, seed: int, n: int = 24, size: int = 16) -> Splits:
    """n crops as uint8, every fourth labelled fake (those must be ignored)."""
    x = (crops(n, size, seed) * 255).round().to(torch.uint8)
    y = torch.tensor([int(i % 4 == 3) for i in range(n)])
    parts = [TensorSet(x[i::3], y[i::3]) for i in range(3)]
    return Splits("proactive-test-crops", *parts)


TINY = {
    "dataset": "proactive-test-crops",
    "data_kwargs": {"n": 24, "size": 16},
    "n": 2,
    "width": 4,
    "depth": 2,
    "steps": 2,
    "batch_size": 4,
    "k": 3,
    "seen": ["sg", "blur"],
    "unseen": ["warm"],
    "generators": {
        "sg": {"arch": "stargan", "kwargs": {"conv_dim": 4, "n_res": 1}, "edits": ["hair"],
               "steps": 1, "batch_size": 2},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("protect")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = CliRunner().invoke(
        app, ["protect", "train", "-c", str(root / "tiny.yaml"), "--out", str(root / "run")]
    )
    assert result.exit_code == 0, result.output
    return root / "run"


def test_train_writes_the_run(trained: Path) -> None:
    for name in ("templates.safetensors", "templates.json", "detector.json", "passive.json",
                 "generators/sg.safetensors", "metrics.md", "report.html", "plots/examples.png"):  # fmt: skip
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["groups"] == {"seen": ["sg", "blur"], "unseen": ["warm"]}
    assert metrics["n_images"] == 6  # 8 test images, 2 of them fake
    assert set(metrics["proactive"]) == {
        "none",
        "jpeg90",
        "jpeg75",
        "jpeg50",
        "resize0.75",
        "resize0.5",
    }
    assert "| proactive | none |" in (trained / "metrics.md").read_text()


def test_train_refuses_another_config_in_the_same_folder(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**TINY, "n": 3}))
    result = CliRunner().invoke(
        app, ["protect", "train", "-c", str(tmp_path / "other.yaml"), "--out", str(trained)]
    )
    assert result.exit_code != 0 and "--force" in str(result.exception)


def test_apply_then_detect(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    images = (crops(3, 20, seed=5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(images):
        Image.fromarray(a).save(src / f"img{i}.{'png' if i else 'jpg'}")
    runner = CliRunner()
    result = runner.invoke(
        app, ["protect", "apply", str(src), "--run", str(trained), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert len(index) == 3
    templates = TemplateSet.load(trained / "templates")
    eps = templates.eps_max + 0.5 / 255  # 8-bit PNG rounding
    for dest, info in index.items():
        before, after = read_image(Path(info["source"])), read_image(Path(dest))
        assert after.shape == before.shape  # 20 x 20: the 16 x 16 template is enlarged
        assert (after - before).abs().max() <= eps + 1e-6
        assert 0 <= info["template"] < templates.n
    out_json = tmp_path / "scores.json"
    result = runner.invoke(
        app,
        [
            "protect",
            "detect",
            str(tmp_path / "out"),
            "--run",
            str(trained),
            "--json",
            str(out_json),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out_json.read_text())
    detector = load_detector(trained / "detector")
    for path, p in scores.items():
        small = shrink(read_image(Path(path))[None], templates.size)  # scored at 16 x 16
        expected = float(detector.p_manipulated(small, templates())[0])
        assert p == pytest.approx(expected, abs=1e-6) and 0 <= p <= 1
    lines = result.output.strip().splitlines()
    flagged = sum(p >= 0.5 for p in scores.values())
    assert len(lines) == 4 and lines[-1].startswith(f"{flagged} of 3 image(s) called manipulated")


def test_bad_inputs_exit_2_with_one_line(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((12, 30, 3), np.uint8)).save(small)
    cases = [
        (["protect", "detect", str(small), "--run", str(trained)], "small.png: image is 12x30, smaller"),
        (["protect", "apply", str(small), "--run", str(trained), "--out", str(tmp_path / "o")],
         "smaller than the 16x16 templates"),
        (["protect", "detect", str(bad), "--run", str(trained)], "broken.png: not a readable image"),
        (["protect", "detect", str(bad), "--run", str(tmp_path)], "no templates.json"),
        (["protect", "apply", str(tmp_path / "nope.png"), "--run", str(trained), "--out", str(tmp_path)],
         "no such file"),
    ]  # fmt: skip
    for argv, message in cases:
        monkeypatch.setattr("sys.argv", ["deepshield", *argv])
        with pytest.raises(SystemExit) as e:
            main()
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_read_image_converts_modes(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 128, np.uint8), mode="L").save(tmp_path / "grey.png")
    x = read_image(tmp_path / "grey.png")
    assert x.shape == (3, 5, 7) and torch.allclose(x, torch.full_like(x, 128 / 255))


def test_force_keeps_a_users_file_in_the_run_folder(trained: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "notes.txt").write_text("mine")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**TINY, "n": 3}))
    result = CliRunner().invoke(
        app, ["protect", "train", "-c", str(tmp_path / "other.yaml"), "--out", str(run), "--force"]
    )
    assert result.exit_code == 0, result.output
    assert (run / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((run / "config.yaml").read_text())["n"] == 3
