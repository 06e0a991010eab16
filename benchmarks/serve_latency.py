"""Scan-service latency and throughput on loopback, with and without Grad-CAM.

Starts `deepshield serve` (its own process, so client threads do not share its GIL) on a small
model run, sends N scans of a 512x512 JPEG photo (scikit-image's astronaut) from C concurrent
clients, and prints p50 / p99 latency and requests per second; the in-process cost of the same
scan (decode + model (+ Grad-CAM, overlay, PNG), no HTTP) is printed beside it as the floor the
service is compared with.

    python benchmarks/serve_latency.py [-n 200] [-c 8] [--model simplenet] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
from PIL import Image
from skimage import data as samples

from deepshield import models
from deepshield.run import RunDir
from deepshield.service import create_app
from deepshield.service.background import serving
from deepshield.service.uploads import Upload, check_type, decode_image


def jpeg_photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buf, format="JPEG", quality=90)  # 512x512
    return buf.getvalue()


def load(url: str, photo: bytes, n: int, concurrency: int, explain: bool) -> dict[str, float]:
    """n scans from `concurrency` threads (one keep-alive client each) -> latency stats."""
    local = threading.local()
    latencies: list[float] = []
    errors: list[str] = []

    def one(_: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        t0 = time.perf_counter()
        r = local.client.post(
            "/v1/scan",
            params={"explain": explain},
            files={"file": ("astronaut.jpg", photo, "image/jpeg")},
        )
        latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors.append(f"{r.status_code} {r.text[:120]}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm up: connections, first forward pass
        latencies.clear()
        t0 = time.perf_counter()
        list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed scans, e.g. {errors[0]}")
    ms = np.percentile(np.array(latencies) * 1000, [50, 99])
    return {"p50_ms": ms[0], "p99_ms": ms[1], "req_s": n / wall}


def in_process_ms(app, photo: bytes, explain: bool, repeats: int = 30) -> float:
    """Median ms of the same scan without HTTP: sniff, decode, resize, model (and Grad-CAM)."""
    scanner = app.state.scanner
    up = Upload(photo, "astronaut.jpg", "image/jpeg")
    times = []
    for _ in range(repeats + 3):
        t0 = time.perf_counter()
        im = decode_image(up, check_type(up, ("jpeg",)), max_pixels=4096**2, min_side=16)
        scanner.scan_image(im, explain)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[3:]) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="scans per setting")
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--model", default="simplenet")
    ap.add_argument("--size", type=int, default=64, help="the run's image size")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both sides)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    photo = jpeg_photo()
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(f"{tmp}/{args.model}")
        run.save_model(models.create(args.model))
        run.write_yaml("config.yaml", {"model": args.model, "data_kwargs": {"size": args.size}})
        app = create_app(run.path)
        print(
            f"{args.model} at {args.size}x{args.size}, {len(photo) // 1024} KiB JPEG 512x512, "
            f"n={args.n}, concurrency={args.concurrency}, torch threads={torch.get_num_threads()}"
        )
        print(f"{'scan':<16}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'in-process ms':>15}")
        env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else None
        with serving(str(run.path), env=env) as (url, _):
            for explain in (False, True):
                stats = load(url, photo, args.n, args.concurrency, explain)
                floor = in_process_ms(app, photo, explain)
                name = "explain=true" if explain else "plain"
                print(
                    f"{name:<16}{stats['p50_ms']:>9.1f}{stats['p99_ms']:>9.1f}"
                    f"{stats['req_s']:>8.1f}{floor:>15.1f}"
                )


if __name__ == "__main__":
    main()
