"""The same FFHQ photos as PNG, JPEG, AVIF and HEIC: MesoNet's P(fake) per format against the PNG
originals (the installed `deepshield scan`), decode time, size and PSNR per photo (docs/media.md).

Usage: python benchmarks/photo_formats.py [--n 20] [--quality 90] [--side 0] --out DIR
(HEIC needs pillow-heif: pip install 'deepshield[heic]'.)
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepshield.media import images, read_media_image

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FORMATS = {"png": "PNG", "jpeg": "JPEG", "avif": "AVIF", "heic": "HEIF"}


def encode(n: int, quality: int, side: int, out: Path) -> None:
    """out/<format>/real_<i>.<format>: the first `n` FFHQ photos (resized to `side`, 0 native)."""
    for fmt in FORMATS:
        (out / fmt).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.open(SHARED / f"data/faces_ffhq_vs_tpdne/real/real_{i}.png").convert("RGB")
        if side:
            im = im.resize((side, side), Image.Resampling.LANCZOS)
        for fmt, pil in FORMATS.items():
            kw = {} if fmt == "png" else {"quality": quality}
            im.save(out / fmt / f"real_{i}.{fmt}", pil, **kw)


def decode_ms(path: Path, repeats: int = 5) -> float:
    """Fastest of `repeats` header-checked decodes of one photo, in ms."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        read_media_image(path)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def scores(folder: Path, weights: Path) -> dict[str, float]:
    """P(fake) by file stem of the installed script's scan of `folder` (MesoNet, whole photo)."""
    out = folder.parent / f"scan_{folder.name}"
    script = Path(sys.executable).parent / "deepshield"
    argv = [script, "--threads", "1", "scan", folder, "--model", "meso4", "--weights", weights]
    argv += ["--faces", "none", "--out", out, "--force"]
    subprocess.run(list(map(str, argv)), check=True, capture_output=True)
    with open(out / "scan.csv") as f:
        return {Path(r["path"]).stem: float(r["score"]) for r in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument(
        "--side", type=int, default=0, help="resize the photos to this side (0: native)"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not images._heif_opener():
        sys.exit("pillow-heif is not installed: pip install 'deepshield[heic]'")
    encode(args.n, args.quality, args.side, args.out)
    weights = SHARED / "data/pretrained_mesonet/weights/Meso4_DF.h5"
    ref = scores(args.out / "png", weights)
    png = {p.stem: read_media_image(p) for p in (args.out / "png").iterdir()}
    print("format  mean|dP(fake)|  max|dP(fake)|  decode ms/photo  kB/photo  PSNR dB vs PNG")
    for fmt in FORMATS:
        files = sorted((args.out / fmt).iterdir())
        got = scores(args.out / fmt, weights)
        diff = np.abs([got[k] - ref[k] for k in ref])
        ms = np.median([decode_ms(p) for p in files])
        kb = np.mean([p.stat().st_size for p in files]) / 1024
        mse = [np.mean((read_media_image(p) / 1.0 - png[p.stem]) ** 2) for p in files]
        db = 10 * np.log10(255**2 / np.mean(mse)) if np.mean(mse) else float("inf")
        print(
            f"{fmt:6s}  {diff.mean():14.4f}  {diff.max():13.4f}  {ms:15.2f}  {kb:8.1f}  {db:14.1f}"
        )


if __name__ == "__main__":
    main()
