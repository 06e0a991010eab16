"""How much each quick-grid setting changes real inputs: PSNR on faces, SNR on speech (docs/robustness.md).

Images: the first N real FFHQ faces of shared/data/faces_ffhq_vs_tpdne, resized to SIZE px
(antialiased bilinear). Speech: the 5 real LJSpeech clips of shared/data/speech_wavefake_ljspeech
at 16 kHz, cut to 2 s. PSNR is over all pixels (peak 1); SNR is input power over change power.
Usage: python benchmarks/processing_psnr.py [--images 16] [--size 64] [--grid quick]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from deepshield.data.processing import available_codecs, load_grid
from deepshield.media.audio import read_clips
from deepshield.media.images import read_image, resize, stack_images

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _db(signal: torch.Tensor, change: torch.Tensor) -> float:
    return float(10 * torch.log10(signal / change))


def main() -> None:
    """Print one markdown table row per setting: spec and how far the output is from the input (dB)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--grid", default="quick")
    args = ap.parse_args()
    faces = sorted((SHARED / "data/faces_ffhq_vs_tpdne/real").glob("*.png"))[: args.images]
    x = stack_images([resize(read_image(p), (args.size, args.size)) for p in faces]).float() / 255
    clips = sorted((SHARED / "data/speech_wavefake_ljspeech/real").glob("*.wav"))
    speech = read_clips(clips, length=32000)[0].double()
    print(f"codecs offered by this libsndfile: {available_codecs()}")
    print(f"| setting | {len(faces)} faces, {args.size} px: PSNR dB |")
    print("|---|---|")
    for t in load_grid(args.grid, "image"):
        y = t(x)
        print(f"| `{t.spec}` | {_db(torch.tensor(1.0), (y - x).pow(2).mean()):.2f} |")
    print(f"\n| setting | {len(clips)} LJSpeech clips, 2 s: SNR dB |")
    print("|---|---|")
    for t in load_grid(args.grid, "speech"):
        y = t(speech)
        snr = _db(speech.pow(2).mean(), (y - speech).pow(2).mean())
        print(f"| `{t.spec}` | {snr:.2f} |")


if __name__ == "__main__":
    main()
