"""Experiment configs are data: YAML files validated by pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deepshield.errors import ConfigError

C = TypeVar("C", bound=BaseModel)

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


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
    epochs: int = Field(5, ge=1)
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
    seed: int = 0
    device: str = "auto"
    operating_point: str = "eer"  # threshold rule on validation: eer, fpr=F or cost
    calibration: Literal["platt", "isotonic"] = "platt"  # calibrator of the run's decision

    @field_validator("operating_point")
    @classmethod
    def _operating_point_rule(cls, v: str) -> str:
        from deepshield.metrics.decision import operating_threshold

        operating_threshold([0, 1], [0.0, 1.0], v)  # ConfigError names the accepted rules
        return v

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
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {err['msg']}") from e


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
