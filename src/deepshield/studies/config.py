"""The AttackStudy schema: the data, the models (trained here or existing runs) and the attacks.

```yaml
name: cifar10_attacks
data: {dataset: "cifar10:../shared/data/cifar10"}
models:
  - {name: mlp3, train: {model: mlp3, epochs: 10, lr: 0.001}}   # a TrainConfig; data filled in
  - {name: old, run: runs/some-run}                               # an existing run folder
attacks:
  - {attack: fgsm, eps: [0, 1/255, 2/255, 4/255], targets: [mlp3]}
  - {attack: pgd, eps: [0, 0.05], steps: 10, mask: "center:16", n: 200}
  - {attack: fgsm, eps: [0, 4/255], surrogate: mlp3, targets: [old]}   # transfer
```
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deepshield.attacks.sweep import AttackSpec
from deepshield.config import TrainConfig, load_config
from deepshield.errors import DeepshieldError

_NAME = r"^[A-Za-z0-9_.-]+$"  # a folder / file name part


class StudyData(BaseModel):
    """The dataset every model of the study is trained and attacked on."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    data_kwargs: dict[str, Any] = Field(default_factory=dict)


class StudyModel(BaseModel):
    """A model of the study: `train` (a TrainConfig whose dataset, data_kwargs and seed default
    to the study's) or `run` (an existing run folder trained on the study's data and seed)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    train: TrainConfig | None = None
    run: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StudyModel:
        if (self.train is None) == (self.run is None):
            raise ValueError(f"model {self.name!r}: give exactly one of train: or run:")
        return self


class StudyAttack(BaseModel):
    """One attack sweep: the AttackSpec fields, which models it targets (default: every model
    but the surrogate), an optional surrogate (transfer), n and a result label."""

    model_config = ConfigDict(extra="forbid")

    attack: str
    eps: list[float] = Field(min_length=1)
    steps: int = 10
    norm: str = "linf"
    restarts: int = 1
    mask: str = "full"
    seed: int | None = None  # default: the study's seed
    targets: list[str] | None = None
    surrogate: str | None = None
    n: int | None = Field(None, ge=1)  # default: the study's n
    label: str | None = Field(None, pattern=_NAME)  # result name; default from the settings
    eot_transforms: list[str] = Field(default_factory=list)  # e.g. [jpeg75, resize0.75]
    eval_after: str | None = None  # score after this real processing, e.g. jpeg75

    @field_validator("eps", mode="before")
    @classmethod
    def _fractions(cls, v: Any) -> Any:
        """eps entries may be fractions such as "8/255"."""
        if isinstance(v, list):
            try:
                return [float(Fraction(str(e))) if isinstance(e, str) else e for e in v]
            except (ValueError, ZeroDivisionError) as e:
                raise ValueError(f"eps {v}: write numbers such as 0.03 or 8/255") from e
        return v

    def spec(self, seed: int) -> AttackSpec:
        """The validated AttackSpec of this entry (its seed, else `seed`)."""
        return AttackSpec(
            attack=self.attack,
            eps=tuple(self.eps),
            steps=self.steps,
            norm=self.norm,
            restarts=self.restarts,
            mask=self.mask,
            seed=seed if self.seed is None else self.seed,
            eot_transforms=tuple(self.eot_transforms),
            eval_after=self.eval_after,
        ).checked()

    @model_validator(mode="after")
    def _valid_spec(self) -> StudyAttack:
        try:
            self.spec(0)
        except DeepshieldError as e:
            raise ValueError(str(e)) from e
        return self


class AttackStudy(BaseModel):
    """A study: train what is needed, sweep every attack on its targets, summarise."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    description: str = ""
    data: StudyData
    seed: int = 0
    split: Literal["train", "val", "test"] = "test"
    n: int | None = Field(None, ge=1)  # attack the first n samples of the split
    batch_size: int = Field(128, ge=1)
    device: str = "cpu"
    models: list[StudyModel] = Field(min_length=1)
    attacks: list[StudyAttack] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _fill_training_data(cls, raw: Any) -> Any:
        """Each train: section gets the study's dataset, data_kwargs, seed and device unless set."""
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            return raw
        shared = {
            "dataset": raw["data"].get("dataset"),
            "data_kwargs": raw["data"].get("data_kwargs", {}),
            "seed": raw.get("seed", 0),
            "device": raw.get("device", "cpu"),
        }
        models = []
        for m in raw.get("models") or []:
            if isinstance(m, dict) and isinstance(m.get("train"), dict):
                m = {**m, "train": {**shared, **m["train"]}}
            models.append(m)
        return {**raw, "models": models}

    @model_validator(mode="after")
    def _references(self) -> AttackStudy:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names {names} repeat: give each model its own name")
        for i, a in enumerate(self.attacks):
            for ref in [*(a.targets or []), *([a.surrogate] if a.surrogate else [])]:
                if ref not in names:
                    raise ValueError(
                        f"attacks.{i}: {ref!r} is not a model of the study: use one of {names}"
                    )
            if a.targets is not None and not a.targets:
                raise ValueError(f"attacks.{i}: targets is empty: name at least one model")
        return self

    def targets(self, attack: StudyAttack) -> list[str]:
        """The models an attack entry evaluates: its targets, else every model but its surrogate."""
        if attack.targets is not None:
            return list(attack.targets)
        return [m.name for m in self.models if m.name != attack.surrogate]


def load_study(path: str | Path) -> AttackStudy:
    """Read and validate a study YAML; ConfigError naming the file and the field."""
    return load_config(path, AttackStudy)
