"""Everyday processing as reproducible transforms: real encoders (Pillow, libsndfile), seeded noise.

Images are [B, 3, H, W] float in [0, 1] and come back in the same shape and range. Speech is
[B, T] float in [-1, 1] at 16 kHz and comes back as [B, T]. A transform is named by a spec:
`jpeg:75`, `webp:80`, `resize:0.5`, `blur:1`, `noise:0.02`, `crop:0.9`,
`chain:resize:0.75+jpeg:75` for images; `resample:8000`, `snr:20`, `bandpass:300-3400`,
`vorbis:0.5`, `opus:0.5`, `mp3:0.5` for speech. Choices, stated once:
- JPEG and WebP go through Pillow on the uint8 image (x * 255 rounded); JPEG uses Pillow's
  default chroma subsampling, 4:2:0; WebP is lossy at the given quality.
- resize and crop resample in float with torch bilinear interpolation, antialias=True: the same
  as Pillow's BILINEAR resize of a float ('F') image (tested), without uint8 quantisation.
- blur is a separable Gaussian truncated at 4 sigma with symmetric edges (scipy.ndimage's
  gaussian_filter defaults); noise adds sigma * N(0, 1) from a seeded generator, then clips.
- resample goes down and back up with scipy.signal.resample_poly; snr adds white noise scaled to
  the exact SNR per row (not clipped, so the SNR holds); bandpass is a 4th-order Butterworth
  band-pass run forward and backward (sosfiltfilt, zero phase, magnitude |H(f)|^2).
- codecs write and read through soundfile (libsndfile) at a compression level in [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from pydantic import RootModel, ValidationError
from scipy import signal

from deepshield.errors import ConfigError, InputError
from deepshield.media.audio import resample

SPEECH_RATE = 16000
# speech codec spec name -> (libsndfile format, subtype)
CODECS = {"vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}


@dataclass(frozen=True)
class Transform:
    """One named processing step: `fn` maps a batch to a batch of the same shape."""

    spec: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the step to a batch ([B,3,H,W] in [0,1] or [B,T] in [-1,1])."""
        return self.fn(x)


# ---------------------------------------------------------------- images


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"images must be [B, 3, H, W], got {list(x.shape)}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError("images must lie in [0, 1]; scale them before processing")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] in [0,1] -> [B,H,W,3] uint8 (rounded)."""
    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def pil_encode(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """uint8 [H,W,3] -> the bytes Pillow writes as `fmt` (JPEG: 4:2:0, its default) at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def pil_roundtrip(x: torch.Tensor, fmt: str, quality: int) -> torch.Tensor:
    """Encode each image with Pillow as `fmt` at `quality` and decode it: [B,3,H,W] in [0,1]."""
    _check_images(x)
    if not len(x):
        return x.clone()
    out = [
        np.asarray(Image.open(io.BytesIO(pil_encode(img, fmt, quality))).convert("RGB"))
        for img in to_uint8(x)
    ]
    y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255  # [B, 3, H, W]
    return y.to(x.device, x.dtype)


def resize_back(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize by `factor` and back to H x W (bilinear, antialias): [B,3,H,W] -> same."""
    _check_images(x)
    h, w = x.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    y = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    y = F.interpolate(y, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y.clamp(0, 1)


def center_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Keep the central `fraction` of each side and resize back (bilinear, antialias)."""
    _check_images(x)
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    y = F.interpolate(crop, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y.clamp(0, 1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian taps, radius int(4 sigma + 0.5), summing to 1 (scipy.ndimage's kernel)."""
    radius = int(4 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


_EDGES = {"symmetric": "symmetric", "mirror": "reflect"}  # scipy.ndimage's names -> numpy's


def _blur_axis(x: torch.Tensor, k: torch.Tensor, dim: int, edges: str) -> torch.Tensor:
    radius = (len(k) - 1) // 2
    idx = torch.from_numpy(np.pad(np.arange(x.shape[dim]), radius, mode=_EDGES[edges]))
    xp = x.index_select(dim, idx.to(x.device)).movedim(dim, -1)  # [..., n + 2r]
    y = xp.unfold(-1, len(k), 1) @ k.to(x)  # [..., n]
    return y.movedim(-1, dim)


def gaussian_blur(x: torch.Tensor, sigma: float, *, edges: str = "symmetric") -> torch.Tensor:
    """Separable Gaussian blur of each channel: [B,C,H,W] in [0,1] -> same; sigma 0 is the
    identity. edges: "symmetric" (scipy.ndimage's default: the edge pixel repeated) or "mirror"
    (reflected about the edge pixel)."""
    if not (sigma >= 0 and np.isfinite(sigma)):
        raise InputError(f"blur sigma {sigma}: give a finite sigma >= 0 (pixels)")
    if x.dim() != 4:
        raise InputError(f"images must be [B, C, H, W], got {list(x.shape)}")
    if sigma == 0:
        return x
    k = gaussian_kernel(sigma)
    return _blur_axis(_blur_axis(x, k, -2, edges), k, -1, edges).clamp(0, 1)


def _blur_images(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The `blur:S` transform: RGB images only."""
    _check_images(x)
    return gaussian_blur(x, sigma)


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Add sigma * N(0, 1) drawn from `seed`, then clip to [0, 1]: [B,3,H,W] -> same."""
    _check_images(x)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x)
    return (x + sigma * noise).clamp(0, 1)


# ---------------------------------------------------------------- speech


def _check_speech(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise InputError(f"speech must be [B, T], got {list(x.shape)}")


def _per_row(x: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply a numpy function to each row of [B, T], keeping length T."""
    _check_speech(x)
    if not len(x):
        return x.clone()
    t = x.shape[1]
    rows = []
    for row in x.detach().cpu().double().numpy():
        y = np.asarray(fn(row), dtype=np.float64)[:t]
        rows.append(np.pad(y, (0, t - len(y))))
    return torch.from_numpy(np.stack(rows)).to(x.device, x.dtype)


def resample_back(x: torch.Tensor, rate: int, source_rate: int = SPEECH_RATE) -> torch.Tensor:
    """Resample [B,T] from `source_rate` to `rate` and back (polyphase, scipy), length kept."""
    return _per_row(x, lambda r: resample(resample(r, source_rate, rate), rate, source_rate))


def white_noise_snr(x: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    """Add white noise scaled per row to exactly `snr_db` (mean-power ratio), not clipped: [B,T]."""
    _check_speech(x)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    noise = noise - noise.mean(dim=1, keepdim=True)
    xs = x.detach().cpu().double()
    p_signal = xs.pow(2).mean(dim=1, keepdim=True)
    p_noise = noise.pow(2).mean(dim=1, keepdim=True)
    scale = torch.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (xs + scale * noise).to(x.device, x.dtype)


def bandpass_sos(low: float, high: float, rate: int = SPEECH_RATE) -> np.ndarray:
    """4th-order Butterworth band-pass [low, high] Hz as second-order sections."""
    return signal.butter(4, [low, high], btype="bandpass", fs=rate, output="sos")


def bandpass(x: torch.Tensor, low: float = 300, high: float = 3400) -> torch.Tensor:
    """Zero-phase Butterworth band-pass (sosfiltfilt) of [B,T] at 16 kHz; magnitude |H|^2."""
    sos = bandpass_sos(low, high)
    pad = 3 * (2 * len(sos) + 1)  # sosfiltfilt's default edge padding
    if x.dim() == 2 and x.shape[1] <= pad:
        raise InputError(f"bandpass needs clips longer than {pad} samples, got {x.shape[1]}")
    return _per_row(x, lambda r: signal.sosfiltfilt(sos, r))


def available_codecs() -> list[str]:
    """The speech codec spec names this libsndfile can write (of vorbis, opus, mp3)."""
    formats = sf.available_formats()
    return [
        name
        for name, (fmt, subtype) in CODECS.items()
        if fmt in formats and subtype in sf.available_subtypes(fmt)
    ]


def require_codec(codec: str) -> None:
    """Raise a one-line ConfigError unless this libsndfile can write `codec`."""
    if codec not in available_codecs():
        raise ConfigError(
            f"codec {codec!r}: this libsndfile ({sf.__libsndfile_version__}) has no {codec}; "
            f"use one of {available_codecs()}"
        )


def codec_roundtrip(x: torch.Tensor, codec: str, level: float) -> torch.Tensor:
    """Encode each row of [B,T] with libsndfile's `codec` at compression `level`, decode, keep T."""
    require_codec(codec)
    fmt, subtype = CODECS[codec]

    def once(row: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        sf.write(
            buf,
            row.astype(np.float32),
            SPEECH_RATE,
            format=fmt,
            subtype=subtype,
            compression_level=level,
        )
        buf.seek(0)
        return sf.read(buf, dtype="float64")[0]

    return _per_row(x, once)


# ---------------------------------------------------------------- specs


def _number(spec: str, value: str, lo: float, hi: float, integer: bool = False) -> float:
    """Parse `value` of `spec` as a number in [lo, hi] or raise a one-line ConfigError."""
    try:
        v = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"processing spec {spec!r}: {value!r} is not {kind}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"processing spec {spec!r}: {value} is out of range; use {lo}..{hi}")
    return v


# image spec kind -> (lowest, highest, integer?, value -> batch function)
IMAGE_KINDS: dict[str, tuple[float, float, bool, Callable[[float], Callable]]] = {
    "jpeg": (1, 100, True, lambda q: lambda x: pil_roundtrip(x, "JPEG", int(q))),
    "webp": (1, 100, True, lambda q: lambda x: pil_roundtrip(x, "WEBP", int(q))),
    "resize": (0.01, 1, False, lambda f: lambda x: resize_back(x, f)),
    "crop": (0.01, 1, False, lambda f: lambda x: center_crop(x, f)),
    "blur": (0.01, 50, False, lambda s: lambda x: _blur_images(x, s)),
    "noise": (0, 1, False, lambda s: lambda x: gaussian_noise(x, s)),
}


def _image_step(spec: str, kind: str, value: str) -> Transform:
    if kind not in IMAGE_KINDS:
        raise ConfigError(
            f"unknown image processing {kind!r} in {spec!r}; use {', '.join(IMAGE_KINDS)} or chain"
        )
    lo, hi, integer, build = IMAGE_KINDS[kind]
    return Transform(spec, build(_number(spec, value, lo, hi, integer)))


def _speech_step(spec: str, kind: str, value: str) -> Transform:
    if kind == "resample":
        r = int(_number(spec, value, 1000, SPEECH_RATE, integer=True))
        return Transform(spec, lambda x: resample_back(x, r))
    if kind == "snr":
        db = _number(spec, value, -20, 100)
        return Transform(spec, lambda x: white_noise_snr(x, db))
    if kind == "bandpass":
        lo, sep, hi = value.partition("-")
        if not sep:
            raise ConfigError(
                f"processing spec {spec!r}: write the band as LOW-HIGH Hz, e.g. 300-3400"
            )
        low = _number(spec, lo, 1, SPEECH_RATE / 2 - 1)
        high = _number(spec, hi, low + 1, SPEECH_RATE / 2 - 1)
        return Transform(spec, lambda x: bandpass(x, low, high))
    if kind in CODECS:
        level = _number(spec, value, 0, 1)
        require_codec(kind)
        return Transform(spec, lambda x: codec_roundtrip(x, kind, level))
    raise ConfigError(
        f"unknown speech processing {kind!r} in {spec!r}; use resample, snr, bandpass, "
        f"{', '.join(CODECS)} or chain"
    )


def parse_spec(spec: str, modality: str = "image") -> Transform:
    """Parse one spec (`jpeg:75`, `chain:resize:0.75+jpeg:75`, `snr:20`) for 'image' or 'speech'."""
    if modality not in ("image", "speech"):
        raise ConfigError(f"modality {modality!r} is unknown; use image or speech")
    step = _image_step if modality == "image" else _speech_step
    kind, sep, value = (part.strip() for part in spec.partition(":"))
    if kind == "chain":
        parts = [p.strip() for p in value.split("+")]
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"processing spec {spec!r}: a chain joins two or more specs with '+'")
        steps = [parse_spec(p, modality) for p in parts]  # a nested chain fails: no '+' left

        def run(x: torch.Tensor) -> torch.Tensor:
            for s in steps:
                x = s(x)
            return x

        return Transform("chain:" + "+".join(s.spec for s in steps), run)
    if not sep or not value:
        raise ConfigError(f"processing spec {spec!r} needs KIND:VALUE, e.g. jpeg:75 or snr:20")
    return step(f"{kind}:{value}", kind, value)


# ---------------------------------------------------------------- grids

SOCIAL = "chain:resize:0.75+jpeg:75"
IMAGE_GRIDS = {
    "quick": [
        "jpeg:90",
        "jpeg:50",
        "webp:80",
        "resize:0.5",
        "blur:1",
        "noise:0.02",
        "crop:0.9",
        SOCIAL,
    ],
    "full": [
        *(f"jpeg:{q}" for q in (95, 75, 50, 30)),
        "webp:90",
        "webp:50",
        "resize:0.5",
        "resize:0.75",
        *(f"blur:{s}" for s in (0.5, 1, 2)),
        "noise:0.01",
        "noise:0.03",
        "crop:0.9",
        "crop:0.8",
        SOCIAL,
    ],
}
SPEECH_GRIDS = {
    "quick": [
        "resample:8000",
        "snr:20",
        "snr:10",
        "bandpass:300-3400",
        "vorbis:0.5",
        "opus:0.5",
        "mp3:0.5",
    ],
    "full": [
        "resample:8000",
        "snr:30",
        "snr:20",
        "snr:10",
        "bandpass:300-3400",
        *(f"{c}:{lv}" for c in CODECS for lv in (0.2, 0.5, 0.9)),
        "chain:bandpass:300-3400+resample:8000",
    ],
}


class GridFile(RootModel[list[str]]):
    """A grid file: a YAML list of spec strings."""


def grid_specs(grid: str | Path, modality: str = "image") -> list[str]:
    """The specs of a named grid (quick, full) or a YAML file; codecs libsndfile lacks are left out."""
    grids = IMAGE_GRIDS if modality == "image" else SPEECH_GRIDS
    if str(grid) in grids:
        specs = list(grids[str(grid)])
        missing = {c for c in CODECS if c not in available_codecs()}
        return [s for s in specs if s.split(":")[0] not in missing]
    path = Path(grid)
    if not path.is_file():
        raise ConfigError(f"grid {str(grid)!r} is neither {' nor '.join(grids)} nor a YAML file")
    try:
        specs = GridFile.model_validate(yaml.safe_load(path.read_text())).root
    except (yaml.YAMLError, ValidationError) as e:
        why = str(e).splitlines()[0]
        if isinstance(e, ValidationError):
            err = e.errors()[0]
            why = f"item {'.'.join(str(p) for p in err['loc']) or 'top'}: {err['msg']}"
        raise ConfigError(
            f"grid file {path}: must be a YAML list of specs like jpeg:75 ({why})"
        ) from None
    if not specs:
        raise ConfigError(f"grid file {path}: the list of specs is empty")
    return specs


def load_grid(grid: str | Path, modality: str = "image") -> list[Transform]:
    """Parse every spec of a named grid or YAML file into transforms (errors name the bad spec)."""
    return [parse_spec(s, modality) for s in grid_specs(grid, modality)]
