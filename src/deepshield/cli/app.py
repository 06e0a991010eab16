"""The typer application every command module adds itself to."""

from __future__ import annotations

import typer

from deepshield.cli.checks import COUNT, numbers
from deepshield.progress import set_quiet

app = typer.Typer(
    name="deepshield",
    help="Train, measure, attack, defend and explain deepfake detectors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: 0.5]" in them is shown, not parsed
)


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    threads: int = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch, >= 1 (default: torch's choice, one per core).",
        **COUNT,
    ),
) -> None:
    set_quiet(quiet)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def parse_floats(text: str, what: str) -> list[float]:
    """'0,2/255,0.03' -> [0.0, 0.00784..., 0.03]; fractions allowed."""
    from deepshield.errors import ConfigError

    try:
        return numbers(text)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None


def parse_kv(items: list[str] | None, what: str) -> dict[str, object]:
    """['n=600', 'size=32'] -> {'n': 600, 'size': 32} (values read as YAML scalars)."""
    import yaml

    from deepshield.errors import ConfigError

    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what}: {item!r} is not KEY=VALUE (e.g. {what} n=600)")
        key = key.strip().replace("-", "_")
        if key == "seed":
            raise ConfigError(f"{what} {item}: the seed is set by --seed, not {what}")
        out[key] = yaml.safe_load(value)
    return out
