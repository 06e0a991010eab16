"""Distributed (torchrun / DDP) training and sharded evaluation: 2 CPU processes on gloo equal
one process, count every sample once, write only from rank 0, resume exactly, fail clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError, TrainingError
from deepshield.predict import loader
from deepshield.runs.evaluation import evaluate_model
from deepshield.train import Trainer, distributed
from deepshield.train.trainer import unwrap

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
WORLD = 2


# -- toy data and models (no dropout: ranks and a single process draw no different masks) ---------
def blobs(n: int, seed: int) -> TensorSet:
    """Two Gaussian blobs in 8-D; label 1 = shifted mean."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    return TensorSet(torch.randn(n, 8, generator=g) + 1.2 * y[:, None].float(), y)


def toy_splits(n_train: int = 96, n_val: int = 31, n_test: int = 33, seed: int = 0) -> Splits:
    """Train size a multiple of the batch (16); val/test sizes odd, so not divisible by WORLD."""
    sets = [blobs(n, seed + i) for i, n in enumerate((n_train, n_val, n_test))]
    return Splits("toy-blobs", *sets, modality="audio")


def mlp(seed: int = 0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(16)] if batch_norm else []
    m = nn.Sequential(nn.Linear(8, 16), *norm, nn.ReLU(), nn.Linear(16, 2))
    m.deepshield_spec = {"name": "toy-mlp", "num_classes": 2, "kwargs": {}}
    return m


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"lr": 0.01, "batch_size": 16, "epochs": 2, "device": "cpu", **kw})


def toy_mlp(num_classes: int = 2) -> nn.Module:
    """Builder of model 'toy-mlp'."""
    return mlp(0)


def toy_blobs(arg: str | None, *, seed: int, fail_rank: int = -1) -> Splits:
    """Loader of dataset 'toy-blobs'; fails on rank `fail_rank`."""
    if int(os.environ.get("RANK", 0)) == fail_rank:
        raise DataError(f"toy-blobs: failing on purpose on rank {fail_rank}; drop fail_rank")
    return toy_splits(seed=seed)


def register_toys() -> None:
    """Register model 'toy-mlp' and dataset 'toy-blobs' (workers, launcher, patched parent)."""
    from deepshield import data, models

    models.register("toy-mlp", kind="audio", input_size=(8,))(toy_mlp)
    data.register_source("toy-blobs", description="toy blobs", modality="audio", builtin=True)(
        toy_blobs
    )


# -- running a function on WORLD processes (torchrun's environment, gloo) ------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: Path, fn, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    with distributed.session("cpu"):
        result = fn(*args)
    torch.save(result, out / f"rank{rank}.pt")


def on_ranks(tmp_path: Path, fn, *args) -> list:
    """fn(*args) on WORLD processes in one process group; each rank's return value."""
    out = tmp_path / "results"
    out.mkdir()
    mp.spawn(_worker, args=(free_port(), out, fn, args), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def strip_times(history: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history["epochs"]]


# -- shards ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 5, 31, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_index_once_in_order(n, world):
    shards = [distributed.shard_indices(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_helpers_are_identities():
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather_tensors(t) is t
    assert torch.equal(distributed.all_reduce_sum(t), t.double())
    assert distributed.shard_indices(7) == range(7)
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_indices(7, 2, 2)


@pytest.mark.parametrize(("n", "world"), [(96, 2), (100, 2), (90, 3), (2, 3)])
def test_sharded_shuffle_splits_the_single_process_batches(n, world):
    per_rank = 8
    ds = TensorSet(torch.arange(n), torch.zeros(n))
    single = [x for x, _ in loader(ds, per_rank * world, shuffle=True, seed=1001)]
    samplers = [distributed.ShardedShuffle(n, 1000, r, world) for r in range(world)]
    for s in samplers:
        s.set_epoch(1)
    ranks = [[x for x, _ in loader(ds, per_rank, sampler=s)] for s in samplers]
    full = n // (per_rank * world)  # complete global batches are the single-process ones
    for k in range(full):
        assert sorted(torch.cat([r[k] for r in ranks]).tolist()) == sorted(single[k].tolist())
    seen = torch.cat([torch.cat(r) for r in ranks])
    assert set(seen.tolist()) == set(range(n))  # every sample once, plus padding < world
    assert len(seen) == -(-n // world) * world


# -- what the two processes do (one process group for all scenarios: spawning costs seconds) ----
def _sharded_eval(ds: TensorSet) -> dict:
    rank = distributed.rank()
    trainer = Trainer(mlp(0, batch_norm=True), cfg())  # wraps in DDP: rank 0's weights everywhere
    bn = unwrap(trainer.model)[1]
    bn.running_mean += torch.linspace(-1, 1, 16) * (rank + 1)  # ranks' BN statistics now differ
    bn.running_var *= 1.5 + rank
    ev = trainer.evaluate(ds)  # must use rank 0's statistics on every shard
    metrics, logits = evaluate_model(unwrap(trainer.model), ds, num_classes=2, batch_size=8)
    n = len(ds)
    mine = list(distributed.shard_indices(n))
    try:
        Trainer(mlp(0), cfg(batch_size=15))
        batch_error = ""
    except ConfigError as e:
        batch_error = str(e)
    return {
        "eval": ev,
        "metrics": metrics,
        "logits": logits,
        "state": {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()},
        "ids": distributed.gather_tensors(torch.arange(n)[mine]),
        "rows": distributed.gather_tensors(torch.arange(3.0 * n).reshape(n, 3)[mine]),
        "flags": distributed.gather_tensors((torch.arange(n) % 3 == 0)[mine]),
        "one": distributed.gather_tensors(torch.tensor([7])[list(distributed.shard_indices(1))]),
        "batch_error": batch_error,
    }


def _fit(splits: Splits) -> dict:
    trainer = Trainer(mlp(3), cfg(optimizer="Adam"))
    history = trainer.fit(splits)
    state = {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}
    return {"state": state, "history": strip_times(history)}


def _run_twice(root: Path) -> dict:
    """run_training uninterrupted, and interrupted at epoch 3 then resumed, recording every write
    under `root` (rank 1 must make none)."""
    from deepshield.runs.training import run_training

    register_toys()
    writes: list[str] = []

    def audit(event: str, args: tuple) -> None:
        paths: tuple = ()
        if event == "open" and isinstance(args[0], (str, bytes)):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                paths = args[:1]
        elif event == "os.rename":  # also os.replace
            paths = args[:2]
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = args[:1]
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and os.fsdecode(p).startswith(str(root)):
                writes.append(f"{event} {os.fsdecode(p)}")

    sys.addaudithook(audit)  # for the rest of this worker process's short life
    config = TrainConfig(dataset="toy-blobs", model="toy-mlp", epochs=4, lr=0.01, device="cpu")
    run_training(config, root / "full")

    train_epoch = Trainer.train_epoch

    def stop_at_3(self, ds, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # every rank at the same point, as when torchrun is stopped
        return train_epoch(self, ds, epoch)

    Trainer.train_epoch = stop_at_3
    with pytest.raises(KeyboardInterrupt):
        run_training(config, root / "cut")
    Trainer.train_epoch = train_epoch
    distributed.barrier()
    epochs_before = len(json.loads((root / "cut" / "history.json").read_text())["epochs"])
    run_training(config, root / "cut")
    return {"writes": writes, "epochs_before_resume": epochs_before}


def _nan_on_rank_1(splits: Splits) -> str:
    """Train on data whose only NaN sits in rank 1's part of the first global batch."""
    x = splits.train.x.clone()
    x[distributed.shuffled_order(len(x), 1)[1]] = float("nan")  # epoch 1, seed 0: rank 1's first
    bad = Splits("bad", TensorSet(x, splits.train.y), splits.val, splits.test)
    try:
        Trainer(mlp(0), cfg()).fit(bad)
    except TrainingError as e:
        return str(e)
    return "no error"


def _scenarios(root: Path, eval_set: TensorSet, splits: Splits) -> dict:
    return {
        "eval": _sharded_eval(eval_set),
        "fit": _fit(splits),
        "nan": _nan_on_rank_1(splits),
        "runs": _run_twice(root),
    }


EVAL_SET = blobs(101, seed=5)  # 101 = 51 + 50: a DistributedSampler would pad (count one twice)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    """Every rank's results of `_scenarios`, and the folder of the runs they wrote."""
    tmp = tmp_path_factory.mktemp("ddp")
    return on_ranks(tmp, _scenarios, tmp / "runs", EVAL_SET, toy_splits()), tmp / "runs"


# -- sharded evaluation ------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_sharded_evaluation_equals_single_process(ddp):
    results = [r["eval"] for r in ddp[0]]
    model = mlp(0, batch_norm=True)
    model.load_state_dict(results[0]["state"])  # rank 0's weights and BN statistics
    ref = Trainer(model, cfg()).evaluate(EVAL_SET)
    ref_metrics, ref_logits = evaluate_model(model, EVAL_SET, num_classes=2)
    for r in results:
        assert r["eval"]["acc"] == ref["acc"]
        assert r["eval"]["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert r["metrics"]["n"] == 101 and r["metrics"]["n_fake"] == 50
        assert r["metrics"]["accuracy"] == ref_metrics["accuracy"]
        assert r["metrics"]["auc"] == pytest.approx(ref_metrics["auc"], abs=1e-9)
        torch.testing.assert_close(r["logits"], ref_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300)
def test_gather_puts_shards_back_in_dataset_order(ddp):
    for r in (r["eval"] for r in ddp[0]):
        assert torch.equal(r["ids"], torch.arange(101))
        assert torch.equal(r["rows"], torch.arange(303.0).reshape(101, 3))
        assert torch.equal(r["flags"], torch.arange(101) % 3 == 0)
        assert torch.equal(r["one"], torch.tensor([7]))  # rank 1's shard of 1 sample is empty


@pytest.mark.timeout(300)
def test_global_batch_must_split_evenly(ddp):
    for r in (r["eval"] for r in ddp[0]):
        assert "global batch" in r["batch_error"] and "multiple of 2" in r["batch_error"]


# -- training ----------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_ddp_training_equals_single_process_on_the_same_global_batch(ddp):
    trainer = Trainer(mlp(3), cfg(optimizer="Adam"))  # 96 = 6 batches of 16: 12 Adam steps
    ref_history = strip_times(trainer.fit(toy_splits()))
    for r in (r["fit"] for r in ddp[0]):
        for k, v in trainer.model.state_dict().items():
            torch.testing.assert_close(r["state"][k], v, rtol=0, atol=1e-5)
        for got, want in zip(r["history"], ref_history, strict=True):
            for part in ("train", "val", "test"):
                assert got[part]["acc"] == want[part]["acc"]
                assert got[part]["loss"] == pytest.approx(want[part]["loss"], rel=1e-5)
    moved = (ddp[0][0]["fit"]["state"]["0.weight"] - mlp(3).state_dict()["0.weight"]).abs().max()
    assert moved > 1e-3  # the comparison is between trained models, not two initialisations


@pytest.mark.timeout(300)
def test_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(ddp):
    for r in ddp[0]:  # both ranks raise, so neither waits for the other in a collective
        assert r["nan"].startswith("epoch 1, batch 1: loss is nan; lower --lr")


def _model_of(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.timeout(300)
def test_only_rank0_writes_the_run_folder(ddp):
    results, _ = ddp
    assert results[1]["runs"]["writes"] == []
    assert any(w.endswith("best.safetensors") for w in results[0]["runs"]["writes"])


@pytest.mark.timeout(300)
def test_ddp_resume_after_interruption_equals_uninterrupted(ddp):
    results, root = ddp
    assert results[0]["runs"]["epochs_before_resume"] == 2
    full, cut = root / "full", root / "cut"
    for name in ("best.safetensors", "last.pt"):
        a, b = _model_of(full / name), _model_of(cut / name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    hist = [strip_times(json.loads((p / "history.json").read_text())) for p in (full, cut)]
    assert hist[0] == hist[1] and len(hist[0]) == 4
    metrics = [json.loads((p / "metrics.json").read_text()) for p in (full, cut)]
    assert metrics[0] == metrics[1]
    assert metrics[0]["test"]["n"] == 33  # the final sharded test evaluation counts each once


# -- the command line under torchrun -----------------------------------------------------------
LAUNCHER = f"""
import sys
sys.path[:0] = [{str(SRC)!r}, {str(TESTS)!r}]
from test_distributed import register_toys
register_toys()
from deepshield.cli import main
main()
"""


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`deepshield ARGS` on WORLD processes via `torchrun --standalone`."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={WORLD}", str(launcher), "-q", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    """'toy-mlp' and 'toy-blobs' registered in this process, for this test only."""
    from deepshield.data import registry as data_registry
    from deepshield.models import registry as model_registry

    model_registry.names(), data_registry.all_sources()  # fill the registries before copying them
    monkeypatch.setattr(model_registry, "_REGISTRY", dict(model_registry._REGISTRY))
    monkeypatch.setattr(data_registry, "_SOURCES", dict(data_registry._SOURCES))
    register_toys()


TRAIN = ["train", "-d", "toy-blobs", "-m", "toy-mlp", "-e", "2", "-b", "16", "--lr", "0.01"]
TOY_RUN = {"dataset": "toy-blobs", "model": "toy-mlp", "epochs": 2, "batch_size": 16, "lr": 0.01}


@pytest.mark.slow  # three more processes importing torch (~10 s on an idle 2-core machine)
@pytest.mark.timeout(300)
def test_torchrun_train_matches_one_process(tmp_path, toys):
    from deepshield.runs.training import run_training

    ddp = torchrun(tmp_path, *TRAIN, "--device", "cpu", "--out", str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("best epoch") == 1  # the summary is printed by rank 0 only
    run_training(TrainConfig(**TOY_RUN), tmp_path / "one")
    a, b = (load_file(str(tmp_path / d / "best.safetensors")) for d in ("ddp", "one"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    m = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ddp", "one")]
    assert m[0]["test"]["n"] == 33 and m[0]["test"]["accuracy"] == m[1]["test"]["accuracy"]
    assert m[0]["test"]["auc"] == pytest.approx(m[1]["test"]["auc"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_evaluate_equals_one_process(tmp_path, toys):
    from deepshield.runs.training import run_training

    run_training(TrainConfig(**TOY_RUN), tmp_path / "run")
    ev = torchrun(tmp_path, "evaluate", str(tmp_path / "run"), "--split", "val")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert ev.stdout.count("wrote") == 1
    val = json.loads((tmp_path / "run" / "eval_val.json").read_text())
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["val_acc_at_best"]
    assert val["n"] == 31 and val["accuracy"] == best


@pytest.mark.timeout(300)
def test_error_on_one_rank_is_reported_and_stops_the_group(tmp_path):
    t0 = time.perf_counter()
    bad = torchrun(tmp_path, *TRAIN, "--out", str(tmp_path / "r"), "--data-arg", "fail_rank=1")
    assert bad.returncode != 0
    assert "error: [rank 1/2] toy-blobs: failing on purpose on rank 1" in bad.stderr
    assert time.perf_counter() - t0 < 120  # rank 0 was stopped, not left waiting in a collective
