"""MesoNet zero-shot on shared/data/deepfake_videos, per manipulation method and per pair, and a
fine-tuned detector's held-out pairs beside it (docs/media.md). 11 clips: a pipeline test.

Reads what the commands wrote: `deepshield scan` folders (one per weight file: scan.csv and
scan_frames.csv) and leave-one-pair-out `deepshield train` runs (metrics.json, test.video_level).
Frame score = max over the frame's faces, video score = mean over frames with a face (the scan's
rule). Per method: that method's fake clips against all real clips.
Usage: python benchmarks/mesonet_videos.py --scan Meso4_DF=DIR [--scan ...]
                                           [--lopo 'RUN_{pair}' --lopo-scan Meso4_DF]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

from deepshield.metrics import auc

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ROOT = SHARED / "data" / "deepfake_videos"


def labels() -> list[dict[str, str]]:
    """labels.csv rows (file, label, method, pair, ...)."""
    with open(ROOT / "labels.csv") as f:
        return list(csv.DictReader(f))


def frame_scores(scan: Path) -> dict[str, list[float]]:
    """clip stem -> frame scores (max over faces; frames without a face left out)."""
    per: dict[tuple[str, int], float] = {}
    with open(scan / "scan_frames.csv") as f:
        for r in csv.DictReader(f):
            if r["score"]:
                key = (Path(r["path"]).stem, int(r["frame"]))
                per[key] = max(per.get(key, 0.0), float(r["score"]))
    out: dict[str, list[float]] = {}
    for (stem, _), s in sorted(per.items()):
        out.setdefault(stem, []).append(s)
    return out


def _auc(fake: list[float], real: list[float]) -> float:
    y = [1] * len(fake) + [0] * len(real)
    return float(auc(np.array(y), np.array(fake + real)))


def by_method(scans: dict[str, Path]) -> str:
    """Rows: each fake method and all of them; columns: frame AUC / video AUC per weight file."""
    rows, methods = labels(), sorted({r["method"] for r in labels() if r["label"] == "1"})
    lines = ["| fakes | " + " | ".join(scans) + " |", "|---" * (len(scans) + 1) + "|"]
    scores = {name: frame_scores(d) for name, d in scans.items()}
    for method in [*methods, "all"]:
        cells = []
        real = [Path(r["file"]).stem for r in rows if r["label"] == "0"]
        fake = [
            Path(r["file"]).stem
            for r in rows
            if r["label"] == "1" and method in ("all", r["method"])
        ]
        for per in scores.values():
            f_auc = _auc([x for s in fake for x in per[s]], [x for s in real for x in per[s]])
            v_auc = _auc(
                [float(np.mean(per[s])) for s in fake], [float(np.mean(per[s])) for s in real]
            )
            cells.append(f"{f_auc:.3f} / {v_auc:.3f}")
        n = sum(r["label"] == "1" and method in ("all", r["method"]) for r in rows)
        lines.append(f"| {method} ({n} vs 5 real) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_pair(scans: dict[str, Path]) -> str:
    """Each pair's real and fake video score side by side, per weight file."""
    scores = {name: frame_scores(d) for name, d in scans.items()}
    head = " | ".join(f"{n} real / fake" for n in scans)
    lines = [f"| pair | fake method | {head} |", "|---" * (len(scans) + 2) + "|"]
    pairs: dict[str, dict[str, str]] = {}
    for r in labels():
        pairs.setdefault(r["pair"], {})[r["label"]] = Path(r["file"]).stem
        if r["label"] == "1":
            pairs[r["pair"]]["method"] = r["method"]
    for pair, clips in pairs.items():
        cells = []
        for per in scores.values():
            real = f"{np.mean(per[clips['0']]):.3f}" if "0" in clips else "(absent)"
            cells.append(f"{real} / {np.mean(per[clips['1']]):.3f}")
        lines.append(f"| {pair} | {clips['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(a: float | None) -> str:
    return "n/a (one class)" if a is None else f"{a:.3f}"


def lopo(pattern: str, scan: Path, name: str) -> str:
    """Per held-out pair: the fine-tuned run's test clips (video scores, frame AUC) beside the
    zero-shot scan's scores of the same clips."""
    zero = frame_scores(scan)
    lines = [
        f"| held-out pair | fine-tuned real / fake | frame AUC | {name} real / fake | frame AUC |",
        "|---|---|---|---|---|",
    ]
    pairs = sorted({r["pair"] for r in labels()})
    for pair in pairs:
        run = Path(pattern.format(pair=pair))
        if not (run / "metrics.json").is_file():
            continue
        vl = json.loads((run / "metrics.json").read_text())["test"]["video_level"]
        per = {Path(v["video"].split("#")[0]).stem: v for v in vl["per_video"]}
        real = [s for s, v in per.items() if v["label"] == 0]
        fake = [s for s, v in per.items() if v["label"] == 1]
        ft = [f"{per[s]['score']:.3f}" for s in real] or ["(absent)"]
        zs = [f"{np.mean(zero[s]):.3f}" for s in real] or ["(absent)"]
        ft_auc, zs_auc = vl["frame"].get("auc"), None
        if real and fake:
            zs_auc = _auc([x for s in fake for x in zero[s]], [x for s in real for x in zero[s]])
        lines.append(
            f"| {pair} | {ft[0]} / {per[fake[0]]['score']:.3f} | {_fmt(ft_auc)} | "
            f"{zs[0]} / {np.mean(zero[fake[0]]):.3f} | {_fmt(zs_auc)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", action="append", default=[], help="NAME=scan folder")
    ap.add_argument("--lopo", help="run folder pattern with {pair}, e.g. /tmp/ft-{pair}")
    ap.add_argument("--lopo-scan", help="NAME of the --scan to compare the held-out clips with")
    args = ap.parse_args()
    scans = {k: Path(v) for k, v in (s.split("=", 1) for s in args.scan)}
    print("Frame AUC / video AUC by manipulation method:\n")
    print(by_method(scans), "\n\nVideo scores by pair:\n")
    print(by_pair(scans))
    if args.lopo:
        print("\nLeave-one-pair-out fine-tuning against zero-shot on the same held-out clips:\n")
        print(lopo(args.lopo, scans[args.lopo_scan], args.lopo_scan))


if __name__ == "__main__":
    main()
