"""Scan-service memory under hostile load: C concurrent uploads of a PNG that decodes to
4096x4096 pixels (the per-image limit), against `deepshield serve` in its own process on 127.0.0.1.

Each client sends one upload (R rounds: a bounded run that stops by itself); every request must
be answered 200, or 503 with Retry-After (the decoding budget is full). Prints the answers and the
server's resident memory before the load and at its peak (VmHWM of /proc/PID/status), and exits 1
when a request got anything else or the peak reaches --limit-mb.

    python benchmarks/serve_memory.py [-c 100] [--rounds 1] [--decode-mpx 33.6] [--limit-mb 1536]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from deepshield import models
from deepshield.run import RunDir
from deepshield.service.background import serving

SIDE = 4096


def big_png(side: int = SIDE, seed: int = 0) -> bytes:
    """A side x side RGB PNG of 64 px blocks of random colour (compresses to a few hundred KB)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (side // 64, side // 64, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(blocks, 64, axis=0), 64, axis=1)  # [side, side, 3]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def rss_mb(pid: int, key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of process `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def upload(url: str, png: bytes) -> tuple[int, str | None, float]:
    """One scan -> (status, its Retry-After header, seconds)."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        r = client.post("/v1/scan", files={"file": ("big.png", png, "image/png")})
    return r.status_code, r.headers.get("retry-after"), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--concurrency", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--decode-mpx", type=float, default=None, help="the server's budget")
    ap.add_argument("--limit-mb", type=float, default=1536.0, help="peak RSS allowed")
    args = ap.parse_args()
    torch.manual_seed(0)
    png = big_png()
    flags = ["--decode-mpx", str(args.decode_mpx)] if args.decode_mpx else []
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/simplenet")
        run.save_model(models.create("simplenet"))
        run.write_yaml("config.yaml", {"model": "simplenet", "data_kwargs": {"size": 64}})
        with serving(str(run.path), *flags, env={"OMP_NUM_THREADS": "1"}) as (url, proc):
            before = rss_mb(proc.pid, "VmRSS")
            answers: Counter[str] = Counter()
            slowest = 0.0
            t0 = time.perf_counter()
            for _ in range(args.rounds):
                with ThreadPoolExecutor(args.concurrency) as pool:
                    jobs = [pool.submit(upload, url, png) for _ in range(args.concurrency)]
                    for job in jobs:
                        status, retry, seconds = job.result()
                        slowest = max(slowest, seconds)
                        ok_503 = status == 503 and retry is not None
                        answers[str(status) + ("" if status != 503 or ok_503 else " no-retry")] += 1
            wall = time.perf_counter() - t0
            peak = rss_mb(proc.pid, "VmHWM")
    print(
        f"{args.rounds} x {args.concurrency} concurrent uploads of a {len(png) // 1024} KiB PNG "
        f"decoding to {SIDE}x{SIDE}; server budget "
        f"{args.decode_mpx or 'default'} Mpx: answers {dict(sorted(answers.items()))}, "
        f"wall {wall:.1f} s, slowest {slowest:.1f} s"
    )
    print(f"server RSS: {before:.0f} MiB before the load, peak {peak:.0f} MiB")
    bad = {k: v for k, v in answers.items() if k not in ("200", "503")}
    if bad or peak >= args.limit_mb:
        print(f"FAIL: unexpected answers {bad} or peak >= {args.limit_mb:g} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
