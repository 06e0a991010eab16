"""Cost of one attack step on speech models against a plain PyTorch forward + backward.

    PYTHONPATH=src python benchmarks/attack_step_cost.py [--clips 1] [--seconds 4] [--steps 10]
        [--repeats 3] [--models aasist_l,mel_cnn] [--threads N]

For each model: `deepshield.attacks.pgd` (L-inf, eps 0.001) against a plain PGD loop written in
PyTorch (forward, cross-entropy, torch.autograd.grad to the input, sign step, projection) on
the same clips, each run with 1 and with `steps` steps. "per step": the cost of one more step,
(T(steps) - T(1)) / (steps - 1), the attack's overhead per step (goal <= 1.1x); "per call":
T(steps) of deepshield over the plain loop's, which also counts deepshield's fixed cost: the
strongest point is returned, so the final iterate is evaluated once (a gradient-free forward
pass per run) and the inputs are checked.
AASIST-L uses the official weights (../shared/data/pretrained_aasist/AASIST-L.pth) on ASVspoof
2019 LA eval clips (../shared/data/asvspoof2019_la_eval_samples), cut or tiled to `seconds`;
mel_cnn has random weights (its cost does not depend on them). Both run round-robin, `repeats`
times after a warm-up; the table gives the fastest process CPU time of each (on a shared
machine wall time mostly measures the other jobs).
"""

from __future__ import annotations

import argparse
import functools
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


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Round-robin timing: per function the fastest process CPU time of `repeats` runs after one
    warm-up."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=1)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default="aasist_l,mel_cnn")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    x, y = clips(a.clips, a.seconds)
    print(f"{a.clips} clips of {a.seconds:g} s, PGD-{a.steps}, eps {EPS}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print("| model | plain PGD step | deepshield PGD step | ratio per step | ratio per call |")
    print("|---|---|---|---|---|")
    for name in a.models.split(","):
        m = model(name)
        cpu = fastest(
            {
                f"{who}{n}": fn
                for n in (1, a.steps)
                for who, fn in (
                    ("plain", functools.partial(plain_pgd, m, x, y, n)),
                    ("deepshield", functools.partial(pgd, m, x, y, EPS, steps=n, seed=0)),
                )
            },
            a.repeats,
        )
        plain = (cpu[f"plain{a.steps}"] - cpu["plain1"]) / (a.steps - 1)
        ours = (cpu[f"deepshield{a.steps}"] - cpu["deepshield1"]) / (a.steps - 1)
        call = cpu[f"deepshield{a.steps}"] / cpu[f"plain{a.steps}"]
        print(
            f"| {name} | {plain:.3f} CPU-s | {ours:.3f} CPU-s | {ours / plain:.2f}x | {call:.2f}x |"
        )


if __name__ == "__main__":
    main()
