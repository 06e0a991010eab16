"""Shared test fixtures: the real data in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPSHIELD_SHARED", ROOT.parent / "shared"))

# On a machine shared with other jobs, torch's default of one thread per core oversubscribes
# the CPU and runs several times slower: DEEPSHIELD_TEST_THREADS=1 pins the intra-op threads.
if os.environ.get("DEEPSHIELD_TEST_THREADS"):
    torch.set_num_threads(int(os.environ["DEEPSHIELD_TEST_THREADS"]))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data {p} is absent (set DEEPSHIELD_SHARED to the shared folder)")
    return p


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `cuda` skip, with a reason, where torch sees no CUDA device."""
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (marked cuda; run with -m cuda on a GPU machine)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep dataset caches of tests out of the user's home (one cache per test session)."""
    if "DEEPSHIELD_CACHE" not in os.environ:
        monkeypatch.setenv("DEEPSHIELD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _seeded_rng():
    """Every test starts from the same global RNG state, whatever ran before it."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture(autouse=True)
def _no_files_left_in_the_working_folder():
    """A test writes under tmp_path only: a command that falls back to a default folder such as
    runs/... or scan/ (e.g. writing before it refuses a bad flag) fails the test that ran it."""
    here = Path.cwd()
    before = (_entries(here), _entries(here / "runs"))
    yield
    if Path.cwd() != here:  # the test changed folder (monkeypatch undoes it after this check)
        return
    new = sorted(_entries(here) - before[0]) + [
        f"runs/{n}" for n in sorted(_entries(here / "runs") - before[1])
    ]
    if new:
        pytest.fail(f"the test left {new} in the working folder {here}; write under tmp_path")
