"""Training throughput: deepshield's Trainer vs a plain PyTorch loop, same model and data.

    PYTHONPATH=src python benchmarks/train_throughput.py [--model resnet18] [--size 64]
        [--n 2048] [--batch 128] [--repeats 3] [--device cuda|cpu] [--threads N]
        [--amp off|bf16|fp16] [--channels-last]

One epoch of `n` random 64x64 images (uint8 in memory, as a loaded image folder is), labels 0/1,
Adam lr 1e-3, batch `batch`, on `models.create(model, num_classes=2)`. Both sides start from the
same weights and read the same uint8 tensor: the Trainer through `Trainer.train_epoch` (its
loader, loss checks and per-batch metrics), the plain loop as ten lines of PyTorch (shuffle,
slice, to device, forward, cross-entropy, backward, step). They alternate `repeats` times after
one warm-up epoch each; the table gives the best images/s and the Trainer's overhead.
--amp bf16 (or fp16, CUDA only): both sides run forward and loss under the same autocast
(`deepshield.precision`), the plain loop's fp16 through a GradScaler as the Trainer's; compare
the printed figure with a run at --amp off for the fp32 vs bf16 ratio.
--channels-last: both models in channels-last memory format (`precision.use_channels_last`:
NHWC weights, inputs converted by a forward pre-hook), as `deepshield train --channels-last`
runs them; compare with a run without it for the memory-format ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield.config import TrainConfig
from deepshield.data.splits import TensorSet
from deepshield.models import create
from deepshield.precision import autocast, grad_scaler, use_channels_last
from deepshield.train.trainer import Trainer


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch: int,
                device: torch.device, amp: str = "off",
                scaler: torch.amp.GradScaler | None = None) -> None:  # fmt: skip
    """The reference: one epoch of a plain PyTorch training loop (autocast as `amp` says)."""
    model.train()
    order = torch.randperm(len(y))
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        xb = x[idx].to(device).float().div_(255)
        yb = y[idx].to(device)
        with autocast(amp, device):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(), waiting for the device's queue before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--n", type=int, default=2048, help="images per epoch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    ap.add_argument("--channels-last", action="store_true", help="NHWC models and inputs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.n, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 2, (args.n,), generator=g)

    torch.manual_seed(0)
    start = create(args.model, num_classes=2).state_dict()
    cfg = TrainConfig(
        model=args.model, lr=1e-3, batch_size=args.batch, optimizer="Adam", amp=args.amp
    )
    ours = create(args.model, num_classes=2).to(device)
    ours.load_state_dict(start)
    trainer = Trainer(ours, cfg, device=device)
    plain = create(args.model, num_classes=2).to(device)
    plain.load_state_dict(start)
    for model in (ours, plain):
        use_channels_last(model, args.channels_last, (3, args.size, args.size))
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    scaler = grad_scaler(args.amp, device)
    ds = TensorSet(x, y)
    runs: dict[str, Callable[[int], object]] = {
        "plain loop": lambda e: plain_epoch(plain, opt, x, y, args.batch, device, args.amp, scaler),
        "deepshield Trainer": lambda e: trainer.train_epoch(ds, e),
    }
    for fn in runs.values():  # warm-up (cuDNN autotuning, allocator)
        fn(0)
    best = {k: (float("inf"), float("inf")) for k in runs}  # (wall, CPU) seconds, each the best
    for rep in range(1, args.repeats + 1):
        for k, fn in runs.items():
            wall, cpu = timed(lambda: fn(rep), device)  # noqa: B023
            best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"\n{args.model} at {args.size}px, amp {args.amp}, {layout}, batch {args.batch}, "
          f"{args.n} images/epoch, {device}, {torch.get_num_threads()} threads, "
          f"best of {args.repeats}")  # fmt: skip
    for k, (wall, cpu) in best.items():
        print(f"{k:<20} {args.n / wall:>10.1f} images/s wall {args.n / cpu:>10.1f} images/CPU-s")
    # on a GPU wall time is the measure; on a shared CPU, CPU time (it does not grow with load)
    i = 0 if device.type != "cpu" else 1
    unit = "images/s" if i == 0 else "images/CPU-s"
    ours, ref = args.n / best["deepshield Trainer"][i], args.n / best["plain loop"][i]
    print(f"train throughput amp {args.amp} {layout}: Trainer {ours:.1f} {unit}, plain loop "
          f"{ref:.1f} {unit}, Trainer overhead {ref / ours - 1:+.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
