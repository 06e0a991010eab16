"""One long video scanned with `--workers 2`: the video's sampled frames shared by both workers
(`runs.scan.video_parts`) against one worker doing the whole file, and against no workers.

Builds the long clip of `video_seek.py` (a source clip looped, H.264 with a keyframe every
`keyint` frames), scans it three ways with MesoNet (authors' weights) into fresh folders, checks
that the rows and frame rows are the same, and prints wall seconds and the ratio.
Usage: python benchmarks/scan_long_video.py [--seconds 120] [--keyint 30] [--frames 32]
       [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from deepshield.runs import scan as sc
from video_seek import SHARED, SOURCE, build_clip

WEIGHTS = SHARED / "data/pretrained_mesonet/weights/Meso4_DF.h5"
TIMES = {"seconds", "cpu_seconds"}


def rows(out: Path, name: str) -> list[dict[str, str]]:
    with open(out / name) as f:
        return [{k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(f)]


def timed(clip: Path, out: Path, frames: int, workers: int, split: bool) -> float:
    """Wall seconds of one scan of `clip` into a new `out`."""
    shutil.rmtree(out, ignore_errors=True)
    sc.SPLIT_BYTES = 0 if split else 1 << 62
    det = sc.file_detector("meso4", WEIGHTS, torch.device("cpu"))
    start = time.perf_counter()
    sc.scan([clip], out, detector=det, opts=sc.ScanOptions(frames=frames), workers=workers)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--keyint", type=int, default=30)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = a.work or Path(tempfile.mkdtemp(prefix="scan_long_"))
    work.mkdir(parents=True, exist_ok=True)
    clip = build_clip(SOURCE, work / f"long_{int(a.seconds)}s_k{a.keyint}.mp4", a.seconds, a.keyint)
    print(f"{clip.name}: {clip.stat().st_size / 1e6:.1f} MB, {a.frames} frames sampled")
    ways = {"no workers": (0, False), "2 workers, one per file": (2, False),
            "2 workers share the video": (2, True)}  # fmt: skip
    best = {}
    for name, (workers, split) in ways.items():
        out = work / name.replace(" ", "_").replace(",", "")
        best[name] = min(timed(clip, out, a.frames, workers, split) for _ in range(a.repeats))
        print(f"{name:28} {best[name]:6.2f} s wall (best of {a.repeats})")
    outs = [work / n.replace(" ", "_").replace(",", "") for n in ways]
    for name in ("scan.csv", "scan_frames.csv"):
        assert all(rows(o, name) == rows(outs[0], name) for o in outs), f"{name} differs"
    base, shared = best["2 workers, one per file"], best["2 workers share the video"]
    print(f"same rows and frame rows; sharing the video: {base / shared:.2f}x against one "
          f"worker per file, {best['no workers'] / shared:.2f}x against no workers")  # fmt: skip


if __name__ == "__main__":
    main()
