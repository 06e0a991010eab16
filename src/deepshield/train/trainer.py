"""The Trainer owns the training loop: epochs, val/test evaluation, history, best-val checkpoint,
resume after interruption. Extra losses plug in as an Objective, Penalties or a BatchTransform.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepshield.config import TrainConfig
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import RunError, TrainingError
from deepshield.files import atomic_write_bytes
from deepshield.predict import loader
from deepshield.progress import track
from deepshield.run import RunDir
from deepshield.train.objectives import BatchTransform, CrossEntropy, Objective, Penalty
from deepshield.train.optim import make_optimizer

CHECKPOINT = "last.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a DistributedDataParallel wrapper."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


class Trainer:
    """Train `model` on Splits with `cfg`; writes history.json, best/last checkpoints into `run`."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run: RunDir | None = None,
        *,
        objective: Objective | None = None,
        penalties: Sequence[Penalty] = (),
        batch_transform: BatchTransform | None = None,
        device: torch.device | None = None,
        train_sampler: Any = None,
        is_main: bool = True,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.run = run
        self.objective = objective or CrossEntropy()
        self.penalties = list(penalties)
        self.batch_transform = batch_transform
        self.device = device or next(model.parameters()).device
        self.train_sampler = train_sampler
        self.is_main = is_main  # only the main process writes (distributed training)
        self.optimizer = make_optimizer(model, cfg)
        self.history: dict[str, Any] = {"epochs": [], "best_epoch": None}
        self.best_val: tuple[float, float] = (-math.inf, -math.inf)  # (val acc, -val loss)
        self.start_epoch = 1

    # -- one epoch ------------------------------------------------------------------------------
    def train_epoch(self, ds: TensorSet, epoch: int) -> dict[str, float]:
        """One pass over `ds` in train mode: mean loss, accuracy and penalty values."""
        self.model.train()
        if self.train_sampler is not None and hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)
        batches = loader(
            ds,
            self.cfg.batch_size,
            shuffle=True,
            seed=self.cfg.seed * 1000 + epoch,
            sampler=self.train_sampler,
        )
        sums: dict[str, float] = {"loss": 0.0, "correct": 0.0}
        n = 0
        for step, (x, y) in enumerate(track(batches, f"epoch {epoch} train", total=len(batches))):
            x, y = x.to(self.device), y.to(self.device)
            if self.batch_transform is not None:
                x, y = self.batch_transform(self.model, x, y)
                self.model.train()
            loss, logits = self.objective(self.model, x, y)
            for pen in self.penalties:
                value = pen(self.model, x, y, logits)
                sums[pen.name] = sums.get(pen.name, 0.0) + float(value.detach()) * len(y)
                loss = loss + value
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"epoch {epoch}, batch {step + 1}: loss is {float(loss.detach())}; lower --lr "
                    f"(now {self.cfg.lr:g}) or check the data for NaN/inf (checkpoints so far are kept)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums["loss"] += float(loss.detach()) * len(y)
            sums["correct"] += float((logits.detach().argmax(1) == y).sum())
            n += len(y)
        out = {"loss": sums.pop("loss") / max(n, 1), "acc": sums.pop("correct") / max(n, 1)}
        out.update({k: v / max(n, 1) for k, v in sums.items()})
        return out

    @torch.no_grad()
    def evaluate(self, ds: TensorSet) -> dict[str, float]:
        """Cross-entropy loss and accuracy of the model on `ds` in eval mode."""
        self.model.eval()
        loss, correct, n = 0.0, 0.0, 0
        for x, y in loader(ds, max(self.cfg.batch_size, 128)):
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            n += len(y)
        return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, splits: Splits) -> dict[str, Any]:
        """Train for cfg.epochs (resuming from the run's last checkpoint); return the history."""
        if self.run is not None:
            self._resume()
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
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
        return self.history

    # -- checkpoints ----------------------------------------------------------------------------
    def _save(self, epoch: int, improved: bool) -> None:
        if self.run is None or not self.is_main:
            return
        bare = unwrap(self.model)
        if improved:
            self.run.save_model(bare, "best")
        state = {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in bare.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "best_val": torch.tensor(self.best_val, dtype=torch.float64),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.run.file(CHECKPOINT), buf.getvalue())
        self.run.write_json("history.json", self.history)

    def _resume(self) -> None:
        assert self.run is not None
        path = self.run.file(CHECKPOINT)
        if not path.is_file():
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            history = self.run.read_json("history.json")
        except Exception as e:
            raise RunError(
                f"{path}: cannot resume ({type(e).__name__}); delete the run folder or use --force"
            ) from e
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.best_val = tuple(state["best_val"].tolist())  # type: ignore[assignment]
        self.history = history
        self.history["epochs"] = [r for r in history["epochs"] if r["epoch"] <= state["epoch"]]
        self.start_epoch = int(state["epoch"]) + 1
