"""`deepshield` command line: thin wrappers that parse, call the library and print.

Each command group lives in its own module and registers itself on `app`. `main` owns the exit
codes: 0 done, 2 bad input or usage (one error line, after the usage line when the command line
is malformed), 130 Ctrl-C, 143 SIGTERM (one line each).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import typer

# Command modules (import order = order in --help).
from deepshield.cli import (  # noqa: F401
    attack,
    audit,
    defend,
    demo,
    disrupt,
    explain,
    info,
    metrics,
    protect,
    robustness,
    scan,
    serve,
    study,
    train,
)
from deepshield.cli.app import app
from deepshield.errors import DeepshieldError

try:  # typer >= 0.24 carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_errors

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = "interrupted ({}): results written so far are kept; re-run the command to resume"


class Interrupted(BaseException):
    """SIGINT or SIGTERM in the main thread; unwinds the command like Ctrl-C (finally blocks run,
    `except Exception` does not swallow it). exit_code = 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


RESIGNAL_S = 0.01  # delay before an interrupt lost in a callback is delivered again


def _unraisable(previous: object) -> object:
    """A sys.unraisablehook that does not lose Ctrl-C: an `Interrupted` raised where Python can
    only ignore it (a weakref callback such as the import system's module-lock cleanup, a
    __del__) is delivered again from a helper thread a moment later, when the main thread is
    back in code that can unwind; any other unraisable error goes to `previous`."""

    def hook(u: sys.UnraisableHookArgs) -> None:
        if u.exc_type is not None and issubclass(u.exc_type, Interrupted):
            signum = u.exc_value.exit_code - 128  # type: ignore[union-attr]
            again = threading.Timer(RESIGNAL_S, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        previous(u)  # type: ignore[operator]

    return hook


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """Within: Ctrl-C and SIGTERM raise `Interrupted` (typer would turn a KeyboardInterrupt into
    a silent return code, and SIGTERM would kill the process without a word), also when the
    signal lands in a callback that would swallow it. The previous handlers come back after,
    for callers that run `main` in their own process (tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in SIGNALS}
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _usage_error(e: click_errors.UsageError) -> None:
    """One error line naming the flag and what it accepts; the command's usage line before it
    when the command line itself is malformed (unknown command or option, missing argument)."""
    ctx = e.ctx
    bad_value = isinstance(e, click_errors.BadParameter) and not isinstance(
        e, click_errors.MissingParameter
    )
    if ctx is not None and not bad_value:
        print(ctx.get_usage(), file=sys.stderr)
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    print(f"error: {e.format_message()}{where}", file=sys.stderr)


def main() -> None:
    """Entry point: runs the command and turns every way it can end into one exit code."""
    with _interrupts_raise():
        code = _run()
    if code:
        sys.exit(code)


def _run() -> int:
    """The command's exit code; what went wrong printed in one line (two for usage errors)."""
    try:
        code = app(standalone_mode=False)
    except Interrupted as e:
        print(INTERRUPTED.format(e), file=sys.stderr)
        return e.exit_code
    except DeepshieldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click_errors.NoArgsIsHelpError as e:
        e.show()  # `deepshield` or `deepshield defend` alone: the help text
        return 2
    except click_errors.UsageError as e:
        _usage_error(e)
        return 2
    except click_errors.ClickException as e:  # e.g. a file that cannot be opened
        print(f"error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print(INTERRUPTED.format("aborted"), file=sys.stderr)
        return 130
    if code == 130:  # a KeyboardInterrupt raised where our handler was not installed
        print(INTERRUPTED.format("SIGINT"), file=sys.stderr)
    return code if isinstance(code, int) else 0
