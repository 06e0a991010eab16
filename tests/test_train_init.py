"""`deepshield train --init`: fine-tuning starts from the named weights, and says so when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from deepshield.cli import app
from deepshield.data import register_source
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, ModelError
from deepshield.runs.training import init_weights_path


@register_source("init-test-blobs", description="noise images, fakes brighter (--init tests)")
def _blobs(arg: str | None, *, seed: int, n: int = 48) -> Splits:
    """[n,3,16,16] uint8 noise; label 1 = brighter by 60 grey levels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 16, 16, generator=g) * 150 + 60 * y[:, None, None, None]).to(torch.uint8)
    return Splits("init-test-blobs", *(TensorSet(x[i::3], y[i::3]) for i in range(3)))


@register_source("init-test-only", description="noise images, all in the test split")
def _test_only(arg: str | None, *, seed: int) -> Splits:
    """init-test-blobs with every sample in test (as video-folder with split=test)."""
    full = _blobs(arg, seed=seed, n=24)
    parts = [full.split(s) for s in ("train", "val", "test")]
    x, y = torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts])
    return Splits(
        "init-test-only", TensorSet(x[:0], y[:0]), TensorSet(x[:0], y[:0]), TensorSet(x, y)
    )


def train(*args: object) -> object:
    base = ["train", "-d", "init-test-blobs", "-m", "simplenet", "-b", "8", "-e", "1"]
    return CliRunner().invoke(app, base + [str(a) for a in args])


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The run's best weights without batch-norm statistics (those move in any forward)."""
    sd = load_file(str(run / "best.safetensors"))
    return {k: v for k, v in sd.items() if "running" not in k and "num_batches" not in k}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "base"
    result = train("--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_fine_tune_starts_from_the_named_run(base_run: Path, tmp_path: Path) -> None:
    still = ["-o", "SGD", "--lr", "1e-12"]  # a learning rate too small to move any weight
    for name, extra in (("tuned", ["--init", base_run]), ("scratch", [])):
        result = train(*still, *extra, "--out", tmp_path / name)
        assert result.exit_code == 0, (result.output, result.exception)
    base, tuned, scratch = (
        weights(p) for p in (base_run, tmp_path / "tuned", tmp_path / "scratch")
    )
    for k, v in base.items():
        torch.testing.assert_close(tuned[k], v, rtol=0, atol=1e-6)
    assert any(not torch.allclose(scratch[k], v, atol=1e-4) for k, v in base.items())
    assert f"init: {base_run}" in (tmp_path / "tuned" / "config.yaml").read_text()


def test_init_accepts_a_weights_file_or_a_run_folder(base_run: Path, tmp_path: Path) -> None:
    file = base_run / "best.safetensors"
    assert init_weights_path(base_run) == file and init_weights_path(file) == file
    with pytest.raises(ConfigError, match="--init weights not found"):
        init_weights_path(tmp_path / "nothing.pth")
    with pytest.raises(ConfigError, match=r"without best\.safetensors"):
        init_weights_path(tmp_path)


def test_weights_of_another_architecture_are_refused_naming_the_file(
    base_run: Path, tmp_path: Path
) -> None:
    result = train("-m", "mlp3", "--init", base_run, "--out", tmp_path / "r")
    assert isinstance(result.exception, ModelError)
    assert str(base_run / "best.safetensors") in str(result.exception)
    assert "do not fit" in str(result.exception)


def test_zero_epochs_keep_the_init_weights_bit_for_bit_and_score_them(
    base_run: Path, tmp_path: Path
) -> None:
    """-e 0 --init: every tensor of best.safetensors (batch-norm statistics too, which a
    training epoch at any learning rate would move) equals the init's; the test metrics are
    those of the base run's model on the same split; a decision is fitted on validation."""
    import json

    from deepshield.run import RunDir
    from deepshield.runs.evaluation import evaluate_model

    out = tmp_path / "as-is"
    result = train("--init", base_run, "-e", "0", "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    got, want = (
        load_file(str(out / "best.safetensors")),
        load_file(str(base_run / "best.safetensors")),
    )
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 0
    from deepshield import data

    test = data.load("init-test-blobs", seed=0).split("test")
    expected, _ = evaluate_model(RunDir.open(base_run).load_model("best"), test, 2)
    assert metrics["test"]["auc"] == pytest.approx(expected["auc"], abs=1e-12)
    assert metrics["test"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert (out / "decision.json").is_file() and "0: the weights of" in (
        out / "report.html"
    ).read_text()
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [0] and history["epochs"][0]["train"] is None


def test_zero_epochs_score_a_set_that_is_all_test_data(base_run: Path, tmp_path: Path) -> None:
    """No train or validation split (e.g. a video folder with split=test): -e 1 is refused
    before anything is written, -e 0 scores the weights (no decision: nothing to fit it on)."""
    import json

    from deepshield.errors import DataError

    result = train("-d", "init-test-only", "--init", base_run, "--out", tmp_path / "r1")
    assert isinstance(result.exception, DataError) and not (tmp_path / "r1").exists()
    result = train("-d", "init-test-only", "--init", base_run, "-e", "0", "--out", tmp_path / "r0")
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((tmp_path / "r0" / "metrics.json").read_text())
    assert metrics["test"]["n"] == 24 and metrics["val_acc_at_best"] is None
    assert "decision_skipped" in metrics and not (tmp_path / "r0" / "decision.json").exists()


def test_zero_epochs_without_init_are_one_line_errors(tmp_path: Path) -> None:
    result = train("-e", "0", "--out", tmp_path / "r")
    assert isinstance(result.exception, ConfigError) and "give init" in str(result.exception)
    assert not (tmp_path / "r").exists()
    result = train("-e", "-1", "--out", tmp_path / "r")
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
