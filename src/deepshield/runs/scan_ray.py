"""`deepshield scan --engine ray`: the scan's per-file pipeline on Ray actors.

Each actor holds one replica of the detector(s), on a GPU when the cluster has them, and runs
`scan.scan_file` (decode, faces, scores, evidence) on the files sent to it; the thumbnails and
overlays it draws come back as bytes with the file's rows, and the main process writes them and
appends the rows in file order, so the run folder is the local engine's. Files are read by path
on the workers: on a cluster every node must see them at the same path (shared storage).
Connects to `RAY_ADDRESS` when it is set, else starts a local Ray instance (kept until the
process ends, for the next scan).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from deepshield.errors import ConfigError, RunError
from deepshield.files import atomic_write_bytes
from deepshield.precision import check_amp
from deepshield.run import RunDir
from deepshield.runs.scan import Detector, ScanOptions, run_detector, scan_file

INSTALL = "pip install 'deepshield[ray]'"


def require_ray() -> ModuleType:
    """The `ray` module; ConfigError naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            f"--engine ray: ray is not installed; {INSTALL} (or use --engine local)"
        ) from e
    return ray


class _Outputs:
    """A worker's stand-in for the run folder: files go to a private temporary folder and are
    handed back as {name: bytes} by `take` (then removed)."""

    def __init__(self, root: Path) -> None:
        self.path = root

    def output(self, name: str) -> Path:
        """Where `name` ("faces/x.jpg") is written in the temporary folder."""
        p = self.path / name.rstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def take(self) -> dict[str, bytes]:
        """Every file written since the last call, by its name in the run folder."""
        got = {
            p.relative_to(self.path).as_posix(): p.read_bytes()
            for p in sorted(self.path.rglob("*"))
            if p.is_file()
        }
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()
        return got


def _on(det: Detector | None, device: torch.device) -> Detector | None:
    """The detector with its model moved to `device`."""
    return None if det is None else replace(det, model=det.model.to(device), device=device)


class Replica:
    """One worker: a replica of the detector(s) scoring files with `scan_file`; the speech
    detector is loaded here from its run folder (its waveform front end is not picklable)."""

    def __init__(
        self, det: Detector | None, speech_run: str | None, opts: ScanOptions, gpu: bool
    ) -> None:
        device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        self.det, self.opts = _on(det, device), opts
        self.speech = run_detector(speech_run, device, kind="audio") if speech_run else None
        self.out = _Outputs(Path(tempfile.mkdtemp(prefix="deepshield-scan-")))

    def scan(self, path: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
        """(scan.csv row, scan_frames.csv rows, {evidence name: JPEG bytes}) of one file."""
        row, frames = scan_file(Path(path), self.det, self.speech, self.opts, self.out)  # type: ignore[arg-type]
        return row, frames, self.out.take()


def _actors(ray: ModuleType, workers: int, args: tuple[Any, ...]) -> list[Any]:
    """`workers` Replica actors (0: one per GPU of the cluster, else one per CPU), each with
    one CPU and an equal share of the GPUs (at most one); `args`: (detector, speech detector,
    options), the detector's model moved to the CPU here before it is shipped."""
    res = ray.cluster_resources()
    gpus = _gpus(res)
    n = workers or gpus or max(1, int(res.get("CPU", 1)))
    share = min(1.0, gpus / n) if gpus else 0
    cls = ray.remote(num_cpus=1, num_gpus=share)(Replica)
    det = ray.put(_on(args[0], torch.device("cpu")))  # one copy, loadable without CUDA
    speech = args[1].source if args[1] is not None else None
    return [cls.remote(det, speech, args[2], bool(gpus)) for _ in range(n)]


def _gpus(resources: Mapping[str, float]) -> int:
    """The whole GPUs of a cluster's resources: the actors run on CUDA when there is one."""
    return int(resources.get("GPU", 0))


def check_workers_amp(amp: str, resources: Mapping[str, float]) -> None:
    """ConfigError (one line) unless the actors can score in `amp` on the device they get
    (`precision.check_amp`'s rule): CUDA when the cluster (`resources`) has GPUs, else the CPU,
    where fp16 is refused."""
    if amp == "fp16" and not _gpus(resources):
        raise ConfigError(
            "--engine ray --amp fp16: the Ray cluster has no GPU, so its workers score on the "
            "CPU and fp16 needs CUDA: use --amp bf16 or --amp off, or a cluster with GPUs"
        )
    check_amp(amp, "cuda" if _gpus(resources) else "cpu")


def connect() -> dict[str, float]:
    """Connect to RAY_ADDRESS, else start a local instance (it lives until the process ends)
    -> the cluster's resources; ConfigError when ray is missing or no cluster answers at
    RAY_ADDRESS."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(logging_level="ERROR", log_to_driver=False)
        except ConnectionError as e:
            raise ConfigError(
                f"RAY_ADDRESS: no Ray cluster reached ({' '.join(str(e).split())}); "
                "check the address (`ray status`) or unset it for a local instance"
            ) from e
    return ray.cluster_resources()


def ray_scanned(
    files: list[Path],
    det: Detector | None,
    speech: Detector | None,
    opts: ScanOptions,
    run: RunDir,
    workers: int,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Per file, in order: (row, frame rows) made by a Ray actor, its evidence files already
    written into `run`. At most 2 files per actor are in flight."""
    ray = require_ray()
    connect()
    actors: list[Any] = []
    try:
        actors = _actors(ray, workers, (det, speech, opts))
        pending: deque[Any] = deque()
        jobs = iter(enumerate(files))
        while True:
            while len(pending) < 2 * len(actors) and (job := next(jobs, None)) is not None:
                pending.append(actors[job[0] % len(actors)].scan.remote(str(job[1])))
            if not pending:
                return
            row, frames, outputs = _result(ray, pending.popleft())
            for name, data in outputs.items():
                atomic_write_bytes(run.output(name), data)
            yield row, frames
    finally:
        for a in actors:
            ray.kill(a)


def _result(ray: ModuleType, ref: Any) -> Any:
    """An actor's answer; RunError when the actor died (the rows so far are kept). A signal
    handler's exception (the CLI's Ctrl-C / SIGTERM) raised inside ray.get reaches Python as
    a SystemError caused by it: that exception is raised again, as itself."""
    try:
        return ray.get(ref)
    except SystemError as e:
        if e.__cause__ is None:
            raise
        raise e.__cause__ from None
    except ray.exceptions.RayError as e:
        raise RunError(
            f"a Ray scan worker failed ({type(e).__name__}); the rows so far are kept: "
            "re-run to resume"
        ) from e
