"""Scan-service cost of a video upload: latency over HTTP and the server's memory per frame size.

Starts `deepshield serve` (its own process) on a run holding MesoNet's published Meso4 DF
weights (../shared/data/pretrained_mesonet), uploads the first S seconds of two FF++ originals
(640x480 and 1280x720, re-encoded as H.264 into a temporary folder) N times each, and prints
the p50 latency and the server's resident-memory growth at its peak (VmHWM of /proc/PID/status,
one fresh server per clip). The growth divided by the size of one RGB frame says how many
frames a video decode holds, the FRAMES_HELD the decoding budget charges
(`deepshield.service.media_uploads`); the slope between the two sizes removes what does not
grow with the frame (the model's activations, the upload's copies).

    python benchmarks/serve_video.py [-n 3] [--seconds 1.5] [--frames 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np

from deepshield import models
from deepshield.run import RunDir
from deepshield.service.background import serving

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).parents[2] / "shared")) / "data"
CLIPS = ("ffpp_c23_original_519.mp4", "ffpp_c23_original_634.mp4")  # 640x480, 1280x720


def cut(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of `src`, re-encoded as H.264 yuv420p at its own size and rate."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        v = i.streams.video[0]
        rate = round(float(v.average_rate))
        s = o.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
        for k, frame in enumerate(i.decode(v)):
            if k >= seconds * rate:
                break
            rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for p in s.encode(rgb):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    return dst


def kib(pid: int, key: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="uploads per clip")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    a = ap.parse_args()
    weights = SHARED / "pretrained_mesonet" / "weights" / "Meso4_DF.h5"
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "meso4")
        run.save_model(models.load_weights(models.create("meso4"), weights))
        env = {"OMP_NUM_THREADS": str(a.threads)}  # torch threads of the server
        print("clip        frames  size      p50 s   peak RSS growth MB   RGB frames")
        points = []
        for name in CLIPS:
            clip = cut(SHARED / "deepfake_videos" / "real" / name, Path(tmp) / name, a.seconds)
            data = clip.read_bytes()
            with serving(str(run.path), "--frames", str(a.frames), env=env) as (url, proc):
                warm = httpx.post(f"{url}/v1/scan", files={"file": ("w.png", png())}, timeout=60)
                assert warm.status_code == 200, warm.text
                base = kib(proc.pid, "VmRSS")
                times = []
                for _ in range(a.n):
                    t = time.perf_counter()
                    r = httpx.post(f"{url}/v1/scan", files={"file": (name, data)}, timeout=300)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                grown = (kib(proc.pid, "VmHWM") - base) / 1024  # MiB
            v = r.json()["video"]
            frame_mb = v["width"] * v["height"] * 3 / 2**20
            points.append((frame_mb, grown))
            print(
                f"{name[-7:-4]:<10} {v['frames_sampled']:>6}  {v['width']}x{v['height']:<5} "
                f"{np.median(times):7.2f}   {grown:18.1f}   {grown / frame_mb:10.1f}"
            )
        (f0, g0), (f1, g1) = points
        print(
            f"slope: {(g1 - g0) / (f1 - f0):.1f} RGB frames per frame size, fixed part "
            f"{g0 - f0 * (g1 - g0) / (f1 - f0):.1f} MB"
        )


def png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


if __name__ == "__main__":
    main()
