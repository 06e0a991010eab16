"""Audio uploads are bounded by what they decode, not by what their headers say: decoding stops
with 413 as soon as the decoded duration passes the limit (or the declared length plus slack),
and the budget reserves the reader's measured peak memory for that much."""

from __future__ import annotations

import io
import struct
import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf

import deepshield.media.audio as audio
from deepshield.media.track import TrackHeader, score_track
from deepshield.service import create_app
from deepshield.service.media_uploads import MediaRules, audio_plan, decode_peak
from test_service_media import local, tiny_run

RATE = 48000


def tone(seconds: float, rate: int = RATE, channels: int = 2) -> np.ndarray:
    """float32 [T, C]: a 440 Hz tone with a little noise (no degenerate clip)."""
    t = np.arange(round(seconds * rate)) / rate
    g = np.random.default_rng(0)
    x = 0.2 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.02 * g.standard_normal((len(t), channels))
    return x.astype(np.float32)


def streamed_wav(seconds: float, rate: int = RATE, channels: int = 2) -> bytes:
    """16-bit WAV whose RIFF and data sizes are 0xFFFFFFFF (written while streaming)."""
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, rate, channels), rate, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[4:8] = b"\xff\xff\xff\xff"
    i = data.find(b"data")
    data[i + 4 : i + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


def encoded(
    fmt: str, codec: str, seconds: float, samples: np.ndarray | None = None, **options: str
) -> bytes:
    """Stereo 48 kHz `samples` [T, 2] (a tone of `seconds`: None) encoded with FFmpeg into
    container `fmt`."""
    x = tone(seconds) if samples is None else samples
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options) as out:
        s = out.add_stream(codec, rate=RATE)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = RATE
        for p in [*s.encode(frame), *s.encode(None)]:
            out.mux(p)
    return buf.getvalue()


def lying_mp3(declared_s: float, seconds: float) -> bytes:
    """An MP3 whose Xing header counts `declared_s` of frames (its byte count removed, so FFmpeg
    cannot tell it from the file size), followed by `seconds` more of frames."""
    head = bytearray(encoded("mp3", "libmp3lame", declared_s))
    k = max(head.find(b"Xing"), head.find(b"Info"))
    flags = struct.unpack(">I", head[k + 4 : k + 8])[0]
    assert flags & 15 == 15  # frames, bytes, TOC, quality
    head[k + 4 : k + 8] = struct.pack(">I", flags & ~2)
    del head[k + 12 : k + 16]  # the byte count
    head[k + 116 : k + 116] = b"\0" * 4  # the frame keeps its size
    return bytes(head) + encoded("mp3", "libmp3lame", seconds, write_xing="0", id3v2_version="0")


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs") / "mel", "mel_cnn")


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """Frames the audio reader decodes, counted in its block loop (one entry per file)."""
    counts: list[int] = []
    collect = audio._collect

    def counting(blocks, keep, rate, max_seconds):
        counts.append(0)

        def each():
            for b in blocks:
                counts[-1] += len(b)
                yield b

        return collect(each(), keep, rate, max_seconds)

    monkeypatch.setattr(audio, "_collect", counting)
    return counts


def post(app, name: str, data: bytes):
    return local(app).post("/v1/scan", files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize(
    ("name", "make", "declared"),
    [
        ("long.aac", lambda: encoded("adts", "aac", 8.0), False),  # raw ADTS: no duration
        ("long.wav", lambda: streamed_wav(8.0), True),  # its size follows from the bytes
    ],
)
def test_audio_over_the_limit_is_refused_without_decoding_past_it(
    speech_run, decoded, name, make, declared
):
    """8 s against a 2 s limit: 413 naming the limit and the fix; no more than the limit and
    one decoder block is decoded (the whole 8 s were decoded and scored before, for ADTS)."""
    app = create_app(speech_run, media_rules=MediaRules(max_audio_s=2.0))
    r = post(app, name, make())
    assert r.status_code == 413, r.text
    text = r.json()["error"]
    assert "\n" not in text and "send a shorter clip" in text
    if declared:  # the streamed WAV's length follows from its bytes: refused before decoding
        assert "declares 8.0 s of audio, over this server's 2 s limit" in text
        assert sum(decoded) == 0
    else:
        assert text.startswith(f"'{name}': more than this server's 2 s of audio (at least 2.0")
        assert 2.0 * RATE < decoded[0] <= 2.0 * RATE + 2048  # stopped within an AAC frame


def test_raw_adts_is_read_whatever_ffmpeg_estimates_its_length():
    """FFmpeg estimates 35 s for 7 s of silence then 1 s of noise (from the first frames' bit
    rate); the reader took it for a declared length and refused the 8 s as truncated."""
    x = np.zeros((8 * RATE, 2), np.float32)
    x[-RATE:] = tone(1.0)
    _, record = audio.read_audio(encoded("adts", "aac", 0, samples=x))
    assert record.source_seconds == pytest.approx(8.0, abs=0.05)


def test_a_header_declaring_1s_of_20s_is_refused_where_its_declared_length_ends(
    speech_run, decoded
):
    """Both decoders read 1.02 s from the MP3's Xing frame count; under a 5 s limit decoding
    stops past 1.02 * 1.01 + 0.5 s (the reservation's length), not at 20 s."""
    data = lying_mp3(1.0, 19.0)
    app = create_app(speech_run, media_rules=MediaRules(max_audio_s=5.0))
    r = post(app, "lie.mp3", data)
    assert r.status_code == 413, r.text
    assert "holds more audio than the 1.0 s its header declares" in r.json()["error"]
    assert 1.5 * RATE < decoded[0] <= 1.55 * RATE + 1152  # one MP3 frame past the plan
    r = post(create_app(speech_run, media_rules=MediaRules(max_audio_s=30.0)), "lie.mp3", data)
    assert r.status_code == 413, r.text  # the limit does not matter: the header lied
    _, record = audio.read_audio(data)  # the reader alone, unbounded, decodes all 20 s
    assert record.source_seconds == pytest.approx(20.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "make"),
    [("a.aac", lambda: encoded("adts", "aac", 3.0)), ("a.wav", lambda: streamed_wav(3.0))],
)
def test_audio_under_the_limit_is_scored_as_before(speech_run, name, make):
    """The answer equals `score_track` as the service called it before (keep_seconds=limit,
    no decoding bound), to every digit."""
    data = make()
    app = create_app(speech_run, media_rules=MediaRules(max_audio_s=5.0))
    body = post(app, name, data).json()
    hearer = app.state.scanner
    old = score_track(
        data,
        window=hearer.input_size[0],
        model_rate=hearer.sample_rate,
        max_windows=MediaRules().frames,
        scores=hearer.probabilities,
        keep_seconds=5.0,
        name=name,
    )
    assert body["p_fake_raw"] == old.raw.score and body["p_fake_max"] == old.p.max
    assert body["windows"] == old.p.frames >= 2 and body["note"] == old.note


@pytest.mark.parametrize(
    ("name", "make", "rate", "channels"),
    [
        ("long.aac", lambda: encoded("adts", "aac", 6.0), RATE, 2),  # no duration: the limit
        ("s.wav", lambda: streamed_wav(6.0), RATE, 2),
        ("m.wav", lambda: streamed_wav(6.0, 16000, 1), 16000, 1),
    ],
)
def test_the_reservation_covers_the_readers_measured_peak(speech_run, name, make, rate, channels):
    """What the budget reserved (float32 values) >= the reader's tracemalloc peak / 4 bytes,
    and not twice over it; the old reservation (declared samples, all channels) was under it."""
    data = make()
    app = create_app(speech_run, media_rules=MediaRules(max_audio_s=10.0))
    assert post(app, name, data).status_code == 200
    seconds = 10.0 if name.endswith(".aac") else 6.0 * 1.01 + 0.5
    assert app.state.budget.peak == decode_peak(seconds, rate, channels)
    tracemalloc.start()
    try:
        audio.read_audio(data, rate=16000, max_seconds=seconds)
        peak = tracemalloc.get_traced_memory()[1] / 4
    finally:
        tracemalloc.stop()
    assert decode_peak(6.0, rate, channels) >= peak > 6.0 * rate * channels
    assert decode_peak(6.0, rate, channels) < 3 * peak  # one 64 Ki-frame block of slack


def test_a_plan_stops_at_the_declared_length_plus_slack_or_the_limit():
    assert audio_plan(TrackHeader(1.0, RATE, 2), 5.0, 7).seconds == pytest.approx(1.51)
    assert audio_plan(TrackHeader(4.9, RATE, 2), 5.0, 7).seconds == 5.0
    assert audio_plan(TrackHeader(0.0, RATE, 2), 5.0, 7).seconds == 5.0
    assert audio_plan(None, 5.0, 7).samples == 7
