"""The Trainer owns the training loop: epochs, val/test evaluation, history, best-val checkpoint,
resume after interruption. Extra losses plug in as an Objective, Penalties or a BatchTransform.

Under torchrun (see `deepshield.train.distributed.session`) the same Trainer runs data-parallel:
the model is wrapped in DistributedDataParallel, `cfg.batch_size` stays the global batch (each of
W ranks takes batch_size / W samples of it, so lr means what it means on one process), metrics
are summed over ranks, and only rank 0 writes the run folder.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError, RunError, TrainingError
from deepshield.files import atomic_write_bytes
from deepshield.precision import autocast, grad_scaler
from deepshield.predict import loader
from deepshield.progress import track
from deepshield.train import distributed
from deepshield.train.objectives import BatchTransform, CrossEntropy, Objective, Penalty
from deepshield.train.optim import make_optimizer

CHECKPOINT = "last.pt"


class CheckpointFolder(Protocol):
    """Where a Trainer keeps its checkpoint: a run folder (`deepshield.run.RunDir`); the loop
    sits below the run layer, so it names only what it calls."""

    def file(self, name: str) -> Path: ...
    def output(self, name: str) -> Path: ...
    def write_json(self, name: str, obj: Any) -> Path: ...
    def read_json(self, name: str) -> Any: ...
    def save_model(self, model: nn.Module, name: str = ..., state: Any = ...) -> Path: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DistributedDataParallel (or DataParallel) wrapper."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def check_trainable(splits: Splits, epochs: int = 1) -> None:
    """DataError when the train or validation split is empty (nothing to train or select on);
    with `epochs` 0 (the initial weights scored as they are) only an empty test split is."""
    needed = ("train", "val") if epochs > 0 else ("test",)
    empty = [s for s in needed if len(splits.split(s)) == 0]
    if empty:
        sizes = ", ".join(f"{s} {len(splits.split(s))}" for s in ("train", "val", "test"))
        fix = (
            "training needs both: use dataset options that keep samples for training (e.g. no "
            "split=test)"
            if epochs > 0
            else "scoring the weights needs test samples: use dataset options that keep some"
        )
        raise DataError(
            f"{splits.name}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
            f"empty ({sizes}); {fix}"
        )


class Trainer:
    """Train `model` on Splits with `cfg`; writes history.json, best/last checkpoints into `run`."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run: CheckpointFolder | None = None,
        *,
        objective: Objective | None = None,
        penalties: Sequence[Penalty] = (),
        batch_transform: BatchTransform | None = None,
        device: torch.device | None = None,
        train_sampler: Any = None,
        is_main: bool | None = None,
    ) -> None:
        self.device = device or next(model.parameters()).device
        self.world = distributed.world_size()
        if self.world > 1:
            if cfg.batch_size % self.world:
                raise ConfigError(
                    f"batch_size {cfg.batch_size} is the global batch and must split evenly over "
                    f"{self.world} processes: use a multiple of {self.world}"
                )
            if not isinstance(model, nn.parallel.DistributedDataParallel):
                model = distributed.wrap_model(model, self.device)
        self.model = model
        self.cfg = cfg
        self.run = run
        self.objective = objective or CrossEntropy()
        self.penalties = list(penalties)
        self.batch_transform = batch_transform
        self.train_sampler = train_sampler  # default under torchrun: distributed.train_sampler
        self.is_main = distributed.is_main() if is_main is None else is_main  # only it writes
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = grad_scaler(cfg.amp, self.device)  # fp16 only; ConfigError off CUDA
        self.history: dict[str, Any] = {"epochs": [], "best_epoch": None}
        self.best_val: tuple[float, float] = (-math.inf, -math.inf)  # (val acc, -val loss)
        self.start_epoch = 1
        self.best_state: dict[str, torch.Tensor] | None = None  # weights of the best epoch

    # -- one epoch ------------------------------------------------------------------------------
    def train_epoch(self, ds: TensorSet, epoch: int) -> dict[str, float]:
        """One pass over `ds` in train mode: mean loss, accuracy and penalty values."""
        self.model.train()
        sampler = self.train_sampler
        if sampler is None and self.world > 1:
            sampler = distributed.train_sampler(ds, seed=self.cfg.seed * 1000)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # order of epoch e: randperm seeded seed * 1000 + e
        batches = loader(
            ds,
            self.cfg.batch_size // self.world,  # this rank's part of the global batch
            shuffle=True,
            seed=self.cfg.seed * 1000 + epoch,
            sampler=sampler,
        )
        bare = unwrap(self.model)  # hooks run their own forwards outside DDP's bookkeeping
        if hasattr(self.batch_transform, "set_epoch"):  # e.g. augmentations seeded per epoch
            self.batch_transform.set_epoch(epoch)
        sums: dict[str, float] = {"loss": 0.0, "correct": 0.0}
        n = 0
        for step, (x, y) in enumerate(track(batches, f"epoch {epoch} train", total=len(batches))):
            x, y = x.to(self.device), y.to(self.device)
            if self.batch_transform is not None:
                x, y = self.batch_transform(bare, x, y)
                self.model.train()
            with autocast(self.cfg.amp, self.device):
                loss, logits = self.objective(self.model, x, y)
                for pen in self.penalties:
                    value = pen(bare, x, y, logits)
                    sums[pen.name] = sums.get(pen.name, 0.0) + float(value.detach()) * len(y)
                    loss = loss + value
            seen = distributed.all_reduce_sum(loss) if self.world > 1 else loss.detach()
            if not torch.isfinite(seen):
                raise TrainingError(
                    f"epoch {epoch}, batch {step + 1}: loss is {float(seen)}; lower --lr "
                    f"(now {self.cfg.lr:g}) or check the data for NaN/inf (checkpoints so far are kept)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self._step(loss)
            sums["loss"] += float(loss.detach()) * len(y)
            sums["correct"] += float((logits.detach().argmax(1) == y).sum())
            n += len(y)
        sums, n = self._sum_over_ranks(sums, n)
        out = {"loss": sums.pop("loss") / max(n, 1), "acc": sums.pop("correct") / max(n, 1)}
        out.update({k: v / max(n, 1) for k, v in sums.items()})
        return out

    def _step(self, loss: torch.Tensor) -> None:
        """Backward and optimiser step; under fp16 through the loss scaler."""
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _sum_over_ranks(self, sums: dict[str, float], n: int) -> tuple[dict[str, float], int]:
        """Per-rank sums and count -> totals over all ranks (unchanged on one process)."""
        if self.world == 1:
            return sums, n
        total = distributed.all_reduce_sum(torch.tensor([*sums.values(), n]))
        return dict(zip(sums, total[:-1].tolist(), strict=True)), int(total[-1])

    @torch.no_grad()
    def evaluate(self, ds: TensorSet) -> dict[str, float]:
        """Cross-entropy loss and accuracy of the model on `ds` in eval mode. Distributed: each
        rank takes its contiguous shard (no padding) and the sums are added over ranks."""
        self.model.eval()
        bare = unwrap(self.model)
        distributed.sync_buffers(bare)  # every rank evaluates rank 0's BatchNorm statistics
        sums, n = {"loss": 0.0, "correct": 0.0}, 0
        shard = distributed.shard_indices(len(ds))
        for x, y in loader(ds, max(self.cfg.batch_size, 128), sampler=shard):
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.cfg.amp, self.device):
                logits = bare(x).float()
            sums["loss"] += float(F.cross_entropy(logits, y, reduction="sum"))
            sums["correct"] += float((logits.argmax(1) == y).sum())
            n += len(y)
        sums, n = self._sum_over_ranks(sums, n)
        return {"loss": sums["loss"] / max(n, 1), "acc": sums["correct"] / max(n, 1)}

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, splits: Splits) -> dict[str, Any]:
        """Train for cfg.epochs (resuming from the run's last checkpoint); return the history.
        cfg.epochs 0: the model as it is becomes epoch 0 (its val and test scores, best)."""
        check_trainable(splits, self.cfg.epochs)
        if self.run is not None:
            self._resume()
        if self.cfg.epochs == 0 and not self.history["epochs"]:
            row = {"epoch": 0, "train": None}
            row |= {
                s: self.evaluate(splits.split(s)) for s in ("val", "test") if len(splits.split(s))
            }
            self.history["epochs"].append(row)
            self.history["best_epoch"] = 0
            self._save(0, True)
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            self._set_lr(epoch)
            t0 = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch, "train": self.train_epoch(splits.train, epoch)}
            row["val"] = self.evaluate(splits.val)
            row["test"] = self.evaluate(splits.test)
            row["time_s"] = round(time.perf_counter() - t0, 3)
            self.history["epochs"].append(row)
            key = (row["val"]["acc"], -row["val"]["loss"])  # select on validation only
            improved = key > self.best_val
            if improved:
                self.best_val = key
                self.history["best_epoch"] = epoch
            self._save(epoch, improved)
        distributed.barrier()  # rank 0's checkpoints are on disk before any rank reads them
        return self.history

    def lr_at(self, epoch: int) -> float:
        """Learning rate of `epoch` (1-based): constant, or a cosine decay over cfg.epochs."""
        if self.cfg.scheduler == "cosine":
            return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.cfg.epochs))
        return self.cfg.lr

    def _set_lr(self, epoch: int) -> None:
        # A pure function of the epoch: resuming needs no scheduler state.
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)

    # -- checkpoints ----------------------------------------------------------------------------
    def _save(self, epoch: int, improved: bool) -> None:
        """One atomic last.pt holds everything a resume needs (weights, optimizer, best weights,
        every random state, history); best.safetensors and history.json are derived from it."""
        if self.run is None or not self.is_main:
            return
        bare = unwrap(self.model)
        weights = {k: v.detach().cpu().clone() for k, v in bare.state_dict().items()}
        if improved or self.best_state is None:
            self.best_state = weights
        state = {
            "epoch": epoch,
            "model": weights,
            "best": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "best_val": torch.tensor(self.best_val, dtype=torch.float64),
            "history": json.dumps(self.history),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.run.output(CHECKPOINT), buf.getvalue())
        self._derive(bare, write_best=improved)

    def _derive(self, bare: nn.Module, *, write_best: bool) -> None:
        """history.json (and best.safetensors when `write_best`) from the state in memory."""
        assert self.run is not None
        if write_best and self.best_state is not None:
            self.run.save_model(bare, "best", state=self.best_state)
        self.run.write_json("history.json", self.history)

    def _resume(self) -> None:
        assert self.run is not None
        path = self.run.file(CHECKPOINT)
        if not path.is_file():
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "history" in state:
                history = json.loads(state["history"])
            else:  # a checkpoint of an older deepshield: history.json beside it
                history = self.run.read_json("history.json")
            bare = unwrap(self.model)
            bare.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except Exception as e:
            raise RunError(
                f"{path}: damaged, cannot resume ({type(e).__name__}); delete last.pt to restart "
                "training, or re-run with --force"
            ) from e
        set_rng_state(state["rng"])
        self.best_val = tuple(state["best_val"].tolist())  # type: ignore[assignment]
        self.best_state = state.get("best")
        self.history = history
        self.history["epochs"] = [r for r in history["epochs"] if r["epoch"] <= state["epoch"]]
        self.start_epoch = int(state["epoch"]) + 1
        if self.is_main:  # a kill may have come between last.pt and what derives from it
            self._derive(bare, write_best=True)


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from: torch CPU, each CUDA device, numpy, python."""
    _kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "cpu": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": version,
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any] | torch.Tensor) -> None:
    """Restore what `rng_state` saved (a bare tensor: the CPU state of older checkpoints)."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
