"""The run layer: a run folder owns only what it wrote (--force removes that and nothing else, a
folder of user files is refused), crash-consistent training and sweeps (kill -9, then resume:
the same weights, history and metrics as a run never interrupted), damaged run folders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepshield.config import TrainConfig
from deepshield.errors import ConfigError, RunError
from deepshield.predict import predict_logits
from deepshield.run import RunDir, check_name, data_options, open_run
from deepshield.train.trainer import Trainer, rng_state, set_rng_state
from test_trainer import cfg, toy_model, toy_splits

DEEPSHIELD = Path(sys.executable).parent / "deepshield"


def train_args(epochs: int = 6) -> list[str]:
    """A training run of a few seconds of work: a small CNN on 120 images of 16 px."""
    return ["train", "-d", "synthetic-faces:easy", "--data-arg", "n=120", "--data-arg", "size=16",
            "-m", "simplenet", "-e", str(epochs), "-b", "16", "--lr", "0.003"]  # fmt: skip


TRAIN = train_args()


def user_file(folder: Path, name: str = "notes.txt") -> Path:
    """A file of the user's own in `folder` (which it creates)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("case 42: my notes\n")
    return p


# -- ownership: open_run, --force, names ----------------------------------------------------------
def test_a_folder_of_user_files_is_refused_naming_them_and_left_unchanged(tmp_path: Path) -> None:
    notes = user_file(tmp_path / "case")
    (tmp_path / "case" / "config.yaml").write_text("mine: true\n")  # issue 23: demo deleted this
    before = sorted(p.name for p in (tmp_path / "case").iterdir())
    for force in (False, True):
        with pytest.raises(RunError, match="did not write") as e:
            open_run(tmp_path / "case", "train", TrainConfig(), force=force)
        assert "notes.txt" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == before
    assert notes.read_text() == "case 42: my notes\n"


def test_force_removes_only_what_the_run_wrote(tmp_path: Path) -> None:
    run, complete = open_run(tmp_path / "r", "train", TrainConfig(seed=1))
    assert not complete
    run.write_json("metrics.json", {"a": 1})
    run.add_section("s", "S", "<p>x</p>")
    run.set_done("train")
    notes = user_file(run.path)  # the user adds notes to a finished run
    in_plots = user_file(run.path / "plots", "keep.png")
    assert run.foreign() == ["notes.txt", "plots/keep.png"]
    _, complete = open_run(run.path, "train", TrainConfig(seed=1))
    assert complete  # same command, same config: finished, user files allowed
    with pytest.raises(RunError, match=r"seed differ.*--force"):
        open_run(run.path, "train", TrainConfig(seed=2))
    forced, complete = open_run(run.path, "train", TrainConfig(seed=2), force=True)
    assert not complete and not forced.exists("metrics.json") and not forced.exists("report.html")
    assert notes.is_file() and in_plots.is_file()
    assert forced.read_yaml("config.yaml")["seed"] == 2
    assert sorted(forced.manifest()["files"]) == ["config.yaml"]


def test_another_command_needs_force_and_a_bare_config_is_replaced(tmp_path: Path) -> None:
    open_run(tmp_path / "r", "train", TrainConfig(seed=1))  # killed before any work
    run, _ = open_run(tmp_path / "r", "train", TrainConfig(seed=3))  # nothing lost: replaced
    run.write_json("metrics.json", {})
    with pytest.raises(RunError, match="a `train` run"):
        open_run(tmp_path / "r", "defend detector", {"x": 1})


def test_a_run_written_before_a_setting_was_added_still_resumes(tmp_path: Path) -> None:
    """A config.yaml without settings the config class gained since (at their defaults) is the
    same config; a real difference still needs --force."""
    run, _ = open_run(tmp_path / "r", "train", TrainConfig(seed=1))
    run.write_json("metrics.json", {})
    run.set_done("train")
    older = run.read_yaml("config.yaml")
    for added in ("operating_point", "calibration", "augment"):
        older.pop(added, None)
    run.write_yaml("config.yaml", older)
    assert open_run(tmp_path / "r", "train", TrainConfig(seed=1))[1]  # complete, not refused
    with pytest.raises(RunError, match="seed differ"):
        open_run(tmp_path / "r", "train", TrainConfig(seed=2))


def test_a_damaged_manifest_is_named_and_nothing_is_removed(tmp_path: Path) -> None:
    run, _ = open_run(tmp_path / "r", "train", TrainConfig(seed=1))
    run.write_json("metrics.json", {})
    run.file("manifest.json").write_text('{"files": [')
    with pytest.raises(RunError, match=r"manifest\.json: damaged.*new folder"):
        open_run(tmp_path / "r", "train", TrainConfig(seed=2), force=True)
    assert run.exists("metrics.json") and run.exists("config.yaml")


def test_artifact_names_stay_inside_the_run(tmp_path: Path) -> None:
    assert check_name("pgd_8-255") == "pgd_8-255"
    for bad in ("../../../x", "a/b", "..", ".hidden", "", "a\\b"):
        with pytest.raises(ConfigError, match="plain name"):
            check_name(bad)
    run = RunDir.create(tmp_path / "r")
    for bad in ("../x.json", "/tmp/x.json", "plots/../../x"):
        with pytest.raises(RunError, match="inside the run folder"):
            run.write_json(bad, {})
    assert not (tmp_path / "x.json").exists()


def test_attack_keeps_a_users_file_and_marks_the_sweep_complete(trained, tmp_path) -> None:
    from deepshield.attacks.sweep import AttackSpec
    from deepshield.runs.attack_sweep import attack_run

    run = copy_of(trained, tmp_path / "r")
    notes = user_file(run)
    rec = attack_run(run, AttackSpec("fgsm", (0.0, 4 / 255)), n=8, name="u", data_kwargs={"n": 60})
    assert rec["data_kwargs"] == {"n": 60, "size": 16}  # merged over the run's, recorded
    assert RunDir(run).is_done("attack_u") and RunDir(run).foreign() == ["notes.txt"]
    assert notes.read_text() == "case 42: my notes\n"


def test_attack_out_outside_the_run_is_refused_before_any_work(tmp_path: Path) -> None:
    from deepshield.attacks.sweep import AttackSpec
    from deepshield.runs.attack_sweep import attack_run

    with pytest.raises(ConfigError, match=r"--out '\.\./\.\./\.\./x'"):
        attack_run(tmp_path / "no-run-needed", AttackSpec("fgsm", (0.0,)), name="../../../x")


def test_data_args_merge_over_what_the_run_recorded() -> None:
    assert data_options({"n": 200, "size": 32}, None, {"n": 300}) == {"n": 300, "size": 32}
    assert data_options({"n": 200, "size": 32}, "other", {"n": 300}) == {"n": 300}
    assert data_options({"n": 200}, None, None) == {"n": 200}


# -- crash consistency of the Trainer ------------------------------------------------------------
def test_rng_state_restores_torch_numpy_and_python() -> None:
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(5), random.seed(9)
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_last_pt_alone_resumes_a_run_whose_derived_files_were_lost(tmp_path: Path) -> None:
    """A kill between last.pt and history.json / best.safetensors: both are rebuilt from it."""
    full = RunDir.create(tmp_path / "full")
    Trainer(toy_model(), cfg(epochs=4), full).fit(toy_splits())
    run = RunDir.create(tmp_path / "cut")
    Trainer(toy_model(), cfg(epochs=2), run).fit(toy_splits())
    run.file("history.json").write_text('{"epochs": [')  # truncated
    run.file("best.safetensors").unlink()
    Trainer(toy_model(seed=7), cfg(epochs=4), run).fit(toy_splits())
    assert run.weights_sha256() == full.weights_sha256()
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h["epochs"]]  # noqa: E731
    assert strip(run.read_json("history.json")) == strip(full.read_json("history.json"))
    assert torch.load(run.file("last.pt"), weights_only=True)["epoch"] == 4


@pytest.mark.cuda
def test_resume_on_cuda_equals_uninterrupted(tmp_path: Path) -> None:
    """Dropout on CUDA draws from the device's generator: last.pt must restore it too."""
    dev = torch.device("cuda")
    full = RunDir.create(tmp_path / "full")
    torch.cuda.manual_seed_all(0)
    Trainer(toy_model().to(dev), cfg(epochs=4), full, device=dev).fit(toy_splits())
    run = RunDir.create(tmp_path / "cut")
    torch.cuda.manual_seed_all(0)
    Trainer(toy_model().to(dev), cfg(epochs=2), run, device=dev).fit(toy_splits())
    torch.cuda.manual_seed_all(123)  # a new process would start from another CUDA state
    Trainer(toy_model().to(dev), cfg(epochs=4), run, device=dev).fit(toy_splits())
    assert run.weights_sha256() == full.weights_sha256()
    assert "cuda" in torch.load(run.file("last.pt"), weights_only=True)["rng"]


def test_damaged_checkpoint_names_last_pt(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "r")
    Trainer(toy_model(), cfg(epochs=1), run).fit(toy_splits())
    run.file("last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"last\.pt: damaged"):
        Trainer(toy_model(), cfg(epochs=2), run).fit(toy_splits())


def test_predict_logits_restores_mixed_submodule_modes() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    model.train()
    model[2].eval()  # mixed: frozen statistics inside a training model
    model[0].weight.requires_grad_(False)
    predict_logits(model, torch.randn(8, 4))
    assert [m.training for m in model] == [True, True, False] and model.training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


# -- the installed script: damaged folders, kill -9 ----------------------------------------------
def deepshield(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `deepshield` script as a user does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(DEEPSHIELD), "-q", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# The files of a training run whose writes the kill tests watch (manifest.json is left out: it is
# rewritten several times within a millisecond, faster than a poll can count).
WATCHED = ("dataset.json", "last.pt", "best.safetensors", "history.json", "decision.json", "plots/roc.png",
           "sections/eval.html", "report.html", "metrics.json", "plots/history.png",
           "plots/samples.png", "sections/training.html")  # fmt: skip
Write = tuple[float, str, int]  # (s since the process started, file, its n-th write)
EVENTS: list[Write] = []  # the writes of the uninterrupted TRAIN


def launch(args: list) -> subprocess.Popen:
    return subprocess.Popen(
        [str(DEEPSHIELD), "-q", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def watch(
    proc: subprocess.Popen,
    out: Path,
    until: tuple[str, int] | None = None,
    files: tuple[str, ...] = WATCHED,
) -> list[Write]:
    """Poll `files` of `out` every 5 ms while `proc` runs; -> the writes seen, in order (files
    already there count from their next write). With `until` = (file, n): return as soon as
    that file's n-th write is seen."""
    t0, writes = time.perf_counter(), []
    last = {name: (stamp(out / name), 0) for name in files}
    while proc.poll() is None:
        for name in files:
            if (now := stamp(out / name)) is not None and last[name][0] != now:
                last[name] = (now, last[name][1] + 1)
                writes.append((time.perf_counter() - t0, name, last[name][1]))
                if until == (name, last[name][1]):
                    return writes
        time.sleep(0.005)
    return writes


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of TRAIN (the reference of the kill tests); its writes in EVENTS."""
    out = tmp_path_factory.mktemp("runs") / "full"
    proc = launch([*TRAIN, "--out", out])
    EVENTS[:] = watch(proc, out)
    assert proc.wait() == 0
    return out


def test_user_file_survives_train_force(trained: Path, tmp_path: Path) -> None:
    out = copy_of(trained, tmp_path / "r")
    notes = user_file(out)
    forced = deepshield(*train_args(epochs=2), "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert notes.read_text() == "case 42: my notes\n"
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 2
    assert RunDir(out).foreign() == ["notes.txt"]
    user_file(tmp_path / "user")  # a folder of the user's
    refused = deepshield(*TRAIN, "--out", tmp_path / "user", "--force")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr + refused.stdout
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["notes.txt"]


def test_demo_never_forces_a_folder_the_user_named(tmp_path: Path) -> None:
    out = tmp_path / "case-42"
    notes = user_file(out)
    (out / "config.yaml").write_text("my: own config\n")
    result = deepshield("demo", "--out", out, timeout=120)
    assert result.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"]
    assert notes.read_text() == "case 42: my notes\n"


def copy_of(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda r: (r / "config.yaml").write_text("model: [simplenet\n"), "config.yaml"),
        (lambda r: (r / "model.json").write_text('["simplenet", 2]'), "model.json"),
        (lambda r: (r / "model.json").write_text('{"name": "simp'), "model.json"),
    ],
    ids=["config-not-yaml", "model-json-list", "model-json-truncated"],
)
def test_damaged_run_folders_exit_2_naming_the_file(
    trained, tmp_path, damage, named, monkeypatch, capsys
) -> None:
    from deepshield.cli import main

    run = copy_of(trained, tmp_path / "r")
    damage(run)
    for args in (
        ["evaluate", run],
        ["explain", run, "--n", "2"],
        ["attack", run, "--eps", "0", "--n", "4"],
    ):
        monkeypatch.setattr(sys, "argv", ["deepshield", "-q", *map(str, args)])
        with pytest.raises(SystemExit) as code:
            main()
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2, (args, err)
        assert named in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_attack_out_path_exits_2_and_writes_nothing_outside(trained, tmp_path, monkeypatch, capsys):
    from deepshield.cli import main

    run = copy_of(trained, tmp_path / "deep" / "er" / "r")
    before = sorted(p.name for p in run.iterdir())
    monkeypatch.setattr(sys, "argv", ["deepshield", "-q", "attack", str(run), "--eps", "0",
                                      "--n", "4", "--out", "../../../x"])  # fmt: skip
    with pytest.raises(SystemExit) as code:
        main()
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and "plain name" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in run.iterdir()) == before
    assert not list(tmp_path.rglob("attack_*x*"))


def test_evaluate_merges_data_args_over_the_run_and_records_them(trained, tmp_path, monkeypatch):
    from deepshield.cli import main

    run = copy_of(trained, tmp_path / "r")
    monkeypatch.setattr(sys, "argv", ["deepshield", "-q", "evaluate", str(run), "--split", "val",
                                      "--data-arg", "n=60"])  # fmt: skip
    main()  # returns: exit code 0
    (evaluated,) = run.glob("eval_*.json")
    assert json.loads(evaluated.read_text())["data_kwargs"] == {"n": 60, "size": 16}
    assert RunDir(run).foreign() == []


def strip_times(history: dict) -> dict:
    return {
        **history,
        "epochs": [{k: v for k, v in r.items() if k != "time_s"} for r in history["epochs"]],
    }


def kill_after(
    args: list, delay: float, write: tuple[str, int] | None = None, folder: Path | None = None
) -> str:
    """Start `deepshield ARGS`, kill -9 it `delay` s after it started, or after the given write
    (file, n-th write by this process, in `folder`, default --out); "killed", or "finished" when
    it ended first."""
    proc = launch(args)
    if write is not None:
        folder = folder or Path(args[args.index("--out") + 1])
        watch(proc, folder, until=write, files=(write[0],))
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "killed" if killed else "finished"


def kill_points(n: int, seed: int, events: list[Write] = EVENTS) -> list[tuple[str, int, float]]:
    """n random points of an uninterrupted run: (file, n-th write, s after it), the delay
    uniform up to the run's next write, so every gap between two writes can be hit."""
    rng = random.Random(seed)
    points = []
    for _ in range(n):
        k = rng.randrange(len(events) - 1)
        (t, name, nth), after = events[k], events[k + 1][0]
        points.append((name, nth, rng.uniform(0, after - t)))
    return points


def killed_and_resumed(out: Path, point: tuple[str, int, float]) -> str:
    """A fresh TRAIN into `out` killed at `point`, then resumed to its end; -> a table row."""
    name, nth, delay = point
    met = kill_after([*TRAIN, "--out", out], delay, write=(name, nth))
    row = f"| {name} #{nth} | {delay:.3f} | {met} | {progress(out)} |"
    done = deepshield(*TRAIN, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return row


def progress(out: Path) -> str:
    """How far a killed training run got: no checkpoint, k epochs, or complete."""
    if RunDir(out).is_done("train"):
        return "complete"
    if not (out / "last.pt").is_file():
        return "no checkpoint"
    return f"epoch {torch.load(out / 'last.pt', weights_only=True)['epoch']}"


def assert_same_training(out: Path, reference: Path | None) -> None:
    """A complete run with every artifact (and, given a reference, its digest and numbers)."""
    run = RunDir(out)
    assert run.is_done("train")
    for name in ("report.html", "plots/history.png", "plots/roc.png", "dataset.json"):
        assert run.file(name).is_file(), name
    assert run.foreign() == []
    if reference is None:
        return
    ref = RunDir(reference)
    assert run.weights_sha256() == ref.weights_sha256()
    assert strip_times(run.read_json("history.json")) == strip_times(ref.read_json("history.json"))
    assert run.read_json("metrics.json") == ref.read_json("metrics.json")
    assert run.read_json("decision.json") == ref.read_json("decision.json")


TABLE = (
    "\n| killed after the write of | + s | process | last.pt after the kill |\n|---|---|---|---|"
)


def test_kill_9_at_3_points_then_resume_equals_uninterrupted(trained: Path, tmp_path: Path) -> None:
    print(TABLE)
    for i, point in enumerate(kill_points(3, seed=0)):
        print(killed_and_resumed(tmp_path / f"r{i}", point), flush=True)
        assert_same_training(tmp_path / f"r{i}", trained)


@pytest.mark.slow
def test_kill_9_at_20_points_then_resume_equals_uninterrupted(
    trained: Path, tmp_path: Path
) -> None:
    print(TABLE)
    for i, point in enumerate(kill_points(20, seed=1)):
        print(killed_and_resumed(tmp_path / f"r{i}", point), flush=True)
        assert_same_training(tmp_path / f"r{i}", trained)
        shutil.rmtree(tmp_path / f"r{i}")


ATTACK = ["attack", "--attack", "pgd", "--eps", "0,4/255,8/255", "--steps", "5", "--n", "40",
          "--batch-size", "8", "--out", "k"]  # fmt: skip


def sweep_record(run: Path) -> dict:
    """attack_k.json without what names the folder or the wall time."""
    rec = json.loads((run / "attack_k.json").read_text())
    return {k: v for k, v in rec.items() if k not in ("run", "command", "seconds")}


SWEEP_FILES = ("attack_k.json", "plots/attack_k.png", "plots/attack_k_grid.png",
               "attack_k_grid.safetensors", "sections/attack_k.html", "report.html")  # fmt: skip


def test_attack_sweep_killed_then_rerun_equals_uninterrupted(trained: Path, tmp_path: Path) -> None:
    """kill -9 during `deepshield attack` (while attacking, and between its writes): re-running
    it completes the sweep (final marker set after every artifact) with the record of a sweep
    never interrupted; a user file survives."""
    ref = copy_of(trained, tmp_path / "ref")
    proc = launch([ATTACK[0], ref, *ATTACK[1:]])
    events = watch(proc, ref, files=SWEEP_FILES)
    assert proc.wait() == 0 and RunDir(ref).is_done("attack_k")
    run = copy_of(trained, tmp_path / "cut")
    notes = user_file(run)
    args = [ATTACK[0], run, *ATTACK[1:]]
    print("\n| killed after | + s | process | complete after the kill |\n|---|---|---|---|")
    points = [("(start)", 0, 0.6 * events[0][0]), *kill_points(2, seed=2, events=events)]
    for name, nth, delay in points:
        write = None if nth == 0 else (name, nth)
        met = kill_after(args, delay, write, folder=run)
        print(f"| {name} #{nth} | {delay:.3f} | {met} | {RunDir(run).is_done('attack_k')} |")
        if RunDir(run).is_done("attack_k"):
            assert sweep_record(run) == sweep_record(ref)
        assert deepshield(*args).returncode == 0
        assert RunDir(run).is_done("attack_k") and sweep_record(run) == sweep_record(ref)
    for name in ("plots/attack_k.png", "plots/attack_k_grid.png", "attack_k_grid.safetensors"):
        assert (run / name).is_file(), name
    assert "Attack k" in (run / "report.html").read_text()
    assert notes.read_text() == "case 42: my notes\n" and RunDir(run).foreign() == ["notes.txt"]


def test_one_report_builds_report_html_once_with_every_section(tmp_path, monkeypatch):
    import deepshield.report.html as report_html
    from deepshield.run import one_report

    run, _ = open_run(tmp_path / "r", "train", TrainConfig(seed=1))
    builds = []
    real = report_html.build_report
    monkeypatch.setattr(report_html, "build_report", lambda f: builds.append(f) or real(f))
    with pytest.raises(RuntimeError), one_report(run.path):
        run.add_section("a", "First", "<p>alpha</p>")
        run.add_section("b", "Second", "<p>beta</p>")
        assert builds == [] and not run.file("report.html").exists()
        raise RuntimeError("a step failed")  # the report is still built, once
    assert len(builds) == 1
    page = run.file("report.html").read_text()
    assert (
        "alpha" in page
        and "beta" in page
        and "report.html" in json.loads(run.file("manifest.json").read_text())["files"]
    )
    run.add_section("c", "Third", "<p>gamma</p>")  # outside: rebuilt at once again
    assert len(builds) == 2 and "gamma" in run.file("report.html").read_text()


# -- studies on the run layer -------------------------------------------------------------------
STUDY_YAML = {
    "name": "killed",
    "data": {"dataset": "synthetic-faces:easy", "data_kwargs": {"n": 140, "size": 32}},
    "models": [
        {"name": "a", "train": {"model": "mlp3", "epochs": 2, "batch_size": 35}},
        {"name": "b", "train": {"model": "simplenet", "epochs": 1, "batch_size": 35}},
    ],
    "attacks": [
        {"attack": "fgsm", "eps": [0, "4/255"], "label": "fgsm_wb"},
        {"attack": "pgd", "eps": [0, "8/255"], "steps": 3, "surrogate": "a", "n": 20},
    ],
}
STUDY_FILES = ("a/last.pt", "a/metrics.json", "b/last.pt", "b/metrics.json",
               "a/attack_fgsm_wb.json", "b/attack_fgsm_wb.json", "summary.json", "summary.md")  # fmt: skip


def study_records(out: Path) -> list[dict]:
    """summary.json without wall times and folder names."""
    drop = ("run", "seconds", "command", "surrogate")
    return [
        {k: v for k, v in r.items() if k not in drop}
        for r in json.loads((out / "summary.json").read_text())
    ]


def test_study_refuses_a_users_folder_and_another_study_without_force(tmp_path: Path) -> None:
    import yaml

    from deepshield.studies import load_study, run_study

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY_YAML, "attacks": STUDY_YAML["attacks"][:1]}))
    study = load_study(path)
    user = tmp_path / "case"
    notes = user_file(user)
    with pytest.raises(RunError, match=r"notes\.txt"):
        run_study(study, user, log=lambda s: None)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and notes.is_file()
    other = study.model_copy(update={"seed": 1})
    out = tmp_path / "out"
    earlier, _ = open_run(out, "study", other)  # an earlier study there, with a summary
    earlier.write_json("summary.json", [])
    with pytest.raises(RunError, match="--force"):
        run_study(study, out, log=lambda s: None)


def test_study_killed_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    """kill -9 during `deepshield study` (while training its models, between sweeps): the rerun
    finishes with the summary of a study never interrupted and sets the final marker last."""
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STUDY_YAML))
    ref = tmp_path / "ref"
    proc = launch(["study", path, "--out", ref])
    events = watch(proc, ref, files=STUDY_FILES)
    assert proc.wait() == 0 and RunDir(ref).is_done("study")
    print("\n| killed after | + s | process | complete after the kill |\n|---|---|---|---|")
    for i, (name, nth, delay) in enumerate(kill_points(2, seed=3, events=events)):
        out = tmp_path / f"cut{i}"
        met = kill_after(["study", path, "--out", out], delay, (name, nth), folder=out)
        print(f"| {name} #{nth} | {delay:.3f} | {met} | {RunDir(out).is_done('study')} |")
        done = deepshield("study", path, "--out", out)
        assert done.returncode == 0, done.stderr[-2000:]
        assert RunDir(out).is_done("study") and study_records(out) == study_records(ref)
        assert RunDir(out).foreign() == []


def test_a_run_of_another_command_is_refused_without_listing_unrelated_settings(tmp_path):
    """`scan --out RUN` on a train run listed every train setting as 'differing' from the scan's
    (26 names); now it says what --force would delete, and --force deletes only the run's files."""
    run, _ = open_run(tmp_path / "r", "train", {"epochs": 3, "lr": 0.1})
    run.write_json("model.json", {"name": "x", "num_classes": 2})
    (tmp_path / "r" / "mine.txt").write_text("a note of the user")
    with pytest.raises(RunError) as e:
        open_run(tmp_path / "r", "scan", {"frames": 8})
    assert "holds a `train` run (its files would be deleted); use another --out" in str(e.value)
    assert "differ" not in str(e.value) and (tmp_path / "r" / "model.json").is_file()
    scan, _ = open_run(tmp_path / "r", "scan", {"frames": 8}, force=True)
    scan.write_json("scan.json", {"status": "running"})
    assert not (tmp_path / "r" / "model.json").exists() and (tmp_path / "r" / "mine.txt").exists()
    with pytest.raises(RunError, match=r"a run with another config \(frames differ\)"):
        open_run(tmp_path / "r", "scan", {"frames": 16})
