"""Degenerate audio: clips on which a detector's score means nothing get the verdict "unsure"
with the reason, in `evaluate`'s per-file scores, the scan service and `deepshield scan`.

A clip is degenerate when, on the audio the model sees (the kept part, before tiling):
  - digital silence: every sample is zero (around the mean: a constant DC level is silence);
  - near-silence: RMS below SILENCE_DBFS (-70 dBFS);
  - heavy clipping: more than CLIPPED_FRACTION (1 %) of the samples at full scale;
  - far too short: the source is shorter than SHORT_FRACTION (25 %) of the model's clip, so
    the model sees it tiled 4 times or more;
  - coarse samples: PCM of fewer than MIN_BIT_DEPTH (12) bits (8-bit audio).
Thresholds were set on the 21 real clips in the shared data (ASVspoof 2019 LA eval samples,
WaveFake/LJSpeech), so that none of them is flagged; docs/speech.md gives the measurement.
"""

from __future__ import annotations

import math

from deepshield.media.audio import DC_NOTE, AudioRecord

SILENCE_DBFS = -70.0
CLIPPED_FRACTION = 0.01
SHORT_FRACTION = 0.25
MIN_BIT_DEPTH = 12


def degenerate_reason(record: AudioRecord) -> str | None:
    """Why the clip of `record` gets no confident verdict (one phrase), or None when it is fine."""
    if math.isinf(record.rms_dbfs) and record.rms_dbfs < 0:
        return "digital silence (every sample is zero)" + (
            f" after removing a DC offset of {record.dc_offset:+.3f}"
            if abs(record.dc_offset) >= DC_NOTE
            else ""
        )
    if record.rms_dbfs < SILENCE_DBFS:
        return f"near-silence (RMS {record.rms_dbfs:.1f} dBFS, below {SILENCE_DBFS:g} dBFS)"
    if record.clipped_fraction > CLIPPED_FRACTION:
        return (
            f"heavy clipping ({100 * record.clipped_fraction:.1f} % of samples at full scale, "
            f"above {100 * CLIPPED_FRACTION:g} %)"
        )
    clip_seconds = record.clip_samples / record.rate
    if record.clip_samples and record.source_seconds < SHORT_FRACTION * clip_seconds:
        return (
            f"far too short ({record.source_seconds:.2f} s, under {100 * SHORT_FRACTION:g} % of "
            f"the model's {clip_seconds:.2f} s clip)"
        )
    if 0 < record.bit_depth < MIN_BIT_DEPTH:
        return f"coarse {record.bit_depth}-bit samples (fewer than {MIN_BIT_DEPTH} bits)"
    return None


def verdict(decided: tuple[str, str | None], record: AudioRecord | None) -> tuple[str, str | None]:
    """(the verdict shown, why unsure): "unsure" and why for a degenerate clip, else `decided`,
    the (verdict, reason) of the score (`deepshield.metrics.verdict`)."""
    reason = degenerate_reason(record) if record is not None else None
    return ("unsure", reason) if reason else decided
