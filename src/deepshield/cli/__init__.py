"""`deepshield` command line: thin wrappers that parse, call the library and print.

Each command group lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

import sys

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
    serve,
    study,
    train,
)
from deepshield.cli.app import app
from deepshield.errors import DeepshieldError


def main() -> None:
    """Entry point: DeepshieldError -> one line on stderr, exit code 2."""
    try:
        app(standalone_mode=False)
    except DeepshieldError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted: results written so far are kept; re-run the command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
