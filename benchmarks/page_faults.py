"""Kernel (system) time of AASIST-L attack steps on the CPU, per allocator and thread setting.

    PYTHONPATH=src python benchmarks/page_faults.py [--clips 2] [--seconds 4] [--steps 3]
        [--how plain,deepshield,forward] [--variants default,mmap,mmap+trim,keep,thp,threads2,...]

Each variant runs in a fresh Python process (glibc reads its MALLOC_* settings and PyTorch its
THP_MEM_ALLOC_ENABLE at start): it loads AASIST-L with the official weights
(../shared/data/pretrained_aasist/AASIST-L.pth), takes `clips` ASVspoof 2019 LA eval clips cut or
tiled to `seconds` (as benchmarks/attack_step_cost.py), runs one step to warm up, then `steps`
more, and reports for those `steps` only (resource.getrusage of the process): user and system
CPU seconds, minor page faults, context switches, wall time, and the process's peak resident
memory (ru_maxrss, whole process, warm-up included). A step of "plain" is one PGD step in plain
PyTorch (forward, cross-entropy, torch.autograd.grad to the input, sign step, projection); of
"deepshield", one step of `deepshield.attacks.pgd` (which also evaluates its final iterate once
per call, a gradient-free forward pass); of "forward", one forward pass under torch.no_grad().

Variants (1 torch thread unless named): default: nothing set; mmap: MALLOC_MMAP_THRESHOLD_=2**30;
mmap+trim: that and MALLOC_TRIM_THRESHOLD_=2**30; keep: MALLOC_MMAP_THRESHOLD_=2**32 and
MALLOC_TRIM_THRESHOLD_=2**36 (the setting docs/performance.md suggests); thp:
THP_MEM_ALLOC_ENABLE=1 (PyTorch's CPU allocator asks for transparent huge pages); threads2,
threads2+keep: 2 torch threads.
Findings and numbers: docs/performance.md, "System time of large models on the CPU".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ENV_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "THP_MEM_ALLOC_ENABLE")
G = 2**30
MMAP = {"MALLOC_MMAP_THRESHOLD_": str(G)}
MMAP_TRIM = {**MMAP, "MALLOC_TRIM_THRESHOLD_": str(G)}
KEEP = {"MALLOC_MMAP_THRESHOLD_": str(4 * G), "MALLOC_TRIM_THRESHOLD_": str(64 * G)}
VARIANTS: dict[str, tuple[dict[str, str], int]] = {  # name -> (environment, torch threads)
    "default": ({}, 1),
    "mmap": (MMAP, 1),
    "mmap+trim": (MMAP_TRIM, 1),
    "keep": (KEEP, 1),
    "thp": ({"THP_MEM_ALLOC_ENABLE": "1"}, 1),
    "threads2": ({}, 2),
    "threads2+keep": (KEEP, 2),
}


def child(how: str, clips: int, seconds: float, steps: int, threads: int) -> dict[str, float]:
    """Runs in the variant's process: rusage of `steps` steps after one warm-up step."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from attack_step_cost import EPS, model, plain_pgd
    from attack_step_cost import clips as load_clips
    from deepshield.attacks import pgd

    torch.set_num_threads(threads)
    x, y = load_clips(clips, seconds)
    m = model("aasist_l")

    def run(n: int) -> None:
        if how == "plain":
            plain_pgd(m, x, y, n)
        elif how == "deepshield":
            pgd(m, x, y, EPS, steps=n, seed=0)
        else:
            with torch.no_grad():
                for _ in range(n):
                    m(x)

    run(1)  # warm-up: first touch of the model's buffers
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(steps)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    return {
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "minflt": r1.ru_minflt - r0.ru_minflt,
        "csw": (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw),
        "wall": wall,
        "peak_mb": r1.ru_maxrss / 1024,  # Linux: KiB
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--how", default="plain")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "how,threads"
    a = p.parse_args()
    if a.child:
        how, threads = a.child.split(",")
        print(json.dumps(child(how, a.clips, a.seconds, a.steps, int(threads))))
        return
    for how in a.how.split(","):
        if how not in ("plain", "deepshield", "forward"):
            sys.exit(f"--how {how}: plain, deepshield or forward")
    for name in a.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"--variants {name}: one of {', '.join(VARIANTS)}")
    print(f"AASIST-L, {a.clips} clips of {a.seconds:g} s, {a.steps} steps after one warm-up "
          "step; user / system CPU-s, minor page faults, context switches and wall time of those "
          "steps, peak RSS of the process")  # fmt: skip
    print("| steps | variant | user s | sys s | minor faults | ctx switches | wall s | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    base = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    for how in a.how.split(","):
        for name in a.variants.split(","):
            env, threads = VARIANTS[name]
            cmd = [sys.executable, __file__, "--child", f"{how},{threads}"]
            cmd += ["--clips", str(a.clips), "--seconds", str(a.seconds), "--steps", str(a.steps)]
            out = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{how} {name}: {out.stderr.strip().splitlines()[-1]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {how} | {name} | {r['user']:.2f} | {r['sys']:.2f} | {r['minflt']:,} | "
                  f"{r['csw']:,} | {r['wall']:.2f} | {r['peak_mb'] / 1024:.2f} GB |")  # fmt: skip


if __name__ == "__main__":
    main()
