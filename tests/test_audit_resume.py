"""kill -9 of `deepshield audit` (while it attacks, trains its surrogate, and between its writes),
then the same command again: the audit completes (final marker after every artifact) with the
audit.json of an audit never interrupted; a user's file in the run folder survives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepshield.run import RunDir
from test_runs import (
    copy_of,
    deepshield,
    kill_after,
    kill_points,
    launch,
    trained,
    user_file,
    watch,
)

__all__ = ["trained"]  # the fixture: test_runs' small training run

# What the audit writes, in the order the kill points are drawn from.
AUDIT_FILES = ("audit.json", "plots/audit_roc.png", "attack_audit_fgsm.json",
               "attack_audit_pgd_linf.json", "audit_surrogate_minimal/last.pt",
               "attack_audit_transfer.json", "explain_gradcam.json", "plots/audit_linf.png",
               "sections/audit.html", "report.html")  # fmt: skip


def without_seconds(obj: Any) -> Any:
    """obj with every "seconds" entry (wall times) left out, recursively."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def audit_record(run: Path) -> dict:
    """audit.json with the run folder's path replaced by RUN and without wall times."""
    return without_seconds(json.loads((run / "audit.json").read_text().replace(str(run), "RUN")))


def test_audit_killed_then_rerun_equals_uninterrupted(trained: Path, tmp_path: Path) -> None:
    ref = copy_of(trained, tmp_path / "ref")
    proc = launch(["audit", ref, "--budget", "minimal"])
    events = watch(proc, ref, files=AUDIT_FILES)
    assert proc.wait() == 0 and RunDir(ref).is_done("audit")
    print("\n| killed after | + s | process | complete after the kill |\n|---|---|---|---|")
    training = ("audit_surrogate_minimal/last.pt", 1, 0.0)  # while the surrogate trains
    points = [("(start)", 0, 0.5 * events[0][0]), training, *kill_points(2, seed=3, events=events)]
    for i, (name, nth, delay) in enumerate(points):  # each on a fresh copy of the trained run
        run = copy_of(trained, tmp_path / f"cut{i}")
        notes = user_file(run)
        args = ["audit", run, "--budget", "minimal"]
        met = kill_after(args, delay, None if nth == 0 else (name, nth), folder=run)
        print(f"| {name} #{nth} | {delay:.3f} | {met} | {RunDir(run).is_done('audit')} |")
        if RunDir(run).is_done("audit"):
            assert audit_record(run) == audit_record(ref)
        resumed = deepshield(*args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert RunDir(run).is_done("audit") and audit_record(run) == audit_record(ref)
        for file in ("plots/audit_linf.png", "plots/audit_roc.png", "attack_audit_pgd_linf.json"):
            assert (run / file).is_file(), file
        assert "Robustness audit (minimal budget)" in (run / "report.html").read_text()
        assert notes.read_text() == "case 42: my notes\n" and RunDir(run).foreign() == ["notes.txt"]
