"""Expectation over transformation (EOT) through everyday processing: differentiable stand-ins for
the real encoders of `deepshield.data.processing`, and a model wrapper that attacks see.

An attack crafted on `ExpectedOverTransforms(model, stand_ins("jpeg75,resize0.75,blur1"))` aims
at the detector *after* each transform (Athalye et al., ICML 2018), so its perturbation survives
the processing a re-posted image goes through; plain perturbations are partly washed out by it.

Stand-ins, images [B, 3, H, W] in [0, 1] -> same:
- `jpeg:Q` (`jpeg_approx`): JPEG as libjpeg codes it, in torch: 8-bit input, JFIF RGB -> YCbCr,
  4:2:0 chroma (2x2 box average, as Pillow's default subsampling), 8x8 orthonormal DCT,
  quantisation by libjpeg's Annex K tables scaled to quality Q (as `jpeg_set_quality` does),
  dequantisation, inverse DCT, chroma upsampled by the triangle ("fancy") filter, YCbCr -> RGB,
  8-bit output. Rounding of the DCT coefficients: straight-through (forward exact, gradient 1)
  or Shin & Song's cubic `round(x) + (x - round(x))^3`; 8-bit rounding is straight-through.
- `resize:F`, `blur:S`, `crop:F`: the real transforms themselves (torch ops, differentiable).
- `none`: the image unchanged. `chain:A+B` composes stand-ins.
Names are written as processing specs (`jpeg:75`) or run together (`jpeg75`, `resize0.75`).

    @inproceedings{athalye2018synthesizing,
      title={Synthesizing Robust Adversarial Examples}, author={Athalye, Anish and Engstrom,
      Logan and Ilyas, Andrew and Kwok, Kevin}, booktitle={ICML}, year={2018}}
    @inproceedings{shin2017jpeg,
      title={JPEG-resistant Adversarial Images}, author={Shin, Richard and Song, Dawn},
      booktitle={NeurIPS Workshop on Machine Learning and Computer Security}, year={2017}}
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepshield.attacks.objectives import as_logits
from deepshield.data.processing import IMAGE_KINDS, Transform, parse_spec
from deepshield.errors import ConfigError, InputError

ROUNDING = ("ste", "cubic")
EXACT = ("resize", "blur", "crop")  # real transforms that are torch ops: their own stand-ins

# libjpeg's (ITU T.81 Annex K) base quantisation tables, natural (row-major) order
LUMA = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=torch.float64).view(8, 8)  # fmt: skip
CHROMA = torch.full((8, 8), 99.0, dtype=torch.float64)
CHROMA[:4, :4] = torch.tensor([
    [17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99],
], dtype=torch.float64)  # fmt: skip

# JFIF RGB -> YCbCr (without the +128 offset of Cb and Cr) and its inverse
_RGB_TO_YCC = torch.tensor([
    [0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411],
], dtype=torch.float64)  # fmt: skip
_YCC_TO_RGB = torch.tensor([
    [1.0, 0.0, 1.402], [1.0, -0.344136286, -0.714136286], [1.0, 1.772, 0.0],
], dtype=torch.float64)  # fmt: skip


def quant_table(base: Tensor, quality: int) -> Tensor:
    """libjpeg's `jpeg_set_quality` scaling of an 8x8 base table to quality 1..100, entries
    clamped to 1..255 (baseline): [8, 8] float64."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return torch.clamp(torch.floor((base * scale + 50) / 100), 1, 255)


def _dct_matrix() -> Tensor:
    """Orthonormal 8-point DCT-II matrix [8, 8] (row k: frequency k); JPEG's 2-D DCT is D X D^T."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    d[0] = math.sqrt(1 / 8)
    return d


_DCT = _dct_matrix()


def straight_through_round(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def cubic_round(x: Tensor) -> Tensor:
    """Shin & Song's differentiable rounding round(x) + (x - round(x))^3 (within 0.125 of it)."""
    r = torch.round(x).detach()
    return r + (x - r) ** 3


def _blocks(plane: Tensor, table: Tensor, rounding: Callable[[Tensor], Tensor]) -> Tensor:
    """Level-shifted planes [B, C, H, W] (H, W multiples of 8) -> after DCT, quantisation by
    `table` [8, 8], dequantisation and inverse DCT, same shape."""
    b, c, h, w = plane.shape
    d, q = _DCT.to(plane), table.to(plane)
    blocks = plane.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # [B, C, h/8, w/8, 8, 8]
    coef = d @ blocks @ d.T  # [B, C, h/8, w/8, 8, 8]
    coef = rounding(coef / q) * q
    out = d.T @ coef @ d  # [B, C, h/8, w/8, 8, 8]
    return out.transpose(3, 4).reshape(b, c, h, w)


def jpeg_approx(x: Tensor, quality: int, *, rounding: str = "ste") -> Tensor:
    """Differentiable JPEG at `quality` (module docstring): [B,3,H,W] in [0,1] -> same."""
    if rounding not in ROUNDING:
        raise ConfigError(f"JPEG rounding {rounding!r}: use one of {', '.join(ROUNDING)}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"JPEG quality {quality}: use 1..100")
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"JPEG needs images [B, 3, H, W], got {list(x.shape)}")
    round_coef = straight_through_round if rounding == "ste" else cubic_round
    h, w = x.shape[-2:]
    px = straight_through_round(x.clamp(0, 1) * 255)  # the 8-bit image the encoder gets
    px = F.pad(px, (0, -w % 16, 0, -h % 16), mode="replicate")  # whole 16x16 MCUs, edge copied
    ycc = torch.einsum("ij,bjhw->bihw", _RGB_TO_YCC.to(px), px)  # [B, 3, H16, W16]
    ycc = straight_through_round(ycc)  # the encoder's 8-bit samples (Cb, Cr without +128)
    luma = _blocks(ycc[:, :1] - 128, quant_table(LUMA, quality), round_coef) + 128
    chroma = straight_through_round(F.avg_pool2d(ycc[:, 1:], 2))  # 4:2:0, [B, 2, H16/2, W16/2]
    chroma = _blocks(chroma, quant_table(CHROMA, quality), round_coef)
    luma = straight_through_round(luma.clamp(0, 255))  # the decoder's 8-bit samples
    chroma = straight_through_round(chroma.clamp(-128, 127))
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("ij,bjhw->bihw", _YCC_TO_RGB.to(px), torch.cat([luma, chroma], 1))
    out = straight_through_round(rgb.clamp(0, 255)) / 255
    return out[..., :h, :w]


def _spec_text(name: str) -> str:
    """`jpeg75` -> `jpeg:75`; processing specs and `none` are kept."""
    name = name.strip()
    glued = re.fullmatch(r"([a-z]+)([0-9][0-9.]*)", name)
    return f"{glued[1]}:{glued[2]}" if glued else name


def real_transform(name: str, modality: str = "image") -> Transform:
    """The real processing of a name (`jpeg75` or any `data.processing` spec); ConfigError."""
    return parse_spec(_spec_text(name), modality)


def processing_spec(name: str) -> str:
    """The canonical spec of a real image or speech processing name (`jpeg75` -> `jpeg:75`,
    `snr:20`); ConfigError naming the bad part."""
    text = _spec_text(name)
    try:
        return parse_spec(text, "image").spec
    except ConfigError as image_error:
        if not str(image_error).startswith("unknown image processing"):
            raise
    try:
        return parse_spec(text, "speech").spec
    except ConfigError as speech_error:
        if not str(speech_error).startswith("unknown speech processing"):
            raise
    raise ConfigError(
        f"unknown processing {name!r}: images take {', '.join(IMAGE_KINDS)} (e.g. jpeg:75), "
        "speech resample, snr, bandpass or a codec (e.g. snr:20); chain:A+B joins them"
    )


def stand_in(name: str, *, rounding: str = "ste") -> Transform:
    """The differentiable stand-in of one name (`jpeg75`, `resize:0.75`, `blur1`, `none`,
    `chain:resize:0.75+jpeg:75`); ConfigError for a kind without one."""
    text = _spec_text(name)
    if text in ("none", "identity"):
        return Transform("none", lambda x: x)
    real = parse_spec(text)  # range and syntax checks, one-line errors
    kind, _, value = text.partition(":")
    if kind == "chain":
        steps = [stand_in(part, rounding=rounding) for part in value.split("+")]

        def run(x: Tensor) -> Tensor:
            for s in steps:
                x = s(x)
            return x

        return Transform(real.spec, run)
    if kind == "jpeg":
        quality = int(value)
        return Transform(real.spec, lambda x: jpeg_approx(x, quality, rounding=rounding))
    if kind in EXACT:
        return real
    raise ConfigError(
        f"EOT transform {name!r}: {kind} has no differentiable stand-in; use jpeg, resize, "
        "blur, crop, none or a chain of them"
    )


def stand_ins(names: str | Sequence[str], *, rounding: str = "ste") -> list[Transform]:
    """Comma-separated names (or a list) -> their stand-ins, in order; ConfigError when empty."""
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [n.strip() for n in items if n.strip()]
    if not items:
        raise ConfigError("no EOT transforms given: use e.g. --eot-transforms jpeg75,resize0.75")
    return [stand_in(n, rounding=rounding) for n in items]


class ExpectedOverTransforms(nn.Module):
    """The detector in expectation over transforms: x [B,...] -> logits [B, C] =
    log mean_t softmax(model(t(x))) (log-probabilities; one logit [B] counts as (0, z)).

    Deterministic (every transform on every pass), so any attack, its best-iterate choice and
    its success test see one fixed function; cross-entropy on it is -log E_t[P_t(y)].
    """

    def __init__(self, model: nn.Module, transforms: Sequence[Transform]) -> None:
        super().__init__()
        if not transforms:
            raise ConfigError("ExpectedOverTransforms needs at least one transform")
        self.model = model
        self.transforms = list(transforms)
        if hasattr(model, "bounds"):
            self.bounds = model.bounds

    def forward(self, x: Tensor) -> Tensor:
        """x: [B,3,H,W] in [0,1] -> [B, C] log mean probability over the transforms."""
        logp = [as_logits(self.model(t(x))).log_softmax(1) for t in self.transforms]  # T x [B,C]
        return torch.logsumexp(torch.stack(logp), 0) - math.log(len(logp))  # [B, C]
