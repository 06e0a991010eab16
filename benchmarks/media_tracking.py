"""Face tracking between sampled frames against detecting on every frame (docs/media.md).

Per clip of shared/data/deepfake_videos: the 32 sampled frames are decoded once, then faces are
found with `CropOptions(detect_every=k)` for each k (1 = the whole frame searched on every
frame, the reference). Each clip shows one main face in every frame, so recall = frames with a
face; IoU compares each frame's box with the reference's. Times are CPU s per frame of
detection + crop (`time.process_time`, one thread), and wall.
Usage: python benchmarks/media_tracking.py [--frames 32] [--every 1,4,8,32]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from deepshield.media import CropOptions, box_iou, read_video_frames
from deepshield.media.extract import track_faces

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def clip_row(path: Path, frames: int, everies: list[int]) -> dict:
    """Recall, IoU with every-frame detection, CPU and wall s per frame, for each k."""
    start = time.process_time()
    video = read_video_frames(path, frames=frames)
    row = {"file": path.name, "size": f"{video.info.width}x{video.info.height}",
           "decode_cpu_s": (time.process_time() - start) / frames}  # fmt: skip
    stream = [
        (int(i), float(t), img)
        for i, t, img in zip(video.indices, video.times, video.images, strict=True)
    ]
    reference = None
    for k in everies:
        opts = CropOptions(size=256, detect_every=k)
        wall, cpu = time.perf_counter(), time.process_time()
        boxes = [ff.faces[0].box if ff.faces else None for ff, _ in track_faces(iter(stream), opts)]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        reference = reference or boxes
        ious = [box_iou(a, b) for a, b in zip(boxes, reference, strict=True) if a and b]
        row[str(k)] = {"found": sum(b is not None for b in boxes), "frames": len(boxes),
                       "cpu_s": cpu / len(boxes), "wall_s": wall / len(boxes),
                       "iou_mean": sum(ious) / len(ious) if ious else None,
                       "iou_min": min(ious) if ious else None}  # fmt: skip
    return row


def markdown(rows: list[dict], everies: list[int]) -> str:
    """One line per clip: per k, found/frames, CPU ms per frame, IoU mean/min vs k=1."""
    head = " | ".join(f"k={k}" for k in everies)
    lines = [f"| clip | WxH | decode CPU ms/frame | {head} |", "|---" * (len(everies) + 3) + "|"]
    for r in rows:
        cells = []
        for k in everies:
            v = r[str(k)]
            iou = f", {v['iou_mean']:.2f}/{v['iou_min']:.2f}" if k != everies[0] else ""
            cells.append(f"{v['found']}/{v['frames']}, {1000 * v['cpu_s']:.1f}{iou}")
        lines.append(
            f"| {Path(r['file']).stem} | {r['size']} | {1000 * r['decode_cpu_s']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    """Print one JSON line per clip, then the markdown table (load average included)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--every", default="1,4,8,32")
    args = ap.parse_args()
    everies = [int(k) for k in args.every.split(",")]
    root = SHARED / "data" / "deepfake_videos"
    with open(root / "labels.csv") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    print(json.dumps({"loadavg_start": os.getloadavg()}), flush=True)
    rows = []
    for name in files:
        rows.append(clip_row(root / name, args.frames, everies))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"loadavg_end": os.getloadavg()}))
    print(markdown(rows, everies))


if __name__ == "__main__":
    main()
