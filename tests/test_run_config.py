"""Run folders, atomic files and config validation."""

from __future__ import annotations

import json
import math

import pytest

from deepshield.config import TrainConfig, dump_config, load_config
from deepshield.errors import ConfigError, RunError
from deepshield.files import write_json
from deepshield.run import RunDir


def test_write_json_is_atomic_and_maps_nonfinite_to_null(tmp_path):
    p = write_json(tmp_path / "a" / "m.json", {"x": 1.5, "nan": math.nan, "inf": math.inf})
    assert json.loads(p.read_text()) == {"x": 1.5, "nan": None, "inf": None}
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]  # no temp files left


def test_failed_write_keeps_the_previous_file(tmp_path):
    p = write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(TypeError):
        write_json(p, {"v": object()})
    assert json.loads(p.read_text()) == {"v": 1}
    assert len(list(tmp_path.iterdir())) == 1


def test_config_round_trip(tmp_path):
    cfg = TrainConfig(dataset="cifar10:/x", model="mlp3", lr=0.01, optimizer="sgd", seed=3)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("lr: -1\n", "lr: Input should be greater than 0"),
        ("epochs: two\n", "epochs"),
        ("learning_rate: 0.1\n", "learning_rate: Extra inputs are not permitted"),
        ("lr: [1\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_field(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(path)
    assert "bad.yaml" in str(e.value) and "\n" not in str(e.value)


def test_open_rejects_missing_and_non_run_folders(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        RunDir.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a deepshield run"):
        RunDir.open(tmp_path / "empty")


def test_report_collects_sections_in_order(tmp_path):
    run = RunDir.create(tmp_path / "r")
    run.add_section("b", "Second", "<p>two</p>", order=20)
    run.add_section("a", "First", "<p>one</p>", order=10)
    html = run.file("report.html").read_text()
    assert html.index("First") < html.index("Second")
    run.add_section("a", "First again", "<p>uno</p>", order=10)  # replaced, not duplicated
    html = run.file("report.html").read_text()
    assert "First again" in html and "<p>one</p>" not in html


def test_config_with_flags_keeps_zero_flags_and_merges_nested_options(tmp_path) -> None:
    """The one "config file plus flags" rule: flags that are not None win (0 is a value),
    nested KEY=VALUE options merge over the file's, everything else comes from the file."""
    from deepshield.config import TrainConfig, config_with_flags

    path = tmp_path / "c.yaml"
    path.write_text(
        "seed: 5\nlr: 0.01\ndata_kwargs: {n: 300, size: 32}\nmodel_kwargs: {width: 8}\n"
    )
    cfg = config_with_flags(
        TrainConfig, path, {"seed": 0, "lr": None, "epochs": 2}, {"data_kwargs": {"n": 50}}
    )
    assert (cfg.seed, cfg.lr, cfg.epochs) == (0, 0.01, 2)
    assert cfg.data_kwargs == {"n": 50, "size": 32} and cfg.model_kwargs == {"width": 8}
    plain = config_with_flags(TrainConfig, None, {"lr": None}, {"data_kwargs": None})
    assert plain == TrainConfig()
