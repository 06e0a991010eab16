"""`deepshield scan --engine ray` on a local Ray instance (2 CPUs): the folder of test_scan
(photos, a face video, faceless and bad files) scanned by Ray actors gives the local engine's
rows, frame rows, thumbnails and overlays; a scan begun locally resumes on Ray."""

from __future__ import annotations

import json

import pytest

from deepshield.runs import scan as sc
from test_scan import FRAMES, _rows, _same_scan, case, scanned  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray", reason="ray not installed: pip install 'deepshield[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_writes_the_local_engines_scan(request, local_ray, tmp_path) -> None:
    src, ref = request.getfixturevalue("case")["src"], request.getfixturevalue("scanned")
    opts = sc.ScanOptions(frames=FRAMES)
    out = tmp_path / "r"
    s = sc.scan([src], out, detector=ref["det"], opts=opts, workers=2, engine="ray")
    assert s.scanned == len(ref["rows"])
    _same_scan(out, ref["out"])
    doc = json.loads((out / "scan.json").read_text())
    assert doc["this_call"] | {"wall_s": 0, "cpu_s": 0} == {
        "scanned": s.scanned,
        "resumed": 0,
        "workers": 2,
        "engine": "ray",
        "wall_s": 0,
        "cpu_s": 0,
    }


@pytest.mark.slow  # a second Ray scan of the folder
def test_a_local_scan_resumes_on_ray(request, local_ray, tmp_path) -> None:
    src, ref = request.getfixturevalue("case")["src"], request.getfixturevalue("scanned")
    opts = sc.ScanOptions(frames=FRAMES)
    out, det = tmp_path / "r", ref["det"]
    sc.scan([src], out, detector=det, opts=opts, limit=4)
    assert len(_rows(out)) == 4
    s = sc.scan([src], out, detector=det, opts=opts, workers=1, engine="ray")
    assert (s.resumed, s.scanned) == (4, len(ref["rows"]) - 4)
    _same_scan(out, ref["out"])
