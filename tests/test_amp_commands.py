"""`--amp` and `--channels-last` through the commands, on the tiny detector of test_sweep.

scan and the audit score in bf16 (the model's forwards seen in bf16, scores within bf16 rounding
of float32, the precision recorded; a scan resumed in another precision is refused, an audit in
another precision recomputed, older float32 folders resume); the attack is as strong under bf16
as in float32 on the same model; train, evaluate and attack with --channels-last give the
contiguous results. Bad values (exit 2, one line) are rows of tests/test_reliability_inputs.py.
bf16 is emulated on CPUs without AVX512-BF16 (about 30x slower), so every size here is tiny.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deepshield.audit import BUDGETS, Audit
from deepshield.errors import RunError
from deepshield.runs import scan as sc
from deepshield.runs.decision import calibrate_run
from test_attack_cli import cli
from test_reliability_inputs import script_env
from test_speech_evaluation import speech_run  # noqa: F401 (fixture: a tiny mel_cnn run)
from test_sweep import TINY, trained_tiny_run

CPU = torch.device("cpu")
# the audit's minimal budget made smaller still: 6 images, FGSM and 2-step PGD
TINY_AUDIT = replace(BUDGETS["minimal"], n=6, steps=2, noise_draws=1, sanity_samples=2,
                     explain_samples=6, grid_fakes=1, batch_size=6)  # fmt: skip


def forward_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The output dtype of every forward of `model` (a forward hook)."""
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated copy of the tiny detector (simplenet, 32 px synthetic faces)."""
    path = tmp_path_factory.mktemp("amp") / "tiny"
    shutil.copytree(trained_tiny_run(tmp_path_factory).path, path)
    calibrate_run(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 32x32 photos, scanned whole (--faces none)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(3):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"p{k}.png")
    return folder


# -- scan ------------------------------------------------------------------------------------------
def test_scan_scores_in_bf16_records_it_and_refuses_a_resume_in_float32(run, photos, tmp_path):
    det = sc.run_detector(run, CPU)
    seen = forward_dtypes(det.model)
    whole = sc.ScanOptions(faces="none")
    ref = sc.scan([photos], tmp_path / "off", detector=det, opts=whole)
    assert torch.bfloat16 not in seen
    out = tmp_path / "bf16"
    got = sc.scan([photos], out, detector=det, opts=replace(whole, amp="bf16"))
    assert torch.bfloat16 in seen
    for a, b in zip(ref.rows, got.rows, strict=True):  # bf16 keeps 8 mantissa bits
        assert b["score_raw"] == pytest.approx(a["score_raw"], abs=0.02)
    assert json.loads((out / "scan.json").read_text())["settings"]["amp"] == "bf16"
    assert yaml.safe_load((out / "config.yaml").read_text())["amp"] == "bf16"
    # a float32 scan's config leaves amp out: folders written before --amp resume as they were
    assert "amp" not in yaml.safe_load((tmp_path / "off" / "config.yaml").read_text())
    assert json.loads((tmp_path / "off" / "scan.json").read_text())["settings"]["amp"] == "off"
    with pytest.raises(RunError, match=r"another config \(amp differ\)"):
        sc.scan([photos], out, detector=det, opts=whole)
    again = sc.scan([photos], out, detector=det, opts=replace(whole, amp="bf16"))
    assert (again.scanned, again.resumed) == (0, 3)


def test_scan_scores_audio_windows_in_bf16(request, tmp_path):
    import soundfile as sf

    path = tmp_path / "speech"
    shutil.copytree(request.getfixturevalue("speech_run").path, path)
    calibrate_run(path)
    t = np.arange(10400) / 16000  # 3 windows of the run's 4000 samples
    sf.write(tmp_path / "voice.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    speech = sc.run_detector(path, CPU, kind="audio")
    seen = forward_dtypes(speech.model)
    off = sc.scan([tmp_path / "voice.wav"], tmp_path / "o", detector=None, speech=speech).rows[0]
    opts = sc.ScanOptions(amp="bf16")
    bf16 = sc.scan([tmp_path / "voice.wav"], tmp_path / "b", detector=None, speech=speech,
                   opts=opts).rows[0]  # fmt: skip
    assert torch.bfloat16 in seen and bf16["frames"] == off["frames"] == 3
    assert bf16["score"] == pytest.approx(off["score"], abs=0.05)
    assert bf16["verdict"] == off["verdict"]


def test_scan_command_takes_amp(run, photos, tmp_path, monkeypatch):
    out = tmp_path / "s"
    code = cli(monkeypatch, "scan", photos, "--run", run, "--faces", "none", "--amp", "bf16",
               "--out", out)  # fmt: skip
    assert code == 0
    assert json.loads((out / "scan.json").read_text())["settings"]["amp"] == "bf16"
    done = subprocess.run([sys.executable, "-m", "deepshield", "scan", "--help"], env=script_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "--amp" in done.stdout


# -- the audit -------------------------------------------------------------------------------------
def test_audit_runs_its_items_in_bf16_records_it_and_resumes_by_precision(
    run, tmp_path, monkeypatch
):
    path = tmp_path / "tiny"
    shutil.copytree(run, path)
    log: list[str] = []
    kept = lambda: {line.split()[1].rstrip(":") for line in log if "kept from" in line}  # noqa: E731
    fp32 = Audit(path, budget=TINY_AUDIT, surrogate=path).execute(log.append)
    assert fp32["settings"]["amp"] == "off" and "--amp" not in fp32["command"]
    # an audit.json written before --amp (no amp in its settings) resumes in float32
    old = json.loads((path / "audit.json").read_text())
    del old["settings"]["amp"]
    (path / "audit.json").write_text(json.dumps(old))
    log.clear()
    Audit(path, budget=TINY_AUDIT, surrogate=path).execute(log.append)
    assert kept() == set(fp32["items"]) - {"masking"}

    log.clear()
    seen: set[tuple] = set()  # (the item running, output dtype) of every module's forward

    def record(_m, _i, out):
        if isinstance(out, torch.Tensor):
            seen.add((log[-1] if log else None, out.dtype))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16 = Audit(path, budget=TINY_AUDIT, surrogate=path, amp="bf16").execute(log.append)
    finally:
        hook.remove()
    assert not kept()  # another precision: every item computed again
    items = ("clean", "fgsm", "pgd_linf", "noise", "transfer", "explanations", "everyday")
    for item in items:  # every item's forwards ran in bf16
        assert (f"[audit] {item} ...", torch.bfloat16) in seen, item
    assert not any("error" in v for v in bf16["items"].values())
    assert bf16["settings"]["amp"] == "bf16" and bf16["command"].endswith(" --amp bf16")
    for item in ("clean", "fgsm", "pgd_linf", "transfer"):
        assert bf16["items"][item]["command"].endswith(" --amp bf16"), item
    sweep = json.loads((path / "attack_audit_pgd_linf.json").read_text())
    assert (
        sweep["amp"] == "bf16"
        and "forwards and gradients in bf16" in (path / "report.html").read_text()
    )
    assert json.loads((path / "everyday_quick.json").read_text())["params"]["amp"] == "bf16"
    assert "forwards in bf16" in (path / "report.html").read_text()
    # the same attacks as strong in bf16: fakes passed as real per budget within one image
    fakes = (bf16["items"]["clean"]["n_fake"] * TINY_AUDIT.n) // bf16["items"]["clean"]["n"]
    for key in ("fgsm", "pgd_linf"):
        for a, b in zip(fp32["items"][key]["rows"], bf16["items"][key]["rows"], strict=True):
            assert abs(a["fake_passed_as_real"] - b["fake_passed_as_real"]) <= 1 / fakes + 1e-9

    # the command line: --amp reaches the audit (the same settings: every item is kept)
    monkeypatch.setitem(BUDGETS, "minimal", TINY_AUDIT)
    log.clear()
    monkeypatch.setattr("typer.echo", lambda line="", **_: log.append(str(line)))
    code = cli(monkeypatch, "audit", path, "--budget", "minimal", "--surrogate", path,
               "--amp", "bf16")  # fmt: skip
    assert code == 0 and kept() == set(bf16["items"]) - {"masking"}


# -- attack strength -------------------------------------------------------------------------------
def test_attack_command_in_bf16_is_as_strong_as_in_float32(run, tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    shutil.copytree(run, path)
    rows = {}
    for amp in ("off", "bf16"):
        code = cli(monkeypatch, "attack", path, "--eps", "0,2/255,4/255,8/255", "--steps", "5",
                   "--amp", amp, "--out", amp)  # fmt: skip
        assert code == 0
        rec = json.loads((path / f"attack_{amp}.json").read_text())
        assert rec["amp"] == amp and rec["channels_last"] is False
        assert rec["command"].endswith(" --amp bf16") == (amp == "bf16")
        rows[amp] = rec["rows"]
    for a, b in zip(rows["off"], rows["bf16"], strict=True):  # 30 test images
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 30 + 1e-9, (a["eps"], a, b)
    assert rows["off"][-1]["accuracy"] < rows["off"][0]["accuracy"] - 0.3  # the attack bites


# -- channels-last ---------------------------------------------------------------------------------
def test_train_evaluate_and_attack_with_channels_last_match_the_contiguous_format(
    tmp_path, monkeypatch
):
    common = ["-d", TINY.dataset, "--data-arg", "n=200", "--data-arg", "size=32", "-m", "simplenet",
              "--lr", "0.003", "-b", "16", "-e", "1", "--device", "cpu"]  # fmt: skip
    runs = {}
    for flag in ("--no-channels-last", "--channels-last"):
        out = tmp_path / flag.strip("-")
        assert cli(monkeypatch, "train", *common, flag, "--out", out) == 0
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg["channels_last"] is (flag == "--channels-last")
        runs[flag] = out
    plain, nhwc = runs["--no-channels-last"], runs["--channels-last"]
    first = [json.loads((r / "history.json").read_text())["epochs"][0] for r in (plain, nhwc)]
    assert first[1]["train"]["loss"] == pytest.approx(first[0]["train"]["loss"], rel=1e-3)

    # the same weights evaluated and attacked both ways
    for flags, name in (((), "c"), (("--channels-last",), "nhwc")):
        assert cli(monkeypatch, "evaluate", plain, *flags) == 0
        shutil.copy(plain / "eval.json", tmp_path / f"eval_{name}.json")
        args = ("--eps", "0,4/255", "--steps", "5", "--n", "20", "--out", name, *flags)
        assert cli(monkeypatch, "attack", plain, *args) == 0
    ev = [json.loads((tmp_path / f"eval_{n}.json").read_text()) for n in ("c", "nhwc")]
    assert (ev[0]["channels_last"], ev[1]["channels_last"]) == (False, True)
    for key in ("accuracy", "auc", "eer", "balanced_accuracy"):
        assert ev[1][key] == pytest.approx(ev[0][key], abs=1e-6), key
    at = [json.loads((plain / f"attack_{n}.json").read_text()) for n in ("c", "nhwc")]
    assert at[1]["channels_last"] and at[1]["command"].endswith(" --channels-last")
    for a, b in zip(at[0]["rows"], at[1]["rows"], strict=True):
        assert (a["accuracy"], a["fake_passed_as_real"]) == (
            b["accuracy"],
            b["fake_passed_as_real"],
        )
