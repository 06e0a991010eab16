"""`deepshield attack` and `deepshield study`: files written, numbers equal the library's, transfer
through --surrogate, bad input exits 2 with one line before any work, the study schema."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deepshield.attacks.sweep import AttackSpec, attack_sweep
from deepshield.errors import ConfigError
from deepshield.runs.attack_sweep import load_attack_data, run_config
from deepshield.studies import load_study, run_study
from test_sweep import tiny_detector, trained_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """The trained detector of test_sweep (the same folder: trained once per session)."""
    return trained_tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny(tiny_run):
    return tiny_detector(tiny_run)


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run `deepshield ARGS` in this process; its exit code (0 when it returns)."""
    from deepshield.cli import main

    monkeypatch.setattr(sys, "argv", ["deepshield", "-q", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_attack_command_writes_results_equal_to_the_library(tiny_run, tiny, monkeypatch, capsys):
    code = cli(monkeypatch, "attack", tiny_run.path, "--eps", "0,2/255,8/255", "--steps", "3",
               "--n", "20", "--batch-size", "8", "--out", "cli")  # fmt: skip
    assert code == 0
    rec = json.loads(tiny_run.file("attack_cli.json").read_text())
    model = tiny[0]
    drawn = load_attack_data(run_config(tiny_run), n=20, seed=0)  # the --n draw: stratified
    ref = attack_sweep(model, drawn.x, drawn.y, AttackSpec("pgd", (0, 2 / 255, 8 / 255), steps=3),
                       batch_size=8)  # fmt: skip
    got = [{k: r[k] for k in want} for r, want in zip(rec["rows"], ref.rows(), strict=True)]
    assert got == json.loads(json.dumps(ref.rows()))
    assert rec["n"] == 20 and rec["detector"] and rec["surrogate"] is None
    assert rec["subset"] == drawn.subset and "class-stratified" in rec["subset"]
    assert rec["clean"]["accuracy"] == rec["rows"][0]["accuracy"]
    for f in ("plots/attack_cli.png", "plots/attack_cli_grid.png", "attack_cli_grid.safetensors"):
        assert tiny_run.exists(f), f
    html = tiny_run.file("report.html").read_text()
    assert "Attack cli: pgd linf, white-box" in html
    assert "deepshield attack" in html  # the reproducing command
    out = capsys.readouterr().out
    assert sum(line.startswith("eps ") for line in out.splitlines()) == 3
    assert "attack_cli.json" in out and "balanced accuracy" in out


def test_surrogate_that_is_the_target_gives_white_box_numbers(tiny_run, monkeypatch):
    args = ["attack", tiny_run.path, "--attack", "fgsm", "--eps", "0,4/255", "--n", "16"]
    assert cli(monkeypatch, *args, "--out", "wb") == 0
    assert cli(monkeypatch, *args, "--surrogate", tiny_run.path, "--out", "tr") == 0
    wb, tr = (json.loads(tiny_run.file(f"attack_{k}.json").read_text()) for k in ("wb", "tr"))
    assert tr["surrogate"]["run"] == str(tiny_run.path)
    for a, b in zip(wb["rows"], tr["rows"], strict=True):
        assert b.pop("surrogate_accuracy") == a["accuracy"]
        assert a == b


def test_default_result_name_says_what_ran(tiny_run, monkeypatch):
    args = ["attack", tiny_run.path, "--attack", "fgsm", "--eps", "0,1/255", "--n", "4"]
    assert cli(monkeypatch, *args, "--mask", "center:8", "--split", "val") == 0
    assert tiny_run.exists("attack_fgsm_center8_val.json")


def test_a_sweep_of_other_settings_is_not_replaced_without_force(tiny_run, monkeypatch, capsys):
    args = ["attack", tiny_run.path, "--attack", "fgsm", "--n", "8", "--out", "keep"]
    assert cli(monkeypatch, *args, "--eps", "0,4/255") == 0
    first = tiny_run.file("attack_keep.json").read_bytes()
    capsys.readouterr()
    assert cli(monkeypatch, *args, "--eps", "0,8/255") == 2  # other budgets: refused
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "attack_keep.json holds a fgsm sweep with other eps" in err
    )
    assert "--out NAME to keep both, or --force" in err
    assert tiny_run.file("attack_keep.json").read_bytes() == first  # untouched
    assert cli(monkeypatch, *args, "--eps", "0,4/255") == 0  # the same settings: redone
    assert cli(monkeypatch, *args, "--eps", "0,8/255", "--force") == 0
    assert json.loads(tiny_run.file("attack_keep.json").read_text())["eps"] == [0.0, 8 / 255]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eps", "0,-0.1"], "'--eps': -0.1 is below 0"),
        (["--eps", "0,abc"], "'--eps': cannot read 'abc'"),
        (["--eps", "0,2"], "--eps 2: an L-inf budget on [0, 1] pixels lies in [0, 1]"),
        (["--steps", "0"], "'--steps': Input should be greater than or equal to 1"),
        (["--restarts", "0"], "'--restarts'"),
        (["--norm", "l3"], "'l3' is not one of linf, l2"),
        (["--attack", "foo"], "unknown attack 'foo'"),
        (["--mask", "blob"], "'blob': use full, center:SIZE or patch:SIZE"),
        (
            ["--mask", "center:0"],
            "'center:0': SIZE is the square's side in pixels, an integer >= 1",
        ),
        (["--mask", "center:64"], "patch size 64 does not fit a 32x32 image"),
        (["--n", "0"], "'--n': Input should be greater than or equal to 1"),
        (["--batch-size", "0"], "'--batch-size'"),
        (["--split", "dev"], "'dev' is not one of train, val, test"),
        (["--surrogate", "/nonexistent/run"], "/nonexistent/run: no such run folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_any_attack(
    tiny_run, monkeypatch, capsys, args, words
):
    import deepshield.runs.attack_sweep as sweep_run

    def no_attack(*a, **k):
        raise AssertionError("attacked despite bad input")

    monkeypatch.setattr(sweep_run, "transfer_sweep", no_attack)
    if "--mask" not in args or args[1] != "center:64":  # the mask size needs the images

        def no_data(*a, **k):
            raise AssertionError("loaded data despite bad input")

        monkeypatch.setattr(sweep_run.data, "load", no_data)
    assert cli(monkeypatch, "attack", tiny_run.path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err, err


def test_missing_run_folder_exits_2(tmp_path, monkeypatch, capsys):
    assert cli(monkeypatch, "attack", tmp_path / "nothing") == 2
    assert "no such run folder" in capsys.readouterr().err


# -- studies -----------------------------------------------------------------------------------
STUDY = {
    "name": "tiny",
    "data": {"dataset": "synthetic-faces:easy", "data_kwargs": {"n": 200, "size": 32}},
    "models": [
        {"name": "mlp", "train": {"model": "mlp3", "epochs": 1, "batch_size": 35}},
        {"name": "cnn", "run": "RUN"},
    ],
    "attacks": [
        {"attack": "fgsm", "eps": [0, "4/255"], "label": "fgsm_wb"},
        {"attack": "pgd", "eps": [0, "8/255"], "steps": 2, "surrogate": "mlp", "n": 10},
    ],
}


def study_dict(**changes) -> dict:
    return {**json.loads(json.dumps(STUDY)), **changes}


def test_study_schema_accepts_and_fills_the_training_data(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_dict()))
    study = load_study(path)
    train = study.models[0].train
    assert train.dataset == "synthetic-faces:easy" and train.data_kwargs == {"n": 200, "size": 32}
    assert train.device == "cpu" and train.seed == 0
    assert study.attacks[0].eps == [0.0, 4 / 255]
    assert study.targets(study.attacks[0]) == ["mlp", "cnn"]
    assert study.targets(study.attacks[1]) == ["cnn"]  # every model but the surrogate


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
        ({"data": None}, "data: Input should be a valid dictionary"),
        ({"models": []}, "models: List should have at least 1 item"),
        ({"models": [{"name": "a", "train": {"model": "mlp3"}, "run": "x"}]}, "exactly one of"),
        ({"models": [{"name": "a/b", "run": "x"}]}, "models.0.name: String should match"),
        ({"models": [{"name": "a", "train": {"lr": -1}}]}, "models.0.train.lr: Input should be"),
        ({"attacks": [{"attack": "fgsm", "eps": [-1]}]}, "eps=-1.0 must be >= 0"),
        ({"attacks": [{"attack": "fgsm", "eps": ["8/0"]}]}, "write numbers such as 0.03"),
        ({"attacks": [{"attack": "nope", "eps": [0]}]}, "unknown attack 'nope'"),
        ({"attacks": [{"attack": "pgd", "eps": [0], "steps": 0}]}, "steps=0"),
        ({"attacks": [{"attack": "pgd", "eps": [0], "mask": "x:1"}]}, "mask 'x:1'"),
        ({"attacks": [{"attack": "pgd", "eps": [0], "targets": ["zz"]}]}, "'zz' is not a model"),
        ({"attacks": [{"attack": "pgd", "eps": [0], "surrogate": "zz"}]}, "'zz' is not a model"),
        ({"attacks": [{"attack": "pgd", "eps": [0], "targets": []}]}, "targets is empty"),
        ({"models": [{"name": "a", "run": "x"}, {"name": "a", "run": "y"}]}, "repeat"),
    ],
)
def test_study_schema_rejects_bad_configs_in_one_line(tmp_path, change, words):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study_dict(**change)))
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert str(e.value).startswith(str(path)) and words in str(e.value)
    assert "\n" not in str(e.value)


def test_study_trains_attacks_summarises_and_resumes(tiny_run, tmp_path):
    run = tmp_path / "cnn"
    shutil.copytree(tiny_run.path, run)
    path = tmp_path / "s.yaml"
    models = [STUDY["models"][0], {"name": "cnn", "run": str(run)}]
    attacks = json.loads(json.dumps(STUDY["attacks"]))
    attacks[1]["targets"] = ["mlp", "cnn"]  # the surrogate itself first: its row is white-box
    path.write_text(yaml.safe_dump(study_dict(models=models, attacks=attacks)))
    study = load_study(path)
    logs: list[str] = []
    records = run_study(study, tmp_path / "out", log=logs.append)
    assert (tmp_path / "out" / "mlp" / "best.safetensors").is_file()  # trained by the study
    assert [(r["name"], Path(r["run"]).name) for r in records] == [
        ("fgsm_wb", "mlp"),
        ("fgsm_wb", "cnn"),
        ("pgd_from_mlp", "mlp"),
        ("pgd_from_mlp", "cnn"),
    ]
    assert records[2]["surrogate"] is None  # crafted on itself
    transfer = records[3]
    assert transfer["surrogate"]["model"] == "mlp" and transfer["n"] == 10
    wb = json.loads((run / "attack_fgsm_wb.json").read_text())
    assert wb["rows"] == records[1]["rows"] and wb["study"] == "tiny"
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## pgd_from_mlp" in md and "transfer: crafted on mlp" in md
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())) == 4
    logs.clear()
    again = run_study(study, tmp_path / "out", log=logs.append)
    assert sum("kept earlier results" in line for line in logs) == 2
    assert [r["rows"] for r in again] == [r["rows"] for r in records]


def test_study_refuses_a_run_trained_on_other_data(tiny_run, tmp_path):
    path = tmp_path / "s.yaml"
    data = {"dataset": "synthetic-faces:easy", "data_kwargs": {"n": 300, "size": 32}}
    models = [{"name": "cnn", "run": str(tiny_run.path)}]
    attacks = [{"attack": "fgsm", "eps": [0]}]
    path.write_text(yaml.safe_dump(study_dict(data=data, models=models, attacks=attacks)))
    with pytest.raises(ConfigError, match="model cnn was trained on"):
        run_study(load_study(path), tmp_path / "out", log=lambda s: None)


@pytest.mark.slow  # three processes importing torch under torchrun
@pytest.mark.timeout(300)
def test_torchrun_attack_equals_one_process(tiny_run, tmp_path, monkeypatch):
    from test_distributed import torchrun

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    args = ["--eps", "0,4/255", "--steps", "2", "--batch-size", "7", "--mask", "patch:6"]
    res = torchrun(tmp_path, "attack", str(run), *args, "--out", "ddp")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("wrote") == 1
    assert cli(monkeypatch, "attack", run, *args, "--out", "one") == 0
    ddp, one = (json.loads((run / f"attack_{k}.json").read_text()) for k in ("ddp", "one"))
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    assert ddp["rows"] == one["rows"]
    grids = [load_file(str(run / f"attack_{k}_grid.safetensors")) for k in ("ddp", "one")]
    assert torch.equal(grids[0]["adversarial"], grids[1]["adversarial"])
