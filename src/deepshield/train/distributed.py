"""Distributed training and sharded evaluation under `torchrun` (DistributedDataParallel).

`session(device)` starts the process group from torchrun's environment (gloo on CPU, nccl on
CUDA) and ends it; without torchrun every function here is the single-process identity, so the
same code runs on a laptop and on many GPUs. Sharding for evaluation (and attack sweeps) is
contiguous and unpadded: rank r takes `shard_indices(n)` and `gather_tensors` puts the results
back in dataset order, so no sample counts twice.

    with session("auto"):
        idx = shard_indices(len(ds))                  # this rank's samples, in order
        out = gather_tensors(work(ds.subset(idx)))    # [N, ...] on every rank, dataset order
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from deepshield.data.splits import TensorSet
from deepshield.errors import ConfigError, DeepshieldError, RunError
from deepshield.predict import predict_logits
from deepshield.runtime import resolve_device

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# -- where this process stands ------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True when torchrun (or an equivalent launcher) set RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the only process that writes files and prints."""
    return rank() == 0


def device_for_rank(name: str = "auto") -> torch.device:
    """The device of this process: under torchrun 'auto' and 'cuda' mean cuda:LOCAL_RANK."""
    device = resolve_device(name)
    if not launched_by_torchrun() or device.type != "cuda":
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.index is None:
        return torch.device("cuda", local_rank)
    if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
        raise ConfigError(
            f"--device {name} puts every process of this node on one GPU; use --device cuda "
            "or auto (each torchrun process then takes cuda:LOCAL_RANK)"
        )
    return device


# -- the process group ---------------------------------------------------------------------------
@contextmanager
def session(device: str = "auto") -> Iterator[torch.device]:
    """Join torchrun's process group for the block (gloo on CPU, nccl on CUDA); yield the device.

    Not under torchrun (or WORLD_SIZE=1, or a group already started by the caller): no-op.
    A DeepshieldError leaves the block prefixed with `[rank r/W]`; other ranks then stop, since
    torchrun ends the whole group when one process exits with an error.
    """
    dev = device_for_rank(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1 or dist.is_initialized():
        yield dev
        return
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ConfigError(
            f"distributed launch without {', '.join(missing)}: start with torchrun "
            "(it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)"
        )
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    where = f"[rank {dist.get_rank()}/{dist.get_world_size()}]"
    if dist.get_rank() != 0:
        from deepshield.progress import set_quiet

        set_quiet(True)  # one progress bar, from rank 0
    finished = False
    try:
        yield dev
        finished = True
    except DeepshieldError as e:
        raise type(e)(f"{where} {e}") from e
    except Exception as e:
        print(f"{where} failed: {type(e).__name__}: {e}", file=sys.stderr)
        raise
    finally:
        if finished:
            dist.barrier()  # nobody tears the group down while another rank still needs it
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (a small picklable value: a flag, a dict of numbers)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextmanager
def main_first(what: str) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills a cache or creates a folder), then the others.

    When rank 0 fails the other ranks raise RunError saying so instead of waiting for ever.
    """
    if not is_distributed():
        yield
        return
    if rank() == 0:
        try:
            yield
        except BaseException:
            broadcast_object(False)
            raise
        broadcast_object(True)
        return
    if not broadcast_object(None):
        raise RunError(f"rank 0 failed while {what}; its error message is above")
    yield


# -- reductions and gathers ---------------------------------------------------------------------
def _comm_device() -> torch.device:
    """Where the backend wants tensors: the current CUDA device for nccl, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks, as float64 (exact for counts below 2**53); identity if alone."""
    t = t.detach().to(torch.float64)
    if not is_distributed():
        return t
    out = t.to(_comm_device())
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def gather_tensors(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` [n_r, ...] concatenated along dim 0 in rank order, on every rank.

    With `t` computed on `shard_indices(N)` the result is [N, ...] in dataset order. Ranks may
    hold different n_r (also 0); the trailing shape and dtype must agree where n_r > 0.
    """
    if not is_distributed():
        return t
    metas: list[Any] = [None] * world_size()
    dist.all_gather_object(metas, (tuple(t.shape), t.dtype))
    full = [m for m in metas if m[0] and m[0][0] > 0] or metas
    trailing, dtype = full[0][0][1:], full[0][1]
    if any(m[0][1:] != trailing or m[1] != dtype for m in full):
        raise ValueError(f"gather_tensors: ranks hold different shapes/dtypes {metas}")
    counts = [m[0][0] if m[0] else 0 for m in metas]
    wire = torch.uint8 if dtype == torch.bool else dtype  # gloo has no bool collectives
    buf = torch.zeros((max(counts), *trailing), dtype=wire, device=_comm_device())
    buf[: len(t)] = t.reshape(len(t), *trailing).to(buf)
    parts = [torch.empty_like(buf) for _ in counts]
    dist.all_gather(parts, buf)
    out = torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])  # [N, ...]
    return out.to(dtype=dtype, device=t.device)


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> range:
    """Contiguous, unpadded share of `range(n)` for `rank_` of `world` (default: this process).

    Shares differ in size by at most one and, concatenated in rank order, are range(n).
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if w < 1 or not 0 <= r < w or n < 0:
        raise ValueError(f"shard_indices: need n >= 0 and 0 <= rank < world, got {n}, {r}, {w}")
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return range(start, start + base + (r < extra))


# -- training and evaluation pieces --------------------------------------------------------------
def shuffled_order(n: int, seed: int) -> list[int]:
    """The order in which a single process's shuffling DataLoader (generator seeded `seed`, as
    `deepshield.predict.loader` makes it) visits range(n); drawn by such a loader itself."""
    if n == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    return next(iter(DataLoader(range(n), batch_size=n, shuffle=True, generator=gen))).tolist()


class ShardedShuffle(Sampler[int]):
    """DistributedSampler whose epoch order is the single-process one: epoch e visits
    `shuffled_order(n, seed + e)`, padded (by its first indices) to a multiple of `world`, and
    rank r takes every world-th index from r. Global batch k (per-rank batch b) is then exactly
    the single process's batch k of size b * world."""

    def __init__(self, n: int, seed: int, rank_: int, world: int) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank_, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self) -> Iterator[int]:
        order = shuffled_order(self.n, self.seed + self.epoch)
        total = len(self) * self.world
        order = (order * (total // max(self.n, 1) + 1))[:total]  # padded from its start
        return iter(order[self.rank :: self.world])


def train_sampler(ds: Dataset, seed: int) -> ShardedShuffle:
    """This rank's ShardedShuffle over `ds` (epoch e: the single-process order of seed + e)."""
    return ShardedShuffle(len(ds), seed, rank(), world_size())


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (rank 0's weights are broadcast to every rank)."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank before evaluating."""
    if not is_distributed():
        return
    for b in model.buffers():
        t = b.detach().to(_comm_device())
        dist.broadcast(t, src=0)
        b.data.copy_(t.to(b.device))


@torch.no_grad()
def sharded_logits(model: nn.Module, ds: TensorSet, batch_size: int = 128) -> torch.Tensor:
    """Logits [N, K] of `model` on `ds`, each rank computing its shard; on every rank, in order."""
    if not is_distributed():
        return predict_logits(model, ds, batch_size)
    idx = shard_indices(len(ds))
    if len(idx) == 0 and len(ds) > 0:  # an empty shard still tells the others the logits' width
        return gather_tensors(predict_logits(model, ds.subset([0]), batch_size)[:0])
    return gather_tensors(predict_logits(model, ds.subset(list(idx)), batch_size))
