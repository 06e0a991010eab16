"""The scan service: scans equal the library's prediction, Grad-CAM overlays, every malformed
upload answered 4xx JSON while the server keeps serving, and a bounded load test on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import shutil
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from typer.testing import CliRunner

from deepshield import models
from deepshield.errors import ConfigError, RunError
from deepshield.explain import grad_cam
from deepshield.media.types import sniff
from deepshield.predict import fake_scores, predict_logits
from deepshield.report.overlay import overlay
from deepshield.run import RunDir
from deepshield.runs.decision import load_decision
from deepshield.service import create_app, running
from deepshield.service.uploads import ENVELOPE_BYTES, UploadError, header_size, read_upload

SIZE = 48  # the run's training size (config.yaml data_kwargs.size), not simplenet's 64


def local(app) -> TestClient:
    """A test client that reaches the app as a browser on this machine does (Host: localhost)."""
    return TestClient(app, base_url="http://localhost")


def make_run(path, *, config=None, dataset=None, metrics=None, seed=0) -> RunDir:
    torch.manual_seed(seed)
    run = RunDir.create(path)
    run.save_model(models.create("simplenet"))
    if config is not None:
        run.write_yaml("config.yaml", config)
    if dataset is not None:
        run.write_json("dataset.json", dataset)
    if metrics is not None:
        run.write_json("metrics.json", metrics)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("service") / "simplenet-faces"
    config = {
        "model": "simplenet",
        "dataset": "synthetic-faces:easy",
        "data_kwargs": {"size": SIZE},
    }
    make_run(path, config=config, metrics={"test": {"eer": 0.2, "eer_threshold": 0.4931}})
    return path


@pytest.fixture(scope="module")
def client(run_dir):
    return local(create_app(run_dir))


def photo(w: int = 90, h: int = 70, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth random picture (so JPEG keeps it recognisable) of size w x h."""
    g = np.random.default_rng(seed)
    small = g.random((max(h // 8, 2), max(w // 8, 2), 4))
    a = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8), "RGBA").resize((w, h), Image.BILINEAR)
    )
    return Image.fromarray(a, "RGBA").convert(mode)


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def library_p_fake(run_dir, data: bytes, size: int = SIZE) -> float:
    """P(fake) the library gives for the file's pixels resized to the run's input size."""
    im = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255  # [1, 3, S, S]
    model = RunDir.open(run_dir).load_model()
    return float(fake_scores(predict_logits(model, x))[0])


def scan(client, data: bytes, name="x.png", ctype="image/png", **params):
    return client.post("/v1/scan", params=params, files={"file": (name, data, ctype)})


# -- scans ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "name", "ctype"),
    [
        ("PNG", "a.png", "image/png"),
        ("JPEG", "b.jpg", "image/jpeg"),
        ("WEBP", "c.webp", "image/webp"),
        ("BMP", "d.bmp", "image/bmp"),
    ],
)
def test_scan_equals_the_library_prediction_on_the_resized_pixels(
    client, run_dir, fmt, name, ctype
):
    data = encode(photo(), fmt)
    r = scan(client, data, name, ctype)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["p_fake"] <= 1.0
    assert body["p_fake"] == pytest.approx(library_p_fake(run_dir, data), abs=1e-6)
    assert body["label"] == banded(body["p_fake"], 0.5)
    assert (body["sha256"], body["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert (body["model"], body["threshold"], body["run"]) == ("simplenet", 0.5, run_dir.name)
    assert body["calibrated"] is False and body["p_fake_raw"] == body["p_fake"]
    assert "gradcam_png" not in body


def test_scan_depends_on_the_image(client):
    p = [scan(client, encode(photo(seed=s), "PNG")).json()["p_fake"] for s in range(3)]
    assert len(set(p)) == 3


def test_grayscale_and_rgba_are_scanned_as_their_rgb_conversion(client):
    rgba = photo(mode="RGBA")
    gray = photo(mode="L")
    for im in (rgba, gray):
        p = scan(client, encode(im, "PNG")).json()["p_fake"]
        assert p == pytest.approx(
            scan(client, encode(im.convert("RGB"), "PNG")).json()["p_fake"], abs=1e-7
        )


def test_exif_orientation_is_applied_before_the_scan(client, run_dir):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    photo(90, 70).save(buf, format="JPEG", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert upright.size == (70, 90)
    p = scan(client, buf.getvalue(), "r.jpg", "image/jpeg").json()["p_fake"]
    assert p == pytest.approx(library_p_fake(run_dir, encode(upright, "PNG")), abs=1e-6)
    assert p != pytest.approx(library_p_fake(run_dir, buf.getvalue()), abs=1e-6)


def test_application_octet_stream_is_accepted_by_its_bytes(client, run_dir):
    data = encode(photo(), "PNG")
    r = scan(client, data, "upload", "application/octet-stream")
    assert r.status_code == 200
    assert r.json()["p_fake"] == pytest.approx(library_p_fake(run_dir, data), abs=1e-6)


def test_explain_returns_the_grad_cam_overlay_as_png_of_the_upload(client, run_dir):
    im = photo(90, 70)
    body = scan(client, encode(im, "PNG"), explain="true").json()
    assert body["gradcam_class"] == ("fake" if body["p_fake"] >= body["threshold"] else "real")
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.format == "PNG" and png.size == (90, 70) and png.mode == "RGB"
    # the same overlay, computed from the library's Grad-CAM of the verdict's class
    model = RunDir.open(run_dir).load_model()
    small = im.resize((SIZE, SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(small)).permute(2, 0, 1)[None].float() / 255
    cam = grad_cam(model, x, int(body["gradcam_class"] == "fake"))[0]
    shown = torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255
    expected = overlay(shown, cam, alpha=0.45, as_uint8=True)
    assert np.abs(np.asarray(png).astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(png), np.asarray(im))


def test_explain_overlay_of_a_large_upload_is_capped_at_512_px(client):
    body = scan(
        client, encode(photo(1024, 600), "JPEG"), "big.jpg", "image/jpeg", explain=True
    ).json()
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    assert png.size == (512, 300)


# -- settings read from the run ---------------------------------------------------------------
def test_input_size_rule_dataset_json_then_config_then_registry(tmp_path):
    def served(**kw):
        path = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
        make_run(path, **kw)
        return local(create_app(path)).get("/healthz").json()

    both = served(config={"data_kwargs": {"size": 40}}, dataset={"image_size": [32, 36]})
    assert (both["input_size"], both["input_source"]) == ([32, 36], "dataset.json image_size")
    cfg = served(config={"data_kwargs": {"size": 40}})
    assert (cfg["input_size"], cfg["input_source"]) == ([40, 40], "config.yaml data_kwargs.size")
    bare = served()
    assert (bare["input_size"], bare["input_source"]) == ([64, 64], "model registry input_size")
    path = tmp_path / "given"
    make_run(path, config={"data_kwargs": {"size": 40}})
    assert local(create_app(path, input_size=56)).get("/healthz").json()["input_size"] == [
        56,
        56,
    ]


def test_scan_uses_the_size_from_dataset_json(tmp_path):
    path = tmp_path / "run"
    make_run(path, dataset={"image_size": [32, 32]})
    data = encode(photo(), "PNG")
    p = scan(local(create_app(path)), data).json()["p_fake"]
    assert p == pytest.approx(library_p_fake(path, data, size=32), abs=1e-6)


def test_threshold_default_number_and_the_runs_eer(run_dir):
    data = encode(photo(), "PNG")
    for threshold, expected in ((None, 0.5), (0.0, 0.0), ("1", 1.0), ("eer", 0.4931)):
        c = local(create_app(run_dir, threshold=threshold))
        body = scan(c, data).json()
        assert body["threshold"] == expected
        assert body["label"] == banded(body["p_fake"], expected)
    assert (
        scan(local(create_app(run_dir, threshold=0.0, unsure=0.0)), data).json()["label"] == "fake"
    )
    assert (
        scan(local(create_app(run_dir, threshold=1.0, unsure=0.0)), data).json()["label"] == "real"
    )


def test_a_score_inside_the_band_around_the_threshold_is_unsure_with_the_reason(run_dir):
    """The one verdict rule (as `deepshield scan`): fake at >= t + band, real below t - band,
    unsure between, with the band named; --unsure 0 is the bare threshold."""
    data = encode(photo(), "PNG")
    p = scan(local(create_app(run_dir)), data).json()["p_fake"]
    for t, band, expected in (
        (p, 0.05, "unsure"),
        (max(0.0, p - 0.049), 0.05, "unsure"),
        (min(1.0, p + 0.04), 0.05, "unsure"),
        (max(0.0, p - 0.06), 0.05, "fake"),
        (p, 0.0, "fake"),
        (p + 0.2, 0.1, "real"),
    ):
        c = local(create_app(run_dir, threshold=min(1.0, t), unsure=band))
        body = scan(c, data).json()
        assert body["label"] == expected, (t, band, body)
        assert body["unsure_band"] == pytest.approx([max(0, min(1, t) - band), min(1, t + band)])
        assert (body["unsure_reason"] is None) == (expected != "unsure")
        if expected == "unsure":
            assert "unsure band" in body["unsure_reason"] and f"{p:.3f}" in body["unsure_reason"]
        assert c.get("/healthz").json()["unsure_band"] == body["unsure_band"]
    with pytest.raises(ConfigError, match="unsure band"):
        create_app(run_dir, unsure=0.5)


def banded(p: float, t: float, band: float = 0.05) -> str:
    """The verdict rule written out: fake at or above t + band, real below t - band."""
    return "fake" if p >= t + band else "real" if p < t - band else "unsure"


PLATT = (3.0, -2.0)  # the calibrator of `calibrated_copy`: P = sigmoid(3 raw - 2), threshold 0.3


def calibrated_copy(run_dir, path):
    """A copy of the run with a decision.json: Platt a, b = PLATT, eer rule, threshold 0.3."""
    from deepshield.metrics import Calibrator
    from deepshield.runs.decision import Decision

    shutil.copytree(run_dir, path)
    a, b = PLATT
    cal = Calibrator.from_dict({"method": "platt", "a": a, "b": b, "prior_log_odds": 0.0})
    RunDir(path).write_json("decision.json", Decision("eer", 0.3, calibrator=cal).to_dict())
    return path


def test_a_run_with_a_decision_serves_its_calibrated_p_fake_at_its_threshold(tmp_path, run_dir):
    """p_fake = sigmoid(a * raw + b) of decision.json's Platt calibrator; its threshold by
    default, the raw test EER threshold passed through the calibrator with 'eer'."""
    path = calibrated_copy(run_dir, tmp_path / "calibrated")
    a, b = PLATT
    data = encode(photo(), "PNG")
    raw = library_p_fake(run_dir, data)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for threshold, expected in ((None, 0.3), ("eer", sigmoid(a * 0.4931 + b))):
        c = local(create_app(path, threshold=threshold, decision=load_decision(path)))
        body = scan(c, data).json()
        assert body["p_fake_raw"] == pytest.approx(raw, abs=1e-6)
        assert body["p_fake"] == pytest.approx(sigmoid(a * raw + b), abs=1e-6)
        assert body["calibrated"] is True and body["threshold"] == pytest.approx(expected)
        assert body["label"] == banded(body["p_fake"], expected)
        assert c.get("/healthz").json()["calibrated"] is True
    health = local(create_app(run_dir)).get("/healthz").json()
    assert health["calibrated"] is False and health["calibration"].startswith("uncalibrated")


def test_serve_command_loads_the_runs_decision(tmp_path, run_dir, monkeypatch):
    import uvicorn

    from deepshield.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **kw: seen.update(app=service))
    result = CliRunner().invoke(app, ["serve", str(run_dir)])
    assert result.exit_code == 0 and "note: uncalibrated" in result.output
    assert local(seen["app"]).get("/healthz").json()["calibrated"] is False
    path = calibrated_copy(run_dir, tmp_path / "calibrated")
    result = CliRunner().invoke(app, ["serve", str(path)])
    assert result.exit_code == 0 and "uncalibrated" not in result.output
    health = local(seen["app"]).get("/healthz").json()
    assert health["calibrated"] is True and health["threshold"] == 0.3


def test_bad_thresholds_and_runs_are_refused_in_one_line(tmp_path, run_dir):
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        create_app(run_dir, threshold=1.5)
    with pytest.raises(ConfigError, match="or 'eer'"):
        create_app(run_dir, threshold="best")
    make_run(tmp_path / "no-metrics")
    with pytest.raises(RunError, match=r"metrics\.json: missing"):
        create_app(tmp_path / "no-metrics", threshold="eer")
    make_run(tmp_path / "no-eer", metrics={"test": {"accuracy": 0.9}})
    with pytest.raises(RunError, match=r"no test\.eer_threshold"):
        create_app(tmp_path / "no-eer", threshold="eer")
    with pytest.raises(RunError, match="no such run folder"):
        create_app(tmp_path / "absent")
    run = RunDir.create(tmp_path / "classifier")
    run.save_model(models.create("simplenet", num_classes=10))
    with pytest.raises(RunError, match="10 classes"):
        create_app(run.path)
    generator = RunDir.create(tmp_path / "generator")
    generator.write_json("model.json", {"name": "stargan", "num_classes": 2, "kwargs": {}})
    with pytest.raises(RunError, match="generator model"):
        create_app(generator.path)


def test_a_model_without_conv_layers_scans_and_explains_by_saliency(tmp_path):
    torch.manual_seed(0)
    run = RunDir.create(tmp_path / "mlp3")
    run.save_model(models.create("mlp3"))
    c = local(create_app(run.path))
    data = encode(photo(), "PNG")
    assert c.get("/healthz").json()["input_size"] == [32, 32]
    assert scan(c, data).json()["p_fake"] == pytest.approx(
        library_p_fake(run.path, data, 32), abs=1e-6
    )
    r = scan(c, data, explain=True)
    assert r.status_code == 200 and r.json()["explain_method"] == "saliency", r.text


@pytest.mark.parametrize(
    ("mode", "fmt", "kw"),
    [
        ("RGB", "PNG", {}),
        ("L", "PNG", {}),
        ("RGB", "JPEG", {}),
        ("RGB", "JPEG", {"progressive": True}),
        ("L", "JPEG", {}),
        ("RGB", "WEBP", {}),
        ("RGBA", "WEBP", {}),
        ("RGB", "WEBP", {"lossless": True}),
        ("RGB", "BMP", {}),
        ("P", "BMP", {}),
    ],
)
def test_header_size_reads_what_the_decoder_finds(mode, fmt, kw):
    for w, h in ((17, 31), (640, 480), (333, 1001)):
        buf = io.BytesIO()
        photo(w, h, mode=mode).save(buf, format=fmt, **kw)
        data = buf.getvalue()
        kind = sniff(data)
        assert kind == {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "BMP": "bmp"}[fmt]
        assert header_size(data, kind) == Image.open(io.BytesIO(data)).size == (w, h)


# -- refusals ---------------------------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring width x height RGB, and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def wav_bytes() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, np.float32), 16000, format="WAV")
    return buf.getvalue()


GOOD_PNG = encode(photo(), "PNG")
MALFORMED = {
    "truncated PNG": (lambda: scan_args(GOOD_PNG[: len(GOOD_PNG) // 2]), 422, "truncated"),
    "PNG magic then garbage": (
        lambda: scan_args(GOOD_PNG[:8] + bytes(range(256)) * 4),
        422,
        "corrupt",
    ),
    "text named .png as image/png": (
        lambda: scan_args(b"just some text\n" * 10),
        415,
        "not a PNG/JPEG/WEBP/BMP",
    ),
    "JPEG bytes declared image/png": (
        lambda: scan_args(encode(photo(), "JPEG")),
        415,
        "declared PNG",
    ),
    "PNG bytes named .jpg": (
        lambda: scan_args(GOOD_PNG, "a.jpg", "application/octet-stream"),
        415,
        "declared JPEG",
    ),
    "100000x100000 declared in the header": (
        lambda: scan_args(png_header(100_000, 100_000)),
        413,
        "pixels",
    ),
    "5000x5000 declared in the header": (
        lambda: scan_args(png_header(5000, 5000)),
        413,
        "5000x5000 pixels",
    ),
    "8x8 image": (lambda: scan_args(encode(photo(8, 8), "PNG")), 422, "at least 16 px"),
    "0-byte file": (lambda: scan_args(b""), 400, "empty"),
    "wrong field name": (
        lambda: {"files": {"image": ("a.png", GOOD_PNG, "image/png")}},
        400,
        "no form field 'file'",
    ),
    "two files": (
        lambda: {"files": [("file", ("a.png", GOOD_PNG, "image/png"))] * 2},
        400,
        "one file per request",
    ),
    "raw body, not a form": (
        lambda: {"content": GOOD_PNG, "headers": {"content-type": "image/png"}},
        415,
        "not multipart/form-data",
    ),
    "WAV to an image model": (
        lambda: scan_args(wav_bytes(), "a.wav", "audio/wav"),
        415,
        "this model takes PNG",
    ),
    "explain=maybe": (
        lambda: {**scan_args(GOOD_PNG), "params": {"explain": "maybe"}},
        422,
        "explain",
    ),
    "broken multipart framing": (
        lambda: {
            "content": b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            "headers": {"content-type": "multipart/form-data; boundary=xyz"},
        },
        400,
        "no form field",
    ),
}


def scan_args(data: bytes, name: str = "a.png", ctype: str = "image/png") -> dict:
    return {"files": {"file": (name, data, ctype)}}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_uploads_are_answered_4xx_json_and_the_server_keeps_serving(client, case):
    make, status, words = MALFORMED[case]
    r = client.post("/v1/scan", **make())
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert words in error and "\n" not in error
    assert client.get("/healthz").json()["status"] == "ok"
    assert scan(client, GOOD_PNG).status_code == 200


def test_uploads_over_the_limit_are_refused_while_reading(run_dir):
    limit = 4000
    c = local(create_app(run_dir, max_bytes=limit))
    r = scan(
        c, GOOD_PNG[:16] + bytes(limit + ENVELOPE_BYTES)
    )  # declared Content-Length over the limit: refused before reading
    assert r.status_code == 413 and "4,000-byte upload limit" in r.json()["error"]
    r = scan(
        c, GOOD_PNG[:16] + bytes(limit)
    )  # the body fits the framing slack, the file part does not
    assert (
        r.status_code == 413
        and "file is larger than the 4,000-byte upload limit" in r.json()["error"]
    )

    r = c.post(
        "/v1/scan",
        content=iter([b"--b\r\n", bytes(30_000)]),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413 and "request body is larger than" in r.json()["error"]
    assert c.get("/healthz").status_code == 200
    assert scan(c, encode(photo(16, 16), "PNG")).status_code == 200  # small files still pass


def test_a_stream_is_cut_at_the_limit_not_read_to_its_end():
    read = []

    async def body():  # 1 MB in 1 KiB chunks, no Content-Length
        yield b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for i in range(1024):
            read.append(i)
            yield b"\x00" * 1024
        yield b"\r\n--b0--\r\n"

    with pytest.raises(UploadError, match="file is larger than the 4,000-byte") as e:
        asyncio.run(
            read_upload(
                "multipart/form-data; boundary=b0", None, body(), field="file", max_bytes=4000
            )
        )
    assert e.value.status == 413 and len(read) == 4  # stopped at the chunk that crossed 4000


def test_unknown_routes_answer_json_errors(client):
    r = client.get("/v2/scan")
    assert r.status_code == 404 and r.json()["error"].startswith("GET /v2/scan: Not Found")
    r = client.get("/v1/scan")
    assert r.status_code == 405 and "POST /v1/scan" in r.json()["error"]


# -- page and health --------------------------------------------------------------------------
def test_healthz_names_the_model_and_run(client, run_dir):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["model"] == "simplenet" and body["run"] == run_dir.name
    assert body["input_size"] == [SIZE, SIZE] and body["kind"] == "image"


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'type="file"' in html and "v1/scan" in html
    for external in ("http://", "https://", "<link", 'src="/', "@import", "url("):
        assert external not in html
    assert "default-src 'none'" in r.headers["content-security-policy"]


# -- command line -----------------------------------------------------------------------------
def test_serve_command_builds_the_app_and_prints_the_url(run_dir, monkeypatch):
    import uvicorn

    from deepshield.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda service, **kw: seen.update(app=service, **kw))
    args = ["serve", str(run_dir), "--port", "8123", "--max-mb", "1", "--threshold", "eer"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8123/" in result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    health = local(seen["app"]).get("/healthz").json()
    assert health["threshold"] == 0.4931 and health["max_bytes"] == 1024 * 1024


def test_serve_command_reports_a_missing_run_in_one_line(tmp_path, monkeypatch, capsys):
    from deepshield.cli import main

    monkeypatch.setattr("sys.argv", ["deepshield", "serve", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.strip().count("\n") == 0 and "no such run folder" in err


# -- load -------------------------------------------------------------------------------------
def test_bounded_load_on_loopback_has_no_errors(run_dir):
    n, concurrency = 200, 8
    files = [encode(photo(seed=i % 7), "PNG") for i in range(7)]
    latencies: list[float] = []
    errors: list[str] = []
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30)
        t0 = time.perf_counter()
        try:
            r = local.client.post("/v1/scan", files={"file": ("a.png", files[i % 7], "image/png")})
            ok = r.status_code == 200 and 0 <= r.json()["p_fake"] <= 1
            if not ok:
                errors.append(f"{r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as e:
            errors.append(repr(e))
        latencies.append(time.perf_counter() - t0)

    with running(create_app(run_dir)) as url:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
    ms = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(
        f"\nload: {n} scans, {concurrency} concurrent: p50 {ms[0]:.1f} ms, p99 {ms[1]:.1f} ms, {n / wall:.0f} req/s"
    )
    assert errors == [] and len(latencies) == n


# -- speech -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    if "mel_cnn" not in models.names():
        pytest.skip("speech model mel_cnn not merged")
    path = tmp_path_factory.mktemp("speech") / "mel_cnn-speech"
    torch.manual_seed(0)
    run = RunDir.create(path)
    run.save_model(models.create("mel_cnn"))
    run.write_yaml(
        "config.yaml",
        {"model": "mel_cnn", "dataset": "synthetic-speech", "data_kwargs": {"length": 16000}},
    )
    return path


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A chirp with a little noise, float32 [T, channels] in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    g = np.random.default_rng(seed)
    x = 0.5 * np.sin(2 * np.pi * (200 + 300 * t) * t)[:, None] + 0.05 * g.standard_normal(
        (len(t), channels)
    )
    return np.clip(x, -1, 1).astype(np.float32)


def audio_file(tmp_path, name: str, x: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    sf.write(tmp_path / name, x, rate)
    return (tmp_path / name).read_bytes()


def library_speech_p_fake(run_dir, path) -> float:
    from deepshield.media.audio import read_clip

    x = torch.from_numpy(read_clip(path, length=16000)[0])[None]  # [1, T]
    return float(fake_scores(predict_logits(RunDir.open(run_dir).load_model(), x))[0])


@pytest.mark.parametrize(
    ("name", "seconds", "rate", "channels"),
    [("a.wav", 0.6, 16000, 1), ("b.flac", 1.5, 44100, 2), ("c.wav", 1.45, 16000, 1)],
)
def test_speech_scan_equals_the_library_on_the_same_clip(
    speech_run, tmp_path, name, seconds, rate, channels
):
    """A file of one window (under 1.5 clips) answers as before the windows: the model on the
    reader's one clip (tiled when short, the first clip when longer)."""
    data = audio_file(tmp_path, name, tone(seconds, rate, channels), rate)
    c = local(create_app(speech_run))
    ctype = "audio/flac" if name.endswith(".flac") else "audio/wav"
    r = c.post("/v1/scan", files={"file": (name, data, ctype)})
    assert r.status_code == 200, r.text
    assert r.json()["p_fake"] == pytest.approx(
        library_speech_p_fake(speech_run, tmp_path / name), abs=1e-6
    )
    assert r.json()["windows"] == 1 and r.json()["p_fake_max"] == r.json()["p_fake"]
    assert (
        c.get("/healthz").json() | {"clip_samples": 16000, "sample_rate": 16000, "kind": "audio"}
        == c.get("/healthz").json()
    )


@pytest.fixture(scope="module")
def calibrated_speech_run(speech_run, tmp_path_factory):
    """The speech run with a Platt decision (fitted on made-up validation scores), so that the
    service and `scan` must both calibrate."""
    from deepshield.runs.decision import fit_decision

    path = tmp_path_factory.mktemp("calibrated") / "mel"
    shutil.copytree(speech_run, path)
    decision = fit_decision([0, 0, 0, 1, 1, 1], [0.45, 0.5, 0.52, 0.5, 0.53, 0.6])
    RunDir.open(path).write_json("decision.json", decision.to_dict())
    return path


@pytest.mark.parametrize(
    ("name", "seconds", "rate", "channels", "windows"),
    [("long.wav", 30.0, 22050, 1, 16), ("five.flac", 5.4, 16000, 2, 5)],
)
def test_speech_answer_of_a_long_file_equals_deepshield_scan(
    calibrated_speech_run, tmp_path, monkeypatch, capsys, name, seconds, rate, channels, windows
):
    """The service scores a file in windows as `deepshield scan` does (30 s: 16 of 30 windows
    at --frames 16; 5.4 s: 5 windows, the last 0.4 s left out); before, it answered the model on
    the first clip alone."""
    import csv

    from test_reliability_inputs import run_in_process

    run = calibrated_speech_run
    x = tone(seconds, rate, channels, seed=3)
    x[rate:] = np.clip(
        x[rate:] + 0.15 * np.random.default_rng(4).standard_normal(x[rate:].shape), -1, 1
    )
    data = audio_file(tmp_path, name, x, rate)  # the first second unlike the rest
    ctype = "audio/flac" if name.endswith(".flac") else "audio/wav"
    app = create_app(run, decision=load_decision(run))  # as `deepshield serve RUN` builds it
    answer = local(app).post("/v1/scan", files={"file": (name, data, ctype)}).json()
    argv = ["scan", str(tmp_path / name), "--speech-run", str(run), "--frames", "16"]
    code, err = run_in_process([*argv, "--out", str(tmp_path / "scan")], monkeypatch, capsys)
    assert code == 0, err
    with open(tmp_path / "scan" / "scan.csv") as f:
        [row] = csv.DictReader(f)
    assert answer["windows"] == int(row["frames"]) == windows
    assert answer["p_fake"] == pytest.approx(float(row["score"]), abs=1e-12)
    assert answer["p_fake_max"] == pytest.approx(float(row["score_max"]), abs=1e-12)
    assert answer["label"] == row["verdict"] and answer["calibrated"]
    assert row["note"].endswith(answer["note"]) and f"scored {windows} windows" in answer["note"]
    first = library_speech_p_fake(run, tmp_path / name)  # the old answer: the first clip's
    assert abs(answer["p_fake_raw"] - first) > 1e-4  # float32 agreement is ~1e-7


def test_speech_explain_draws_the_window_with_the_highest_p_fake(speech_run, tmp_path):
    """explain=true on a file of several windows: each window's span and P(fake), and the
    overlay of its highest-P(fake) window, the same PNG as that window uploaded alone."""
    from deepshield.media.audio import fix_length

    wave = tone(4.0, 16000, seed=5)[:, 0]  # 4 windows of 1 s
    x = torch.from_numpy(
        np.stack([fix_length(wave[i : i + 16000], 16000) for i in range(0, 64000, 16000)])
    )
    p = fake_scores(predict_logits(RunDir.open(speech_run).load_model(), x)).numpy()  # [4]
    k = int(np.argmax(p))
    c = local(create_app(speech_run))
    whole = audio_file(tmp_path, "all.wav", wave[:, None], 16000)
    alone = audio_file(tmp_path, "one.wav", wave[k * 16000 : (k + 1) * 16000, None], 16000)
    body = c.post(
        "/v1/scan", params={"explain": True}, files={"file": ("all.wav", whole, "audio/wav")}
    ).json()
    one = c.post(
        "/v1/scan", params={"explain": True}, files={"file": ("one.wav", alone, "audio/wav")}
    ).json()
    assert body["windows"] == 4 and body["p_fake_max"] == pytest.approx(p.max(), abs=1e-6)
    got = body["window_scores"]  # each window where it lies, with its own P(fake)
    assert [(w["start_s"], w["end_s"]) for w in got] == [(i, i + 1) for i in range(4)]
    assert [w["p_fake"] for w in got] == pytest.approx(p.tolist(), abs=1e-6)
    assert body["gradcam_window"] == k and body["gradcam_window_s"] == [k, k + 1]
    assert body["gradcam_png"] == one["gradcam_png"] and "gradcam_window" in one
    assert body["gradcam_class"] == ("fake" if p[k] >= 0.5 else "real")


def test_silence_gets_no_score_and_no_map_as_in_scan(speech_run, tmp_path):
    """A degenerate file: `unsure` with the reason, p_fake null (it was a score beside the
    label), no overlay even with explain=true (there is no window score to explain)."""
    data = audio_file(tmp_path, "zero.wav", np.zeros((32000, 1), np.float32), 16000)
    r = local(create_app(speech_run)).post(
        "/v1/scan", params={"explain": True}, files={"file": ("zero.wav", data, "audio/wav")}
    )
    body = r.json()
    assert r.status_code == 200 and (body["p_fake"], body["p_fake_raw"]) == (None, None)
    assert body["label"] == "unsure" and body["windows"] == 0 and "gradcam_png" not in body
    assert (
        body["unsure_reason"]
        == body["note"]
        == "digital silence (every sample is zero): nothing to judge"
    )


def test_speech_explain_returns_a_time_frequency_map(speech_run, tmp_path):
    data = audio_file(tmp_path, "a.wav", tone(1.0, 16000), 16000)
    body = (
        local(create_app(speech_run))
        .post("/v1/scan", params={"explain": True}, files={"file": ("a.wav", data, "audio/wav")})
        .json()
    )
    png = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png"])))
    frames = 16000 // 160 + 1  # the log-mel front end: hop 160, centred frames
    assert png.format == "PNG" and png.size == (frames, 128)  # time x 64 mel bands, shown 2x tall


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda: ("a.png", GOOD_PNG, "image/png"), 415, "this model takes WAV/FLAC"),
        (lambda: ("a.wav", b"text, not audio\n" * 8, "audio/wav"), 415, "a.wav: not an audio file"),
        (
            lambda: ("a.wav", b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(200)), "audio/wav"),
            422,
            "a.wav: corrupt audio data (Error in WAV file. No 'data' chunk marker.)",
        ),
        (lambda: ("a.flac", wav_bytes(), "audio/flac"), 415, "declared FLAC"),
    ],
)
def test_speech_refusals(speech_run, make, status, words):
    c = local(create_app(speech_run))
    r = c.post("/v1/scan", files={"file": make()})
    assert r.status_code == status and words in r.json()["error"], r.text
    assert c.get("/healthz").status_code == 200
