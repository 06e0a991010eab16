"""Experiment configs are data: YAML files validated by pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deepshield.errors import ConfigError

C = TypeVar("C", bound=BaseModel)

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


class _Op(BaseModel):
    """One augmentation: applied to each training sample with probability p."""

    model_config = ConfigDict(extra="forbid")

    p: float = Field(0.5, ge=0, le=1)


def _range(v: tuple[Any, Any], lo: float, hi: float, what: str) -> tuple[Any, Any]:
    """A [low, high] strength range inside [lo, hi], low <= high; ValueError naming `what`."""
    if not (v[0] >= lo and v[1] <= hi):
        raise ValueError(f"{what} {list(v)}: each end lies in [{lo:g}, {hi:g}]")
    if v[0] > v[1]:
        raise ValueError(f"{what} {list(v)} runs backwards: write it as [low, high]")
    return v


def _strength(lo: float, hi: float, what: str) -> AfterValidator:
    """Validator of a [low, high] strength range inside [lo, hi] (`_range`)."""
    return AfterValidator(lambda v: _range(v, lo, hi, what))


def _band(v: tuple[float, float]) -> tuple[float, float]:
    if not 1 <= v[0] < v[1] < 8000:
        raise ValueError(f"band {list(v)} Hz: use 1 <= low < high < 8000")
    return v


class JpegAugment(_Op):
    """Real JPEG (Pillow, 4:2:0) at a quality drawn uniformly from [low, high] (integers)."""

    quality: Annotated[tuple[int, int], _strength(1, 100, "JPEG quality")] = (30, 95)


class BlurAugment(_Op):
    """Gaussian blur with sigma (pixels) drawn from [low, high]."""

    sigma: Annotated[tuple[float, float], _strength(0.01, 50, "blur sigma")] = (0.2, 1.5)


class ResizeAugment(_Op):
    """Downscale by a factor drawn from [low, high] and back (bilinear, antialias)."""

    scale: Annotated[tuple[float, float], _strength(0.01, 1, "resize scale")] = (0.5, 1.0)


class NoiseAugment(_Op):
    """Gaussian pixel noise with sigma drawn from [low, high], clipped to [0, 1]."""

    sigma: Annotated[tuple[float, float], _strength(0, 1, "noise sigma")] = (0.0, 0.03)


class SnrAugment(_Op):
    """White noise at an SNR (dB) drawn from [low, high]."""

    db: Annotated[tuple[float, float], _strength(-20, 100, "SNR (dB)")] = (10.0, 30.0)


class BandpassAugment(_Op):
    """A telephone band: zero-phase Butterworth band-pass [low, high] Hz at 16 kHz."""

    band: Annotated[tuple[float, float], AfterValidator(_band)] = (300.0, 3400.0)


class CodecAugment(_Op):
    """A lossy codec of libsndfile, drawn from `codecs`, at a compression level in [low, high]."""

    codecs: list[Literal["vorbis", "opus", "mp3"]] = Field(
        default_factory=lambda: ["vorbis", "opus"], min_length=1
    )
    level: Annotated[tuple[float, float], _strength(0, 1, "codec level")] = (0.2, 0.9)


class AugmentConfig(BaseModel):
    """Training augmentations by everyday processing (`deepshield.train.augment`), real encoders.

    Images, in this order: resize, blur, noise, jpeg; speech: snr, bandpass, codec. Each runs on
    a sample with its own probability p and a strength drawn per sample; omitted: off.
    """

    model_config = ConfigDict(extra="forbid")

    resize: ResizeAugment | None = None
    blur: BlurAugment | None = None
    noise: NoiseAugment | None = None
    jpeg: JpegAugment | None = None
    snr: SnrAugment | None = None
    bandpass: BandpassAugment | None = None
    codec: CodecAugment | None = None


IMAGE_AUGMENTS = ("resize", "blur", "noise", "jpeg")
SPEECH_AUGMENTS = ("snr", "bandpass", "codec")
# `deepshield train --augment NAME`: named augmentation configs
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "image": {
        "resize": {"p": 0.3, "scale": [0.5, 1.0]},
        "blur": {"p": 0.3, "sigma": [0.2, 1.5]},
        "noise": {"p": 0.2, "sigma": [0.0, 0.03]},
        "jpeg": {"p": 0.5, "quality": [30, 95]},
    },
    "speech": {
        "snr": {"p": 0.3, "db": [10, 30]},
        "bandpass": {"p": 0.2, "band": [300, 3400]},
        "codec": {"p": 0.3, "codecs": ["vorbis", "opus"], "level": [0.2, 0.9]},
    },
}


class TrainConfig(BaseModel):
    """Everything a training run depends on; saved as the run's config.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    dataset: str = "synthetic-faces:easy"
    data_kwargs: dict[str, Any] = Field(default_factory=dict)
    model: str = "simplenet"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None  # start from these weights: a .safetensors/.pth file or a run folder
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(5, ge=0)  # 0: the init weights as they are (evaluated, calibrated)
    optimizer: Literal["Adam", "AdamW", "SGD"] = "Adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "cosine"] = "none"  # cosine: lr * (1 + cos(pi * (e-1) / E)) / 2
    class_weights: Literal["none", "balanced"] = "none"
    lipschitz: float = Field(0.0, ge=0)  # weight of the input-gradient penalty (0: off)
    adv_train: Literal["none", "pgd", "fgsm-rs"] = "none"  # adversarial training
    adv_eps: float = Field(8 / 255, gt=0, le=1)  # L-inf budget of adv_train and robustness check
    adv_steps: int = Field(7, ge=1)  # PGD steps of adv_train=pgd
    adv_alpha: float | None = Field(None, gt=0)  # step size [pgd: 2.5*eps/steps, fgsm-rs: 1.25*eps]
    augment: AugmentConfig | None = None  # everyday-processing augmentations (None: off)
    seed: int = 0
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"  # mixed precision (fp16: CUDA only)
    channels_last: bool = False  # image models in channels-last memory format (speech: no effect)
    operating_point: str = "eer"  # threshold rule on validation: eer, fpr=F or cost
    calibration: Literal["platt", "isotonic"] = "platt"  # calibrator of the run's decision

    @field_validator("operating_point")
    @classmethod
    def _operating_point_rule(cls, v: str) -> str:
        from deepshield.metrics.decision import operating_threshold

        operating_threshold([0, 1], [0.0, 1.0], v)  # ConfigError names the accepted rules
        return v

    @model_validator(mode="after")
    def _no_epochs_needs_init(self) -> TrainConfig:
        if self.epochs == 0 and not self.init:
            raise ValueError(
                "epochs 0 takes the init weights as they are (no training): give init (--init "
                "FILE or RUN_DIR), or at least 1 epoch"
            )
        return self

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_name(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in _OPTIMIZERS:
            return _OPTIMIZERS[v.lower()]
        return v


def load_config(path: str | Path, cls: type[C] = TrainConfig) -> C:  # type: ignore[assignment]
    """Read a YAML file into config class `cls`; ConfigError naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return parse_config(data, cls, source=str(path))


def parse_config(data: dict[str, Any], cls: type[C], source: str = "config") -> C:
    """Validate a dict against `cls`; the first problem becomes a one-line ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source}: {where + ': ' if where else ''}{msg}") from e


def config_with_flags(
    cls: type[C],
    path: str | Path | None,
    flags: dict[str, Any],
    nested: dict[str, dict[str, Any] | None] | None = None,
) -> C:
    """The one "config file plus flags" rule of the command line: the YAML file (or the
    defaults), each flag that is not None over it (0 and False are values), and each `nested`
    dict (e.g. --data-arg pairs under data_kwargs) merged over the file's dict of that key."""
    base = load_config(path, cls).model_dump() if path else {}
    base.update({k: v for k, v in flags.items() if v is not None})
    for key, extra in (nested or {}).items():
        if extra:
            base[key] = {**(base.get(key) or {}), **extra}
    return parse_config(base, cls, source=str(path) if path else "flags")


def dump_config(cfg: BaseModel) -> str:
    """YAML text of a config (round-trips through load_config)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
