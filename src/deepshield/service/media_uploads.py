"""Video and audio uploads: bounded by what their headers declare before anything is decoded.

Video (image-detector runs): the upload is spooled to a temporary file and probed by the media
reader (container header and a demux pass, no frame decoded before the byte, duration, frame
count and frame size limits pass); then `MediaRules.frames` evenly spaced frames are decoded,
faces found (`MediaRules.faces`; tracked between full detections with `detect_every`, as `deepshield
scan` does) and cropped as the detector's training data were (`deepshield.media`), each face
scored by the run's detector. Frame score = max over its faces; video score = mean over the
frames with a face; a frame without one is `no_face` and gets no score.
Audio (speech runs): the duration its header declares is checked before decoding; the file is
then scored as `deepshield scan` scores it (`media.track.score_track`: in windows of the speech
run's clip, at most `MediaRules.frames` of them, mean and max over them).
A video's sound (an image run served with a speech run): its audio stream's header is read with
the probe; the track is scored by the speech detector as `deepshield scan` scores it
(`media.track.score_track`), a track declaring more than the video limit is not decoded.

Decoding memory is reserved in the service's pixel budget: for a video first one frame at the
pixel limit (the probe decodes at most the first frame, for its rotation), then
FRAMES_HELD frames of its declared size while frames are decoded, then its track's `AudioPlan`
while its sound is scored; for audio its `AudioPlan`: decoding stops (413, or `audio_error` for
a video's track) as soon as the decoded duration passes the declared length plus slack, or the
limit when none is declared, whatever the header says, and the reservation is the reader's
peak memory for that much at the header's rate and channels (`decode_peak`).
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepshield import media
from deepshield.errors import DataError
from deepshield.media.audio import (
    BLOCK_FRAMES,
    AudioError,
    AudioTooLongError,
    NoAudioTrackError,
    NotAudioError,
    audio_kind,
)
from deepshield.media.faces import FaceMode
from deepshield.media.track import TRACK_RATE, TrackHeader, TrackScore, score_track, track_header
from deepshield.service.scanner import EXPLAIN_SIDE, Scanner, image_tensor, resized
from deepshield.service.uploads import Upload, UploadError, check_type

# Frames of its size a video decode holds at once, counted in the budget (the frame being
# scored, its detection copy, the decoder's reference and threaded frames): the server's peak
# memory grew by ~7 RGB frames per frame size (9 in-process), benchmarks/serve_video.py.
FRAMES_HELD = 8
SCORE_BATCH = 64  # face crops a forward pass: `deepshield scan`'s (runs.scan.SCORE_BATCH)


@dataclass(frozen=True)
class MediaRules:
    """What the service decodes of a video or audio upload, and the bounds it refuses past."""

    frames: int = 16  # frames sampled, evenly spaced over the video (and audio windows, at most)
    faces: FaceMode = "largest"  # faces scored per frame: the largest, all, or none (whole frame)
    detect_every: int = 1  # whole frame searched every k-th sampled frame, faces tracked between
    max_video_s: float = 120.0
    max_video_frames: int = 7200  # frames in the stream (120 s at 60 fps)
    max_audio_s: float = 600.0

    def with_max_seconds(self, seconds: float | None) -> MediaRules:
        """These rules with `seconds` as the video and audio duration limit (and the frames in
        a video stream scaled with it, at 60 fps); unchanged for None."""
        if seconds is None:
            return self
        frames = max(1, round(seconds * 60))
        return replace(self, max_video_s=seconds, max_video_frames=frames, max_audio_s=seconds)


def video_limits(rules: MediaRules, max_bytes: int, max_pixels: int) -> media.MediaLimits:
    """The media reader's limits for one upload under the service's rules."""
    return media.MediaLimits(
        max_file_bytes=max_bytes,
        max_duration_s=rules.max_video_s,
        max_frame_pixels=max_pixels,
        max_frames_out=rules.frames,
        max_frames=rules.max_video_frames,
    )


def crop_options(scanner: Scanner, rules: MediaRules) -> media.CropOptions:
    """How faces are found and cropped for `scanner`: square at its input size, `rules.faces`
    and `rules.detect_every`, as `deepshield scan` crops them (`runs.scan._crop_options`)."""
    return media.CropOptions(
        size=max(scanner.input_size), mode=rules.faces, detect_every=rules.detect_every
    )


def _name(up: Upload) -> str:
    return f"'{up.filename}'" if up.filename else "the upload"


def _answer(up: Upload, path: Path, e: DataError, limits: media.MediaLimits) -> UploadError:
    """A media reader's error as the HTTP answer: 413 over a limit, 422 undecodable; the
    temporary file's path replaced by the upload's name."""
    if isinstance(e, media.MediaLimitError):
        return UploadError(
            413,
            f"{_name(up)}: {e.detail}: send a shorter or smaller video (this server takes up to "
            f"{limits.max_duration_s:g} s, {limits.max_frames:,} frames and "
            f"{limits.max_frame_pixels:,} pixels a frame)",
        )
    text = " ".join(str(e).replace(str(path), _name(up)).split())
    return UploadError(422, text)


def spool(up: Upload, kind: str, folder: str) -> Path:
    """Write the upload's bytes to `folder`/upload.<kind> (the media reader opens files)."""
    path = Path(folder) / f"upload.{kind}"
    path.write_bytes(up.data)
    return path


def probe_upload(
    up: Upload,
    accepted: tuple[str, ...],
    folder: str,
    limits: media.MediaLimits,
    *,
    sound: bool = False,
) -> tuple[Path, media.VideoInfo | None, TrackHeader | None]:
    """(spooled path, header facts, audio track header) of a video upload, its type and limits
    checked (4xx). With `sound` (a speech detector is served beside the image one) its first
    audio stream's header is read too, and a container holding sound only (an M4A) has no
    video facts (None): it is the speech detector's. Without `sound` the track is None."""
    kind = check_type(up, accepted)
    path = spool(up, kind, folder)
    video, track = track_header(path) if sound else (True, None)
    if not video and track is not None:
        return path, None, track
    try:
        return path, media.probe_video(path, limits), track
    except DataError as e:
        raise _answer(up, path, e, limits) from e


def scan_video(
    scanner: Scanner,
    up: Upload,
    path: Path,
    limits: media.MediaLimits,
    rules: MediaRules,
    explain: bool,
) -> dict[str, Any]:
    """Score the sampled frames' faces (tracked between detections with `rules.detect_every`)
    -> {p_fake, p_fake_raw, label ('no_face' without a face in any frame), reason, video: {...},
    frames: [{index, time, p_fake, faces: [{box, p_fake, p_fake_raw}]}]} (+ note: `face_note`,
    then `media.interlace_note`, as scan's row; the top face's overlay and its frame index with
    `explain`)."""
    try:
        info, found = media.video_faces(
            path, crop_options(scanner, rules), frames=rules.frames, limits=limits
        )
        frames = list(found)  # decoded, faces found and cropped
        rows, frame_p, frame_raw, best = _score_frames(scanner, frames)
    except DataError as e:
        raise _answer(up, path, e, limits) from e
    agg, answer = _file_answer(scanner, frames, frame_p, frame_raw)
    out = {"kind": "video"} | answer
    notes = (answer.get("note"), media.interlace_note(info.interlaced))  # as scan's row
    out |= {"note": "; ".join(filter(None, notes))} if any(notes) else {}
    out |= {
        "reason": agg.reason,
        "video": {
            "width": info.width,
            "height": info.height,
            "duration_s": info.duration_s,
            "fps": info.fps,
            "frames_total": info.frames,
            "rotation": info.rotation,
            "codec": info.codec,
            "interlaced": info.interlaced,
            "frames_sampled": agg.frames,
            "frames_with_face": agg.frames_with_face,
            "p_fake_max": agg.max,
            "p_fake_top_k": agg.top_k_mean,
            "top_k": agg.top_k,
        },
        "frames": rows,
    }
    if explain and best is not None:
        out |= _face_explanation(scanner, best, out["label"]) | {"gradcam_frame": best.frame}
    return out


def scan_photo(scanner: Scanner, im: Image.Image, rules: MediaRules, explain: bool) -> dict:
    """A photo scored as `deepshield scan` scores it, for a file-level decision (fitted on
    scan's file scores): faces found and cropped as in a video frame (`rules.faces`), P(fake)
    from their highest score (`Scanner.file_score`) -> `Scanner.answer`'s fields ('no_face'
    without a face) + reason, faces [{box, p_fake, p_fake_raw}] (+ note, as `face_note`; the
    top face's overlay with `explain`)."""
    scanner.check_explainable(explain)
    opts = crop_options(scanner, rules)
    found = [media.photo_faces(np.asarray(im, dtype=np.uint8), opts)]
    rows, frame_p, frame_raw, best = _score_frames(scanner, found)
    agg, out = _file_answer(scanner, found, frame_p, frame_raw)
    out |= {"reason": agg.reason, "faces": rows[0]["faces"]}
    if explain and best is not None:
        out |= _face_explanation(scanner, best, out["label"])
    return out


def _file_answer(
    scanner: Scanner,
    frames: list[media.FrameFaces],
    frame_p: list[float | None],
    frame_raw: list[float | None],
) -> tuple[media.VideoScore, dict[str, Any]]:
    """(the file's aggregate, `Scanner.answer` on it + `note` when `face_note` has one) from its
    frames and their scores (calibrated, raw; None: no face): the file score of
    `Scanner.file_score`, 'no_face' when no frame has one."""
    raw = media.video_score(frame_raw)
    agg = scanner.file_score(media.video_score(frame_p), raw)
    label, why = ("no_face", None) if agg.score is None else scanner.label(agg.score)
    answer = scanner.answer(agg.score, raw.score, label, why)
    note = None if agg.score is None else face_note(scanner, frames)
    return agg, answer | ({"note": note} if note else {})


def face_note(scanner: Scanner, frames: list[media.FrameFaces]) -> str | None:
    """`deepshield scan --decision`'s note on a file whose median face width lies outside the
    5-95 % range of the file-level decision's calibration files (`Decision.face_size_note`);
    None otherwise, and for a decision that keeps no face widths."""
    if scanner.decision is None:
        return None
    return scanner.decision.face_size_note(media.median_face_width(frames))


@dataclass(frozen=True)
class _Top:
    """The face a video's overlay is drawn on: its P(fake), frame index and uint8 [S,S,3] crop."""

    p_fake: float
    frame: int
    crop: np.ndarray


def _face_explanation(scanner: Scanner, best: _Top, label: str) -> dict[str, Any]:
    """The overlay of `label`'s class on the top face's crop (at most EXPLAIN_SIDE px)."""
    crop = Image.fromarray(best.crop)
    side = min(EXPLAIN_SIDE, crop.size[0])
    display = image_tensor(resized(crop, (side, side)))
    return scanner.explanation(scanner.pixels(crop), label, display)


def _score_frames(
    scanner: Scanner, frames: list[media.FrameFaces]
) -> tuple[list[dict], list[float | None], list[float | None], _Top | None]:
    """(frame rows, frame P(fake) or None, raw ones, the face with the highest P(fake)) of the
    decoded frames (their crops kept): every crop scored SCORE_BATCH at a time, as `deepshield
    scan` scores a file's crops (a batch of another size may differ in float32's last bits)."""
    p_all, raw_all = _crop_scores(scanner, [c for ff in frames for c in ff.crops])
    rows: list[dict] = []
    frame_p: list[float | None] = []
    frame_raw: list[float | None] = []
    best: _Top | None = None
    at = 0
    for ff in frames:
        row: dict[str, Any] = {"index": ff.index, "time": round(ff.time, 3), "p_fake": None}
        rows.append(row | {"faces": []})
        if ff.no_face:
            frame_p.append(None)
            frame_raw.append(None)
            continue
        p, raw = p_all[at : at + len(ff.crops)], raw_all[at : at + len(ff.crops)]  # [F], [F]
        at += len(ff.crops)
        frame_p.append(media.frame_score(p))
        frame_raw.append(media.frame_score(raw))
        rows[-1]["p_fake"] = frame_p[-1]
        rows[-1]["faces"] = [
            {"box": [round(v, 1) for v in f.box], "p_fake": float(pk), "p_fake_raw": float(rk)}
            for f, pk, rk in zip(ff.faces, p, raw, strict=True)
        ]
        k = int(np.argmax(p))
        if best is None or p[k] > best.p_fake:
            best = _Top(float(p[k]), ff.index, ff.crops[k])
    return rows, frame_p, frame_raw, best


def _crop_scores(scanner: Scanner, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(P(fake), raw P(fake)) float64 [N] of N uint8 [S,S,3] face crops, SCORE_BATCH a pass,
    each batch laid out as `deepshield scan` lays it (`media.crops_to_tensor`: channels last;
    a convolution's float32 last bits depend on the layout) when S is the model's size."""
    p, raw = [np.zeros(0)], [np.zeros(0)]
    for i in range(0, len(crops), SCORE_BATCH):
        x = media.crops_to_tensor(crops[i : i + SCORE_BATCH])  # [n, 3, S, S] in [0, 1]
        if tuple(x.shape[2:]) != scanner.input_size:
            x = torch.cat([scanner.pixels(Image.fromarray(c)) for c in crops[i : i + SCORE_BATCH]])
        pk, rk = scanner.probabilities(x)  # [n], [n]
        p.append(pk)
        raw.append(rk)
    return np.concatenate(p), np.concatenate(raw)


def scan_track(
    speech: Scanner,
    up: Upload,
    path: Path,
    track: TrackHeader | None,
    rules: MediaRules,
    plan: AudioPlan,
) -> dict[str, Any]:
    """A video's sound scored by the speech detector, as `deepshield scan` scores it
    (`media.track.score_track`: mean over at most `rules.frames` windows of its clip) ->
    {audio_track: the detector's answer (p_fake, label, ...) + windows, p_fake_max, note, audio;
    audio_error: why the track was not scored; note: "no audio track" for a silent video}.
    `plan`: `audio_plan` of its header under the video limit; a track declaring more than the video limit is not decoded, and
    decoding stops past the plan's seconds (`audio_error`)."""
    out: dict[str, Any] = {"audio_track": None, "audio_error": None, "note": None}
    if track is None:
        return out | {"note": "no audio track"}
    if track.seconds > rules.max_video_s:
        return out | {
            "audio_error": f"{_name(up)}: its audio track declares {track.seconds:,.1f} s, over "
            f"this server's {rules.max_video_s:g} s limit: not decoded; send a shorter video"
        }
    try:
        got = _score(speech, path, rules.frames, plan.seconds, up)
    except AudioTooLongError as e:
        return out | {"audio_error": too_long(up, e, plan, rules.max_video_s)}
    except NoAudioTrackError:
        return out | {"note": "no audio track"}
    except DataError as e:  # the reader's one line; the picture's verdict stands
        return out | {"audio_error": " ".join(str(e).split())}
    return out | {"audio_track": track_answer(speech, got)}


def scan_audio(
    speech: Scanner, up: Upload, rules: MediaRules, explain: bool, plan: AudioPlan
) -> dict[str, Any]:
    """An audio upload (or a container holding sound only) scored by the speech detector as
    `deepshield scan` scores the file (`score_track`: mean over at most `rules.frames` windows
    of its clip; decoding stops past `plan.seconds`, 413) -> `track_answer`'s fields; with `explain`
    the overlay of the window with the highest P(fake) (`gradcam_window`, its index, and
    `gradcam_window_s`, its [start, end] in the file). A file the reader refuses: 415 when its
    bytes are no audio format, else 422 (truncated, corrupt, too short, rate out of range)."""
    speech.check_explainable(explain)
    try:
        got = _score(speech, up.data, rules.frames, plan.seconds, up)
    except AudioTooLongError as e:
        raise UploadError(413, too_long(up, e, plan, rules.max_audio_s)) from e
    except AudioError as e:
        raise UploadError(415 if isinstance(e, NotAudioError) else 422, str(e)) from e
    out = track_answer(speech, got)
    k = got.top()
    if explain and k is not None:
        cls = "fake" if got.window_p[k] >= speech.threshold else "real"
        out |= speech.explanation(got.inputs[k : k + 1], cls, None)
        out |= {"gradcam_window": k, "gradcam_window_s": [round(t, 3) for t in got.spans[k]]}
    return out


def _score(
    speech: Scanner, source: Path | bytes, windows: int, max_seconds: float, up: Upload
) -> TrackScore:
    """The first audio track of `source` (a spooled path or the upload's bytes) through
    `score_track` with the speech detector's clip, rate and P(fake); decoding stops past
    `max_seconds` (AudioTooLongError)."""
    return score_track(
        source,
        window=speech.input_size[0],
        model_rate=speech.sample_rate,
        max_windows=windows,
        scores=speech.probabilities,
        max_seconds=max_seconds,
        name=up.filename or "the upload",
    )


def track_answer(speech: Scanner, got: TrackScore) -> dict[str, Any]:
    """The speech detector's answer on a scored track: `Scanner.answer`'s fields (p_fake None
    and label "unsure" with the reason for a degenerate track) + windows, p_fake_max,
    window_scores (each window's [start_s, end_s) in the track and P(fake), on the decision's
    scale: where in a long voice note the detector reacts), note and audio (the reader's
    record)."""
    agg = speech.file_score(got.p, got.raw)
    p = agg.score
    label, why = ("unsure", got.note) if p is None else speech.label(p)
    spans = zip(got.spans, got.window_p, strict=True)
    return speech.answer(p, got.raw.score, label, why) | {
        "windows": agg.frames,
        "window_scores": [
            {"start_s": round(a, 3), "end_s": round(b, 3), "p_fake": q} for (a, b), q in spans
        ],
        "p_fake_max": agg.max,
        "note": got.note,
        "audio": got.record.as_dict(),
    }


# A decoder may give a little more than its header declares (MP3 padding, AAC priming, a
# duration estimated from the bit rate): decoding may run this far past the declared length.
DECLARED_SLACK = 1.01
DECLARED_SLACK_S = 0.5


@dataclass(frozen=True)
class AudioPlan:
    """How much of an audio upload or track is decoded: decoding stops past `seconds` (the
    declared length plus slack, at most the limit), and `samples` float32 values (one per pixel
    in the decoding budget) are reserved for that much; `declared` the header's seconds (0:
    none)."""

    seconds: float
    samples: int
    declared: float = 0.0


def decode_peak(seconds: float, rate: int, channels: int) -> int:
    """Float32 values the audio reader holds at its peak decoding `seconds` at `rate` Hz with
    `channels` (T frames, one decoder block past `seconds` included): the decoded blocks (their
    freed pages stay resident: FFmpeg's are small heap blocks), their [T, C] concatenation,
    then the larger of its absolute value and clipping mask (1.25 T C) or its mono mix and the
    float64 square of its level (3 T), plus the 16 kHz mono copy and its clipped copy.
    Measured: docs/service.md (benchmarks/audio_memory.py)."""
    frames = math.ceil(seconds * rate) + BLOCK_FRAMES
    held = frames * max(channels, 1)
    return 2 * held + max(held + held // 4, 3 * frames) + 2 * math.ceil(seconds * TRACK_RATE)


def audio_plan(header: TrackHeader | None, limit_s: float, unknown: int) -> AudioPlan:
    """The plan for audio whose header says `header` (seconds 0: no duration) under a limit of
    `limit_s` seconds; `unknown` samples when no header was read (neither decoder reads it)."""
    if header is None or header.rate <= 0:
        return AudioPlan(limit_s, unknown)
    seconds = limit_s
    if header.seconds > 0:
        seconds = min(limit_s, header.seconds * DECLARED_SLACK + DECLARED_SLACK_S)
    return AudioPlan(seconds, decode_peak(seconds, header.rate, header.channels), header.seconds)


def upload_header(up: Upload) -> TrackHeader | None:
    """What an audio upload's header declares: libsndfile's frames, rate and channels (WAV,
    FLAC, OGG, MP3), else FFmpeg's first audio stream, with a duration only where a container
    declares one (M4A, WebM; raw ADTS AAC's is an estimate from the bit rate); None when neither
    reads a header (the reader then refuses the bytes)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(up.data))
    except Exception:  # libsndfile: not a header it reads; FFmpeg may
        info = None
    if info is not None and info.samplerate > 0:
        frames = info.frames if 0 < info.frames < 2**62 else 0
        return TrackHeader(frames / info.samplerate, info.samplerate, info.channels)
    _, track = track_header(io.BytesIO(up.data))
    if track is not None and audio_kind(up.data[:16]) not in ("m4a", "webm"):
        track = replace(track, seconds=0.0)
    return track


def audio_cost(
    up: Upload, rules: MediaRules, unknown: int, track: TrackHeader | None = None
) -> AudioPlan:
    """The decoding plan of an audio upload, from its header (`track`: its container's audio
    stream header, for a sound-only MP4); 413 when it declares more than rules.max_audio_s."""
    header = upload_header(up) if track is None else track
    if header is not None and header.seconds > rules.max_audio_s:
        raise UploadError(
            413,
            f"{_name(up)} declares {header.seconds:,.1f} s of audio, over this server's "
            f"{rules.max_audio_s:g} s limit: send a shorter clip",
        )
    return audio_plan(header, rules.max_audio_s, unknown)


def too_long(up: Upload, e: AudioTooLongError, plan: AudioPlan, limit_s: float) -> str:
    """The one line for audio whose decoding passed its plan: over the limit, or more than its
    header declares."""
    if plan.seconds >= limit_s:
        return (
            f"{_name(up)}: more than this server's {limit_s:g} s of audio (at least "
            f"{e.seconds:,.1f} s; decoding stopped there): send a shorter clip"
        )
    return (
        f"{_name(up)}: holds more audio than the {plan.declared:,.1f} s its header declares "
        f"(at least {e.seconds:,.1f} s; decoding stopped there): re-export the file, whose "
        "header is wrong"
    )


def temporary_folder() -> tempfile.TemporaryDirectory:
    """A private folder for one video upload's spooled bytes, removed when the request ends."""
    return tempfile.TemporaryDirectory(prefix="deepshield-upload-")
