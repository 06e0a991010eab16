"""Cost of one attack step on speech models against a plain PyTorch forward + backward.

    PYTHONPATH=src python benchmarks/attack_step_cost.py [--clips 2] [--seconds 4] [--steps 5]
        [--repeats 3] [--models aasist_l,mel_cnn] [--threads N]

For each model: the time of `deepshield.attacks.pgd` (L-inf, eps 0.001, `steps` steps) divided by
`steps`, against one step of a plain PGD loop written in PyTorch (forward, cross-entropy,
torch.autograd.grad to the input, sign step, projection) on the same clips; the ratio is the
attack's overhead per step (goal <= 1.1x). deepshield's PGD evaluates its final iterate once
more (a gradient-free forward pass per run, to return the strongest point), which is counted.
AASIST-L uses the official weights (../shared/data/pretrained_aasist/AASIST-L.pth) on ASVspoof
2019 LA eval clips (../shared/data/asvspoof2019_la_eval_samples), cut or tiled to `seconds`;
mel_cnn has random weights (its cost does not depend on them). Both run round-robin, `repeats`
times after a warm-up; the table gives the fastest time of each, as process CPU time (what the
ratio is read from: on a shared machine wall time mostly measures the other jobs) and as wall
time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield import models
from deepshield.attacks import pgd

EPS = 0.001  # L-inf on the waveform in [-1, 1]
SAMPLE_RATE = 16_000


def shared() -> Path:
    return Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def clips(n: int, seconds: float) -> tuple[Tensor, Tensor]:
    """n ASVspoof 2019 LA eval clips [n, T] in [-1, 1] (tiled or cut to `seconds`), labels [n]."""
    folder = shared() / "data" / "asvspoof2019_la_eval_samples"
    lines = (folder / "protocol.txt").read_text().split("\n")
    rows = [line.split() for line in lines if line.strip()][:n]
    length = int(seconds * SAMPLE_RATE)
    wavs, labels = [], []
    for row in rows:
        wav, sr = sf.read(str(folder / "flac" / f"{row[1]}.flac"), dtype="float32")
        assert sr == SAMPLE_RATE, f"{row[1]}: {sr} Hz"
        wavs.append(np.resize(wav, length))  # tiled when shorter
        labels.append(int(row[-1] == "spoof"))
    return torch.from_numpy(np.stack(wavs)), torch.tensor(labels)


def model(name: str) -> nn.Module:
    m = models.create(name)
    if name == "aasist_l":
        path = shared() / "data" / "pretrained_aasist" / "AASIST-L.pth"
        m = models.load_weights(m, path)
    return m.eval()


def plain_pgd(m: nn.Module, x: Tensor, y: Tensor, steps: int) -> Tensor:
    """The reference: PGD in plain PyTorch, one forward + backward per step."""
    alpha = 2.5 * EPS / steps
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(m(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-EPS, EPS)).clamp(-1, 1)
    return x_adv


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Round-robin timing: per function the fastest (CPU seconds, wall seconds) of `repeats` runs
    after one warm-up."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, (float("inf"), float("inf")))
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default="aasist_l,mel_cnn")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    x, y = clips(a.clips, a.seconds)
    print(f"{a.clips} clips of {a.seconds:g} s, PGD-{a.steps}, eps {EPS}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print("| model | plain step | deepshield pgd step | ratio (CPU) | ratio (wall) |")
    print("|---|---|---|---|---|")
    for name in a.models.split(","):
        m = model(name)
        times = fastest(
            {
                "plain": lambda m=m: plain_pgd(m, x, y, a.steps),
                "deepshield": lambda m=m: pgd(m, x, y, EPS, steps=a.steps, seed=0),
            },
            a.repeats,
        )
        (pc, pw), (oc, ow) = times["plain"], times["deepshield"]
        cells = [f"{c / a.steps:.3f} CPU-s, {w / a.steps:.3f} s" for c, w in ((pc, pw), (oc, ow))]
        print(f"| {name} | {cells[0]} | {cells[1]} | {oc / pc:.2f}x | {ow / pw:.2f}x |")


if __name__ == "__main__":
    main()
