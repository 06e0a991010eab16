"""One file, one answer: a table of audio cases built from a real ASVspoof clip (formats, bit
depths, rates, channels, durations, silence, clipping, truncation, a text file named .wav) gives
the same verdict, unsure reason and record of what was done, or the same one-line error, through
`deepshield evaluate` on an audio folder and through the service's /v1/scan (judging by the first
clip, `--frames 1`; a degenerate file gets no score from the service, as from `scan`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import shared_path
from deepshield import models
from deepshield.media.audio import resample
from deepshield.run import RunDir
from deepshield.runs.decision import load_decision
from deepshield.service import create_app
from deepshield.service.media_uploads import MediaRules
from test_reliability_inputs import run_in_process
from test_service import local

CLIP = 16000  # the run's clip: 1 s at 16 kHz
SOURCE = ("data", "asvspoof2019_la_eval_samples", "flac", "LA_E_3757378.flac")  # 3.15 s bona fide


def _wav(subtype: str, rate: int = 16000) -> Callable[[Path, np.ndarray], None]:
    def write(path: Path, x: np.ndarray) -> None:
        sf.write(path, resample(x, 16000, rate), rate, subtype=subtype)

    return write


def _sf(fmt: str, subtype: str) -> Callable[[Path, np.ndarray], None]:
    return lambda path, x: sf.write(path, x, 16000, format=fmt, subtype=subtype)


def _m4a(path: Path, x: np.ndarray) -> None:
    with av.open(str(path), "w", format="mp4") as box:
        stream = box.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            box.mux(packet)


def _stereo(path: Path, x: np.ndarray) -> None:
    sf.write(path, np.stack([x, 0.5 * x], 1), 16000, subtype="PCM_16")


def _cut(seconds: float) -> Callable[[Path, np.ndarray], None]:
    return lambda path, x: sf.write(path, x[: int(seconds * 16000)], 16000, subtype="PCM_16")


def _silence(path: Path, x: np.ndarray) -> None:
    sf.write(path, np.zeros_like(x), 16000, subtype="PCM_16")


def _whisper(path: Path, x: np.ndarray) -> None:
    sf.write(path, 1e-4 * x, 16000, subtype="FLOAT")  # about -86 dBFS


def _clipped(path: Path, x: np.ndarray) -> None:
    speech = x[16000:]  # the source's first second is mostly pause
    sf.write(path, np.clip(30 * speech, -1, 1), 16000, subtype="PCM_16")


def _truncated_wav(path: Path, x: np.ndarray) -> None:
    _wav("PCM_16")(path, x)
    path.write_bytes(path.read_bytes()[:5044])  # header + 5,000 of its data bytes


def _truncated_flac(path: Path, x: np.ndarray) -> None:
    sf.write(path, x, 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_mp3(path: Path, x: np.ndarray) -> None:
    sf.write(path, x, 16000, format="MP3")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # its Xing header still counts every frame


def _ogg_cut_between_pages(path: Path, x: np.ndarray) -> None:
    sf.write(path, x, 16000, format="OGG", subtype="VORBIS")
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"OggS")])  # whole pages, the last (end of stream) gone


def _opus_cut_inside_a_page(path: Path, x: np.ndarray) -> None:
    sf.write(path, x, 16000, format="OGG", subtype="OPUS")
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"OggS") - 100])


def _text(path: Path, x: np.ndarray) -> None:
    path.write_text("speaker notes, not audio\n" * 20)


SCORED = ("fake", "real")
# (case, file name, writer, expected verdict or error words, a fact of the record or None)
CASES: list[tuple[str, str, Callable, str, Callable[[dict], bool] | None]] = [
    ("wav 16-bit", "w16.wav", _wav("PCM_16"), "scored", lambda r: r["bit_depth"] == 16),
    ("wav 8-bit", "w8.wav", _wav("PCM_U8"), "unsure: coarse 8-bit", lambda r: r["bit_depth"] == 8),
    ("wav 24-bit", "w24.wav", _wav("PCM_24"), "scored", lambda r: r["bit_depth"] == 24),
    ("wav float", "wf.wav", _wav("FLOAT"), "scored", lambda r: r["encoding"] == "FLOAT"),
    ("flac", "a.flac", _sf("FLAC", "PCM_16"), "scored", lambda r: r["container"] == "flac"),
    ("ogg vorbis", "a.ogg", _sf("OGG", "VORBIS"), "scored", lambda r: r["encoding"] == "VORBIS"),
    ("opus", "a.opus", _sf("OGG", "OPUS"), "scored", lambda r: r["encoding"] == "OPUS"),
    ("mp3", "a.mp3", _sf("MP3", "MPEG_LAYER_III"), "scored", lambda r: r["container"] == "mp3"),
    (
        "m4a aac",
        "a.m4a",
        _m4a,
        "scored",
        lambda r: (r["container"], r["encoding"]) == ("m4a", "aac"),
    ),
    ("8 kHz", "r8k.wav", _wav("PCM_16", 8000), "scored", lambda r: "from 8000 Hz" in r["done"]),
    ("44.1 kHz", "r44k.wav", _wav("PCM_16", 44100), "scored", lambda r: "44100 Hz" in r["done"]),
    ("2 kHz", "r2k.wav", _wav("PCM_16", 2000), "error: sample rate 2000 Hz", None),
    ("stereo", "st.wav", _stereo, "scored", lambda r: "mixed 2 channels" in r["done"]),
    ("0.05 s", "short.wav", _cut(0.05), "error: deepshield needs at least 0.1 s", None),
    ("0.2 s", "blip.wav", _cut(0.2), "unsure: far too short", lambda r: "tiled x5" in r["done"]),
    ("silence", "zero.wav", _silence, "unsure: digital silence", None),
    ("near-silence", "quiet.wav", _whisper, "unsure: near-silence", None),
    ("clipping", "loud.wav", _clipped, "unsure: heavy clipping", None),
    ("truncated wav", "tr.wav", _truncated_wav, "error: truncated audio", None),
    ("truncated flac", "tr.flac", _truncated_flac, "error: corrupt audio data", None),
    (
        "truncated mp3",
        "tr.mp3",
        _truncated_mp3,
        "error: truncated audio: its header declares",
        None,
    ),
    (
        "ogg cut between pages",
        "tr.ogg",
        _ogg_cut_between_pages,
        "error: truncated audio: its last Ogg page has no end-of-stream mark",
        None,
    ),
    (
        "opus cut inside a page",
        "tr.opus",
        _opus_cut_inside_a_page,
        "error: truncated audio: its last Ogg page is incomplete",
        None,
    ),
    ("text named .wav", "notes.wav", _text, "error: not an audio file", None),
]


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    x, rate = sf.read(shared_path(*SOURCE), dtype="float32")
    assert rate == 16000
    return x


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory) -> Path:
    """An untrained tiny mel-CNN run on 1 s clips (its scores are arbitrary but deterministic)."""
    path = tmp_path_factory.mktemp("audio-cases") / "mel"
    torch.manual_seed(0)
    run = RunDir.create(path)
    run.save_model(models.create("mel_cnn", widths=[4, 8], n_mels=32))
    run.write_yaml(
        "config.yaml",
        {"model": "mel_cnn", "dataset": "synthetic-speech", "data_kwargs": {"length": CLIP}},
    )
    run.write_json("dataset.json", {"sample_shape": [CLIP], "sample_rate": 16000})
    return path


@pytest.fixture(scope="module")
def client(speech_run):
    """The service judging a file by its first clip (`serve --frames 1`), as `evaluate` does."""
    rules = MediaRules(frames=1)
    return local(create_app(speech_run, decision=load_decision(speech_run), media_rules=rules))


def _evaluate(run: Path, root: Path, monkeypatch, capsys) -> tuple[int, str, dict | None]:
    """(exit code, stderr, rows of files_*.csv by file) of `deepshield evaluate` on `root`,
    through the CLI's `main` (exit 2 and one error line on bad input)."""
    import csv

    argv = ["evaluate", str(run), "-d", f"speech-folder:{root}", "--data-arg", "split=test"]
    code, err = run_in_process([*argv, "--data-arg", f"length={CLIP}"], monkeypatch, capsys)
    if code:
        return code, err, None
    [table] = [p for p in run.glob("files_speech-folder*.csv") if root.name in p.name]
    with table.open(newline="") as f:
        return 0, err, {r["file"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize(
    ("case", "name", "write", "expect", "fact"), CASES, ids=[c[0] for c in CASES]
)
def test_evaluate_and_service_agree(
    speech_run, client, source, tmp_path, monkeypatch, capsys, case, name, write, expect, fact
):
    root = tmp_path / case.replace(" ", "_").replace(".", "")
    (root / "bonafide").mkdir(parents=True)
    (root / "spoof").mkdir()
    path = root / "bonafide" / name
    write(path, source)
    sf.write(root / "spoof" / "other.wav", source[::-1].copy(), 16000)  # the folder needs both
    code, said, rows = _evaluate(speech_run, root, monkeypatch, capsys)
    r = client.post(
        "/v1/scan", files={"file": (name, path.read_bytes(), "application/octet-stream")}
    )
    if expect.startswith("error: "):
        assert code == 2 and said.count("\n") == 1 and said.startswith("error: "), said
        assert r.status_code in (415, 422), r.text
        service_error = r.json()["error"]
        assert service_error.startswith(f"{name}: ") and "\n" not in service_error
        assert expect[len("error: ") :] in service_error
        assert said.strip() == f"error: {path}: {service_error[len(name) + 2 :]}"
        return
    assert code == 0, said
    assert r.status_code == 200, r.text
    answer, row = r.json(), rows[path.stem]
    assert row["verdict"] == answer["label"]
    if answer["p_fake"] is None:  # degenerate: no score (as `scan` gives), only the reason;
        # its level numbers are the whole file's (scan's), evaluate's those of its first clip
        kind = row["unsure_reason"].split(" (")[0]
        assert answer["unsure_reason"].split(" (")[0] == kind
        assert answer["unsure_reason"].endswith(": nothing to judge")
    else:
        assert float(row["p_fake"]) == pytest.approx(answer["p_fake"], abs=1e-6)
        assert (row["unsure_reason"] or None) == answer["unsure_reason"]
    record = answer["audio"]
    # a DC offset is measured, as the levels are, on the first clip by evaluate and on the
    # whole file by the service: the same phrase, its number may differ
    dc = re.compile(r"(removed a DC offset of) [-+][0-9.]+")
    assert dc.sub(r"\1", row["done"]) == dc.sub(r"\1", "; ".join(record["done"]))
    for key in ("container", "encoding", "bit_depth", "channels", "source_rate"):
        assert row[key] == str(record[key]), key
    if expect == "scored":
        assert answer["label"] in SCORED and answer["unsure_reason"] is None
    else:
        assert answer["label"] == "unsure" and expect[len("unsure: ") :] in answer["unsure_reason"]
    if fact is not None:
        assert fact({**record, "done": "; ".join(record["done"])}), record
    assert record["source_seconds"] > 0 and record["clip_samples"] == CLIP
    [summary] = [p for p in speech_run.glob("eval_speech-folder*.json") if root.name in p.name]
    files = json.loads(summary.read_text())["files"]
    assert files["unsure"] == sum(r["verdict"] == "unsure" for r in rows.values())
    assert (path.stem in files["unsure_files"]) == (answer["label"] == "unsure")


def test_the_table_covers_the_issue_cases():
    """At least 15 cases, each name once, every expected outcome of the policy represented."""
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
    outcomes = {c[3].split(":")[0] for c in CASES}
    assert outcomes == {"scored", "unsure", "error"}


def test_the_scored_clip_equals_the_model_on_the_library_clip(speech_run, client, source, tmp_path):
    """The service's p_fake is the model on `read_clip`'s input: first second of the source."""
    from deepshield.media.audio import read_clip
    from deepshield.predict import fake_scores, predict_logits

    path = tmp_path / "a.wav"
    sf.write(path, source, 16000, subtype="PCM_16")
    clip, record = read_clip(path, length=CLIP)
    pcm = sf.read(path, dtype="float32")[0]
    np.testing.assert_array_equal(clip, pcm[:CLIP])
    assert record.cut_seconds == pytest.approx(len(pcm) / 16000 - 1.0)
    model = RunDir.open(speech_run).load_model()
    p = float(fake_scores(predict_logits(model, torch.from_numpy(clip)[None]))[0])
    answer = client.post(
        "/v1/scan", files={"file": ("a.wav", path.read_bytes(), "audio/wav")}
    ).json()
    assert answer["p_fake_raw"] == pytest.approx(p, abs=1e-6)
