"""Face detector recall and cost on the shared deepfake clips and FFHQ photos (docs/media.md).

Every clip shows one main face in every frame (shared/data/deepfake_videos/README.md), so a
frame where the largest box misses it is a miss and every further box is a false detection.
Usage: python benchmarks/media_faces.py [--frames 32] [--sides native,640,320] [--photos 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from deepshield.media import (
    box_iou,
    crop_face,
    detect_faces,
    read_media_image,
    read_video_frames,
)

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def clip_row(path: Path, frames: int, sides: list[int | None]) -> dict:
    """Decode `frames` frames of one clip; per detection side: recall, extra boxes, time, IoU."""
    start = _clock()
    video = read_video_frames(path, frames=frames)
    decode_wall, decode_cpu = _since(start)
    row = {"file": path.name, "frames": frames, "size": f"{video.info.width}x{video.info.height}",
           "decode_wall_s": decode_wall / frames, "decode_cpu_s": decode_cpu / frames}  # fmt: skip
    reference = None
    for side in sides:
        name = "native" if side is None else str(side)
        start, found, extra, boxes = _clock(), 0, 0, []
        for img in video.images:
            faces = detect_faces(img, max_side=side)
            found += bool(faces)
            extra += max(0, len(faces) - 1)
            boxes.append(faces[0].box if faces else None)
        wall, cpu = _since(start)
        start = _clock()
        for img, box in zip(video.images, boxes, strict=True):
            if box is not None:
                crop_face(img, box, 256)
        crop_wall, crop_cpu = _since(start)
        reference = reference or boxes
        ious = [box_iou(a, b) for a, b in zip(boxes, reference, strict=True) if a and b]
        row[name] = {"recall": found / frames, "extra_boxes": extra,
                     "detect_wall_s": wall / frames, "detect_cpu_s": cpu / frames,
                     "crop_cpu_s": crop_cpu / frames, "crop_wall_s": crop_wall / frames,
                     "iou_vs_first_min": min(ious) if ious else None,
                     "iou_vs_first_mean": sum(ious) / len(ious) if ious else None}  # fmt: skip
    return row


def photo_rows(n: int) -> dict:
    """Recall of the detector on n real (FFHQ) and n fake (StyleGAN2) 128x128 face photos."""
    root = SHARED / "data" / "faces_ffhq_vs_tpdne"
    out = {}
    for cls, prefix in (("real", "real"), ("fake", "fake")):
        start, found, extra = _clock(), 0, 0
        for i in range(n):
            faces = detect_faces(read_media_image(root / cls / f"{prefix}_{i}.png"))
            found += bool(faces)
            extra += max(0, len(faces) - 1)
        wall, cpu = _since(start)
        out[cls] = {"n": n, "recall": found / n, "extra_boxes": extra,
                    "wall_s": wall / n, "cpu_s": cpu / n}  # fmt: skip
    return out


def markdown(rows: list[dict], sides: list[str]) -> str:
    """docs/media.md tables: per side found/N, false boxes, CPU s, IoU; cost at the 2nd side."""
    lines = ["| clip | WxH | " + " | ".join(sides) + " |", "|---" * (len(sides) + 2) + "|"]
    for r in rows:
        cells = []
        for side in sides:
            v, n = r[side], round(r[side]["recall"] * r["frames"])
            iou = v["iou_vs_first_mean"]
            iou = (
                ""
                if iou is None or side == sides[0]
                else f", {iou:.2f}/{v['iou_vs_first_min']:.2f}"
            )
            cells.append(f"{n}, {v['extra_boxes']}, {v['detect_cpu_s']:.3f}{iou}")
        lines.append(f"| {Path(r['file']).stem} | {r['size']} | " + " | ".join(cells) + " |")
    lines += ["", "| clip | WxH | CPU s | wall s |", "|---|---|---|---|"]
    for r in rows:
        v = r[sides[1] if len(sides) > 1 else sides[0]]
        cpu = r["frames"] * (r["decode_cpu_s"] + v["detect_cpu_s"] + v["crop_cpu_s"])
        wall = r["frames"] * (r["decode_wall_s"] + v["detect_wall_s"] + v["crop_wall_s"])
        lines.append(f"| {Path(r['file']).stem} | {r['size']} | {cpu:.2f} | {wall:.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Print one JSON line per clip and one for the photos (load average included)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--sides", default="native,640,320")
    ap.add_argument("--photos", type=int, default=40)
    args = ap.parse_args()
    sides = [None if s == "native" else int(s) for s in args.sides.split(",")]
    root = SHARED / "data" / "deepfake_videos"
    with open(root / "labels.csv") as f:
        files = [r["file"] for r in csv.DictReader(f)]
    print(json.dumps({"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)
    rows = []
    for name in files:
        rows.append(clip_row(root / name, args.frames, sides))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"photos": photo_rows(args.photos), "loadavg_end": os.getloadavg()}))
    print(markdown(rows, args.sides.split(",")))


if __name__ == "__main__":
    main()
