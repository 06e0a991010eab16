"""Flag values checked where they enter: every bad value is a usage error naming the flag and
what it accepts (exit 2, before any work).

Numbers use typer's own ranges (`typer.Option(..., **COUNT)`); values typer cannot type (budget
lists with fractions, choices, masks) use the callbacks below, which raise `typer.BadParameter`
so the message names the flag the same way. Names the library knows (models, --init weights) are
looked up by the library's own check (ConfigError, one line). A check that needs two flags
(an L-inf budget depends on --norm) is `check_linf`, called by the command.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import typer

from deepshield.errors import ConfigError

COUNT = {"min": 1}  # samples, steps, epochs, batch sizes, threads, repeats
PORT = {"min": 1, "max": 65535}
GAN_EPS = {"min": 0.0, "max": 2.0}  # an L-inf budget on a generator's [-1, 1] pixels
SPLITS = ("train", "val", "test")


def choice(*names: str) -> Callable[[str | None], str | None]:
    """Callback accepting only `names` (or the flag left out)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in names:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(names)}")
        return value

    return check


def split_choice(value: str | None) -> str | None:
    """--split: train, val or test."""
    return choice(*SPLITS)(value)


def operating_point(value: str | None) -> str | None:
    """--operating-point: eer, cost or fpr=F with F in [0, 1] (the rule of `operating_threshold`)."""
    from deepshield.metrics import operating_threshold

    if value is not None:
        try:
            operating_threshold([0, 1], [0.0, 1.0], value)
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from None
    return value


def number_or(*words: str) -> Callable[[str | None], str | None]:
    """Callback accepting one of `words` or a number."""

    def check(value: str | None) -> str | None:
        if value is None or value in words:
            return value
        try:
            float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{value!r}: use {', '.join(words)} or a number (e.g. 1)"
            ) from None
        return value

    return check


def model_name(value: str | None) -> str | None:
    """-m / --model: a name the model registry knows (ConfigError with close matches)."""
    if value is not None:
        from deepshield.models import spec

        spec(value)
    return value


def weights_source(value: str | None) -> str | None:
    """--init: a weights file or a finished run folder (ConfigError before any data is loaded)."""
    if value is not None:
        from deepshield.runs.training import init_weights_path

        init_weights_path(value)
    return value


def numbers(text: str) -> list[float]:
    """'0,2/255,0.03' -> floats (fractions allowed); ValueError naming the part it cannot read."""
    out = []
    for part in text.split(","):
        try:
            out.append(float(Fraction(part.strip())))
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"cannot read {part.strip()!r} as a number (e.g. 0.03 or 8/255)"
            ) from None
    return out


def budgets(low: float, high: float) -> Callable[[str | None], str | None]:
    """Callback for comma-separated budgets (fractions allowed), each in [low, high]."""

    def check(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            values = numbers(text)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        bad = [v for v in values if not low <= v <= high]
        if bad and high == float("inf"):
            raise typer.BadParameter(f"{bad[0]:g} is below {low:g}: give budgets >= {low:g}")
        if bad:
            raise typer.BadParameter(f"{bad[0]:g} is outside [{low:g}, {high:g}]")
        return text

    return check


LINF = budgets(0.0, 1.0)  # an L-inf budget on [0, 1] pixels
NONNEGATIVE = budgets(0.0, float("inf"))
PROBABILITIES = budgets(0.0, 1.0)  # thresholds on P(fake)


def check_linf(values: list[float], flag: str, norm: str) -> None:
    """ConfigError when an L-inf budget leaves [0, 1] (other norms: any budget >= 0)."""
    if norm == "linf" and any(v > 1.0 for v in values):
        raise ConfigError(
            f"{flag} {max(values):g}: an L-inf budget on [0, 1] pixels lies in [0, 1] "
            "(e.g. 8/255); larger budgets are L2 ones (--norm l2)"
        )


def mask(value: str) -> str:
    """--mask: full, center:SIZE or patch:SIZE with SIZE an integer >= 1."""
    kind, sep, size = value.partition(":")
    if value == "full":
        return value
    if kind not in ("center", "patch") or not sep:
        raise typer.BadParameter(f"{value!r}: use full, center:SIZE or patch:SIZE (e.g. center:8)")
    if not size.isdigit() or int(size) < 1:
        raise typer.BadParameter(
            f"{value!r}: SIZE is the square's side in pixels, an integer >= 1 (e.g. {kind}:8)"
        )
    return value


def amp_option(what: str = "the forwards", *, config: bool = False) -> typer.models.OptionInfo:
    """--amp: mixed precision of `what` (`deepshield.precision`), off by default; `config`: the
    flag is left None when not given, so a config file's `amp:` holds (train)."""
    from deepshield.precision import AMP_MODES

    return typer.Option(
        None if config else "off",
        "--amp",
        help=f"Mixed precision of {what}: off, bf16 or fp16 (CUDA only)."
        + (" Default: off." if config else ""),  # otherwise typer shows the default
        callback=choice(*AMP_MODES),
    )


def channels_last_option(*, config: bool = False) -> typer.models.OptionInfo:
    """--channels-last (`deepshield.precision.use_channels_last`), off by default; `config`:
    also --no-channels-last, and None when neither is given (a config file's key holds)."""
    return typer.Option(
        None if config else False,
        "--channels-last/--no-channels-last" if config else "--channels-last",
        help="Image models in channels-last memory format (faster convolutions on a GPU, the "
        "same results within float rounding; off by default); no effect on speech models (1-D "
        "waveforms).",
    )
