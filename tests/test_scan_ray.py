"""`deepshield scan --engine ray` on a local Ray instance (2 CPUs): the folder of test_scan
(photos, a face video, faceless and bad files) scanned by Ray actors gives the local engine's
rows, frame rows, thumbnails and overlays; a scan begun locally resumes on Ray; no cluster at
RAY_ADDRESS is one line and an untouched --out."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import shared_path
from deepshield.errors import ConfigError, RunError
from deepshield.runs import scan as sc
from deepshield.runs.decision import calibrate_run
from test_media_video import write_video
from test_reliability_inputs import assert_one_error_line, run_in_process
from test_scan import FRAMES, _rows, _same_scan, case, scanned  # noqa: F401 (fixtures)
from test_speech_evaluation import speech_run  # noqa: F401 (fixture; its toy speech set)

ray = pytest.importorskip("ray", reason="ray not installed: pip install 'deepshield[ray]'")
QUIET = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}


def test_no_cluster_at_ray_address_is_one_line_and_writes_nothing(
    request, monkeypatch, capsys, tmp_path
) -> None:
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected in this process")
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # auto: a running cluster on this machine (none)
    png = request.getfixturevalue("case")["src"] / "face.png"
    weights = shared_path("data", "pretrained_mesonet", "weights", "Meso4_DF.h5")
    argv = ["scan", str(png), "--model", "meso4", "--weights", str(weights)]
    argv += ["--engine", "ray", "--out", str(tmp_path / "s")]
    code, err = run_in_process(argv, monkeypatch, capsys)
    assert code == 2
    assert_one_error_line(err, "RAY_ADDRESS: no Ray cluster reached")
    assert not (tmp_path / "s").exists()


class TestGpuNodeWithoutCuda:
    """fp16 on a Ray instance that advertises one GPU (declared with num_gpus=1) on this
    machine, whose torch has no CUDA: a GPU node with a CPU-only torch build. Ray's resources
    show a GPU, so the resources rule passes; the check asks the node's torch (before, every
    file became an error row)."""

    @pytest.fixture(scope="class", autouse=True)
    def advertised_gpu(self):
        """The instance, for this class's tests."""
        if ray.is_initialized():
            pytest.skip("a Ray instance is already connected in this process")
        if torch.cuda.is_available():
            pytest.skip("this machine's torch has CUDA: the GPU the instance declares is usable")
        ray.init(num_cpus=1, num_gpus=1, **QUIET)
        yield
        ray.shutdown()

    def test_cli_refuses_in_one_line_naming_the_node_before_any_model_is_loaded(
        self, request, monkeypatch, capsys, tmp_path
    ) -> None:
        media = request.getfixturevalue("case")

        def no_model(*args, **kwargs):
            raise AssertionError("a detector was loaded")

        monkeypatch.setattr(sc, "detectors", no_model)
        argv = ["scan", str(media["src"] / "face.png"), "--run", str(media["run"])]
        argv += ["--engine", "ray", "--amp", "fp16", "--out", str(tmp_path / "s")]
        code, err = run_in_process(argv, monkeypatch, capsys)
        assert code == 2
        assert_one_error_line(err, f"Ray node {ray.nodes()[0]['NodeManagerAddress']} (")
        assert f"its torch {torch.__version__} is a CPU-only build" in err
        assert "install a CUDA build of torch on that node, or use --amp bf16" in err
        assert not (tmp_path / "s").exists()

    def test_a_gpu_that_stays_taken_is_not_waited_for(self, request, tmp_path) -> None:
        """A GPU held by other work (here reserved by a placement group) is waited for up to
        the check's timeout: sc.scan then refuses in one line naming the node, writing nothing."""
        from ray.util.placement_group import placement_group, remove_placement_group

        from deepshield.runs import scan_ray

        media = request.getfixturevalue("case")
        det = sc.run_detector(media["run"], torch.device("cpu"))
        files, opts = [media["src"] / "face.png"], sc.ScanOptions(amp="fp16")
        held = placement_group([{"GPU": 1}])
        ray.get(held.ready(), timeout=60)
        try:
            with pytest.MonkeyPatch.context() as m, pytest.raises(ConfigError) as e:
                m.setattr(scan_ray, "PROBE_TIMEOUT_S", 1.0)
                sc.scan(files, tmp_path / "s", detector=det, opts=opts, engine="ray")
        finally:
            remove_placement_group(held)
        msg = str(e.value)
        assert f"Ray node {ray.nodes()[0]['NodeManagerAddress']} (" in msg
        assert "did not answer the GPU check in 1 s" in msg and len(msg.splitlines()) == 1
        assert not (tmp_path / "s").exists()

    def test_a_node_already_seen_using_cuda_is_not_asked_again(self, monkeypatch) -> None:
        """The check of a process that saw the node fine (the CLI's, then sc.scan's) sends no
        task: this node, unasked, passes; asked, it is refused."""
        from deepshield.runs import scan_ray

        node = ray.nodes()[0]["NodeID"]
        monkeypatch.setattr(scan_ray, "_cuda_nodes", {node})
        scan_ray.check_workers("fp16")
        monkeypatch.setattr(scan_ray, "_cuda_nodes", set())
        with pytest.raises(ConfigError, match="is a CPU-only build"):
            scan_ray.check_workers("fp16")

    def test_a_worker_on_a_node_the_check_did_not_see_refuses_to_start(
        self, request, monkeypatch, tmp_path
    ) -> None:
        """A GPU node that joins after the check (an autoscaling cluster): the actor placed on
        it refuses to start, and the scan stops in one line naming the node and the fix
        (before, every file it got became an error row)."""
        from deepshield.runs import scan_ray

        monkeypatch.setattr(scan_ray, "check_gpu_nodes", lambda *args: None)
        media = request.getfixturevalue("case")
        det = sc.run_detector(media["run"], torch.device("cpu"))
        files, opts = [media["src"] / "face.png"], sc.ScanOptions(amp="fp16")
        with pytest.raises(RunError) as e:
            sc.scan(files, tmp_path / "s", detector=det, opts=opts, engine="ray")
        msg = str(e.value)
        assert msg.startswith("a Ray scan worker failed (") and len(msg.splitlines()) == 1
        assert f"its torch {torch.__version__} is a CPU-only build" in msg
        assert f"Ray node {ray.nodes()[0]['NodeManagerAddress']} (" in msg
        assert not sc.complete_rows(tmp_path / "s" / "scan.csv", sc.SCAN_COLUMNS)


# The instance declares no GPU (num_gpus=0): on a machine with one, the actors would score on
# CUDA and the comparisons with the local engine (on the CPU) could differ by float rounding.
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs and no GPU (see above) for this module."""
    ray.init(num_cpus=2, num_gpus=0, **QUIET)
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
        "rehashed": 0,
        "changed_rescanned": [],
        "workers": 2,
        "engine": "ray",
        "verify": False,
        "wall_s": 0,
        "cpu_s": 0,
    }


def test_fp16_on_a_cluster_without_gpus_is_refused_before_any_model_is_loaded(
    request, local_ray, monkeypatch, capsys, tmp_path
) -> None:
    """The CLI refuses it right after connecting, in one line, before a detector is loaded;
    the library too, also for a detector on CUDA (a driver with a GPU, whose CPU-only workers
    turned every file into an error row)."""
    if ray.cluster_resources().get("GPU"):
        pytest.skip("the local Ray instance has a GPU: fp16 runs on its workers")
    media = request.getfixturevalue("case")
    png = media["src"] / "face.png"
    det = sc.run_detector(media["run"], torch.device("cpu"))

    def no_model(*args, **kwargs):
        raise AssertionError("a detector was loaded")

    monkeypatch.setattr(sc, "detectors", no_model)
    argv = ["scan", str(png), "--run", str(media["run"]), "--engine", "ray", "--amp", "fp16"]
    code, err = run_in_process([*argv, "--out", str(tmp_path / "s")], monkeypatch, capsys)
    assert code == 2
    assert_one_error_line(err, "the Ray cluster has no GPU")
    assert "use --amp bf16 or --amp off" in err and not (tmp_path / "s").exists()
    on_gpu = replace(det, device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="the Ray cluster has no GPU"):
        sc.scan(
            [png], tmp_path / "l", detector=on_gpu, opts=sc.ScanOptions(amp="fp16"), engine="ray"
        )
    assert not (tmp_path / "l").exists()


@pytest.mark.slow  # a Ray scan and a local one
def test_bf16_runs_on_cpu_workers_as_locally(request, local_ray, tmp_path) -> None:
    media = request.getfixturevalue("case")
    det = sc.run_detector(media["run"], torch.device("cpu"))
    files = [media["src"] / "face.png", media["src"] / "clips" / "face.mp4"]
    opts = sc.ScanOptions(frames=FRAMES, amp="bf16")
    sc.scan(files, tmp_path / "local", detector=det, opts=opts)
    sc.scan(files, tmp_path / "ray", detector=det, opts=opts, workers=1, engine="ray")
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert all(r["verdict"] not in ("error", "no_face") for r in _rows(tmp_path / "ray"))


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


@pytest.mark.slow  # trains the toy speech run
def test_speech_detector_scores_audio_on_ray_as_locally(request, local_ray, tmp_path) -> None:
    import soundfile as sf

    run = tmp_path / "speech"
    shutil.copytree(request.getfixturevalue("speech_run").path, run)  # a tiny mel_cnn run
    calibrate_run(run)
    t = np.arange(10400) / 16000
    sf.write(tmp_path / "voice.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
    files = [tmp_path / "voice.wav", write_video(tmp_path / "talk.mp4", n=20, audio=True)]
    speech = sc.run_detector(run, torch.device("cpu"), kind="audio")
    sc.scan(files, tmp_path / "local", detector=None, speech=speech)
    sc.scan(files, tmp_path / "ray", detector=None, speech=speech, workers=1, engine="ray")
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert all(r["score"] and r["verdict"] != "error" for r in _rows(tmp_path / "ray"))
