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
