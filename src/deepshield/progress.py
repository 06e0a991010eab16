"""Progress bars (rich), shown only on a terminal and not with --quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn progress bars off globally (the CLI's --quiet)."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """True when progress bars should be drawn: stdout is a terminal and not quiet."""
    return not _quiet and sys.stdout.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items`, drawing a transient progress bar when enabled()."""
    if not enabled():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=True)
