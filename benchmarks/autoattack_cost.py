"""AutoAttack: deepshield's standard and fast cascades vs the reference (pyautoattack), in one run.

    PYTHONPATH=src python benchmarks/autoattack_cost.py [--n 932] [--eps 2/255] [--norm linf]
        [--epochs 12] [--threads 1] [--device cpu|cuda] [--skip-reference] [--json out.json]

A small CNN (three stride-2 convs, ~30 k parameters) is trained on the 4,660 lossless CIFAR-10
training images of ../shared (seed 0) and attacked on the first n lossless test images. Every
model call goes through `CountingModel`, which counts the images passed forward and backward;
the table gives robust accuracy after each stage, those counts, the ratios of each cascade's
passes to the reference's, and CPU time (process time: unlike wall time, it does not grow when
other jobs share the machine; with --threads 1 it is the compute the attack needs) and wall time
(the measure on a GPU, `--device cuda`, where CPU time counts only the host's work). The
reference runs its own standard version (APGD-CE, APGD-T, FAB-T, Square) with seed 0; its
per-stage figures are read from its log.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield.attacks import CountingModel, autoattack
from deepshield.data.sources.cifar10 import read_batch

ROOT = Path(__file__).resolve().parents[1]


def small_cnn() -> nn.Module:
    """Three stride-2 convs and a linear layer (~30 k parameters): [B,3,32,32] -> [B,10]."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),  # [B, 16, 16, 16]
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),  # [B, 32, 8, 8]
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),  # [B, 64, 4, 4]
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 16, 10),
    )


def load(folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lossless CIFAR-10 subset -> x_train, y_train, x_test, y_test (x float in [0, 1])."""
    xs, ys = zip(*(read_batch(folder / f"data_batch_{i}") for i in range(1, 6)), strict=True)
    x_test, y_test = read_batch(folder / "test_batch")

    def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(x).float() / 255, torch.from_numpy(y)

    return *as_tensors(np.concatenate(xs), np.concatenate(ys)), *as_tensors(x_test, y_test)


def train(x: Tensor, y: Tensor, epochs: int) -> nn.Module:
    """Adam 2e-3, batch 64, seed 0, on x's device: the same weights every run (on one device)."""
    torch.manual_seed(0)
    net = small_cnn().to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).to(x.device)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


class _StageLog(logging.Handler):
    """Reads the reference's log: per stage, robust accuracy, passes and time at its end."""

    def __init__(self, counter: CountingModel) -> None:
        super().__init__(logging.DEBUG)
        self.counter, self.start = counter, time.process_time()
        self.stages: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("robust accuracy after "):
            name, _, acc = msg[len("robust accuracy after ") :].partition(": ")
            self.stages.append(
                {
                    "name": name.lower(),
                    "robust_accuracy": float(acc.split("%")[0]) / 100,
                    "forwards": self.counter.forwards,
                    "backwards": self.counter.backwards,
                    "seconds": time.process_time() - self.start,
                }
            )


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def max_norm(delta: Tensor, norm: str) -> float:
    flat = delta.flatten(1)
    return (flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)).max().item()


def run_reference(net: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str) -> dict:
    from pyautoattack import AutoAttack

    counter = CountingModel(net)
    log = _StageLog(counter)
    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(log)
    start, wall = time.process_time(), finish(x)
    aa = AutoAttack(
        counter, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], seed=0, device=x.device
    )
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=500)
    seconds = time.process_time() - start
    wall = finish(x) - wall
    logger.removeHandler(log)
    return {
        "stages": log.stages,
        "robust_accuracy": accuracy(net, x_adv, y),
        "forwards": counter.forwards,
        "backwards": counter.backwards,
        "seconds": seconds,
        "wall_seconds": wall,
        "max_norm": max_norm(x_adv - x, norm),
    }


def finish(x: Tensor) -> float:
    """perf_counter() once x's device has finished its queued work."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def run_ours(net: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str, version: str) -> dict:
    counter = CountingModel(net)
    start, wall = time.process_time(), finish(x)
    x_adv, report = autoattack(counter, x, y, eps, norm=norm, version=version, seed=0)
    seconds, wall = time.process_time() - start, finish(x) - wall
    return {
        "stages": report.as_dict()["stages"],
        "robust_accuracy": accuracy(net, x_adv, y),
        "forwards": counter.forwards,
        "backwards": counter.backwards,
        "seconds": seconds,
        "wall_seconds": wall,
        "max_norm": max_norm(x_adv - x, norm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cifar10")
    parser.add_argument("--n", type=int, default=932, help="test images attacked (<= 932)")
    parser.add_argument("--eps", default="2/255")
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eps = float(Fraction(args.eps))

    dev = torch.device(args.device)
    x_train, y_train, x_test, y_test = (t.to(dev) for t in load(args.data / "cifar-10-batches-py"))
    net = train(x_train, y_train, args.epochs)
    x, y = x_test[: args.n], y_test[: args.n]
    print(
        f"small CNN, {args.epochs} epochs; {len(x)} test images, clean accuracy "
        f"{accuracy(net, x, y):.2%}; {args.norm} eps {args.eps}; {args.threads} thread(s); {dev}"
    )

    results = {}
    if not args.skip_reference:
        results["reference standard (pyautoattack)"] = run_reference(net, x, y, eps, args.norm)
    for version in ("standard", "fast"):
        results[f"deepshield {version}"] = run_ours(net, x, y, eps, args.norm, version)

    base = results.get("reference standard (pyautoattack)")
    print(
        "\n| run | stages: robust accuracy | robust acc. | forward | backward | passes vs ref "
        "| CPU s | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        stages = ", ".join(f"{s['name']} {s['robust_accuracy']:.2%}" for s in r["stages"])
        passes = r["forwards"] + r["backwards"]
        ratio = f"1/{(base['forwards'] + base['backwards']) / passes:.1f}" if base else "-"
        print(
            f"| {name} | {stages} | {r['robust_accuracy']:.2%} | {r['forwards']:,} | "
            f"{r['backwards']:,} | {ratio} | {r['seconds']:.0f} | {r['wall_seconds']:.1f} |"
        )
        assert r["max_norm"] <= eps + 1e-6, f"{name} left the eps ball: {r['max_norm']}"
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"data": str(args.data), "json": str(args.json)},
                    "results": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
