"""Cost of searching a faceless video frame again at full size (docs/media.md, `faces_or_larger`).

CPU s (`time.process_time`, one thread) of the face search of a faceless frame of noise at
1920x1080 and 3840x2160: at 640 px alone, with the retry capped at FRAME_RETRY_PIXELS, and with
an uncapped retry; then a faceless 32-frame 1080p H.264 clip through `file_faces` (decode,
detection, crops: what a scan worker runs) without and with the retry.
Usage: python benchmarks/media_frame_retry.py [--out DIR]  (DIR: where the clip is written)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np

from deepshield.media import CropOptions, extract, faces_or_larger, file_faces, frame_faces


def cpu_seconds(img: np.ndarray, pixels: int, repeats: int) -> float:
    """Mean CPU s of `repeats` face searches of uint8 [H,W,3] `img` (retry at up to `pixels`;
    0: at 640 px only)."""
    start = time.process_time()
    for _ in range(repeats):
        faces_or_larger(0, 0.0, img, CropOptions(), pixels)
    return (time.process_time() - start) / repeats


def write_noise_clip(path: Path, frames: int, rng: np.random.Generator) -> Path:
    """H.264 MP4 of `frames` 1920x1080 frames of noise (no face) at 10 fps."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=10)
    s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
    for _ in range(frames):
        img = rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    rng, opts, cap = np.random.default_rng(0), CropOptions(), extract.FRAME_RETRY_PIXELS
    frame_faces(0, 0.0, np.zeros((480, 640, 3), np.uint8), opts)  # load the detector
    for w, h in ((1920, 1080), (3840, 2160)):
        img = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
        at_640, capped = cpu_seconds(img, 0, 5), cpu_seconds(img, cap, 5)
        whole = cpu_seconds(img, w * h, 3)
        print(f"{w}x{h} faceless frame: 640 px {at_640:.3f} CPU s, with the retry at up to")
        print(f"  {cap} px {capped:.3f} s, with an uncapped retry {whole:.3f} s")
    path = write_noise_clip(args.out / "faceless_1080p.mp4", 32, rng)
    for label, pixels in (("640 px only", 0), (f"retry at up to {cap} px", cap)):
        extract.FRAME_RETRY_PIXELS = pixels  # 0: no retry (the side is never above 640)
        start = time.process_time()
        got = file_faces(path, "video", opts, frames=32)
        found = sum(not ff.no_face for ff in got.frames)
        print(f"32-frame faceless 1080p clip, {label}: {time.process_time() - start:.2f} CPU s,")
        print(f"  {found} frames with a face")
    extract.FRAME_RETRY_PIXELS = cap


if __name__ == "__main__":
    main()
