"""Training augmentations by everyday processing, as a Trainer batch transform.

`Augmenter(cfg.augment, seed)` replaces each training batch by a processed copy: per sample and
per augmentation (order and settings: `deepshield.config.AugmentConfig`) a coin with the
augmentation's probability p, and a strength drawn uniformly from its range, through the real
encoders of `deepshield.data.processing` (Pillow JPEG, libsndfile codecs). Images
[B, 3, H, W] in [0, 1]; speech [B, T] in [-1, 1] at 16 kHz; labels are kept.

Seeded: the draws of batch k of epoch e come from numpy's generator seeded (seed, e, k, rank),
so the same seed and config give the same batches, and a resumed run draws what an
uninterrupted one would (no state is carried between epochs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepshield.config import IMAGE_AUGMENTS, SPEECH_AUGMENTS, AugmentConfig
from deepshield.data import processing as P
from deepshield.errors import ConfigError


@dataclass(frozen=True)
class _Step:
    """One augmentation: probability, strength draw, and the processing of one sample [1, ...]
    with that strength and a noise seed."""

    name: str
    p: float
    draw: Callable[[np.random.Generator], Any]
    apply: Callable[[Tensor, Any, int], Tensor]


def _uniform(lo: float, hi: float) -> Callable[[np.random.Generator], float]:
    return lambda rng: float(rng.uniform(lo, hi))


def _steps(cfg: AugmentConfig) -> list[_Step]:
    """The active augmentations of `cfg`, in its order."""
    out: list[_Step] = []
    if cfg.resize is not None:
        out.append(_Step("resize", cfg.resize.p, _uniform(*cfg.resize.scale),
                         lambda x, f, _: P.resize_back(x, f)))  # fmt: skip
    if cfg.blur is not None:
        out.append(_Step("blur", cfg.blur.p, _uniform(*cfg.blur.sigma),
                         lambda x, s, _: P.gaussian_blur(x, s)))  # fmt: skip
    if cfg.noise is not None:
        out.append(_Step("noise", cfg.noise.p, _uniform(*cfg.noise.sigma), P.gaussian_noise))
    if cfg.jpeg is not None:
        lo, hi = cfg.jpeg.quality
        out.append(_Step("jpeg", cfg.jpeg.p, lambda rng: int(rng.integers(lo, hi + 1)),
                         lambda x, q, _: P.pil_roundtrip(x, "JPEG", q)))  # fmt: skip
    if cfg.snr is not None:
        out.append(_Step("snr", cfg.snr.p, _uniform(*cfg.snr.db), P.white_noise_snr))
    if cfg.bandpass is not None:
        low, high = cfg.bandpass.band
        out.append(_Step("bandpass", cfg.bandpass.p, lambda rng: None,
                         lambda x, _v, _s: P.bandpass(x, low, high)))  # fmt: skip
    if cfg.codec is not None:
        codecs, level = list(cfg.codec.codecs), _uniform(*cfg.codec.level)
        out.append(_Step("codec", cfg.codec.p,
                         lambda rng: (codecs[int(rng.integers(len(codecs)))], level(rng)),
                         lambda x, v, _: P.codec_roundtrip(x, *v)))  # fmt: skip
    return out


def check_augment(cfg: AugmentConfig | None, sample_shape: Sequence[int]) -> None:
    """ConfigError when `cfg` asks for image augmentations on speech (or the reverse), or for a
    codec this libsndfile lacks; sample_shape: one sample's [3, H, W] or [T]."""
    if cfg is None:
        return
    image = len(sample_shape) == 3 and sample_shape[0] == 3
    wrong = SPEECH_AUGMENTS if image else IMAGE_AUGMENTS
    asked = [name for name in wrong if getattr(cfg, name) is not None]
    if asked:
        kind = "RGB images" if image else f"samples of shape {list(sample_shape)}"
        fits = IMAGE_AUGMENTS if image else SPEECH_AUGMENTS
        raise ConfigError(
            f"augment.{asked[0]} does not apply to this dataset's {kind}: use {', '.join(fits)}"
        )
    if cfg.codec is not None:
        for codec in cfg.codec.codecs:
            P.require_codec(codec)


class Augmenter:
    """BatchTransform (model, x, y) -> (processed x, y); the module docstring."""

    def __init__(self, cfg: AugmentConfig, seed: int, rank: int = 0) -> None:
        self.steps = _steps(cfg)
        self.seed, self.rank = seed, rank
        self.epoch, self.batch = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of each epoch: batch counts restart."""
        self.epoch, self.batch = epoch, 0

    def rng(self) -> np.random.Generator:
        """The generator of the next batch (and advance the batch count)."""
        rng = np.random.default_rng([self.seed, self.epoch, self.batch, self.rank])
        self.batch += 1
        return rng

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: [B, 3, H, W] in [0, 1] or [B, T] -> the processed batch, same shape; y unchanged."""
        rng = self.rng()
        rows = list(x.detach().split(1))  # B x [1, ...]
        for step in self.steps:
            chosen = rng.random(len(rows)) < step.p  # [B] one coin per sample
            for i in np.flatnonzero(chosen):
                rows[i] = step.apply(rows[i], step.draw(rng), int(rng.integers(2**31)))
        return torch.cat(rows) if rows else x, y


class BatchChain:
    """Batch transforms one after another (e.g. augmentations, then adversarial examples)."""

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to every transform that takes it."""
        for t in self.transforms:
            if hasattr(t, "set_epoch"):
                t.set_epoch(epoch)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(x, y) through each transform in turn."""
        for t in self.transforms:
            x, y = t(model, x, y)
        return x, y
