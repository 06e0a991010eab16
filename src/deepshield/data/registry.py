"""Dataset sources by name: `load("synthetic-faces:easy")`, `load("cifar10:PATH")`, `load(PATH)`.

A source registers a loader `fn(arg, *, seed, **kw) -> Splits` under a prefix; the part of the
spec after the first colon is `arg` (None when absent). A spec that names no registered prefix
but is an existing path goes to the source whose `accepts(path)` claims it (e.g. an audio
folder), else to the image "folder" source.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepshield.data.splits import Splits
from deepshield.errors import ConfigError

Loader = Callable[..., Splits]


@dataclass(frozen=True)
class Source:
    """A registered dataset source."""

    prefix: str
    loader: Loader
    description: str
    modality: str = "image"
    builtin: bool = False  # needs no path (synthetic sets)
    variants: tuple[str, ...] = ()  # e.g. ("easy", "hard")
    accepts: Callable[[Path], bool] | None = None  # claims a bare path given as the spec


_SOURCES: dict[str, Source] = {}


def register_source(
    prefix: str,
    *,
    description: str,
    modality: str = "image",
    builtin: bool = False,
    variants: tuple[str, ...] = (),
    accepts: Callable[[Path], bool] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator registering a loader `fn(arg: str | None, *, seed: int, **kw) -> Splits`.

    `accepts(path)` lets a source claim a bare folder path (e.g. an audio folder); the
    generic image "folder" source takes any other existing path.
    """

    def add(fn: Loader) -> Loader:
        if prefix in _SOURCES:
            raise ValueError(f"dataset source {prefix!r} registered twice")
        _SOURCES[prefix] = Source(
            prefix, fn, description, modality, builtin, tuple(variants), accepts
        )
        return fn

    return add


def _ensure_loaded() -> None:
    import deepshield.data.sources  # noqa: F401  (registers every source module)


def all_sources() -> list[Source]:
    """All registered sources, sorted by prefix."""
    _ensure_loaded()
    return [_SOURCES[k] for k in sorted(_SOURCES)]


def resolve(spec: str) -> tuple[Source, str | None]:
    """Split a dataset spec into its source and argument; ConfigError when unknown."""
    _ensure_loaded()
    prefix, _, arg = spec.partition(":")
    if prefix in _SOURCES:
        return _SOURCES[prefix], (arg or None)
    if Path(spec).exists():
        claims = [s for s in _SOURCES.values() if s.accepts is not None and s.accepts(Path(spec))]
        if claims:
            return claims[0], spec
        if "folder" in _SOURCES:
            return _SOURCES["folder"], spec
    close = difflib.get_close_matches(prefix, list(_SOURCES), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"unknown dataset {spec!r}{hint}: give a folder path or one of "
        f"{', '.join(sorted(_SOURCES))} (`deepshield datasets` lists them)"
    )


def load(spec: str, *, seed: int = 0, **kw: Any) -> Splits:
    """Load dataset `spec` split into train/val/test by `seed` (where it has no split of its own)."""
    source, arg = resolve(spec)
    check_options(source, kw)
    return source.loader(arg, seed=seed, **kw)


def check(spec: str, kw: dict[str, Any]) -> None:
    """ConfigError when `spec` names no source or `kw` holds an option its loader does not take
    (nothing is loaded: for commands that write files before loading the data)."""
    check_options(resolve(spec)[0], kw)


def options(source: Source) -> dict[str, Any] | None:
    """The options a source's loader accepts besides `arg` and `seed`: {name: default}; None
    when it takes any (**kw)."""
    params = list(inspect.signature(source.loader).parameters.values())[1:]  # after `arg`
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.kind in named and p.name != "seed"}


def check_options(source: Source, kw: dict[str, Any]) -> None:
    """ConfigError naming the accepted options when `kw` holds one the loader does not take, or a
    value of another type than the option's default (an integer for `n=3000`, true/false for a
    flag)."""
    accepted = options(source)
    if accepted is None:
        return
    unknown = sorted(set(kw) - set(accepted))
    empty = inspect.Parameter.empty
    listed = ", ".join(k if v is empty else f"{k}={v}" for k, v in accepted.items()) or "none"
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, list(accepted), n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"dataset {source.prefix}: no option {', '.join(unknown)}{hint}; it accepts {listed} "
            "(seed comes from --seed)"
        )
    for name, value in kw.items():
        default = accepted[name]
        if default is None or default is empty or value is None:
            continue
        if not _same_kind(value, default):
            raise ConfigError(
                f"dataset {source.prefix}: option {name}={value!r} should be "
                f"{_KIND_NAMES[_kind(default)]} like its default {name}={default}"
            )


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a word"}


def _kind(value: Any) -> type | None:
    return next((t for t in _KIND_NAMES if isinstance(value, t)), None)


def _same_kind(value: Any, default: Any) -> bool:
    """bool only for bool, int for int, int or float for float, anything for other defaults."""
    want = _kind(default)
    if want is None or want is str:
        return True
    if want is float:
        return _kind(value) in (int, float)
    return _kind(value) is want
