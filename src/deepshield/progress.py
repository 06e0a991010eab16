"""Progress bars (rich), shown only on a terminal and not with --quiet.

An attack reports each of its steps with `tick()`: the innermost bar then shows the step count
of the item it is on (e.g. "pgd eps 8/255: batch 2 of 5, step 7"), so heavy models show
progress between batches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False
_tick: Callable[[], None] | None = None  # the innermost bar's step counter, while one is drawn


def set_quiet(quiet: bool) -> None:
    """Turn progress bars off globally (the CLI's --quiet)."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """True when progress bars should be drawn: stdout is a terminal and not quiet."""
    return not _quiet and sys.stdout.isatty()


def tick() -> None:
    """One step of the work inside the current item (an attack step); free when no bar is drawn."""
    if _tick is not None:
        _tick()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items`, drawing a transient progress bar when enabled(); `tick()` calls
    made while an item is processed show as its step count."""
    global _tick
    if not enabled():
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        steps = 0

        def on_tick() -> None:
            nonlocal steps
            steps += 1
            bar.update(task, description=f"{description}, step {steps}")

        outer, _tick = _tick, on_tick
        try:
            for item in items:
                steps = 0
                yield item
                bar.update(task, advance=1, description=description)
        finally:
            _tick = outer
