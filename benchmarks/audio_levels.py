"""Level numbers of the real speech clips in the shared data, as the audio reader measures them,
against the degenerate-clip thresholds (deepshield.media.degenerate): the margin each rule has.

    python benchmarks/audio_levels.py            # reads $DEEPSHIELD_SHARED/data (default ../shared)
    python benchmarks/audio_levels.py --cases DIR   # also writes DIR/{bonafide,spoof}/: odd copies
                                                    # of two real ASVspoof clips, for `evaluate`
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from deepshield.media.audio import read_clip, resample
from deepshield.media.degenerate import (
    CLIPPED_FRACTION,
    MIN_BIT_DEPTH,
    SHORT_FRACTION,
    SILENCE_DBFS,
    degenerate_reason,
)

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).parents[1] / ".." / "shared"))
SETS = {
    "ASVspoof 2019 LA eval": ("asvspoof2019_la_eval_samples", "flac/*.flac"),
    "WaveFake / LJSpeech": ("speech_wavefake_ljspeech", "**/*.wav"),
}


def write_cases(out: Path) -> None:
    """Copies of bona fide LA_E_3757378 (16-bit, 8-bit, silence, x1e-4, x30 clipped, 0.5 s,
    stereo 44.1 kHz MP3) and spoof LA_E_2834763 (16-bit WAV, OGG Vorbis) under out/."""
    flac = SHARED / "data" / "asvspoof2019_la_eval_samples" / "flac"
    bona, _ = sf.read(flac / "LA_E_3757378.flac", dtype="float32")
    spoof, _ = sf.read(flac / "LA_E_2834763.flac", dtype="float32")
    b, s = out / "bonafide", out / "spoof"
    b.mkdir(parents=True, exist_ok=True)
    s.mkdir(exist_ok=True)
    sf.write(b / "copy16.wav", bona, 16000, subtype="PCM_16")
    sf.write(b / "copy8.wav", bona, 16000, subtype="PCM_U8")
    sf.write(b / "silence.wav", np.zeros_like(bona), 16000, subtype="PCM_16")
    sf.write(b / "quiet.wav", 1e-4 * bona, 16000, subtype="FLOAT")
    sf.write(b / "loud.wav", np.clip(30 * bona, -1, 1), 16000, subtype="PCM_16")
    sf.write(b / "short.wav", bona[16000:24000], 16000, subtype="PCM_16")  # 0.5 s of speech
    stereo = np.clip(resample(np.stack([bona, bona]), 16000, 44100), -1, 1).T  # [T, 2]
    sf.write(b / "stereo44k.mp3", stereo, 44100, format="MP3")
    sf.write(s / "spoof16.wav", spoof, 16000, subtype="PCM_16")
    sf.write(s / "spoof.ogg", spoof, 16000, format="OGG", subtype="VORBIS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64600, 16000])
    ap.add_argument("--cases", type=Path, help="write the odd-copies folder here")
    args = ap.parse_args()
    if args.cases:
        write_cases(args.cases)
    print(
        "| clips | model clip | n | lowest RMS dBFS | most clipped | shortest s | bits | flagged |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        for name, (folder, pattern) in SETS.items():
            files = sorted((SHARED / "data" / folder).glob(pattern))
            recs = [read_clip(f, length=length)[1] for f in files]
            flagged = sum(degenerate_reason(r) is not None for r in recs)
            print(
                f"| {name} | {length} | {len(recs)} | {min(r.rms_dbfs for r in recs):.1f} | "
                f"{100 * max(r.clipped_fraction for r in recs):.4f} % | "
                f"{min(r.source_seconds for r in recs):.2f} | "
                f"{sorted({r.bit_depth for r in recs})} | {flagged} |"
            )
    print(
        f"\nthresholds: near-silence below {SILENCE_DBFS:g} dBFS, clipping above "
        f"{100 * CLIPPED_FRACTION:g} %, far too short under {100 * SHORT_FRACTION:g} % of the "
        f"clip, coarse under {MIN_BIT_DEPTH} bits"
    )


if __name__ == "__main__":
    main()
