"""How close the differentiable JPEG stand-in is to Pillow's JPEG (docs/robustness-eot.md).

    PYTHONPATH=src DEEPSHIELD_SHARED=../shared python benchmarks/eot_stand_ins.py [--n 64] [--size 64]

Images: the first N test images (real and fake) of shared/data/faces_ffhq_vs_tpdne at SIZE px,
as `deepshield train -d ... --data-arg size=SIZE --seed 0` splits them. Per quality and rounding
it prints the mean absolute difference (8-bit levels) and PSNR (peak 1) between the stand-in's
output and Pillow's decoded JPEG, beside how far Pillow's JPEG moves the image itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from deepshield import data
from deepshield.attacks.eot_transforms import ROUNDING, jpeg_approx
from deepshield.data.processing import pil_roundtrip

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> None:
    """Print one markdown row per quality: the real codec's change, then each rounding's gap."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load(str(SHARED / "data" / "faces_ffhq_vs_tpdne"), seed=0, size=args.size)
    x = splits.test.tensors()[0][: args.n]
    cols = " | ".join(f"{r}: MAD / PSNR" for r in ROUNDING)
    print(f"| quality | JPEG vs input: MAD / PSNR | {cols} |")
    print("|---|---|" + "---|" * len(ROUNDING))

    def gap(a: torch.Tensor, b: torch.Tensor) -> str:
        mad = float((a - b).abs().mean() * 255)
        psnr = float(10 * torch.log10(1 / (a - b).pow(2).mean()))
        return f"{mad:.2f} / {psnr:.1f} dB"

    for q in (95, 75, 50, 30, 10):
        real = pil_roundtrip(x, "JPEG", q)
        cells = [gap(jpeg_approx(x, q, rounding=r), real) for r in ROUNDING]
        print(f"| {q} | {gap(x, real)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
