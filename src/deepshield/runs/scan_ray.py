"""`deepshield scan --engine ray`: the scan's per-file pipeline on Ray actors.

Each actor holds one replica of the detector(s), on a GPU when the cluster has them, and runs
`scan.scan_file` (decode, faces, scores, evidence) on the files sent to it; the thumbnails and
overlays it draws come back as bytes with the file's rows, and the main process writes them and
appends the rows in file order, so the run folder is the local engine's. Files are read by path
on the workers: on a cluster every node must see them at the same path (shared storage).
Connects to `RAY_ADDRESS` when it is set, else starts a local Ray instance (kept until the
process ends, for the next scan). Before any file, `check_workers` refuses an --amp the workers
cannot run; for fp16 it asks every node that advertises a GPU whether its torch can use CUDA.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from socket import gethostname
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
        if opts.amp == "fp16" and device.type != "cuda":  # a node that joined after the check
            here = {"NodeManagerAddress": require_ray().util.get_node_ip_address()}
            raise ConfigError(
                _no_cuda(here | {"NodeManagerHostname": gethostname()}, cuda_report())
            )
        self.det, self.opts = _on(det, device), opts
        self.speech = run_detector(speech_run, device, kind="audio") if speech_run else None
        self.out = _Outputs(Path(tempfile.mkdtemp(prefix="deepshield-scan-")))

    def scan(self, path: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
        """(scan.csv row, scan_frames.csv rows, {evidence name: JPEG bytes}) of one file."""
        row, frames = scan_file(Path(path), self.det, self.speech, self.opts, self.out)  # type: ignore[arg-type]
        return row, frames, self.out.take()


def _actors(ray: ModuleType, workers: int, args: tuple[Any, ...]) -> list[Any]:
    """`workers` Replica actors placed by `_placement`; `args`: (detector, speech detector,
    options), the detector's model moved to the CPU here before it is shipped."""
    res = ray.cluster_resources()
    n, share = _placement(workers, res)
    cls = ray.remote(num_cpus=1, num_gpus=share)(Replica)
    det = ray.put(_on(args[0], torch.device("cpu")))  # one copy, loadable without CUDA
    speech = args[1].source if args[1] is not None else None
    return [cls.remote(det, speech, args[2], bool(share)) for _ in range(n)]


def _placement(workers: int, resources: Mapping[str, float]) -> tuple[int, float]:
    """(actors, GPUs per actor) on a cluster with `resources`: `workers` actors (0: one per
    GPU, else one per CPU), each with an equal share of the GPUs (at most one, 0 without)."""
    gpus = _gpus(resources)
    n = workers or gpus or max(1, int(resources.get("CPU", 1)))
    return n, min(1.0, gpus / n) if gpus else 0.0


def _gpus(resources: Mapping[str, float]) -> int:
    """The whole GPUs of a cluster's resources: the actors run on CUDA when there is one."""
    return int(resources.get("GPU", 0))


FIX = "use --amp bf16 or --amp off"


def check_workers_amp(amp: str, resources: Mapping[str, float]) -> None:
    """ConfigError (one line) unless the actors can score in `amp` on the device they get
    (`precision.check_amp`'s rule): CUDA when the cluster (`resources`) has GPUs, else the CPU,
    where fp16 is refused."""
    if amp == "fp16" and not _gpus(resources):
        raise ConfigError(
            "--engine ray --amp fp16: the Ray cluster has no GPU, so its workers score on the "
            f"CPU and fp16 needs CUDA: {FIX}, or a cluster with GPUs (an autoscaling cluster "
            "whose GPU nodes are not up yet: request them first, e.g. "
            "ray.autoscaler.sdk.request_resources(bundles=[{'GPU': 1}]), and rerun once "
            "`ray status` lists GPUs)"
        )
    check_amp(amp, "cuda" if _gpus(resources) else "cpu")


PROBE_TIMEOUT_S = 120.0  # how long the fp16 check waits for each GPU node's answer
_cuda_nodes: set[str] = set()  # Ray node ids whose torch was seen using CUDA by this process


def check_workers(amp: str, workers: int = 0) -> None:
    """Connect (`connect`), then ConfigError (one line) unless the `workers` actors can score
    in `amp`: the rule on the cluster's resources (`check_workers_amp`) and, for fp16, a look
    at the torch of every node that advertises a GPU (`check_gpu_nodes`)."""
    resources = connect()
    check_workers_amp(amp, resources)
    if amp == "fp16":
        check_gpu_nodes(require_ray(), _placement(workers, resources)[1])


def cuda_report() -> dict[str, Any]:
    """What the torch of the process it runs in sees: version, CUDA build (None: a CPU-only
    build), whether CUDA is usable and CUDA_VISIBLE_DEVICES (run on a node as a Ray task)."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "available": torch.cuda.is_available(),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def check_gpu_nodes(ray: ModuleType, share: float) -> None:
    """ConfigError (one line) naming the node and the fix unless, on every live node that
    advertises a GPU, a task asking for an actor's GPU `share` finds CUDA in that node's torch
    within PROBE_TIMEOUT_S (a CPU-only torch build, a broken driver, deepshield missing there,
    or GPUs that stay taken). Nodes already seen fine by this process are not asked again."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [
        n
        for n in ray.nodes()
        if n["Alive"] and n["Resources"].get("GPU", 0) > 0 and n["NodeID"] not in _cuda_nodes
    ]
    probe = ray.remote(num_cpus=0)(cuda_report)
    asked = {
        probe.options(
            num_gpus=min(share, n["Resources"]["GPU"]),
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(): n
        for n in nodes
    }
    ready, late = ray.wait(list(asked), num_returns=len(asked), timeout=PROBE_TIMEOUT_S)
    for ref in late:
        ray.cancel(ref)
    for ref in ready:
        node = asked[ref]
        try:
            report = ray.get(ref)
        except ray.exceptions.RayError as e:
            raise ConfigError(
                f"--engine ray --amp fp16: the GPU check failed on Ray node {_name(node)} "
                f"({_cause(e)}): install deepshield and a CUDA build of torch there as on "
                f"this machine, or {FIX}"
            ) from e
        if not report["available"]:
            raise ConfigError(_no_cuda(node, report))
        _cuda_nodes.add(node["NodeID"])
    if late:
        raise ConfigError(
            f"--engine ray --amp fp16: Ray node {_name(asked[late[0]])} did not answer the GPU "
            f"check in {PROBE_TIMEOUT_S:g} s (its GPUs are taken by other work, or it is still "
            f"starting): rerun once `ray status` shows them free, or {FIX}"
        )


def _name(node: Mapping[str, Any]) -> str:
    """A Ray node as its address and host name (`ray.nodes()` entry)."""
    return f"{node['NodeManagerAddress']} ({node['NodeManagerHostname']})"


def _no_cuda(node: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """The one-line refusal for a GPU node whose torch (`cuda_report`) cannot use CUDA."""
    where = f"--engine ray --amp fp16: Ray node {_name(node)} advertises a GPU but its torch "
    if report["cuda"] is None:
        return (
            f"{where}{report['torch']} is a CPU-only build, so its workers would score on the "
            f"CPU: install a CUDA build of torch on that node, or {FIX}"
        )
    return (
        f"{where}{report['torch']} (CUDA {report['cuda']}) sees no GPU "
        f"(CUDA_VISIBLE_DEVICES={report['visible']!r}): check that node's NVIDIA driver "
        f"(nvidia-smi), or {FIX}"
    )


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
            f"a Ray scan worker failed ({_cause(e)}); the rows so far are kept: re-run to resume"
        ) from e


def _cause(error: Exception) -> str:
    """What a Ray error says in one line: the last line of its text, which names the remote
    exception (e.g. a Replica that refused to start), else its type's name."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    return lines[-1] if lines else type(error).__name__
