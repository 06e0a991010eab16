"""The scan service over every model kind and over media: `/v1/scan` and `/v1/scan?explain=true`
answer 200 or a 4xx for every registered model (never a 500), AASIST-L's overlay with the official
weights, and video uploads (decoded with PyAV, bounded before decoding, scored per frame)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import deepshield.media.extract as media_extract
import deepshield.media.video as media_video
from deepshield import models
from deepshield.errors import ConfigError, RunError
from deepshield.explain import saliency
from deepshield.media import crop_face, detect_faces, read_video_frames, sample_indices
from deepshield.metrics import verdict
from deepshield.predict import fake_scores, predict_logits
from deepshield.report.overlay import overlay
from deepshield.run import RunDir
from deepshield.service import create_app
from deepshield.service.media_uploads import FRAMES_HELD, MediaRules
from deepshield.service.scanner import image_tensor, resized
from test_media_video import _frame, _mux_sine, write_coded, write_video

SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", Path(__file__).parents[2] / "shared"))
DATA = SHARED / "data"
CLIP = 8000  # tiny speech runs: clips of 8000 samples; image runs at their registry size


def local(app) -> TestClient:
    """A client reaching the app as a browser on this machine does (Host: localhost)."""
    return TestClient(app, base_url="http://localhost")


def tiny_run(path: Path, name: str) -> Path:
    """A run folder holding an untrained `name` (seeded); speech runs 'trained' on short clips."""
    torch.manual_seed(0)
    run = RunDir.create(path)
    run.save_model(models.create(name))
    kind = models.spec(name).kind
    inner = name.split(":", 1)[1] if ":" in name else models.spec(name).defaults.get("inner")
    audio = kind == "audio" or (kind == "wrapper" and models.spec(inner).kind == "audio")
    if audio:
        run.write_yaml("config.yaml", {"data_kwargs": {"length": CLIP}})
    return path


def png_bytes(side: int = 48) -> bytes:
    g = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((g.random((side, side, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.7, rate: int = 16000) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    x = (0.4 * np.sin(2 * np.pi * (220 + 400 * t) * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue()


def served_names() -> list[str]:
    """Every registered name, the open wrapper `siamese:` with an image and a speech backbone."""
    names = [n for n in models.names() if not n.endswith(":")]
    return [*names, "siamese:simplenet", "siamese:mel_cnn"]


@pytest.mark.parametrize("name", served_names())
def test_every_model_kind_scans_and_explains_or_says_why_not(tmp_path, name):
    """200 or 4xx for /v1/scan and /v1/scan?explain=true, of a photo and a video (whole frames)
    or of a WAV; a generator is refused at start."""
    path = tiny_run(tmp_path / name.replace(":", "_"), name)
    if models.spec(name).kind == "generator":
        with pytest.raises(RunError, match="serves image and speech detectors"):
            create_app(path)
        return
    c = local(create_app(path, media_rules=MediaRules(frames=3, faces="none")))
    info = c.get("/healthz").json()
    upload = ("a.wav", wav_bytes(), "audio/wav") if info["kind"] == "audio" else None
    upload = upload or ("a.png", png_bytes(), "image/png")
    plain = c.post("/v1/scan", files={"file": upload})
    assert plain.status_code == 200, plain.text
    assert 0.0 <= plain.json()["p_fake"] <= 1.0
    r = c.post("/v1/scan", params={"explain": True}, files={"file": upload})
    if not info["explain"]:
        assert 400 <= r.status_code < 500 and "scan without explain" in r.json()["error"]
        return
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["explain_method"] == info["explain_method"]
    assert body["p_fake"] == plain.json()["p_fake"]
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.format == "PNG" and png.mode == "RGB"
    if info["kind"] == "image":  # drawn on the upload itself
        assert png.size == (48, 48)
        video = write_video(tmp_path / "v.mp4", n=6).read_bytes()
        r = post_video(c, video, explain=True)
        assert r.status_code == 200, r.text
        assert len(r.json()["frames"]) == 3 and r.json()["gradcam_png"]


def test_saliency_explains_an_image_model_without_conv_layers(tmp_path):
    """mlp3 has no conv layer: the overlay is the normalised gradient saliency of its verdict,
    computed at the served 32 px and drawn on the 48 px upload."""
    path = tiny_run(tmp_path / "mlp3", "mlp3")
    c = local(create_app(path))
    body = c.post(
        "/v1/scan", params={"explain": True}, files={"file": ("a.png", png_bytes(), "image/png")}
    ).json()
    assert body["explain_method"] == "saliency"
    im = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    x = image_tensor(resized(im, (32, 32)))[None]  # [1, 3, 32, 32]: what the model sees
    s = saliency(RunDir.open(path).load_model(), x, int(body["label"] == "fake"))[0]
    want = overlay(image_tensor(im), s / s.max(), alpha=0.45, as_uint8=True)
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"]))))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_a_size_the_model_cannot_take_is_refused_at_start(tmp_path):
    """mlp3 takes 32 px only: serving it at 48 is a one-line ConfigError, not a 500 per scan."""
    path = tiny_run(tmp_path / "mlp3", "mlp3")
    with pytest.raises(ConfigError, match=r"cannot take input of size 48x48 \(from caller\)"):
        create_app(path, input_size=48)


@pytest.mark.skipif(
    not (DATA / "pretrained_aasist" / "AASIST-L.pth").is_file(), reason="shared data absent"
)
def test_aasist_l_with_the_official_weights_explains_a_flac(tmp_path):
    """The case of issue 26: AASIST-L's official weights, an ASVspoof FLAC, explain=true. It was
    a 500 (the overlay ran AASIST's BatchNorm2d on the waveform); now the map is drawn over the
    pooled sinc sub-bands the model computes (23 bands x time), as a legible PNG."""
    torch.manual_seed(0)
    run = RunDir.create(tmp_path / "aasist_l")
    model = models.create("aasist_l")
    models.load_weights(model, DATA / "pretrained_aasist" / "AASIST-L.pth")
    run.save_model(model)
    flac = DATA / "asvspoof2019_la_eval_samples" / "flac" / "LA_E_2834763.flac"  # A11 spoof
    c = TestClient(create_app(run.path), base_url="http://localhost")
    r = c.post(
        "/v1/scan",
        params={"explain": True},
        files={"file": (flac.name, flac.read_bytes(), "audio/flac")},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "fake" and body["explain_method"] == "grad_cam"
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.size == (1024, 128)  # 21,490 frames x 23 sub-bands, resized for display


# -- video uploads ----------------------------------------------------------------------------
SMALL_CLIP = DATA / "deepfake_videos" / "real" / "ffpp_original_004_crf40.mp4"  # 181 KB, 720p


@pytest.fixture(scope="module")
def meso_run(tmp_path_factory) -> Path:
    """A run holding MesoNet's published Meso4 DF weights (uncalibrated)."""
    weights = DATA / "pretrained_mesonet" / "weights" / "Meso4_DF.h5"
    if not weights.is_file():
        pytest.skip("shared data absent")
    run = RunDir.create(tmp_path_factory.mktemp("meso") / "meso4")
    run.save_model(models.load_weights(models.create("meso4"), weights))
    return run.path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("simplenet") / "simplenet", "simplenet")


def post_video(c: TestClient, data: bytes, name: str = "a.mp4", ctype: str = "video/mp4", **q):
    return c.post("/v1/scan", params=q, files={"file": (name, data, ctype)})


def test_a_short_real_video_is_scored_per_frame_and_face(meso_run):
    """16 evenly spaced frames of the shared 12 s FF++ clip (181 KB): a face in each (dlib), each
    face's score is MesoNet's on the FF++ crop of that box, frame = max over faces, video = mean
    over frames."""
    clip = SMALL_CLIP
    c = local(create_app(meso_run))
    r = post_video(c, clip.read_bytes(), explain=True)
    assert r.status_code == 200, r.text
    body = r.json()
    v = body["video"]
    assert (v["width"], v["height"], v["frames_total"], v["codec"]) == (1280, 720, 309, "h264")
    indices = [f["index"] for f in body["frames"]]
    assert indices == sample_indices(309, frames=16).tolist() and v["frames_sampled"] == 16
    assert v["frames_with_face"] == 16 and all(len(f["faces"]) == 1 for f in body["frames"])
    frame_p = [max(x["p_fake"] for x in f["faces"]) for f in body["frames"]]
    assert [f["p_fake"] for f in body["frames"]] == frame_p
    assert body["p_fake"] == pytest.approx(np.mean(frame_p), abs=1e-12)
    assert v["p_fake_max"] == max(frame_p)
    assert body["label"] == verdict(body["p_fake"], 0.5, 0.05)[0]
    assert body["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert body["bytes"] == clip.stat().st_size
    # the library on the same frames and boxes
    frames = read_video_frames(clip, frames=16)
    model = RunDir.open(meso_run).load_model()
    for img, f in list(zip(frames.images, body["frames"], strict=True))[::5]:
        x0, y0, x1, y1 = f["faces"][0]["box"]
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
        face = detect_faces(img)[0]  # the box the service rounded to 0.1 px
        crop = crop_face(img, face.box, 256)
        x = torch.from_numpy(crop).permute(2, 0, 1).float().div(255)[None]
        want = float(fake_scores(predict_logits(model, x))[0])
        assert f["faces"][0]["p_fake_raw"] == pytest.approx(want, abs=1e-5)
    best = int(np.argmax(frame_p))
    assert body["gradcam_frame"] == indices[best] and body["explain_method"] == "grad_cam"
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.format == "PNG" and png.size[0] == png.size[1] == 256  # the face crop


def test_a_video_without_faces_is_no_face_with_its_reason(image_run, tmp_path):
    """Grey synthetic frames: every sampled frame is no_face, the video gets no made-up score."""
    data = write_video(tmp_path / "grey.mp4", n=20).read_bytes()
    body = post_video(local(create_app(image_run)), data).json()
    assert body["label"] == "no_face" and body["p_fake"] is None
    assert body["reason"] == "no face in any of the 16 sampled frames"
    assert all(f["p_fake"] is None and f["faces"] == [] for f in body["frames"])


def test_faces_none_scores_whole_frames_and_webm_is_read(image_run, tmp_path):
    """A WebM (VP9) upload, whole frames scored (faces=none is a server rule): the frame score
    equals the model on the frame resized to the run's input."""
    path = tmp_path / "a.webm"
    with av.open(str(path), "w") as o:
        s = o.add_stream("libvpx-vp9", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        for i in range(6):
            for p in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    app = create_app(image_run, media_rules=MediaRules(faces="none"))
    r = post_video(local(app), path.read_bytes(), "a.webm", "video/webm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["frames"]) == 6 and body["video"]["frames_with_face"] == 6
    img = read_video_frames(path, frames=16).images[3]
    whole = Image.fromarray(img).resize((64, 64), Image.Resampling.BILINEAR)  # crop of mode none
    x = image_tensor(resized(whole, (64, 64)))[None]
    want = float(fake_scores(predict_logits(RunDir.open(image_run).load_model(), x))[0])
    assert body["frames"][3]["p_fake"] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    ("name", "codec", "muxer", "ctype"),
    [
        ("cam.m2ts", "libx264", "mpegts", "video/mp2t"),
        ("dvd.vob", "mpeg2video", "vob", "video/mpeg"),
        ("old.wmv", "wmv2", "asf", "video/x-ms-wmv"),
    ],
)
def test_camcorder_dvd_and_wmv_uploads_are_scored_per_frame(
    image_run, tmp_path, name, codec, muxer, ctype
):
    path = write_coded(tmp_path / name, codec, 8, {}, muxer=muxer)
    app = create_app(image_run, media_rules=MediaRules(faces="none"))
    r = post_video(local(app), path.read_bytes(), name, ctype)
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"]) == 8 and r.json()["video"]["frames_with_face"] == 8


@pytest.mark.parametrize(
    ("rules", "kw", "words"),
    [
        ({"max_video_s": 1.0}, {}, "duration 2.0 s exceeds the limit of 1 s"),
        ({"max_video_frames": 10}, {}, "20 frames (declared) exceed the limit of 10"),
        ({}, {"max_pixels": 64 * 32 - 1}, "frames of 64x32 pixels exceed the limit of 2047"),
    ],
)
def test_a_video_over_a_limit_is_refused_before_any_frame_is_decoded(
    image_run, tmp_path, monkeypatch, rules, kw, words
):
    def no_decoding(*a, **k):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(media_video, "_orientation", no_decoding)
    monkeypatch.setattr(media_extract, "iter_video_frames", no_decoding)
    data = write_video(tmp_path / "v.mp4", n=20).read_bytes()  # 2 s, 20 frames of 64x32
    c = local(create_app(image_run, media_rules=MediaRules(**rules), **kw))
    r = post_video(c, data, "v.mp4")
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error.startswith("'v.mp4': ") and words in error and "send a shorter or smaller" in error
    assert "deepshield-upload" not in error  # the temporary file is never named


def test_a_video_reserves_one_frame_to_probe_then_the_frames_decoding_holds(
    image_run, tmp_path, monkeypatch
):
    """The decoding budget holds the pixel limit while the header is probed, then FRAMES_HELD
    frames of the video's size while frames are decoded and scored; all released after."""
    import deepshield.service.app as service_app

    held = {}

    def spy(name, fn):
        def call(*a, **k):
            held[name] = app.state.budget.in_flight
            return fn(*a, **k)

        monkeypatch.setattr(service_app, name, call)

    spy("probe_upload", service_app.probe_upload)
    spy("scan_video", service_app.scan_video)
    app = create_app(image_run, max_pixels=10_000)
    assert post_video(local(app), write_video(tmp_path / "v.mp4").read_bytes()).status_code == 200
    assert held == {"probe_upload": 10_000, "scan_video": 64 * 32 * FRAMES_HELD}
    assert app.state.budget.in_flight == 0


def test_bad_videos_are_4xx_saying_what_to_send(image_run, tmp_path):
    good = write_video(tmp_path / "fast.mp4", n=20, faststart=True).read_bytes()
    i = good.index(b"mdat") + 4
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w", format="mp4") as o:
        _mux_sine(o, o.add_stream("aac", rate=48000, layout="stereo"), seconds=0.5)
    cases = [
        (
            ("a.mp4", b"just some text\n" * 20, "video/mp4"),
            415,
            "MP4/WEBM/AVI/MPEG-TS/MPEG-PS/WMV/FLV file",
        ),
        (("a.mp4", audio_only.read_bytes(), "video/mp4"), 422, "no video stream (audio only)"),
        (("a.mp4", good[:i] + bytes(len(good) - i), "video/mp4"), 422, "corrupt video data"),
        (("a.mp4", good[: len(good) // 2], "video/mp4"), 422, "truncated"),
        (("a.webm", good, "video/webm"), 415, "declared WEBM"),
    ]
    c = local(create_app(image_run))
    for upload, status, words in cases:
        r = c.post("/v1/scan", files={"file": upload})
        assert r.status_code == status, (upload[0], r.text)
        error = r.json()["error"]
        assert words in error and "\n" not in error and "deepshield-upload" not in error, error
    assert post_video(c, good).status_code == 200  # and the server goes on


def test_a_video_to_a_speech_run_is_scored_by_its_sound(tmp_path):
    """A speech run reads a video's audio track with the one audio reader (as `scan` does)."""
    c = local(create_app(tiny_run(tmp_path / "mel", "mel_cnn")))
    r = post_video(c, write_video(tmp_path / "v.mp4").read_bytes())
    assert r.status_code == 415 and "no audio track in it" in r.json()["error"], r.text
    r = post_video(c, write_video(tmp_path / "talk.mp4", n=20, audio=True).read_bytes())
    assert r.status_code == 200 and r.json()["audio"]["container"] == "m4a", r.text


def test_audio_longer_than_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    """0.7 s declared against a 0.5 s limit: 413 before the audio reader runs; under a 0.8 s
    limit the same file is read and scored."""
    from deepshield.media import track

    def no_decoding(*a, **k):
        raise AssertionError("decoded")

    run = tiny_run(tmp_path / "mel", "mel_cnn")
    monkeypatch.setattr(track, "read_audio", no_decoding)  # the one audio reader
    app = create_app(run, media_rules=MediaRules(max_audio_s=0.5))
    r = local(app).post("/v1/scan", files={"file": ("a.wav", wav_bytes(0.7), "audio/wav")})
    assert r.status_code == 413 and "declares 0.7 s of audio" in r.json()["error"], r.text
    monkeypatch.undo()
    app = create_app(run, media_rules=MediaRules(max_audio_s=0.8))
    r = local(app).post("/v1/scan", files={"file": ("a.wav", wav_bytes(0.7), "audio/wav")})
    assert r.status_code == 200 and r.json()["windows"] >= 1, r.text


def test_serve_command_sets_the_video_and_audio_rules(image_run, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from deepshield.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **kw: seen.update(app=service))
    args = ["serve", str(image_run), "--frames", "4", "--max-seconds", "2.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    health = local(seen["app"]).get("/healthz").json()
    assert health["video"] == {
        "frames": 4,
        "faces": "largest",
        "detect_every": 1,
        "max_seconds": 2.5,
        "max_frames": 150,
    }
    result = CliRunner().invoke(app, [*args, "--faces", "none", "--detect-every", "3"])
    health = local(seen["app"]).get("/healthz").json()
    assert result.exit_code == 0 and (
        health["video"]["faces"],
        health["video"]["detect_every"],
    ) == (
        "none",
        3,
    )
    for bad, words in ((["--faces", "biggest"], "'biggest' is not one of largest, all, none"),
                       (["--detect-every", "0"], "--detect-every")):  # fmt: skip
        result = CliRunner().invoke(app, [*args, *bad])
        assert result.exit_code == 2 and words in result.output, result.output


def test_an_unexpected_error_is_answered_json_not_plain_text(image_run, monkeypatch):
    """The last resort: a cause not yet fixed still answers JSON naming the route (it was
    Starlette's plain-text 'Internal Server Error'), and the server goes on."""
    app = create_app(image_run)

    def broken(*a, **k):
        raise ValueError("expected 4D input (got 2D input)")

    monkeypatch.setattr(app.state.scanner, "scan_image", broken)
    c = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
    r = c.post("/v1/scan", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"].startswith("POST /v1/scan: unexpected ValueError in the server")
    monkeypatch.undo()
    assert c.get("/healthz").status_code == 200


def test_an_interlaced_video_is_noted_as_scan_notes_it(image_run, tmp_path):
    """An interlaced upload (x264, top field first): the answer's video says which field was
    kept and its note is scan's row's note for the same file, with the same P(fake)."""
    import csv

    from deepshield.runs import scan as sc
    from test_media_video import write_interlaced

    path = write_interlaced(tmp_path / "woven.mp4", "libx264", "yuv420p")
    c = local(create_app(image_run, media_rules=MediaRules(frames=3, faces="none")))
    body = post_video(c, path.read_bytes()).json()
    det = sc.run_detector(image_run, torch.device("cpu"))
    sc.scan([path], tmp_path / "scan", detector=det, opts=sc.ScanOptions(frames=3, faces="none"))
    with open(tmp_path / "scan" / "scan.csv") as f:
        (row,) = csv.DictReader(f)
    assert body["video"]["interlaced"] == "top"
    note = "interlaced: top field kept, the other interpolated where it combs"
    assert body["note"] == note and row["note"].endswith(note)  # scan's row adds unsure_reason
    assert body["p_fake"] == pytest.approx(float(row["score"]), abs=1e-6)
    progressive = write_interlaced(tmp_path / "p.mp4", "libx264", "yuv420p", interlaced=False)
    body = post_video(c, progressive.read_bytes()).json()
    assert body["video"]["interlaced"] is None and "note" not in body
