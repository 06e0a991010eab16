"""Peak memory of reading an audio upload in the scan service, against what the decoding budget
reserves for it (`deepshield.service.media_uploads.decode_peak`).

Encodes S seconds of a stereo (or mono) tone with a little noise as raw ADTS AAC (no duration in
its header, so the service plans for its audio limit) or as a streamed 16-bit WAV (size
0xFFFFFFFF), plans it as the service does (`audio_cost` under --limit seconds), then reads and
windows it as the service does (`score_track` bounded by the plan, a constant stand-in for the
model), and prints the plan's reservation, the tracemalloc peak and the growth of the process's
peak resident memory (VmHWM, reset before reading through /proc/self/clear_refs), in float32
values (4 bytes, one pixel of the budget) and MB. Over the limit the read stops with 413.

    python benchmarks/audio_memory.py [--seconds 600] [--limit 600] [--rate 48000]
        [--channels 2] [--format adts|wav]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import tempfile
import tracemalloc
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from deepshield.media.audio import AudioTooLongError
from deepshield.media.track import score_track
from deepshield.service.media_uploads import MediaRules, audio_cost
from deepshield.service.uploads import Upload


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """float32 [T, C]: a 440 Hz tone with a little noise."""
    t = np.arange(round(seconds * rate)) / rate
    g = np.random.default_rng(0)
    x = 0.2 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.02 * g.standard_normal((len(t), channels))
    return x.astype(np.float32)


def upload(fmt: str, seconds: float, rate: int, channels: int) -> bytes:
    """The bytes of the upload: raw ADTS AAC, or a WAV with its sizes set to 0xFFFFFFFF."""
    x = tone(seconds, rate, channels)
    buf = io.BytesIO()
    if fmt == "wav":
        sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
        data = bytearray(buf.getvalue())
        data[4:8] = b"\xff\xff\xff\xff"
        i = data.find(b"data")
        data[i + 4 : i + 8] = b"\xff\xff\xff\xff"
        return bytes(data)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(buf, "w", format="adts") as out:
        s = out.add_stream("aac", rate=rate)
        s.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for p in [*s.encode(frame), *s.encode(None)]:
            out.mux(p)
    return buf.getvalue()


def peak_rss_kb() -> int:
    """VmHWM of this process, KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def measure(path: str, name: str, limit: float, out: dict) -> None:
    """In a fresh process: plan the upload at `path`, read it as the service does, and put the
    plan, the answer, the tracemalloc peak and the peak RSS growth (bytes) in `out`."""
    with open(path, "rb") as f:
        up = Upload(f.read(), name, "application/octet-stream")
    plan = audio_cost(up, MediaRules(max_audio_s=limit), 0)

    def scores(x):  # the model stands aside: windows [W, T] -> constant P(fake)
        return np.full(len(x), 0.5), np.full(len(x), 0.5)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = peak_rss_kb()
    tracemalloc.start()
    try:
        score_track(
            up.data,
            window=64600,
            model_rate=16000,
            max_windows=16,
            scores=scores,
            max_seconds=plan.seconds,
            name=name,
        )
        answer = "read and windowed"
    except AudioTooLongError as e:  # the service answers 413
        answer = f"stopped: {e}"
    out.update(
        answer=answer,
        seconds=plan.seconds,
        samples=plan.samples,
        traced=tracemalloc.get_traced_memory()[1],
        rss=(peak_rss_kb() - before) * 1024,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--limit", type=float, default=600.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, default=2, choices=(1, 2))
    ap.add_argument("--format", default="adts", choices=("adts", "wav"))
    a = ap.parse_args()
    data = upload(a.format, a.seconds, a.rate, a.channels)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ctx.Manager() as manager:
        path = f"{tmp}/a.{a.format}"
        Path(path).write_bytes(data)
        out = manager.dict()
        child = ctx.Process(target=measure, args=(path, Path(path).name, a.limit, out))
        child.start()
        child.join()
        r = dict(out)
    print(
        f"{a.format} {a.seconds:g} s, {a.rate} Hz x {a.channels}, {len(data):,} bytes, "
        f"limit {a.limit:g} s: {r['answer']}"
    )
    res = r["samples"] * 4
    print(
        f"plan: stop past {r['seconds']:g} s, reserve {r['samples']:,} values ({res / 1e6:.0f} MB)"
    )
    for what, got in (("tracemalloc peak", r["traced"]), ("peak RSS growth", r["rss"])):
        print(f"{what} {got / 4:,.0f} values ({got / 1e6:.0f} MB): reservation {res / got:.2f}x")


if __name__ == "__main__":
    main()
