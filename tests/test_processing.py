"""Processing transforms: real encoders match Pillow/libsndfile, closed forms, specs and grids."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from scipy import ndimage, signal

from deepshield.data import processing as P
from deepshield.errors import ConfigError, InputError


def _images(b: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images [B,3,H,W] in [0,1] (blurred noise, so codecs behave as on photos)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False
    )


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def _tone(freq: float, t: int = 16000, amp: float = 0.5) -> torch.Tensor:
    n = torch.arange(t, dtype=torch.float64)
    return (amp * torch.sin(2 * torch.pi * freq * n / P.SPEECH_RATE))[None]


@pytest.mark.parametrize("fmt,quality", [("JPEG", 75), ("JPEG", 30), ("WEBP", 80)])
def test_encoder_equals_pillow(fmt: str, quality: int) -> None:
    x = _images()
    y = P.pil_roundtrip(x, fmt, quality)
    for img, out in zip(P.to_uint8(x), y, strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=quality)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.array_equal(P.to_uint8(out[None])[0], ref)
    assert not torch.equal(y, x)


def test_jpeg_is_420_and_shrinks_with_quality() -> None:
    img = P.to_uint8(_images(1, 64))[0]
    data = {q: P.pil_encode(img, "JPEG", q) for q in (30, 75, 95)}
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(data[75]))) == 2  # 2 = 4:2:0
    assert len(data[30]) < len(data[75]) < len(data[95])


def test_jpeg_quality_monotone_psnr() -> None:
    x = _images(4, 64)
    psnr = [_psnr(P.parse_spec(f"jpeg:{q}")(x), x) for q in (30, 50, 75, 95)]
    assert psnr == sorted(psnr) and psnr[-1] > psnr[0] + 3


def test_webp_quality_monotone_psnr() -> None:
    x = _images(4, 64)
    psnr = [_psnr(P.parse_spec(f"webp:{q}")(x), x) for q in (20, 60, 95)]
    assert psnr == sorted(psnr)


@pytest.mark.parametrize(
    "spec", ["resize:0.5", "resize:0.75", "crop:0.9", "blur:2", "noise:0.05", P.SOCIAL]
)
def test_image_transforms_keep_shape_and_range(spec: str) -> None:
    x = _images(2, 36)
    y = P.parse_spec(spec)(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


def _pillow_float(
    channel: torch.Tensor, box: tuple[int, int, int, int], small: tuple[int, int]
) -> np.ndarray:
    """Pillow 'F'-mode BILINEAR: crop `box`, resize to `small` (w, h), resize back."""
    im = Image.fromarray(channel.numpy().astype(np.float32), mode="F").crop(box)
    h, w = channel.shape
    return np.asarray(
        im.resize(small, Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    )


@pytest.mark.parametrize("factor", [0.5, 0.75])
def test_resize_matches_pillow_bilinear(factor: float) -> None:
    x = _images(1, 36, seed=2)
    y = P.resize_back(x, factor)
    small = (round(36 * factor), round(36 * factor))
    for c in range(3):
        assert np.allclose(
            y[0, c].numpy(), _pillow_float(x[0, c], (0, 0, 36, 36), small), atol=1e-5
        )


def test_crop_matches_pillow_bilinear() -> None:
    x = _images(1, 40, seed=3)
    y = P.center_crop(x, 0.8)  # keep 32 x 32 from offset 4
    for c in range(3):
        assert np.allclose(
            y[0, c].numpy(), _pillow_float(x[0, c], (4, 4, 36, 36), (40, 40)), atol=1e-5
        )


def test_resize_of_a_constant_is_the_constant() -> None:
    x = torch.full((1, 3, 20, 28), 0.25)
    assert torch.allclose(P.resize_back(x, 0.5), x, atol=1e-6)
    assert torch.allclose(P.center_crop(x, 0.8), x, atol=1e-6)


def test_centre_crop_of_full_fraction_is_identity() -> None:
    x = _images()
    assert torch.allclose(P.center_crop(x, 1.0), x, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_matches_scipy(sigma: float) -> None:
    x = _images(1, 24).double()
    y = P.gaussian_blur(x, sigma)
    ref = ndimage.gaussian_filter(x[0].numpy(), sigma=(0, sigma, sigma))
    assert np.allclose(y[0].numpy(), ref, atol=1e-12)


def test_blur_of_an_impulse_is_the_sampled_gaussian() -> None:
    sigma = 1.5
    x = torch.zeros(1, 3, 31, 31, dtype=torch.float64)
    x[..., 15, 15] = 1
    y = P.gaussian_blur(x, sigma)[0, 0]
    t = torch.arange(-15, 16, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2)) * (t.abs() <= int(4 * sigma + 0.5))
    g = g / g.sum()
    assert torch.allclose(y, g[:, None] * g[None, :], atol=1e-12)


def test_noise_is_seeded_with_the_stated_sigma() -> None:
    x = torch.full((2, 3, 64, 64), 0.5)
    a, b = P.gaussian_noise(x, 0.02, seed=3), P.gaussian_noise(x, 0.02, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, P.gaussian_noise(x, 0.02, seed=4))
    assert abs(float((a - x).std()) - 0.02) < 0.001


def test_images_out_of_range_are_refused() -> None:
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        P.parse_spec("jpeg:75")(torch.full((1, 3, 8, 8), 1.5))
    with pytest.raises(InputError, match="B, 3, H, W"):
        P.parse_spec("blur:1")(torch.zeros(3, 8, 8))


# ---------------------------------------------------------------- speech


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0])
def test_noise_snr_is_exact(snr: float) -> None:
    x = torch.cat([_tone(440), 0.1 * _tone(1000)]).float()
    y = P.white_noise_snr(x, snr, seed=1)
    measured = 10 * torch.log10(
        x.double().pow(2).mean(1) / (y.double() - x.double()).pow(2).mean(1)
    )
    assert torch.allclose(measured, torch.full((2,), snr, dtype=torch.float64), atol=0.1)
    assert torch.equal(y, P.white_noise_snr(x, snr, seed=1))


def test_bandpass_magnitudes_match_the_filter() -> None:
    sos = P.bandpass_sos(300, 3400)
    _, h = signal.sosfreqz(sos, worN=[100, 1000], fs=P.SPEECH_RATE)
    for freq, mag in zip((100, 1000), np.abs(h) ** 2, strict=True):  # forward-backward: |H|^2
        y = P.parse_spec("bandpass:300-3400", "speech")(_tone(freq, 32000))
        mid = y[0, 8000:24000]
        amp = float(mid.pow(2).mean().sqrt() * np.sqrt(2))
        assert amp == pytest.approx(0.5 * mag, rel=0.02, abs=1e-4)
    assert np.abs(h[0]) ** 2 < 0.01 and np.abs(h[1]) ** 2 > 0.98


def test_resample_removes_content_above_4khz_and_keeps_below() -> None:
    x = _tone(1000) + _tone(6000)
    y = P.parse_spec("resample:8000", "speech")(x)
    spec = np.abs(np.fft.rfft(y[0, 4000:12000].numpy()))
    ref = np.abs(np.fft.rfft(x[0, 4000:12000].numpy()))
    k1, k6 = 1000 * 8000 // P.SPEECH_RATE, 6000 * 8000 // P.SPEECH_RATE
    assert spec[k1] == pytest.approx(ref[k1], rel=0.02) and spec[k6] < 0.01 * ref[k6]
    assert y.shape == x.shape


def _codec_input(codec: str) -> torch.Tensor:
    """A 1 s tone plus noise [1, 16000] float32; skips when this libsndfile lacks `codec`."""
    if codec not in P.available_codecs():
        pytest.skip(f"this libsndfile has no {codec}")
    g = torch.Generator().manual_seed(0)
    return (
        0.3 * _tone(440) + 0.05 * torch.randn(1, 16000, generator=g, dtype=torch.float64)
    ).float()


@pytest.mark.parametrize("codec", list(P.CODECS))
def test_codec_roundtrip_keeps_shape_and_changes_signal(codec: str) -> None:
    x = _codec_input(codec)
    x = torch.cat([x, 0.5 * x])
    y = P.parse_spec(f"{codec}:0.5", "speech")(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    err = (y - x).pow(2).mean()
    assert err > 1e-8  # lossy
    assert 10 * torch.log10(x.pow(2).mean() / err) > 3  # and still aligned with the input


@pytest.mark.parametrize("codec", list(P.CODECS))
def test_codec_loses_more_at_a_higher_compression_level(codec: str) -> None:
    x = _codec_input(codec)
    err = [(P.codec_roundtrip(x, codec, level) - x).pow(2).mean() for level in (0.2, 0.9)]
    assert err[0] < err[1]


def test_missing_codec_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "available_codecs", lambda: ["vorbis"])
    with pytest.raises(ConfigError, match="has no mp3") as e:
        P.parse_spec("mp3:0.5", "speech")
    assert "\n" not in str(e.value)
    assert all(not s.startswith(("mp3", "opus")) for s in P.grid_specs("full", "speech"))


# ---------------------------------------------------------------- specs and grids


@pytest.mark.parametrize("modality", ["image", "speech"])
@pytest.mark.parametrize("grid", ["quick", "full"])
def test_grid_specs_parse_and_round_trip(modality: str, grid: str) -> None:
    transforms = P.load_grid(grid, modality)
    assert [t.spec for t in transforms] == P.grid_specs(grid, modality)


def test_full_image_grid_holds_what_the_issue_names() -> None:
    specs = set(P.grid_specs("full"))
    assert {"jpeg:95", "jpeg:75", "jpeg:50", "jpeg:30", "resize:0.5", "resize:0.75"} <= specs
    assert {"blur:0.5", "blur:1", "blur:2", P.SOCIAL} <= specs
    assert {s.split(":")[0] for s in specs} == {
        "jpeg",
        "webp",
        "resize",
        "blur",
        "noise",
        "crop",
        "chain",
    }
    assert {s.split(":")[0] for s in P.grid_specs("quick")} == {s.split(":")[0] for s in specs}


def test_speech_grids_hold_each_kind() -> None:
    kinds = {"resample", "snr", "bandpass", *P.available_codecs()}
    for grid in ("quick", "full"):
        specs = P.grid_specs(grid, "speech")
        assert kinds <= {s.split(":")[0] for s in specs}
    assert {"snr:20", "snr:10", "resample:8000", "bandpass:300-3400"} <= set(
        P.grid_specs("quick", "speech")
    )


@pytest.mark.parametrize(
    "text,canonical",
    [(" chain: resize:0.75 + jpeg:75 ", P.SOCIAL), ("jpeg: 60", "jpeg:60"), ("blur:1", "blur:1")],
)
def test_spec_text_round_trips(text: str, canonical: str) -> None:
    spec = P.parse_spec(text).spec
    assert spec == canonical and P.parse_spec(spec).spec == spec


def test_chain_applies_steps_in_order() -> None:
    x = _images(2, 32)
    chained = P.parse_spec(P.SOCIAL)(x)
    assert torch.equal(chained, P.pil_roundtrip(P.resize_back(x, 0.75), "JPEG", 75))


def test_yaml_grid_file(tmp_path) -> None:
    f = tmp_path / "grid.yaml"
    f.write_text("- jpeg:60\n- chain:blur:1+webp:70\n")
    assert [t.spec for t in P.load_grid(f)] == ["jpeg:60", "chain:blur:1+webp:70"]
    f.write_text("jpeg: 60\n")
    with pytest.raises(ConfigError, match="YAML list of specs"):
        P.load_grid(f)
    f.write_text("- jpeg:75\n- 75\n")
    with pytest.raises(ConfigError, match="item 1: Input should be a valid string"):
        P.load_grid(f)
    f.write_text("- [jpeg:75\n")
    with pytest.raises(ConfigError, match="YAML list of specs"):
        P.load_grid(f)
    f.write_text("- jpeg:0\n")
    with pytest.raises(ConfigError, match=r"'jpeg:0'.*1\.\.100"):
        P.load_grid(f)


@pytest.mark.parametrize(
    "spec,modality,pattern",
    [
        ("jpeg:101", "image", "out of range"),
        ("jpeg:0", "image", "out of range"),
        ("jpeg:7.5", "image", "not an integer"),
        ("blur:-1", "image", "out of range"),
        ("noise:abc", "image", "not a number"),
        ("resize:2", "image", "out of range"),
        ("png:3", "image", "unknown image processing 'png'"),
        ("jpeg", "image", "KIND:VALUE"),
        ("chain:jpeg:75", "image", "two or more"),
        ("chain:jpeg:75+", "image", "two or more"),
        ("snr:20", "image", "unknown image processing"),
        ("jpeg:75", "speech", "unknown speech processing"),
        ("bandpass:300", "speech", "LOW-HIGH"),
        ("bandpass:3400-300", "speech", "out of range"),
        ("vorbis:2", "speech", "out of range"),
        ("jpeg:75", "video", "modality 'video'"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, modality: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as e:
        P.parse_spec(spec, modality)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("modality,shape", [("image", (0, 3, 16, 16)), ("speech", (0, 400))])
def test_empty_batches_pass_through(modality: str, shape: tuple[int, ...]) -> None:
    for t in P.load_grid("full", modality):
        assert t(torch.zeros(shape)).shape == shape, t.spec


def test_bandpass_refuses_too_short_clips() -> None:
    with pytest.raises(InputError, match="longer than 27 samples, got 20"):
        P.bandpass(torch.zeros(1, 20))
    assert P.bandpass(torch.zeros(1, 28)).shape == (1, 28)


def test_unknown_grid_name() -> None:
    with pytest.raises(ConfigError, match="neither quick nor full"):
        P.grid_specs("medium")
