"""`serve IMAGE_RUN --speech-run SPEECH_RUN`: one service answers photos, videos and audio; a
video's sound is scored by the speech detector beside its frames, as `deepshield scan` scores it
(the same windows, calibration and verdict), each detector at its own decision."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

import deepshield.runs.scan as sc
import deepshield.service.app as service_app
import deepshield.service.media_uploads as media_uploads
from deepshield.errors import ConfigError
from deepshield.media import track
from deepshield.media.audio import model_input, read_audio
from deepshield.predict import fake_scores, predict_logits
from deepshield.run import RunDir
from deepshield.runs.decision import fit_decision, load_decision
from deepshield.service import create_app
from deepshield.service.media_uploads import MediaRules
from test_media_video import _mux_sine, write_video
from test_service_media import CLIP, local, png_bytes, post_video, tiny_run, wav_bytes

FRAMES = 4  # frames (and audio windows) per video


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("pair") / "simplenet", "simplenet")


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """A tiny mel_cnn run (clips of CLIP samples) with a calibrated decision of its own: Platt
    and the EER threshold fitted on made-up validation scores, unsure band 0.1."""
    path = tiny_run(tmp_path_factory.mktemp("pair") / "mel_cnn", "mel_cnn")
    g = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    scores = np.clip(0.5 + 0.02 * (y - 0.5) + 0.01 * g.standard_normal(80), 0, 1)
    decision = fit_decision(y, scores, rule="eer", calibration="platt", band=0.1)
    RunDir.open(path).write_json("decision.json", decision.to_dict())
    return path


@pytest.fixture(scope="module")
def pair(image_run, speech_run):
    app = create_app(
        image_run,
        speech_run=speech_run,
        speech_decision=load_decision(speech_run),
        media_rules=MediaRules(frames=FRAMES),
    )
    return local(app)


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """A 2 s video (no face in its frames) with a 48 kHz stereo sine track."""
    return write_video(tmp_path_factory.mktemp("clips") / "talk.mp4", n=20, audio=True)


def test_a_videos_sound_is_scored_as_scan_scores_it(pair, image_run, speech_run, talk, tmp_path):
    """The audio track's P(fake), its maximum, windows and verdict equal `deepshield scan`'s on
    the same file with the same two runs; the raw P(fake) equals the model's mean over the
    windows read by hand; the picture's answer is the image-only service's, field for field."""
    body = post_video(pair, talk.read_bytes()).json()
    track = body["audio_track"]
    cpu = torch.device("cpu")
    det, speech = sc.run_detector(image_run, cpu), sc.run_detector(speech_run, cpu, "audio")
    opts = sc.ScanOptions(frames=FRAMES)
    row = sc.scan([talk], tmp_path / "scan", detector=det, speech=speech, opts=opts).rows[0]
    assert track["p_fake"] == pytest.approx(row["audio_score"], abs=1e-9)
    assert track["label"] == row["audio_verdict"] and body["label"] == row["verdict"]
    assert body["note"] is None and body["audio_error"] is None and not row.get("note")
    # the windows by hand: 2.0 s at 16 kHz in clips of CLIP samples
    wave, _ = read_audio(talk, rate=16000)
    starts = range(0, len(wave) - CLIP // 2, CLIP)
    x = torch.cat([model_input(wave[s : s + CLIP], 16000, 16000, CLIP) for s in starts])
    raw = fake_scores(predict_logits(RunDir.open(speech_run).load_model(), x)).double().numpy()
    decision = load_decision(speech_run)
    assert track["windows"] == len(raw) == 4
    assert track["p_fake_raw"] == pytest.approx(raw.mean(), abs=1e-6)
    assert track["p_fake"] == pytest.approx(decision.calibrate(raw).mean(), abs=1e-6)
    assert track["p_fake_max"] == pytest.approx(decision.calibrate(raw).max(), abs=1e-6)
    assert (track["threshold"], track["unsure_band"]) == (
        decision.threshold,
        [decision.threshold - 0.1, decision.threshold + 0.1],
    )
    assert track["calibrated"] and track["model"] == "mel_cnn"
    assert track["audio"]["channels"] == 2 and track["audio"]["source_rate"] == 48000
    assert track["note"].endswith("scored 4 windows of 0.50 s (2.00 s of 2.01 s)")
    alone = post_video(
        local(create_app(image_run, media_rules=MediaRules(frames=FRAMES))), talk.read_bytes()
    ).json()
    added = {"audio_track", "audio_error", "note"}
    assert {k: v for k, v in body.items() if k not in added} == alone
    assert body["threshold"] == 0.5 and not body["calibrated"]  # the image run's own


def test_a_silent_video_notes_no_audio_track_and_keeps_its_picture_verdict(pair, tmp_path):
    body = post_video(pair, write_video(tmp_path / "mute.mp4", n=20).read_bytes()).json()
    assert body["note"] == "no audio track"
    assert body["audio_track"] is None and body["audio_error"] is None
    assert body["label"] == "no_face" and len(body["frames"]) == FRAMES


def test_photos_audio_and_sound_only_mp4_go_to_their_detector(
    pair, image_run, speech_run, tmp_path
):
    """A photo gets the image-only service's answer, a WAV and an audio-only MP4 (M4A) the
    speech-only service's; each with explain=true (Grad-CAM of its own detector)."""
    image_alone = local(create_app(image_run))
    speech_alone = local(create_app(speech_run, decision=load_decision(speech_run)))
    m4a = tmp_path / "voice.m4a"
    with av.open(str(m4a), "w", format="mp4") as o:
        _mux_sine(o, o.add_stream("aac", rate=48000, layout="stereo"), seconds=1.0)
    uploads = [
        (("a.png", png_bytes(), "image/png"), image_alone, "simplenet"),
        (("a.wav", wav_bytes(), "audio/wav"), speech_alone, "mel_cnn"),
        (("voice.m4a", m4a.read_bytes(), "audio/mp4"), speech_alone, "mel_cnn"),
    ]
    for upload, alone, model in uploads:
        both = pair.post("/v1/scan", params={"explain": True}, files={"file": upload})
        want = alone.post("/v1/scan", params={"explain": True}, files={"file": upload})
        assert both.status_code == 200, both.text
        assert both.json() == want.json() and both.json()["model"] == model
        png = Image.open(io.BytesIO(base64.b64decode(both.json()["gradcam_png"])))
        assert png.format == "PNG"


def test_explain_on_a_video_keeps_the_face_overlay_and_adds_the_track(pair, tmp_path):
    """explain=true on a video with whole frames scored: the frame overlay, and the track."""
    app = pair.app
    rules = MediaRules(frames=FRAMES, faces="none")
    c = local(
        create_app(
            app.state.scanner.run.path,
            speech_run=app.state.speech.run.path,
            media_rules=rules,
        )
    )
    body = post_video(
        c, write_video(tmp_path / "t.mp4", n=20, audio=True).read_bytes(), explain=True
    )
    body = body.json()
    assert body["gradcam_png"] and body["gradcam_frame"] in [f["index"] for f in body["frames"]]
    assert 0.0 <= body["audio_track"]["p_fake"] <= 1.0


def test_healthz_describes_both_detectors_each_at_its_own_decision(pair, speech_run):
    health = pair.get("/healthz").json()
    assert health["model"] == "simplenet" and health["threshold"] == 0.5
    speech = health["speech"]
    decision = load_decision(speech_run)
    assert speech["model"] == "mel_cnn" and speech["kind"] == "audio"
    assert speech["threshold"] == decision.threshold and speech["calibrated"]
    assert speech["clip_samples"] == CLIP and health["max_audio_seconds"] == 600.0
    assert health["video"]["frames"] == FRAMES


def test_the_track_reserves_its_declared_samples_after_the_frames(
    image_run, speech_run, talk, monkeypatch
):
    """Budget: the pixel limit to probe, FRAMES_HELD frames to decode, then the reader's peak
    for the track's declared length plus slack (2 s + 1 AAC frame of priming, 48 kHz, 2
    channels) to score its sound."""
    held = {}

    def spy(module, name):
        fn = getattr(module, name)

        def call(*a, **k):
            held[name] = app.state.budget.in_flight
            return fn(*a, **k)

        monkeypatch.setattr(module, name, call)

    spy(service_app, "scan_video")
    spy(service_app, "scan_track")
    app = create_app(image_run, speech_run=speech_run, media_rules=MediaRules(frames=FRAMES))
    assert post_video(local(app), talk.read_bytes()).status_code == 200
    with av.open(str(talk)) as box:
        a = box.streams.audio[0]
        declared = float(a.duration * a.time_base)
    assert held["scan_video"] == 64 * 32 * media_uploads.FRAMES_HELD
    plan_s = declared * media_uploads.DECLARED_SLACK + media_uploads.DECLARED_SLACK_S
    assert held["scan_track"] == media_uploads.decode_peak(plan_s, 48000, 2)
    assert app.state.budget.in_flight == 0


def test_a_track_over_the_limit_is_not_decoded_and_the_frames_still_answer(
    image_run, speech_run, tmp_path, monkeypatch
):
    """A 1 s video with a 3 s track under a 2 s limit: audio_error, no decoding of the sound."""
    path = write_video(tmp_path / "long_track.mp4", n=10, audio=3.0)

    def no_decoding(*a, **k):
        raise AssertionError("the track was decoded")

    monkeypatch.setattr(media_uploads, "score_track", no_decoding)
    rules = MediaRules(frames=FRAMES, max_video_s=2.0)
    c = local(create_app(image_run, speech_run=speech_run, media_rules=rules))
    body = post_video(c, path.read_bytes(), "long_track.mp4").json()
    assert body["label"] == "no_face" and body["audio_track"] is None
    assert "audio track declares 3.0 s, over this server's 2 s limit" in body["audio_error"]


def test_runs_of_the_wrong_kind_are_refused_before_loading(image_run, speech_run):
    with pytest.raises(ConfigError, match="not a speech detector \\(image model\\)"):
        create_app(image_run, speech_run=image_run)
    with pytest.raises(ConfigError, match="not an image detector \\(audio model\\)"):
        create_app(speech_run, speech_run=speech_run)


def test_serve_command_names_both_detectors(image_run, speech_run, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from deepshield.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **kw: seen.update(app=service))
    args = ["serve", str(image_run), "--speech-run", str(speech_run), "--threshold", "0.4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    threshold = load_decision(speech_run).threshold
    assert first.startswith(f"serving simplenet from {image_run} (threshold 0.4, caller;")
    assert f" and mel_cnn from {speech_run} (threshold {threshold:.7g}, decision.json" in first
    health = local(seen["app"]).get("/healthz").json()
    assert health["threshold"] == 0.4 and health["speech"]["threshold"] == threshold


def test_sound_only_mp4_over_the_audio_limit_is_refused_from_its_header(
    image_run, speech_run, tmp_path, monkeypatch
):
    """An M4A declaring 1 s against a 0.5 s audio limit: 413 before the audio reader runs."""
    m4a = tmp_path / "voice.m4a"
    with av.open(str(m4a), "w", format="mp4") as o:
        _mux_sine(o, o.add_stream("aac", rate=48000, layout="stereo"), seconds=1.0)

    def no_decoding(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(track, "read_audio", no_decoding)  # the one audio reader
    rules = MediaRules(max_audio_s=0.5)
    c = local(create_app(image_run, speech_run=speech_run, media_rules=rules))
    r = c.post("/v1/scan", files={"file": ("voice.m4a", m4a.read_bytes(), "audio/mp4")})
    assert r.status_code == 413 and "'voice.m4a' declares 1.0 s of audio" in r.json()["error"]
