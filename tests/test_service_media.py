"""The scan service over every model kind and over media: `/v1/scan` and `/v1/scan?explain=true`
answer 200 or a 4xx for every registered model (never a 500), AASIST-L's overlay with the official
weights, and video uploads (decoded with PyAV, bounded before decoding, scored per frame)."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from deepshield import models
from deepshield.errors import ConfigError, RunError
from deepshield.explain import saliency
from deepshield.report.overlay import overlay
from deepshield.run import RunDir
from deepshield.service import create_app
from deepshield.service.scanner import image_tensor, resized

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
    """200 or 4xx for /v1/scan and /v1/scan?explain=true; a generator is refused at start."""
    path = tiny_run(tmp_path / name.replace(":", "_"), name)
    if models.spec(name).kind == "generator":
        with pytest.raises(RunError, match="serves image and speech detectors"):
            create_app(path)
        return
    c = local(create_app(path))
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
