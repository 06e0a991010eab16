"""Re-encode a video with PyAV's H.264 encoder (libx264) at a constant rate factor (CRF).

Every frame of the first video stream is decoded and encoded again at the same size and frame
rate, yuv420p, preset `veryfast` (by default), one encoder thread (the same input gives the same bytes); audio is
dropped. CRF is x264's quality scale: 0 lossless, 23 its default, 51 the worst; FaceForensics++
ships its videos at c23 (CRF 23) and c40 (CRF 40).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from deepshield.errors import ConfigError, DataError

CRF_RANGE = (0, 51)


def check_crf(crf: int) -> int:
    """`crf` when it is an integer in 0..51; ConfigError naming it otherwise."""
    lo, hi = CRF_RANGE
    if isinstance(crf, bool) or not isinstance(crf, int) or not lo <= crf <= hi:
        raise ConfigError(f"crf {crf!r}: give an integer x264 constant rate factor in {lo}..{hi}")
    return crf


def reencode_h264(src: str | Path, dst: str | Path, crf: int, *, preset: str = "veryfast") -> Path:
    """Decode every frame of `src` and write it to `dst` (MP4, H.264 yuv420p at `crf`)."""
    check_crf(crf)
    if "libx264" not in av.codecs_available:
        raise ConfigError("this PyAV build has no libx264 encoder: install the PyAV wheel (pip)")
    src, dst = Path(src), Path(dst)
    try:
        inp = av.open(str(src), mode="r")
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{src}: not a readable video ({e}): check the file") from e
    with inp, av.open(str(dst), mode="w", format="mp4") as out:
        if not inp.streams.video:
            raise DataError(f"{src}: no video stream: give a video file")
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or stream_in.guessed_rate or 25
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = stream_in.codec_context.width, stream_in.codec_context.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        stream.codec_context.time_base = Fraction(1, 1) / rate
        for i, frame in enumerate(inp.decode(stream_in)):
            image = frame.reformat(format="yuv420p")
            image.pts, image.time_base = i, stream.codec_context.time_base
            out.mux(stream.encode(image))
        out.mux(stream.encode(None))  # flush the encoder
    return dst
