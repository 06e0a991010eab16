"""Model registry: `create(name, num_classes=2, normalize=True, **kw)` builds any model by name.

Architectures register a builder with `@register(name, ...)`. A builder takes `num_classes` and
keyword arguments and returns the bare architecture (state-dict keys as torchvision / timm).
`create` wraps image classifiers in `Normalized` so that callers work in pixel space [0, 1].
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from deepshield.errors import ConfigError
from deepshield.models.normalize import Normalized

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one architecture."""

    name: str
    builder: Callable[..., nn.Module]
    kind: str = "image"  # image | audio | generator | wrapper
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, ...] = (3, 64, 64)  # a size the model is tested at (C,H,W) or (T,)
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    kind: str = "image",
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    input_size: tuple[int, ...] = (3, 64, 64),
    description: str = "",
    **defaults: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder `fn(num_classes=..., **kw) -> nn.Module` under `name`."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=fn,
            kind=kind,
            mean=tuple(mean),
            std=tuple(std),
            input_size=tuple(input_size),
            description=doc if isinstance(doc, str) else (doc[0] if doc else ""),
            defaults=dict(defaults),
        )
        return fn

    return add


def _ensure_loaded() -> None:
    # Importing the architecture modules fills the registry.
    import deepshield.models.architectures  # noqa: F401


def names(kind: str | None = None) -> list[str]:
    """Registered model names (optionally of one kind), sorted."""
    _ensure_loaded()
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def spec(name: str) -> ModelSpec:
    """The registry entry of `name`; ConfigError with close matches when unknown."""
    _ensure_loaded()
    base = name.split(":", 1)[0] + ":" if ":" in name else name
    key = base if base in _REGISTRY else name
    if key not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint}: `deepshield models` lists the available names"
        )
    return _REGISTRY[key]


def create(name: str, num_classes: int = 2, normalize: bool = True, **kw: Any) -> nn.Module:
    """Build model `name`. Image classifiers get a Normalize first layer unless normalize=False.

    `name` may carry an argument after a colon for wrapper models, e.g. `siamese:resnet18`.
    `mean`/`std` override the normalisation statistics of an image model.
    """
    s = spec(name)
    mean = tuple(kw.pop("mean", s.mean))
    std = tuple(kw.pop("std", s.std))
    args = {**s.defaults, **kw}
    if s.name.endswith(":"):
        args["inner"] = name.split(":", 1)[1]
    try:
        net = s.builder(num_classes=num_classes, **args)
    except TypeError as e:
        raise ConfigError(f"model {name!r} does not accept these arguments: {e}") from e
    net.deepshield_spec = {"name": name, "num_classes": num_classes, "kwargs": dict(kw)}
    if normalize and s.kind == "image":
        wrapped = Normalized(net, mean=mean, std=std)
        wrapped.deepshield_spec = {
            **net.deepshield_spec,
            "kwargs": {**kw, "mean": list(mean), "std": list(std)},
        }
        return wrapped
    return net


def param_count(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
