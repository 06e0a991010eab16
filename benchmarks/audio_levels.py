"""Level numbers of the real speech clips in the shared data, as the audio reader measures them,
against the degenerate-clip thresholds (deepshield.media.degenerate): the margin each rule has.

    python benchmarks/audio_levels.py            # reads $DEEPSHIELD_SHARED/data (default ../shared)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deepshield.media.audio import read_clip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64600, 16000])
    args = ap.parse_args()
    print("| clips | model clip | n | lowest RMS dBFS | most clipped | shortest s | bits | flagged |")
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
