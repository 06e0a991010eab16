"""The proactive experiment as data: a pydantic schema for configs/proactive.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deepshield.data.edits import EDITS

GENERATOR_ARCHS = ("stargan", "ganimation", "pix2pix", "cyclegan")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorSpec(_Strict):
    """One image-translation generator, trained with GANTrainer to imitate attribute edits.

    Conditional archs (stargan, ganimation) learn all edits; as a manipulation they are driven
    with a one-hot c drawn from `edits`. Unconditional archs (pix2pix, cyclegan) learn the
    composition of `edits` as one fixed translation.
    """

    arch: Literal["stargan", "ganimation", "pix2pix", "cyclegan"]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    edits: list[str] = Field(min_length=1)
    steps: int = Field(300, ge=0)
    lambda_adv: float = Field(0.0, ge=0)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _known_edits(self) -> GeneratorSpec:
        unknown = [e for e in self.edits if e not in EDITS]
        if unknown:
            raise ValueError(f"unknown edit(s) {unknown}; choose from {list(EDITS)}")
        return self


class Lambdas(_Strict):
    """Loss weights: lambda_1..lambda_5 of the issue (b, m, c, s, p) and the recovery term r."""

    b: float = Field(1.0, ge=0)  # lambda_1, detector BCE
    m: float = Field(0.05, ge=0)  # lambda_2, template magnitude
    c: float = Field(10.0, ge=0)  # lambda_3, low-frequency energy
    s: float = Field(1.0, ge=0)  # lambda_4, separation
    p: float = Field(0.01, ge=0)  # lambda_5, pair-wise set diversity
    r: float = Field(1.0, ge=0)  # recovery of the added template (paper's cosine loss)


class BenignSpec(_Strict):
    """Processing of untouched images in training that must stay 'untouched'."""

    p: float = Field(0.5, ge=0, le=1)  # share of images (untouched and manipulated) processed
    jpeg_quality: tuple[float, float] = (50.0, 95.0)  # drawn uniformly (jpeg_like)
    resize_scale: tuple[float, float] = (0.75, 1.0)  # drawn uniformly (resize_roundtrip)


class ProactiveConfig(_Strict):
    """Everything `deepshield protect train` depends on; saved as the run's config.yaml."""

    dataset: str = "synthetic-faces:easy"
    data_kwargs: dict[str, Any] = Field(default_factory=lambda: {"n": 2000, "size": 32})
    n: int = Field(8, ge=1)  # templates in the set
    channels: Literal[1, 3] = 1
    eps_max: float = Field(0.016, gt=0, le=1)
    k: int = Field(5, ge=1)  # low-frequency window of L_c
    lambdas: Lambdas = Field(default_factory=Lambdas)
    benign: BenignSpec = Field(default_factory=BenignSpec)
    width: int = Field(16, ge=1)  # detector encoder channels
    depth: int = Field(4, ge=2)  # detector encoder convs
    steps: int = Field(600, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)  # detector
    template_lr: float = Field(1e-2, gt=0)
    seen: list[str] = Field(default_factory=lambda: ["blur", "bright"])  # edits or generators
    unseen: list[str] = Field(default_factory=lambda: ["warm", "contrast", "hair"])
    generators: dict[str, GeneratorSpec] = Field(default_factory=dict)
    seed: int = 0

    @model_validator(mode="after")
    def _manipulations(self) -> ProactiveConfig:
        clash = [g for g in self.generators if g in EDITS]
        if clash:
            raise ValueError(f"generator name(s) {clash} clash with edit names; rename them")
        known = set(EDITS) | set(self.generators)
        for group in ("seen", "unseen"):
            names = getattr(self, group)
            unknown = [m for m in names if m not in known]
            if unknown:
                raise ValueError(
                    f"{group}: unknown manipulation(s) {unknown}; use an edit {list(EDITS)} "
                    "or a key of `generators`"
                )
        if not self.seen:
            raise ValueError("seen: list at least one manipulation to train on")
        both = sorted(set(self.seen) & set(self.unseen))
        if both:
            raise ValueError(f"{both} are in both seen and unseen; held-out must stay unseen")
        return self
