"""Run folders tied to one config: the same config resumes, another one needs force."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from deepshield.config import dump_config
from deepshield.errors import RunError
from deepshield.files import atomic_write_text
from deepshield.run import RunDir


def open_configured_run(
    cfg: BaseModel, out: str | Path, force: bool, outputs: Iterable[str]
) -> RunDir:
    """Create/reuse `out` for cfg (saved as config.yaml). A folder holding another config is a
    RunError unless force, which deletes its `outputs` (file names) first."""
    text = dump_config(cfg)
    run = RunDir.create(out)
    saved = run.file("config.yaml")
    if saved.is_file() and saved.read_text() != text:
        if not force:
            raise RunError(
                f"{run.path}: holds a run with another config; pass --force to overwrite it or "
                "choose another --out"
            )
        for name in outputs:
            run.file(name).unlink(missing_ok=True)
    atomic_write_text(saved, text)
    return run
