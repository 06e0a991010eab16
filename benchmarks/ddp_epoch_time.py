"""Seconds per training epoch on 1 process vs N torchrun processes (DDP), in one run.

    python benchmarks/ddp_epoch_time.py [--procs 2] [--images 2048] [--size 32] [--epochs 3]

Trains simplenet on random images (fixed seed) with the same global batch in every setting:
1 process with all cores' threads, 1 process with 1 thread, and N processes with 1 thread each
(gloo on CPU). Prints the median train-epoch time of each and the speed-up of N processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    """Train and write the per-epoch train times (rank 0) to args.out."""
    import torch

    from deepshield import models
    from deepshield.config import TrainConfig
    from deepshield.data.splits import Splits, TensorSet
    from deepshield.train import Trainer, distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(
        0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g
    )
    y = torch.arange(args.images) % 2
    small = TensorSet(x[:64], y[:64])
    splits = Splits("random", TensorSet(x, y), small, small)
    cfg = TrainConfig(batch_size=args.batch, epochs=args.epochs, lr=1e-3, device="cpu")
    with distributed.session("cpu"):
        torch.manual_seed(0)
        trainer = Trainer(models.create("simplenet"), cfg)
        times = []
        for epoch in range(1, args.epochs + 1):
            distributed.barrier()
            t0 = time.perf_counter()
            trainer.train_epoch(splits.train, epoch)
            distributed.barrier()
            times.append(time.perf_counter() - t0)
        if distributed.is_main():
            info = {"world": distributed.world_size(), "threads": torch.get_num_threads()}
            Path(args.out).write_text(json.dumps({**info, "epoch_s": times}))


def launch(args: argparse.Namespace, procs: int, threads: int) -> dict:
    """Run the worker on `procs` processes of `threads` threads; its timings."""
    out = Path(tempfile.mkdtemp()) / "t.json"
    flags = [f"--{k}={getattr(args, k)}" for k in ("images", "size", "epochs", "batch")]
    work = [__file__, "--worker", "--out", str(out), f"--threads={threads}", *flags]
    head = [sys.executable]
    if procs > 1:
        head += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*head, *work], env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--images", type=int, default=2048, help="training images")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    cores = os.cpu_count() or 1
    print(
        f"simplenet, {args.images} images {args.size}px, global batch {args.batch}, {cores} cores"
    )
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    rows = [
        ("1 process", 1, cores),
        ("1 process", 1, 1),
        (f"{args.procs} processes", args.procs, 1),
    ]
    med = {}
    for name, procs, threads in rows:
        r = launch(args, procs, threads)
        med[(procs, threads)] = statistics.median(r["epoch_s"])
        times = ", ".join(f"{t:.2f}" for t in r["epoch_s"])
        print(
            f"{name:>12} x {threads} thread(s): median {med[(procs, threads)]:.2f} s/epoch ({times})"
        )
    for threads in sorted({cores, 1}, reverse=True):
        ratio = med[(1, threads)] / med[(args.procs, 1)]
        print(
            f"speed-up of {args.procs} processes over 1 process x {threads} thread(s): {ratio:.2f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
