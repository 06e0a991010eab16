"""Disruption experiments as data: pydantic schemas for the generator runs and configs/disrupt*.yaml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deepshield.data.edits import EDITS

Method = Literal["fgsm", "ifgsm", "pgd"]
AdvMode = Literal["none", "generator", "generator+discriminator"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdversarialSpec(_Strict):
    """GAN adversarial training (Ruiz et al. sec. 3.4): each step's input is disrupted first."""

    mode: AdvMode = "none"
    method: Method = "pgd"
    eps: float = Field(0.05, ge=0)
    steps: int = Field(3, ge=1)  # attack steps per training step (cheap; evaluation uses more)


class GeneratorConfig(_Strict):
    """A small image-translation generator trained with GANTrainer to imitate attribute edits.

    Conditional models (stargan, ganimation) learn every edit of deepshield.data.edits; their
    builders get c_dim = len(EDITS) and track_running_stats = False unless model_kwargs says
    otherwise. Unconditional ones (pix2pix, cyclegan) learn the composition of `fixed_edit`.
    Training images: the dataset's real (label 0) train images, in [0, 1].
    """

    name: str | None = None
    model: Literal["stargan", "ganimation", "pix2pix", "cyclegan"] = "stargan"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "synthetic-faces:easy"
    data_kwargs: dict[str, Any] = Field(default_factory=lambda: {"n": 600, "size": 64})
    fixed_edit: list[str] = Field(default_factory=lambda: ["warm"], min_length=1)
    steps: int = Field(300, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    lambda_l1: float = Field(100.0, ge=0)
    lambda_adv: float = Field(1.0, ge=0)
    adversarial: AdversarialSpec = Field(default_factory=AdversarialSpec)
    init: str | None = None  # a generator run folder to fine-tune from (same architecture)
    checkpoint_every: int = Field(100, ge=1)
    device: str = "cpu"
    seed: int = 0

    @model_validator(mode="after")
    def _known_edits(self) -> GeneratorConfig:
        unknown = [e for e in self.fixed_edit if e not in EDITS]
        if unknown:
            raise ValueError(f"unknown edit(s) {unknown}; choose from {list(EDITS)}")
        return self


class RobustSpec(_Strict):
    """Table of GAN adversarial training: fine-tune one trained generator `steps` more steps
    without perturbation (the baseline) and with each adversarial mode; compare % disrupted."""

    generator: str = "stargan"  # a key of `generators`
    steps: int = Field(300, ge=1)
    modes: list[Literal["generator", "generator+discriminator"]] = Field(
        default_factory=lambda: ["generator", "generator+discriminator"]
    )
    attack: AdversarialSpec = Field(
        default_factory=lambda: AdversarialSpec(mode="generator", method="pgd", eps=0.05, steps=3)
    )


class DisruptConfig(_Strict):
    """configs/disrupt*.yaml: generators to train (or reuse) and the tables to measure on them.

    Tables: "methods" (paper Table 1: FGSM / I-FGSM / PGD per generator), "transfer" (Table 4:
    class transferability, conditional generators), "minimal_change" (Table 5: towards the
    input), "robust" (adversarial training). Images: the first n_images real test images.
    """

    name: str | None = None
    dataset: str = "synthetic-faces:easy"
    data_kwargs: dict[str, Any] = Field(default_factory=lambda: {"n": 600, "size": 64})
    n_images: int = Field(40, ge=1)
    batch_size: int = Field(40, ge=1)
    eps: float = Field(0.05, ge=0)
    steps: int = Field(10, ge=1)
    alpha: float | None = Field(None, gt=0)
    threshold: float = Field(0.05, ge=0)
    methods: list[Method] = Field(default_factory=lambda: ["fgsm", "ifgsm", "pgd"])
    transfer_method: Method = "ifgsm"
    generators: dict[str, GeneratorConfig] = Field(min_length=1)
    tables: list[Literal["methods", "transfer", "minimal_change", "robust"]] = Field(
        default_factory=lambda: ["methods", "transfer", "minimal_change"]
    )
    robust: RobustSpec = Field(default_factory=RobustSpec)
    grid_images: int = Field(4, ge=1)
    device: str = "cpu"
    seed: int = 0

    @model_validator(mode="after")
    def _robust_generator_exists(self) -> DisruptConfig:
        if "robust" in self.tables and self.robust.generator not in self.generators:
            raise ValueError(
                f"robust.generator {self.robust.generator!r} is not a key of generators "
                f"({', '.join(self.generators)})"
            )
        return self
