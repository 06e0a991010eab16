"""The one audio reader: bytes or a file -> mono float32 in [-1, 1] at the model's rate, and a
record of what was done to the clip. Datasets, `evaluate`, the scan service and `deepshield scan`
all read audio here, so one file gets one answer everywhere.

Formats: WAV (8/16/24/32-bit PCM, float), FLAC, OGG Vorbis and Opus through libsndfile
(soundfile); MP3, M4A/AAC, ADTS AAC, the audio track of MP4/WebM/MKV and anything libsndfile
cannot open through PyAV (FFmpeg). The type is told from the bytes, never from the name.

Rules (the same for every caller; a file that breaks one raises `AudioError`, one line naming the
file and the fix):
  - float samples beyond full scale (a float WAV, a decoded MP3 or AAC) are scaled down to
    peak 1, not clipped (a float WAV peaking at 3 was called "heavy clipping"); the clipped
    share of a lossy file is counted before that scaling (its decoder overshoots full scale
    around a clipped source's flat tops: a sine clipped on 47 % of its samples, as Opus, has
    24.8 % of its decoded samples at or past 0.999, and none once scaled to peak 1);
  - channels are averaged to mono, leaving out a channel whose every sample is zero (a dead
    channel of a stereo recorder would halve the level: the official AASIST-L's P(spoof) of
    a real ASVspoof spoof moved from 0.455 to 0.865); the mono mix's mean (DC offset) is subtracted when it
    is at least DC_NOTE (0.001 of full scale, -60 dBFS): an inaudible offset of 0.02 turns
    the official AASIST-L's P(spoof) of a real ASVspoof bona fide clip from 2.5e-5 to 0.72;
  - the source rate must be MIN_SOURCE_RATE (8 kHz, telephone band) to MAX_SOURCE_RATE; any
    other rate is resampled to the model's rate with `resample` (polyphase FIR, exact ratio);
  - at least MIN_SECONDS (0.1 s) of audio, at most MAX_SECONDS (or the caller's `max_seconds`):
    refused from the header's duration before decoding, else as soon as the decoded
    duration passes it, whatever the header says (raw ADTS AAC declares none);
  - a WAV whose data chunk declares more bytes than follow, a FLAC that decodes to fewer frames
    than its header declares, an MP3/M4A shorter than its header's duration, an OGG/Opus whose
    last page is cut or lacks the end-of-stream mark, and any decoder error are refused as
    truncated or corrupt;
  - the model sees the first `length` samples; a shorter clip is tiled (repeated) and cut, as
    AASIST's evaluation `pad` does, so a model never sees digital silence it was not trained on.
`AudioRecord` says what was done (channels mixed, rate converted, tiled xK, seconds cut, bit
depth) and the level numbers `deepshield.media.degenerate` judges.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from itertools import count
from math import gcd
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from deepshield.errors import DataError
from deepshield.progress import track

SAMPLE_RATE = 16000
CLIP_LENGTH = 64600  # ~4.04 s at 16 kHz, AASIST's `nb_samp`
MIN_SOURCE_RATE = 8000  # below this the file holds less than a telephone band: refused
MAX_SOURCE_RATE = 384000
MIN_SECONDS = 0.1  # shorter files are refused, by every caller alike
MAX_SECONDS = 3600.0
DC_NOTE = 1e-3  # a DC offset at least this large (-60 dBFS) is removed, and said in the record
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac")
FORMATS = ("wav", "flac", "ogg", "mp3", "m4a", "aac", "webm", "other")
BLOCK_FRAMES = 1 << 16  # frames decoded per soundfile read
_HEAD = 1 << 16  # bytes read to tell the type and walk a WAV's chunk headers
_OGG_PAGE_MAX = 27 + 255 + 255 * 255  # header, segment table, payload: the largest Ogg page
# containers libsndfile reads here; MP3 goes to PyAV, which reads its Xing frame count without
# libmpg123's warnings on stderr
_SF_FORMATS = ("wav", "flac", "ogg")
_CODECS = {
    "mp3": "MPEG_LAYER_III",
    "mp3float": "MPEG_LAYER_III",
    "opus": "OPUS",
    "vorbis": "VORBIS",
}
_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_FLOAT_BITS = {"FLOAT": 32, "DOUBLE": 64}
_ENCODINGS = (
    "PCM_U8",
    "PCM_S8",
    "PCM_16",
    "PCM_24",
    "PCM_32",
    "FLOAT",
    "DOUBLE",
    "VORBIS",
    "OPUS",
    "MPEG_LAYER_III",
    "aac",
    "other",
)


class AudioError(DataError):
    """An audio file (or upload) the reader refuses: truncated, corrupt, off-limits."""


class NotAudioError(AudioError):
    """Bytes that are no audio format the reader knows (e.g. a text file named .wav)."""


class NoAudioTrackError(NotAudioError):
    """A container the reader opens that holds no audio stream (e.g. a silent video)."""


class AudioTooLongError(AudioError):
    """Audio longer than the reader's `max_seconds`: `seconds` declared (header) or decoded
    when decoding stopped, `limit` the bound it passed."""

    def __init__(self, message: str, seconds: float, limit: float) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.limit = limit


@dataclass(frozen=True)
class AudioRecord:
    """What was read and what was done to one clip (travels with its score).

    source_seconds: duration of the whole decoded file; kept_samples: samples (at `rate`) of the
    source the model's clip holds before tiling (0 when not fitted to a clip); clip_samples: the
    model's input length; rms_dbfs (around the mean: -inf for digital silence or a constant),
    clipped_fraction (share of samples at full scale, all channels mixed) and dc_offset (the mean of
    the mono mix, subtracted from the samples; 0 when under DC_NOTE and kept) are measured on
    the kept part.
    """

    container: str
    encoding: str
    bit_depth: int  # bits per PCM/float sample; 0 for lossy codecs
    channels: int
    source_rate: int
    source_seconds: float
    rate: int
    rms_dbfs: float
    clipped_fraction: float
    kept_samples: int = 0
    clip_samples: int = 0
    dc_offset: float = 0.0
    silent_channels: int = 0  # channels of all-zero samples, left out of the mono mix
    gain: float = 1.0  # 1 / peak for float samples beyond full scale (scaled, not clipped)

    @property
    def tiled(self) -> float:
        """How many times the kept audio was repeated to fill the clip (1.0: not tiled)."""
        if not self.kept_samples or self.kept_samples >= self.clip_samples:
            return 1.0
        return self.clip_samples / self.kept_samples

    @property
    def cut_seconds(self) -> float:
        """Seconds of the source after the clip, left unread by the model."""
        if not self.clip_samples:
            return 0.0
        return max(0.0, self.source_seconds - self.kept_samples / self.rate)

    def done(self) -> list[str]:
        """What was done to the clip, one phrase each (empty: used as it came)."""
        out = []
        if self.silent_channels:
            out.append(f"left out {self.silent_channels} silent of {self.channels} channels")
        if self.channels - self.silent_channels > 1:
            out.append(f"mixed {self.channels - self.silent_channels} channels to mono")
        if self.source_rate != self.rate:
            out.append(f"resampled from {self.source_rate} Hz to {self.rate} Hz")
        if self.tiled > 1.0:
            out.append(f"tiled x{self.tiled:.2f} to {self.clip_samples} samples")
        if self.cut_seconds > 0.0005:
            out.append(
                f"cut after {self.clip_samples / self.rate:.2f} s ({self.cut_seconds:.2f} s unread)"
            )
        if 0 < self.bit_depth < 16:
            out.append(f"{self.bit_depth}-bit source")
        if self.gain < 1.0:
            out.append(f"scaled by {self.gain:.3f}: float samples up to {1 / self.gain:.2f}")
        if abs(self.dc_offset) >= DC_NOTE:
            out.append(f"removed a DC offset of {self.dc_offset:+.3f}")
        return out

    def summary(self) -> str:
        """One line: the source and what was done (for CSV cells and notes)."""
        depth = f"{self.bit_depth}-bit " if self.bit_depth else ""
        head = f"{self.container} {depth}{self.encoding}, {self.source_rate} Hz"
        return "; ".join([head, *self.done()])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields plus `tiled`, `cut_seconds` and `done` (rms_dbfs None for -inf)."""
        d = asdict(self)
        d["rms_dbfs"] = None if math.isinf(self.rms_dbfs) else round(self.rms_dbfs, 2)
        d.update(tiled=round(self.tiled, 4), cut_seconds=round(self.cut_seconds, 4))
        d["done"] = self.done()
        return d

    def to_row(self) -> list[float]:
        """The record as numbers (strings as codes), for a dataset's per-sample meta tensor."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "container":
                v = _code(FORMATS, v)
            elif f.name == "encoding":
                v = _code(_ENCODINGS, v)
            out.append(float(v))
        return out

    @classmethod
    def from_row(cls, row: Sequence[float]) -> AudioRecord:
        """Inverse of `to_row`."""
        kw: dict[str, object] = {}
        for f, v in zip(fields(cls), row, strict=True):
            if f.name == "container":
                kw[f.name] = FORMATS[int(v)]
            elif f.name == "encoding":
                kw[f.name] = _ENCODINGS[int(v)]
            elif f.type in ("int", int):
                kw[f.name] = int(v)
            else:
                kw[f.name] = float(v)
        return cls(**kw)  # type: ignore[arg-type]


def _code(names: Sequence[str], v: str) -> int:
    return names.index(v) if v in names else len(names) - 1


@dataclass(frozen=True)
class _Decoded:
    samples: np.ndarray  # float32 [T, C], the kept frames only
    frames: int  # frames decoded in all
    rate: int
    container: str
    encoding: str
    bit_depth: int


# -- sniffing and header checks ------------------------------------------------------------
def audio_kind(data: bytes) -> str | None:
    """The audio container its first bytes say: wav, flac, ogg, mp3, m4a, aac, webm, or None."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"OggS"):
        return "ogg"
    if data.startswith(b"ID3"):
        return "mp3"
    if data[4:8] == b"ftyp":
        return "m4a"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS: sync 0xFFF, layer 00
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and data[1] & 0x06:
        return "mp3"  # MPEG audio frame sync, layer I-III
    return None


def _wav_truncation(head: bytes, size: int) -> str | None:
    """What is missing from a WAV of `size` bytes (starting with `head`) whose data chunk
    declares more bytes than follow (else None). A declared size of 0 or 0xFFFFFFFF (a streamed
    file, or RF64's placeholder) declares nothing; a data chunk past `head` is not checked."""
    i = 12
    while i + 8 <= len(head):
        cid, declared = head[i : i + 4], struct.unpack("<I", head[i + 4 : i + 8])[0]
        if cid == b"data":
            follow = size - i - 8
            if declared not in (0, 0xFFFFFFFF) and declared > follow:
                return f"its header declares {declared:,} data bytes but {follow:,} follow"
            return None
        i += 8 + declared + (declared & 1)
    return None


def _tail(data: bytes | None, path: str | None, size: int) -> bytes:
    """The last _OGG_PAGE_MAX bytes (or all) of the upload `data`, else of the file at `path`."""
    if data is not None:
        return data[-_OGG_PAGE_MAX:]
    with open(str(path), "rb") as f:
        f.seek(max(size - _OGG_PAGE_MAX, 0))
        return f.read()


def _ogg_truncation(tail: bytes) -> str | None:
    """Why an Ogg file ending with `tail` (its last _OGG_PAGE_MAX bytes or all of it) was cut,
    else None: a whole stream ends with a complete page carrying the end-of-stream flag, and a
    cut one (at a page boundary or inside a page) does not; libvorbis and libopus read either
    as a shorter clip, and no header declares the length."""
    start = tail.rfind(b"OggS")
    while start >= 0:
        n = tail[start + 26] if start + 27 <= len(tail) else 0
        table = tail[start + 27 : start + 27 + n]  # [n] segment lengths
        whole = start + 27 <= len(tail) and tail[start + 4] == 0 and len(table) == n
        if whole and start + 27 + n + sum(table) == len(tail):  # a page that ends the file
            return None if tail[start + 5] & 0x04 else "its last Ogg page has no end-of-stream mark"
        start = tail.rfind(b"OggS", 0, start)
    return "its last Ogg page is incomplete (the file was cut inside it)"


# -- decoding --------------------------------------------------------------------------------
def _soundfile(buf: io.BytesIO | str, keep_seconds: float | None, max_seconds: float) -> _Decoded:
    """Decode with libsndfile in blocks, keeping the first `keep_seconds` (all: None);
    _TooLong past `max_seconds`, declared or decoded."""
    import soundfile as sf

    with sf.SoundFile(buf) as f:
        rate, declared, subtype = f.samplerate, f.frames, f.subtype
        container = f.format.lower()
        _check_rate(rate)
        if 0 < declared < 2**62 and declared > max_seconds * rate:  # refused before decoding
            raise _TooLong(declared / rate)
        blocks = (f.read(BLOCK_FRAMES, dtype="float32", always_2d=True) for _ in count())  # [n, C]
        samples, total = _collect(blocks, _keep(keep_seconds, rate), rate, max_seconds)
    if 0 < declared < 2**62 and total < declared:
        raise _Truncated(f"its header declares {declared:,} frames but {total:,} decode")
    bits = _BITS.get(subtype, _FLOAT_BITS.get(subtype, 0))
    return _Decoded(samples, total, rate, container, subtype, bits)


def _collect(
    blocks: Iterator[np.ndarray], keep: int | None, rate: int, max_seconds: float
) -> tuple[np.ndarray, int]:
    """(the first `keep` frames (all: None) of decoded blocks [n, C] as [T, C], the frame count
    of all blocks); the blocks end at an empty one. Decoding stops with _TooLong(seconds) at
    the block that takes the count past `max_seconds` at `rate` (that block is not kept)."""
    kept: list[np.ndarray] = []
    total, held = 0, 0
    for block in blocks:
        if not len(block):
            break
        total += len(block)
        if total > max_seconds * rate:
            raise _TooLong(total / rate)
        room = len(block) if keep is None else keep - held
        if room > 0:
            kept.append(block[:room])
            held += len(kept[-1])
    return (np.concatenate(kept) if kept else np.zeros((0, 1), np.float32)), total


def _pyav(
    buf: io.BytesIO | str, container: str, keep_seconds: float | None, max_seconds: float
) -> _Decoded:
    """Decode the first audio stream with FFmpeg (planar float, channels and rate kept);
    _TooLong past `max_seconds`, declared or decoded."""
    import av

    with av.open(buf) as box:
        if not box.streams.audio:
            raise _NoTrack(
                "no audio track in it; give a file with sound (its picture needs an image detector)"
            )
        stream = box.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        _check_rate(rate)
        # raw ADTS declares no duration: FFmpeg's is an estimate from its first frames' bit rate
        # (1.3 s for 1 s of noise and 7 s of silence, 35 s for the reverse)
        estimated = container == "aac" or not stream.duration
        declared = 0.0 if estimated else float(stream.duration * stream.time_base)
        if declared > max_seconds:  # refused before decoding
            raise _TooLong(declared)
        codec = stream.codec_context.name
        to_float = av.AudioResampler(format="fltp", rate=rate)  # sample format only

        def frames() -> Iterator[np.ndarray]:
            for frame in box.decode(stream):
                yield from (out.to_ndarray().T for out in to_float.resample(frame))  # [n, C]
            yield from (out.to_ndarray().T for out in to_float.resample(None))

        samples, total = _collect(frames(), _keep(keep_seconds, rate), rate, max_seconds)
    if total / rate < 0.99 * declared - 0.05:  # a header's duration (MP3 Xing, MP4 moov)
        raise _Truncated(f"its header declares {declared:.2f} s but {total / rate:.2f} s decode")
    encoding = _CODECS.get(codec, codec)
    return _Decoded(samples, total, rate, container if container != "other" else codec, encoding, 0)


class _Truncated(Exception):
    pass


class _NotAudio(Exception):
    pass


class _NoTrack(_NotAudio):
    pass


class _TooLong(Exception):
    """Seconds declared, or decoded when decoding stopped, past the bound."""


class _BadRate(Exception):
    pass


def _check_rate(rate: int) -> None:
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise _BadRate(rate)


def _decode(
    data: bytes | None, path: str | None, keep_seconds: float | None, max_seconds: float
) -> _Decoded:
    """soundfile first, PyAV where libsndfile stops; raises the private errors above."""
    import av
    import soundfile as sf

    if data is not None:
        head, size = data[:_HEAD], len(data)
    else:
        with open(str(path), "rb") as f:
            head, size = f.read(_HEAD), os.fstat(f.fileno()).st_size
    kind = audio_kind(head) or "other"
    why = None
    if kind == "wav":
        why = _wav_truncation(head, size)
    elif kind == "ogg":
        why = _ogg_truncation(_tail(data, path, size))
    if why:
        raise _Truncated(why)

    def source() -> io.BytesIO | str:
        return io.BytesIO(data) if data is not None else str(path)

    sf_error: Exception | None = None
    if kind in (*_SF_FORMATS, "other"):
        try:
            return _soundfile(source(), keep_seconds, max_seconds)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            if kind in ("wav", "flac"):  # libsndfile is the reference decoder for these
                raise
            sf_error = e
    try:
        return _pyav(source(), kind, keep_seconds, max_seconds)
    except (av.error.FFmpegError, ValueError, IndexError) as e:
        if kind == "other":
            raise _NotAudio(
                "not an audio file (its first bytes match no audio format); "
                "give a wav, flac, ogg, opus, mp3 or m4a file"
            ) from (sf_error or e)
        raise


def _keep(keep_seconds: float | None, rate: int) -> int | None:
    """Frames to keep at `rate`: keep_seconds + 10 ms of margin for the resampling filter."""
    return None if keep_seconds is None else math.ceil(keep_seconds * rate) + rate // 100


def read_audio(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    rate: int = SAMPLE_RATE,
    keep_seconds: float | None = None,
    max_seconds: float = MAX_SECONDS,
) -> tuple[np.ndarray, AudioRecord]:
    """Decode `source` (a path, or the bytes of an upload called `name`) -> (mono float32 [T] in
    [-1, 1] at `rate`, its record). The whole file is decoded (so truncation and corruption
    anywhere are found); only its first `keep_seconds` (all: None) are kept and resampled.
    AudioTooLongError when its header declares more than `max_seconds`, or, whatever the header
    says, as soon as the decoded duration passes it (decoding stops within one block)."""
    import av
    import soundfile as sf

    data, path = (
        (bytes(source), None) if isinstance(source, (bytes, bytearray)) else (None, str(source))
    )
    label = name or (path if path is not None else "the upload")
    if path is not None and not Path(path).is_file():
        raise AudioError(f"{label}: audio file not found; check the path (or the protocol line)")
    try:
        d = _decode(data, path, keep_seconds, max_seconds)
    except _Truncated as e:
        raise AudioError(
            f"{label}: truncated audio: {e}; re-export or re-download the file"
        ) from None
    except _NotAudio as e:
        error = NoAudioTrackError if isinstance(e, _NoTrack) else NotAudioError
        raise error(f"{label}: {e}") from None
    except _TooLong as e:
        raise AudioTooLongError(
            f"{label}: audio longer than {max_seconds:g} s (stopped at {e.args[0]:.1f} s): cut "
            "it into shorter files",
            e.args[0],
            max_seconds,
        ) from None
    except _BadRate as e:
        raise AudioError(
            f"{label}: sample rate {e.args[0]} Hz; deepshield reads {MIN_SOURCE_RATE} Hz to "
            f"{MAX_SOURCE_RATE} Hz audio: record or export at 16 kHz or more"
        ) from None
    except (
        sf.LibsndfileError,
        RuntimeError,
        TypeError,
        ValueError,
        av.error.FFmpegError,
        IndexError,
        OSError,
    ) as e:
        raise AudioError(
            f"{label}: corrupt audio data ({_why(e)}); re-export or re-download the file"
        ) from None
    return _finish(d, label, rate)


def _why(e: Exception) -> str:
    """The decoder's complaint in one line, without libsndfile's "Error opening <source>: "
    (so a file and its upload give the same words)."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^Error opening (<[^>]*>|'[^']*'|\S+): ", "", text)  # libsndfile
    text = re.sub(r"^\[Errno -?\d+\] |: '[^']*'$", "", text)  # FFmpeg
    return text[:160]


def _finish(d: _Decoded, label: str, rate: int) -> tuple[np.ndarray, AudioRecord]:
    """Checks on the decoded frames, mono mix, resampling, level numbers."""
    seconds = d.frames / d.rate
    if seconds < MIN_SECONDS:
        raise AudioError(
            f"{label}: {seconds:.3f} s of audio; deepshield needs at least {MIN_SECONDS:g} s: "
            "give a longer recording"
        )
    x = d.samples  # [T, C]
    if not np.isfinite(x).all():
        raise AudioError(f"{label}: audio holds NaN or inf samples; re-export the file")
    live = (x != 0).any(axis=0)  # [C] channels with a non-zero sample
    channels = x.shape[1]
    if live.any() and not live.all():
        x = x[:, live]  # [T, C'] a dead channel is not half of the sound
    full = 1.0 - 2.0 ** -(d.bit_depth - 1) if d.bit_depth and d.encoding in _BITS else 0.999
    lossy = d.encoding not in _BITS and d.encoding not in _FLOAT_BITS
    if lossy:  # a decoder's overshoot past full scale rings around a clipped source's tops
        clipped = float((np.abs(x) >= full).mean())
    peak = max(float(x.max()), -float(x.min())) if x.size else 0.0
    gain = 1.0 / peak if peak > 1.0 else 1.0  # float data beyond full scale is not clipping
    if gain < 1.0:
        x = x * np.float32(gain)
    if not lossy:  # PCM at its full scale; float PCM once scaled into [-1, 1]
        clipped = float((np.abs(x) >= full).mean())
    mono = x.mean(axis=1)  # [T]
    mean = float(mono.mean(dtype=np.float64)) if len(mono) else 0.0
    centred = mono - np.float32(mean)
    rms = float(np.sqrt(np.mean(np.square(centred, dtype=np.float64))))  # around the mean
    dc = mean if abs(mean) >= DC_NOTE else 0.0
    if dc:  # an offset no one hears, but a detector does (smaller ones are kept)
        mono = centred
    mono = np.clip(resample(mono, d.rate, rate), -1.0, 1.0).astype(np.float32, copy=False)
    record = AudioRecord(
        container=d.container,
        encoding=d.encoding,
        bit_depth=d.bit_depth,
        channels=channels,
        source_rate=d.rate,
        source_seconds=round(seconds, 6),
        rate=rate,
        rms_dbfs=20 * math.log10(rms) if rms > 0 else -math.inf,
        clipped_fraction=clipped,
        dc_offset=dc,
        silent_channels=channels - x.shape[1],
        gain=gain,
    )
    return mono, record


def read_clip(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    rate: int = SAMPLE_RATE,
    length: int = CLIP_LENGTH,
) -> tuple[np.ndarray, AudioRecord]:
    """One file or upload as the model's input: float32 [length] in [-1, 1] at `rate` (the
    first `length` samples, tiled when shorter) and its record."""
    wave, record = read_audio(source, name=name, rate=rate, keep_seconds=length / rate)
    kept = min(len(wave), length)
    return fix_length(wave, length), replace(record, kept_samples=kept, clip_samples=length)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """x: [..., T] at orig_sr -> [..., T * target_sr / orig_sr] at target_sr (polyphase FIR)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise DataError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return x
    g = gcd(int(orig_sr), int(target_sr))
    y = resample_poly(x, target_sr // g, orig_sr // g, axis=-1)
    return y.astype(x.dtype, copy=False)


def fix_length(x: np.ndarray, length: int = CLIP_LENGTH) -> np.ndarray:
    """x: [T] -> [length]: the first `length` samples, or x repeated (tiled) and cut when shorter."""
    if len(x) == 0:
        raise DataError("cannot pad an empty clip; remove the empty audio file")
    if len(x) >= length:
        return x[:length]
    reps = -(-length // len(x))  # ceil
    return np.tile(x, reps)[:length]


def model_input(wave: np.ndarray, rate: int, model_rate: int, length: int) -> torch.Tensor:
    """Mono [T] at `rate` -> a speech model's input [1, length] float32 in [-1, 1]: resampled to
    `model_rate`, then cut or tiled to `length` samples (`fix_length`)."""
    x = fix_length(resample(wave, rate, model_rate), length)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0)


def is_audio_file(path: Path) -> bool:
    """True for a visible file with an audio extension (case-insensitive)."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in AUDIO_EXTENSIONS
    )


def audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder` (recursive), sorted by path."""
    return sorted(p for p in folder.rglob("*") if is_audio_file(p))


def read_clips(
    paths: Sequence[str | Path], rate: int = SAMPLE_RATE, length: int = CLIP_LENGTH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Many files -> (float32 [N, length] in [-1, 1], their records as rows float64 [N, R])
    (a progress bar on a terminal)."""
    out = np.empty((len(paths), length), dtype=np.float32)
    rows = []
    for i, p in enumerate(track(paths, "reading audio", total=len(paths))):
        out[i], record = read_clip(p, rate=rate, length=length)
        rows.append(record.to_row())
    width = len(fields(AudioRecord))
    return torch.from_numpy(out), torch.tensor(rows, dtype=torch.float64).reshape(-1, width)


def records(rows: torch.Tensor) -> Iterator[AudioRecord]:
    """AudioRecords of a dataset's meta["audio"] rows [N, R]."""
    for row in rows.tolist():
        yield AudioRecord.from_row(row)
