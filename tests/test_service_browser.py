"""The scan page in a real browser: headless Chromium, driven over the W3C WebDriver protocol
(plain HTTP to chromedriver), uploads a file through the page's file input and shows the verdict
and the heat map. Needs Debian's `chromium` and `chromium-driver` packages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from deepshield import models
from deepshield.run import RunDir
from deepshield.service import create_app, running

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file() or CHROMEDRIVER is None,
    reason="headless browser test needs /usr/bin/chromium and chromedriver "
    "(apt-get install -y chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium session through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self, profile: Path) -> None:
        port = free_port()
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.driver.kill()
                raise RuntimeError("chromedriver did not become ready in 30 s")
            time.sleep(0.1)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
        ]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": str(CHROMIUM), "args": args},
        }
        try:
            opened = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        except Exception:
            self.driver.kill()
            raise
        self.session = opened["sessionId"]

    def call(self, method: str, path: str, body: dict | None = None):
        r = self.http.request(method, path, json=body)
        value = r.json()["value"]
        if r.status_code != 200:
            raise RuntimeError(f"WebDriver {method} {path}: {value.get('message', value)}")
        return value

    def go(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def element(self, css: str) -> str:
        found = self.call(
            "POST", f"/session/{self.session}/element", {"using": "css selector", "value": css}
        )
        return found[ELEMENT]

    def send_file(self, css: str, path: Path) -> None:
        """Choose `path` in the file input `css` (fires its change event)."""
        self.call(
            "POST",
            f"/session/{self.session}/element/{self.element(css)}/value",
            {"text": str(path)},
        )

    def run(self, script: str):
        return self.call(
            "POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []}
        )

    def wait_for(self, script: str, timeout: float = 30.0):
        """Poll `script` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while not (value := self.run(script)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {script}")
            time.sleep(0.1)
        return value

    def close(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.http.close()
            self.driver.terminate()
            self.driver.wait(10)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


STATE = """
const v = document.getElementById('verdict'), h = document.getElementById('heatmap');
const s = {text: v.textContent, label: v.dataset.label || null, p: v.dataset.pFake || null,
        heatmap: document.getElementById('heatmap-box').hidden ? 0 : h.naturalWidth,
        heatmapHeight: h.naturalHeight, status: document.getElementById('status').textContent};
"""


def once(condition: str) -> str:
    """A script returning the page's state `s` once the JS `condition` on it holds, else null."""
    return STATE + f"return ({condition}) ? s : null;"


def test_page_uploads_a_file_and_shows_the_verdict_and_heat_map(browser, tmp_path):
    torch.manual_seed(0)
    run = RunDir.create(tmp_path / "run")
    run.save_model(models.create("simplenet"))
    g = np.random.default_rng(0)
    image = tmp_path / "face.png"
    small = Image.fromarray((g.random((12, 16, 3)) * 255).astype(np.uint8))
    small.resize((160, 120), Image.BILINEAR).save(image)
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")

    with running(create_app(run.path)) as url:
        expected = httpx.post(
            f"{url}/v1/scan", files={"file": ("face.png", image.read_bytes(), "image/png")}
        ).json()
        browser.go(url + "/")
        browser.wait_for(
            "return document.getElementById('model').textContent.includes('simplenet')"
        )
        browser.send_file("#file", image)
        state = browser.wait_for(once("s.heatmap > 0"))
        assert state["label"] == expected["label"]
        assert float(state["p"]) == pytest.approx(expected["p_fake"], abs=1e-9)
        assert state["text"] == f"{expected['label'].upper()}: P(fake) = {expected['p_fake']:.4f}"
        assert (state["heatmap"], state["heatmapHeight"]) == (160, 120)  # the overlay decoded

        browser.send_file("#file", text)  # a refusal is shown, and the page keeps working
        state = browser.wait_for(once("s.status.startsWith('refused')"))
        assert "refused (415)" in state["status"] and state["text"] == "" and state["heatmap"] == 0
        browser.send_file("#file", image)
        state = browser.wait_for(once("s.heatmap > 0"))
        assert float(state["p"]) == pytest.approx(expected["p_fake"], abs=1e-9)


def test_page_shows_a_videos_per_frame_strip(browser, tmp_path):
    """A video upload: one bar per sampled frame, each bar's tooltip its frame's P(fake) as the
    API answers it, the verdict the video's."""
    from deepshield.service.media_uploads import MediaRules
    from test_media_video import write_video

    torch.manual_seed(0)
    run = RunDir.create(tmp_path / "run")
    run.save_model(models.create("simplenet"))
    video = write_video(tmp_path / "clip.mp4", n=12)
    app = create_app(run.path, media_rules=MediaRules(frames=5, faces="none"))
    with running(app) as url:
        expected = httpx.post(
            f"{url}/v1/scan", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")}
        ).json()
        browser.go(url + "/")
        browser.wait_for("return document.getElementById('accepts').textContent.includes('MP4')")
        browser.send_file("#file", video)
        bars = browser.wait_for(
            "const b = [...document.querySelectorAll('#strip div')].map((d) => d.title);"
            "return document.getElementById('strip-box').hidden ? null : b;"
        )
        want = [
            f"frame {f['index']} at {f['time']:.2f} s: P(fake) {f['p_fake']:.3f}"
            for f in expected["frames"]
        ]
        assert [b.split(";")[0] for b in bars] == want
        text = browser.run("return document.getElementById('verdict').textContent")
        assert text == f"{expected['label'].upper()}: P(fake) = {expected['p_fake']:.4f}"


def test_page_of_an_image_and_a_speech_run_shows_both_and_a_videos_sound(browser, tmp_path):
    """`serve IMAGE --speech-run SPEECH`: the page names both detectors, and a video with sound
    shows the speech detector's verdict on it beside the frames' (as the API answers)."""
    from deepshield.service.media_uploads import MediaRules
    from test_media_video import write_video

    torch.manual_seed(0)
    image, speech = RunDir.create(tmp_path / "img"), RunDir.create(tmp_path / "voice")
    image.save_model(models.create("simplenet"))
    speech.save_model(models.create("mel_cnn"))
    speech.write_yaml("config.yaml", {"data_kwargs": {"length": 8000}})
    video = write_video(tmp_path / "talk.mp4", n=12, audio=True)
    app = create_app(image.path, speech_run=speech.path, media_rules=MediaRules(frames=4))
    with running(app) as url:
        expected = httpx.post(
            f"{url}/v1/scan", files={"file": ("talk.mp4", video.read_bytes(), "video/mp4")}
        ).json()["audio_track"]
        browser.go(url + "/")
        model = browser.wait_for(
            "const t = document.getElementById('model').textContent;"
            "return t.includes('mel_cnn') ? t : null;"
        )
        assert "model simplenet (run img), image detector" in model
        assert "model mel_cnn (run voice), speech detector, 0.50 s clips at 16000 Hz" in model
        browser.send_file("#file", video)
        state = browser.wait_for(once("s.status.includes('sound (')"))
        want = f"sound (mel_cnn): {expected['label'].upper()}, P(fake) = {expected['p_fake']:.4f}"
        assert want in state["status"]


def test_page_shows_an_audio_files_windows_and_the_window_of_its_map(browser, tmp_path):
    """A speech run alone: a 3-window WAV shows the mean verdict, what was scored, the maximum
    and the window the heat map is drawn on (as the API answers); a silent WAV shows "no score"
    with the reason, not a number."""
    import soundfile as sf

    torch.manual_seed(0)
    speech = RunDir.create(tmp_path / "voice")
    speech.save_model(models.create("mel_cnn"))
    speech.write_yaml("config.yaml", {"data_kwargs": {"length": 8000}})
    t = np.arange(24000) / 16000
    sf.write(tmp_path / "talk.wav", 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t), 16000)
    sf.write(tmp_path / "quiet.wav", np.zeros(16000), 16000)
    with running(create_app(speech.path)) as url:
        data = (tmp_path / "talk.wav").read_bytes()
        expected = httpx.post(
            f"{url}/v1/scan", params={"explain": True}, files={"file": ("talk.wav", data)}
        ).json()
        browser.go(url + "/")
        browser.wait_for("return document.getElementById('model').textContent.includes('mel')")
        browser.send_file("#file", tmp_path / "talk.wav")
        state = browser.wait_for(once("s.heatmap > 0"))
        assert state["text"] == f"{expected['label'].upper()}: P(fake) = {expected['p_fake']:.4f}"
        assert expected["windows"] == 3 and state["status"].count("scored 3 windows of 0.50 s") == 1
        assert f"max over them {expected['p_fake_max']:.4f}" in state["status"]
        a, b = expected["gradcam_window_s"]
        caption = browser.run("return document.getElementById('heatmap-caption').textContent")
        assert caption.endswith(f"in the window with the highest P(fake), {a:.2f}-{b:.2f} s")
        browser.send_file("#file", tmp_path / "quiet.wav")
        state = browser.wait_for(once("s.text.startsWith('UNSURE')"))
        assert state["text"] == "UNSURE: no score" and state["heatmap"] == 0
        assert state["status"].count("digital silence") == 1  # the reason, said once


def test_page_shows_the_thresholds_caution_with_the_model_and_each_verdict(browser, tmp_path):
    """A threshold fitted on few samples (here the EER of a two-image test split) carries a
    warning: the page shows it under the model and after every verdict, as the API answers it."""
    from test_service import make_run

    metrics = {"test": {"n_real": 1, "n_fake": 1, "eer": 0.0, "eer_threshold": 0.5}}
    run = make_run(tmp_path / "run", metrics=metrics)
    image = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    with running(create_app(run.path, threshold="eer")) as url:
        expected = httpx.post(
            f"{url}/v1/scan", files={"file": ("face.png", image.read_bytes(), "image/png")}
        ).json()
        warning = expected["threshold_warning"]
        assert "only 1 real and 1 fake test samples" in warning
        browser.go(url + "/")
        model = browser.wait_for(
            "const t = document.getElementById('model').textContent;"
            "return t.includes('CAUTION') ? t : null"
        )
        assert model.endswith(f"; CAUTION: {warning}")
        browser.send_file("#file", image)
        state = browser.wait_for(once("s.status.includes('CAUTION')"))
        assert state["status"].endswith(f"; CAUTION: {warning}")
        assert state["text"] == f"{expected['label'].upper()}: P(fake) = {expected['p_fake']:.4f}"
