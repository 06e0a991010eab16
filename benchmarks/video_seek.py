"""Frame sampling on a long clip: seeking to each sampled frame's keyframe vs decoding in order.

Builds a long H.264 clip from a source clip (looped, re-encoded with a keyframe every `keyint`
frames, as phones and platforms store video), then times `read_video_frames(frames=N)` with
and without seeking and checks that both return the same frames bit for bit (docs/media.md).
Usage: python benchmarks/video_seek.py [--source CLIP] [--seconds 120] [--keyints 30,250]
       [--frames 32] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from deepshield.media import read_video_frames
from deepshield.media import video as media_video

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SOURCE = SHARED / "data/deepfake_videos/fake/ffpp_c23_NeuralTextures_004_982.mp4"


def build_clip(source: Path, out: Path, seconds: float, keyint: int) -> Path:
    """`source` looped to `seconds`, H.264 (veryfast, CRF 23, a keyframe every `keyint`)."""
    if out.is_file():
        return out
    with av.open(str(source)) as src:
        s = src.streams.video[0]
        rate, w, h = s.average_rate, s.codec_context.width, s.codec_context.height
    total = round(seconds * float(rate))
    part = out.with_suffix(".part.mp4")
    with av.open(str(part), "w") as dst:
        params = f"keyint={keyint}:min-keyint={keyint}"
        options = {"preset": "veryfast", "crf": "23", "x264-params": params}
        v = dst.add_stream("libx264", rate=rate, options=options)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        n = 0
        while n < total:
            with av.open(str(source)) as src:
                for frame in src.decode(video=0):
                    if n == total:
                        break
                    img = frame.to_ndarray(format="rgb24")
                    for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        dst.mux(p)
                    n += 1
        for p in v.encode():
            dst.mux(p)
    part.rename(out)
    return out


def decoded_frames(path: Path, frames: int, seek: bool) -> int:
    """Frames the decoder output while `frames` frames were read (one more read, counted)."""
    count, decoded = [0], media_video._decoded

    def counting(packets):
        for frame in decoded(packets):
            count[0] += 1
            yield frame

    media_video._decoded = counting
    try:
        read_video_frames(path, frames=frames, seek=seek)
    finally:
        media_video._decoded = decoded
    return count[0]


def timed(path: Path, frames: int, seek: bool, repeats: int) -> tuple[float, float, np.ndarray]:
    """(best wall s, its CPU s, the images) of reading `frames` frames `repeats` times."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        got = read_video_frames(path, frames=frames, seek=seek)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[0]:
            best = (wall, cpu, got.images)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--keyints", default="30,250", help="keyframe intervals (frames), comma list")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "video-seek")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"source {args.source.name}, {args.seconds:.0f} s, {args.frames} frames sampled")
    print(
        "keyint | frames | keyframes | in order s (CPU s) | seeking s (CPU s) | speed-up | "
        "frames decoded seeking / in order | same"
    )
    for keyint in (int(k) for k in args.keyints.split(",")):
        name = f"{args.source.stem}-{args.seconds:.0f}s-k{keyint}.mp4"
        clip = build_clip(args.source, args.work / name, args.seconds, keyint)
        info = read_video_frames(clip, frames=1).info
        w0, c0, a = timed(clip, args.frames, False, args.repeats)
        w1, c1, b = timed(clip, args.frames, True, args.repeats)
        same = a.shape == b.shape and bool((a == b).all())
        n0, n1 = decoded_frames(clip, args.frames, False), decoded_frames(clip, args.frames, True)
        print(
            f"{keyint} | {info.frames} | {len(info.keyframes)} | {w0:.2f} ({c0:.2f}) | "
            f"{w1:.2f} ({c1:.2f}) | {w0 / w1:.1f}x | {n1} / {n0} | {same}"
        )


if __name__ == "__main__":
    main()
