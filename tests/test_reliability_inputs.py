"""Bad input, as a careful new user tries it: a table of wrong flags, values, folders and files
across every command and the service. Each must end in exit 2 (CLI) or a 4xx (service) with one
error line, no traceback, and no file changed anywhere the test can see (the run folder, a user's
folder of notes, the working directory). Rows marked `sub` run through the installed `deepshield`
script in a subprocess, as a user runs it; the others in this process (the same `main`).
Also here: Ctrl-C and SIGTERM on a running command (130 / 143, one line, from the installed script).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from deepshield.runs.training import run_training
from deepshield.service import create_app
from test_sweep import TINY

SCRIPT = Path(sys.executable).parent / "deepshield"
SUB = "sub"  # the row runs through the installed script
NO_RAY = "no_ray"  # the row runs in this process as if ray were not installed

# (argv with {run} {user} {png} {yaml} placeholders, words the error line holds, how it runs)
CLI_ROWS: list[tuple[str, str, str]] = [
    # the entry point and global options
    ("nosuch", "No such command 'nosuch'", SUB),
    ("--bogus models", "No such option: --bogus", SUB),
    ("--threads 0 models", "'--threads'", SUB),
    ("--threads -2 models", "'--threads'", SUB),
    ("--threads abc models", "'--threads'", ""),
    ("models --num-classes 0", "'--num-classes'", ""),
    ("datasets nosuch", "unknown dataset 'nosuch'", ""),
    ("datasets synthetic-faces:easy --seed abc", "'--seed'", ""),
    ("demo --seed abc", "'--seed'", SUB),
    # train
    ("train --bogus", "No such option: --bogus", SUB),
    ("train -e 0", "epochs 0 takes the init weights as they are", SUB),
    ("train -e -1", "'-e' / '--epochs'", ""),
    ("train -e -1", "'-e' / '--epochs'", ""),
    ("train --epochs 1.5", "'-e' / '--epochs'", ""),
    ("train -b 0", "'--batch-size'", ""),
    ("train --lr -1", "'--lr'", ""),
    ("train --lr abc", "'--lr'", ""),
    ("train --adv-eps 2", "2 is outside [0, 1]", SUB),
    ("train --adv-eps abc", "cannot read 'abc'", ""),
    ("train --adv-eps 1/0", "cannot read '1/0'", ""),
    ("train --adv-steps 0", "'--adv-steps'", ""),
    ("train --adv-alpha 5", "5 is outside [0, 1]", ""),
    ("train --lipschitz -1", "'--lipschitz'", ""),
    ("train --seed abc", "'--seed'", ""),
    ("train -d nosuchdata --out {user}/t", "unknown dataset 'nosuchdata'", ""),
    ("train --data-arg bogus=1 --out {user}/t", "no option bogus; it accepts n=3000", SUB),
    ("train --data-arg n=abc --out {user}/t", "n='abc' should be an integer", ""),
    ("train --data-arg size=true --out {user}/t", "size=True should be an integer", ""),
    ("train --data-arg seed=1", "the seed is set by --seed", ""),
    ("train --data-arg novalue", "'novalue' is not KEY=VALUE", ""),
    ("train --model-arg novalue", "'novalue' is not KEY=VALUE", ""),
    ("train -m nosuchmodel --out {user}/t", "unknown model 'nosuchmodel'", ""),
    ("train -o nosuchopt --out {user}/t", "'Adam', 'AdamW' or 'SGD'", ""),
    ("train --class-weights foo --out {user}/t", "class_weights", ""),
    ("train --amp fp8 --out {user}/t", "'fp8' is not one of off, bf16, fp16", ""),
    ("train --amp fp16 --device cpu --out {user}/t", "--amp fp16 needs a CUDA device", SUB),
    ("train --channels-last yes --out {user}/t", "unexpected extra argument(s) (yes)", ""),
    ("train --config {user}/channels.yaml --out {user}/t", "channels_last: Input should be", ""),
    ("train --scheduler foo --out {user}/t", "scheduler", ""),
    ("train --adv-train foo --out {user}/t", "adv_train", ""),
    ("train --device foo --out {user}/t", "foo", ""),
    ("train --config {user}/absent.yaml", "absent.yaml", ""),
    ("train --config {yaml}", "bad.yaml", ""),
    ("train --init {user}/absent.pth --out {user}/t", "absent.pth", ""),
    ("train --augment foo --out {user}/t", "'foo' is not one of image, speech", SUB),
    ("train --augment speech --data-arg n=40 --out {user}/t", "augment.snr does not apply", ""),
    # evaluate
    ("evaluate", "Missing argument", SUB),
    ("evaluate {user}/absent", "absent", ""),
    ("evaluate {user}", "not a deepshield run", ""),
    ("evaluate {run} --split foo", "'foo' is not one of train, val, test", SUB),
    ("evaluate {run} --data-arg bogus=1", "no option bogus", ""),
    ("evaluate {run} --data-arg sise=64", "no option sise (did you mean size?)", ""),
    ("evaluate {run} --data-arg size=64 --data-arg n=200", "trained on [3, 32, 32]", ""),
    (
        "evaluate {run} -d synthetic-faces:easy --data-arg n=140 --data-arg size=48",
        "[3, 48, 48]",
        "",
    ),
    ("evaluate {run} -d nosuch", "unknown dataset 'nosuch'", ""),
    # audio files, read by the one audio reader (deepshield.media.audio)
    ("evaluate {run} -d speech-folder:{user}/audio-truncated", "truncated audio", ""),
    ("datasets speech-folder:{user}/audio-truncated", "declares 16,000 data bytes but 5,000", SUB),
    ("datasets speech-folder:{user}/audio-2khz", "sample rate 2000 Hz", ""),
    ("datasets speech-folder:{user}/audio-text", "not an audio file", ""),
    ("datasets speech-folder:{user}/audio-short", "needs at least 0.1 s", ""),
    ("evaluate {run} --device foo", "foo", ""),
    ("evaluate {run} --amp half", "'half' is not one of off, bf16, fp16", ""),
    ("evaluate {run} --amp fp16", "--amp fp16 needs a CUDA device", ""),
    ("evaluate {run} --channels-last=1", "'--channels-last' does not take a value", ""),
    # attack
    ("attack", "Missing argument", SUB),
    ("attack {user}/absent", "absent", ""),
    ("attack {run} --eps 2", "an L-inf budget on [0, 1] pixels lies in [0, 1]", SUB),
    ("attack {run} --eps 0,8/255,1.5", "--eps 1.5", ""),
    ("attack {run} --eps -0.1", "-0.1 is below 0", ""),
    ("attack {run} --eps abc", "cannot read 'abc'", ""),
    ("attack {run} --eps 1/0", "cannot read '1/0'", ""),
    ("attack {run} --eps ,", "cannot read ''", ""),
    ("attack {run} --norm l2 --eps -1", "-1 is below 0", ""),
    ("attack {run} --steps 0", "'--steps'", ""),
    ("attack {run} --restarts 0", "'--restarts'", ""),
    ("attack {run} --norm l3", "'l3' is not one of linf, l2", ""),
    ("attack {run} --attack foo", "unknown attack 'foo'", ""),
    ("attack {run} --mask center:0", "SIZE is the square's side in pixels", SUB),
    ("attack {run} --mask patch:x", "SIZE is the square's side in pixels", ""),
    ("attack {run} --mask blob", "use full, center:SIZE or patch:SIZE", ""),
    ("attack {run} --mask center:64", "does not fit a 32x32 image", ""),
    ("attack {run} --n 0", "'--n'", ""),
    ("attack {run} --n -5", "'--n'", ""),
    ("attack {run} --batch-size 0", "'--batch-size'", ""),
    ("attack {run} --split dev", "'dev' is not one of train, val, test", ""),
    ("attack {run} --surrogate {user}/absent", "absent", ""),
    ("attack {run} --data-arg bogus=1", "no option bogus", ""),
    ("attack {run} --purify foo", "foo", ""),
    ("attack {run} --eot-samples 0", "'--eot-samples'", ""),
    ("attack {run} --dip-iters 0", "'--dip-iters'", ""),
    ("attack {run} --eot-transforms webp80", "webp has no differentiable stand-in", SUB),
    ("attack {run} --eot-transforms jpeg101", "'jpeg:101': 101 is out of range", ""),
    ("attack {run} --eot-transforms ,", "no EOT transforms given", ""),
    ("attack {run} --eval-after jpeg0", "'jpeg:0': 0 is out of range", ""),
    ("attack {run} --eval-after foo:1", "unknown processing 'foo:1'", ""),
    ("attack {run} --seed abc", "'--seed'", ""),
    ("attack {run} --device foo", "foo", ""),
    ("attack {run} --amp bf17", "'bf17' is not one of off, bf16, fp16", ""),
    ("attack {run} --amp fp16", "--amp fp16 needs a CUDA device", SUB),
    ("attack {run} --no-channels-last", "No such option: --no-channels-last", ""),
    # explain
    ("explain", "Missing argument", ""),
    ("explain {user}/absent", "absent", ""),
    ("explain {run} --method foo", "foo", ""),
    ("explain {run} --split foo", "'foo' is not one of train, val, test", ""),
    ("explain {run} --n 0", "'--n'", ""),
    ("explain {run} --max-samples 0", "'--max-samples'", ""),
    ("explain {run} --sanity-samples 0", "'--sanity-samples'", ""),
    ("explain {run} --sanity-repeats 0", "'--sanity-repeats'", ""),
    ("explain {run} --data-arg bogus=1", "no option bogus", ""),
    ("explain {run} --device foo", "foo", ""),
    # audit
    ("audit", "Missing argument", ""),
    ("audit {user}/absent", "absent", ""),
    ("audit {run} --budget foo", "foo", ""),
    ("audit {run} --data-arg bogus=1", "no option bogus", ""),
    ("audit {run} --surrogate {user}/absent", "absent", ""),
    ("audit {run} --seed abc", "'--seed'", ""),
    ("audit {run} --amp half", "'half' is not one of off, bf16, fp16", ""),
    ("audit {run} --amp fp16", "--amp fp16 needs a CUDA device", SUB),
    # defend
    ("defend nosuch", "No such command 'nosuch'", SUB),
    ("defend detector", "--protect", ""),
    ("defend detector --protect {run} --eps 2", "2 is outside [0, 1]", SUB),
    ("defend detector --protect {run} -e 0", "'-e' / '--epochs'", ""),
    ("defend detector --protect {run} -m nosuch", "unknown model 'nosuch'", ""),
    ("defend detector --protect {run} --limit 0", "'--limit'", ""),
    ("defend detector --protect {user}/absent --out {user}/d", "absent", ""),
    ("defend detector --protect {run} --attack foo --out {user}/d", "foo", ""),
    ("defend purify", "Missing argument", ""),
    ("defend purify {run} --method foo", "--method 'foo'", ""),
    ("defend purify {run} --preset foo", "--preset 'foo'", ""),
    ("defend purify {run} --chunk 0", "'--chunk'", ""),
    ("defend purify {run} --eps 2", "2 is outside [0, 1]", ""),
    ("defend purify {run} --n 0", "'--n'", ""),
    ("defend purify {run} --threshold 2", "2 is outside [0, 1]", ""),
    ("defend purify {run} --split foo", "'foo' is not one of train, val, test", ""),
    ("defend purify {run} --iters 0", "'--iters'", ""),
    ("defend compare", "Missing argument", ""),
    ("defend compare {run} {run} --eps 2", "2 is outside [0, 1]", ""),
    ("defend compare {run} {run} --steps 0", "'--steps'", ""),
    ("defend compare {run} {run} --limit 0", "'--limit'", ""),
    ("defend compare {run} {user}/absent", "absent", ""),
    ("defend attack-detector {run} --eps 2", "2 is outside [0, 1]", ""),
    ("defend attack-detector {run} --steps 0", "'--steps'", ""),
    ("defend attack-detector {run} --n 0", "'--n'", ""),
    ("defend attack-detector {run} --split foo", "'foo' is not one of train, val, test", ""),
    ("defend attack-detector {user}/absent", "absent", ""),
    # generators and disruption
    ("train-generator --steps 0", "'--steps'", ""),
    ("train-generator -b 0", "'--batch-size'", ""),
    ("train-generator --lr -1", "'--lr'", ""),
    ("train-generator --adv-eps 3", "'--adv-eps'", ""),
    ("train-generator --adv-steps 0", "'--adv-steps'", ""),
    ("train-generator -m nosuch --out {user}/g", "'stargan', 'ganimation'", ""),
    ("train-generator --adv foo --out {user}/g", "'none', 'generator'", ""),
    ("train-generator --data-arg bogus=1 --out {user}/g", "no option bogus", ""),
    ("train-generator --config {user}/absent.yaml", "absent.yaml", ""),
    ("disrupt", "--generator", SUB),
    ("disrupt -g {run} --eps 3", "'--eps'", ""),
    ("train-generator -d {user} --out {user}/g", "no real/ and fake/ subfolders", ""),
    ("disrupt -g {run} -n 0", "'-n' / '--n'", SUB),
    ("disrupt -g {run} --method foo", "'foo' is not one of fgsm, ifgsm, pgd", ""),
    ("disrupt -g {run} --steps 0", "'--steps'", ""),
    ("disrupt -g {run} -b 0", "'--batch-size'", ""),
    ("disrupt -g {run} --split foo", "'foo' is not one of train, val, test", ""),
    ("disrupt -g {run} --threshold -1", "'--threshold'", ""),
    ("disrupt -g {run} --alpha 5", "'--alpha'", ""),
    ("disrupt -g {user}/absent --out {user}/x", "absent", ""),
    ("disrupt -g {run} --target foo --out {user}/x", "use none, input or a number", ""),
    ("disrupt --config {user}/absent.yaml", "absent.yaml", ""),
    # proactive protection
    ("metrics {user}/absent.txt", "absent.txt", ""),
    ("metrics {png}", "cannot read", SUB),
    ("metrics {png} --orientation sideways", "sideways", ""),
    ("protect nosuch", "No such command 'nosuch'", ""),
    ("protect train --steps 0", "'--steps'", ""),
    ("protect train --data-arg bogus=1 --out {user}/p", "no option bogus", ""),
    ("protect train -d {user} --out {user}/p", "no real/ and fake/ subfolders", ""),
    ("protect train --config {user}/absent.yaml", "absent.yaml", ""),
    ("protect apply", "Missing argument", ""),
    ("protect apply {png} --run {user}/absent --out {user}/o", "templates.json", ""),
    ("protect detect {png} --run {user}", "templates.json", ""),
    ("protect detect {png}", "Missing option '--run'", SUB),
    # the service's command
    ("serve", "Missing argument", ""),
    ("serve --port abc {run}", "'--port'", SUB),
    ("serve {run} --port 0", "'--port'", SUB),
    ("serve {run} --port -1", "'--port'", ""),
    ("serve {run} --port 70000", "'--port'", ""),
    ("serve {run} --max-mb 0", "--max-mb 0", ""),
    ("serve {run} --threshold 2", "threshold", ""),
    ("serve {run} --threshold foo", "threshold", ""),
    ("serve {run} --size 0", "'--size'", ""),
    ("serve {run} --decode-mpx 0", "'--decode-mpx'", ""),
    ("serve {run} --frames 0", "'--frames'", ""),
    ("serve {run} --max-seconds 0", "'--max-seconds'", ""),
    ("serve {run} --max-seconds abc", "'--max-seconds'", ""),
    ("serve {run} --unsure 0.5", "'--unsure'", ""),
    ("serve {run} --unsure -0.1", "'--unsure'", ""),
    ("serve {run} --host 0.0.0.0", "pass --token TOKEN", SUB),
    ("serve {run} --speech-run {run}", "not a speech detector (image model)", ""),
    ("serve {run} --speech-run {user}/absent", "absent", ""),
    ("serve {run} --decision {user}/absent", "holds no decision.json or decision_speech", ""),
    ("serve {run} --decision {run}", "not fitted on a scan's file scores (serve RUN_DIR", ""),
    ("serve {run} --decision {run}/decision.json", "not fitted on a scan's file scores", SUB),
    ("serve {user}/absent", "absent", ""),
    ("serve {user}", "not a deepshield run", ""),
    # scan and calibrate
    ("scan", "Missing argument", SUB),
    ("scan {png}", "give a detector: --run RUN_DIR, --model NAME --weights FILE", ""),
    ("scan {png} --run {run} --model meso4", "1 --model and 0 --weights: they go in pairs", ""),
    ("scan {png} --model meso4", "1 --model and 0 --weights: they go in pairs", ""),
    ("scan {png} --model meso4 --weights {user}/absent.h5", "absent.h5: no such file", ""),
    ("scan {png} --run {run} --shard 2/2", "--shard '2/2'", ""),
    ("scan {png} --run {run} --frames 0", "'--frames'", ""),
    ("scan {png} --run {run} --faces some", "'some' is not one of largest, all, none", ""),
    ("scan {user}/absent.jpg --run {run} --out {user}/s", "no such file or folder", ""),
    ("scan {png} --run {user}", "not a deepshield run", ""),
    ("scan {png} --run {run} --out {user}", "holds files deepshield did not write", SUB),
    ("scan {png} --run {run} --out {user} --force", "holds files deepshield did not write", SUB),
    ("scan {png} --run {run} --workers -1", "'--workers'", ""),
    ("scan {png} --run {run} --detect-every 0", "'--detect-every'", ""),
    ("scan {png} --run {run} --speech-run {run}", "holds a image model", ""),
    ("scan {png} --run {run} --engine spark", "'spark' is not one of local, ray", ""),
    ("scan {png} --run {run} --engine ray", "pip install 'deepshield[ray]'", NO_RAY),
    ("scan {png} --run {run} --amp fp8", "'fp8' is not one of off, bf16, fp16", ""),
    ("scan {png} --run {run} --out {user}/s --amp fp16", "--amp fp16 needs a CUDA device", SUB),
    ("scan {png} --run {run} --decision {user}", "holds no decision.json", ""),
    ("calibrate", "Missing argument", ""),
    ("calibrate {user}", "not a scan folder", ""),
    ("calibrate {user}/absent", "absent: no such folder", ""),
    ("calibrate {run} --labels {user}/l.csv", "--labels", ""),
    ("calibrate {run} --folds 1", "'--folds'", ""),
    ("calibrate {run} --operating-point best", "operating-point rule 'best'", ""),
    ("calibrate {run} --calibration foo", "'foo' is not one of platt, isotonic", ""),
    ("calibrate {run} --unsure 0.7", "'--unsure'", ""),
    # robustness to everyday processing
    ("robustness", "Missing argument", SUB),
    ("robustness {user}/absent", "absent", ""),
    ("robustness {user}", "neither a run (no model.json) nor a scan folder", ""),
    ("robustness {run} --grid nosuch", "grid 'nosuch' is neither quick nor full", SUB),
    ("robustness {run} --grid {yaml}", "must be a YAML list of specs", ""),
    ("robustness {run} --grid {user}/grid_jpeg0.yaml", "'jpeg:0': 0 is out of range", SUB),
    ("robustness {run} --grid {user}/grid_blur.yaml", "'blur:-1': -1 is out of range", ""),
    ("robustness {run} --grid {user}/grid_codec.yaml", "unknown image processing 'mp3'", ""),
    ("robustness {run} --split foo", "'foo' is not one of train, val, test", ""),
    ("robustness {run} --n 0", "'--n'", ""),
    ("robustness {run} --batch-size 0", "'--batch-size'", ""),
    ("robustness {run} --device foo", "unknown device 'foo'", ""),
    ("robustness {run} -d nosuchdata", "unknown dataset 'nosuchdata'", ""),
    ("robustness {run} --data-arg bogus=1", "no option bogus", ""),
    ("robustness {run} --amp fp16", "--amp fp16 needs a CUDA device", ""),
    # studies
    ("study", "Missing argument", ""),
    ("study {user}/absent.yaml", "absent.yaml", ""),
    ("study {yaml}", "bad.yaml", ""),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny trained run, a user's folder (notes, a photo, a broken YAML) and a cwd."""
    tiny = TINY.model_copy(update={"data_kwargs": {"n": 140, "size": 32}, "epochs": 1})
    with pytest.MonkeyPatch.context() as mp:  # the session's dataset cache (conftest)
        mp.setenv("DEEPSHIELD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run = run_training(tiny, tmp_path_factory.mktemp("runs") / "tiny").path
    user = tmp_path_factory.mktemp("case-42")
    (user / "notes.txt").write_text("evidence log: do not lose\n")
    Image.new("RGB", (40, 40), (90, 120, 150)).save(user / "photo.png")
    (user / "bad.yaml").write_text("model: [unclosed\n")
    (user / "channels.yaml").write_text("channels_last: maybe\n")
    _bad_audio_folders(user)
    for name, spec in (("jpeg0", "jpeg:0"), ("blur", "blur:-1"), ("codec", "mp3:0.5")):
        (user / f"grid_{name}.yaml").write_text(f"- {spec}\n")
    cwd = tmp_path_factory.mktemp("cwd")
    return {
        "run": run,
        "user": user,
        "png": user / "photo.png",
        "yaml": user / "bad.yaml",
        "cwd": cwd,
    }


def _bad_audio_folders(user: Path) -> None:
    """user/audio-<case>/{bonafide,spoof}: one good 0.5 s tone and one bad file per folder."""
    import numpy as np
    import soundfile as sf

    tone = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    for case in ("truncated", "2khz", "text", "short"):
        root = user / f"audio-{case}"
        (root / "bonafide").mkdir(parents=True)
        (root / "spoof").mkdir()
        sf.write(root / "spoof" / "good.wav", tone, 16000, subtype="PCM_16")
    bad = user / "audio-truncated" / "bonafide" / "bad.wav"
    sf.write(bad, tone, 16000, subtype="PCM_16")  # 16,000 data bytes
    bad.write_bytes(bad.read_bytes()[:5044])
    sf.write(user / "audio-2khz" / "bonafide" / "bad.wav", tone[:1000], 2000)
    (user / "audio-text" / "bonafide" / "bad.wav").write_text("not audio\n" * 30)
    sf.write(user / "audio-short" / "bonafide" / "bad.flac", tone[:800], 16000)


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots`: size and modification time (ns)."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_in_process(argv: list[str], monkeypatch, capsys, server=None) -> tuple[int, str]:
    """`deepshield ARGV` through the same `main` the script calls -> (exit code, stderr);
    `server` stands in for uvicorn.run (by default: a failure, nothing may be served)."""
    import uvicorn

    from deepshield.cli import main

    def no_server(*a, **k):
        raise AssertionError("started a server despite bad input")

    monkeypatch.setattr(uvicorn, "run", server or no_server)
    monkeypatch.setattr(sys, "argv", ["deepshield", *argv])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def script_env() -> dict[str, str]:
    """The environment a user's shell gives the script, with this checkout's sources first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def run_script(argv: list[str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run(
        [str(SCRIPT), *argv], cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stderr


def assert_one_error_line(err: str, words: str) -> None:
    """One 'error:' line holding `words`; before it at most the command's usage line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: ") and words in lines[-1], err
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("Usage: ")), err


@pytest.mark.parametrize(("argv", "words", "how"), CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_bad_cli_input_exits_2_with_one_line_and_changes_nothing(
    places, monkeypatch, capsys, argv, words, how
):
    args = [a.format(**places) for a in argv.split()]
    monkeypatch.chdir(places["cwd"])
    before = tree(places["run"], places["user"], places["cwd"])
    if how == NO_RAY:  # as without the optional extra: `import ray` fails
        monkeypatch.setitem(sys.modules, "ray", None)
    if how == SUB:
        code, err = run_script(args, places["cwd"])
    else:
        code, err = run_in_process(args, monkeypatch, capsys)
    assert code == 2, err
    assert_one_error_line(err, words)
    assert tree(places["run"], places["user"], places["cwd"]) == before


def test_the_table_is_broad():
    """At least 150 rows over every command, a good share through the installed script."""
    from deepshield.cli.app import app

    commands = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    tried = {word for row in CLI_ROWS for word in row[0].split()}
    assert commands <= tried, commands - tried
    assert len(CLI_ROWS) + len(SERVICE_ROWS) >= 150
    assert sum(r[2] == SUB for r in CLI_ROWS) >= 20


# -- the service ---------------------------------------------------------------------------------
def png_bytes(w: int = 40, h: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """The first 33 bytes of a w x h PNG (signature + IHDR) and nothing else."""
    return png_bytes()[:16] + w.to_bytes(4, "big") + h.to_bytes(4, "big") + png_bytes()[24:33]


def mp4_bytes(frames: int, fps: int, *, audio_only: bool = False) -> bytes:
    """An H.264 MP4 of `frames` grey 16x16 frames at `fps` (moov last), or 0.2 s of AAC only."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("aac" if audio_only else "libx264", rate=48000 if audio_only else fps)
        if audio_only:
            s.layout = "mono"
            chunks = [av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")]
            for k, f in enumerate(chunks * 10):
                f.sample_rate, f.pts = 48000, 1024 * k
        else:
            s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
            chunks = [av.VideoFrame.from_ndarray(np.full((16, 16, 3), 99, np.uint8), "rgb24")]
            chunks *= frames
        for f in [*chunks, None]:
            for p in s.encode(f):
                c.mux(p)
    return buf.getvalue()


GOOD = png_bytes()
VIDEO = mp4_bytes(20, 10)
FRAMES = slice(VIDEO.index(b"mdat") + 4, VIDEO.index(b"moov") - 4)  # the frames' bytes
ZEROED = VIDEO[: FRAMES.start] + bytes(FRAMES.stop - FRAMES.start) + VIDEO[FRAMES.stop :]
# (what, request keyword arguments for client.request, expected status, words in "error")
SERVICE_ROWS: list[tuple[str, dict, int, str]] = [
    ("foreign Host", {"headers": {"host": "evil.example"}}, 400, "--allowed-host evil.example"),
    ("Host with port", {"headers": {"host": "evil.example:8000"}}, 400, "is not served here"),
    ("no file field", {"files": {"upload": ("a.png", GOOD, "image/png")}}, 400, "field 'file'"),
    (
        "two files",
        {"files": [("file", ("a.png", GOOD, "image/png")), ("file", ("b.png", GOOD, "image/png"))]},
        400,
        "send one file per request in field 'file'",
    ),
    ("only a text field", {"files": {"note": (None, "hi")}}, 400, "fields sent: 'note'"),
    ("empty file", {"files": {"file": ("a.png", b"", "image/png")}}, 400, "is empty"),
    (
        "raw body, no form",
        {"content": GOOD, "headers": {"content-type": "image/png"}},
        415,
        "curl -F",
    ),
    ("no body at all", {}, 415, "multipart/form-data"),
    ("text file", {"files": {"file": ("a.txt", b"hello world", "text/plain")}}, 415, "PNG/JPEG"),
    ("PNG named .jpg", {"files": {"file": ("a.jpg", GOOD, "image/jpeg")}}, 415, "declared JPEG"),
    (
        "WAV to an image model",
        {"files": {"file": ("a.wav", b"RIFF\0\0\0\0WAVEfmt ", "audio/wav")}},
        415,
        "WAV",
    ),
    ("truncated PNG", {"files": {"file": ("a.png", GOOD[:60], "image/png")}}, 422, "a.png"),
    (
        "PNG declaring 100000x100000",
        {"files": {"file": ("a.png", png_header_only(100000, 100000), "image/png")}},
        413,
        "pixel limit",
    ),
    (
        "PNG of 4x4 pixels",
        {"files": {"file": ("a.png", png_bytes(4, 4), "image/png")}},
        422,
        "at least 16 px",
    ),
    (
        "over the byte limit",
        {"files": {"file": ("a.png", GOOD + b"\0" * 300_000, "image/png")}},
        413,
        "upload limit",
    ),
    ("text named .mp4", {"files": {"file": ("a.mp4", b"hello " * 9, "video/mp4")}}, 415, "MP4"),
    (
        "audio-only MP4 to an image run",
        {"files": {"file": ("a.mp4", mp4_bytes(0, 0, audio_only=True), "video/mp4")}},
        422,
        "no video stream (audio only): give a video file",
    ),
    (
        "MP4 whose frames do not decode",
        {"files": {"file": ("a.mp4", ZEROED, "video/mp4")}},
        422,
        "corrupt video data",
    ),
    (
        "MP4 cut short",
        {"files": {"file": ("a.mp4", VIDEO[: FRAMES.stop], "video/mp4")}},  # no moov box
        422,
        "not a readable video container",
    ),
    (
        "video longer than 120 s",
        {"files": {"file": ("a.mp4", mp4_bytes(125, 1), "video/mp4")}},
        413,
        "exceeds the limit of 120 s: send a shorter",
    ),
    ("MP4 named .webm", {"files": {"file": ("a.webm", VIDEO, "video/webm")}}, 415, "declared WEBM"),
    (
        "explain=maybe",
        {"params": {"explain": "maybe"}, "files": {"file": ("a.png", GOOD, "image/png")}},
        422,
        "explain",
    ),
]
OTHER_ROUTES = [("GET", "/v1/scan", 405), ("GET", "/nosuch", 404), ("PUT", "/healthz", 405)]


@pytest.fixture(scope="module")
def client(places) -> TestClient:
    return TestClient(create_app(places["run"], max_bytes=200_000), base_url="http://localhost")


@pytest.mark.parametrize(
    ("what", "kw", "status", "words"), SERVICE_ROWS, ids=[r[0] for r in SERVICE_ROWS]
)
def test_bad_upload_gets_a_4xx_with_one_line(client, what, kw, status, words):
    r = client.request("POST", "/v1/scan", **kw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in error, error
    assert client.post("/v1/scan", files={"file": ("ok.png", GOOD, "image/png")}).status_code == 200


@pytest.mark.parametrize(("method", "path", "status"), OTHER_ROUTES)
def test_unknown_routes_name_the_endpoints(client, method, path, status):
    r = client.request(method, path)
    assert r.status_code == status and "POST /v1/scan" in r.json()["error"]


def test_token_guards_every_route_but_the_page(places):
    c = TestClient(create_app(places["run"], token="s3cret"), base_url="http://localhost")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret"}):
        r = c.get("/healthz", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert "Authorization: Bearer TOKEN" in r.json()["error"]
    assert c.get("/healthz", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/").status_code == 200  # the page asks for the token itself


def test_full_decoding_budget_answers_503_with_retry_after(places):
    """A budget smaller than one upload: the second request in flight waits, then gets 503."""
    import asyncio

    app = create_app(places["run"], decode_budget=1600, decode_wait_s=0.2)
    budget = app.state.budget

    async def second_while_first_holds() -> tuple[int, str | None]:
        async with budget.hold(1600):
            import httpx

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                r = await c.post("/v1/scan", files={"file": ("a.png", GOOD, "image/png")})
        return r.status_code, r.headers.get("retry-after")

    status, retry = asyncio.run(second_while_first_holds())
    assert (status, retry) == (503, "2")
    assert budget.in_flight == 0  # released after the refusal and after the holder


# -- Ctrl-C and SIGTERM on a running command ------------------------------------------------------
@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_interrupt_exits_130_or_143_with_one_line(tmp_path, sig, code, name):
    out = tmp_path / "run"
    argv = ["-q", "--threads", "1", "train", "-d", "synthetic-faces:easy", "--data-arg", "n=140",
            "--data-arg", "size=32", "-m", "simplenet", "-e", "500", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [str(SCRIPT), *argv],
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists():  # training has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:  # a failure must not leave 500 epochs running beside the rest of the suite
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert (
        err.strip()
        == f"interrupted ({name}): results written so far are kept; re-run the command to resume"
    )


@pytest.mark.parametrize("host", ["localhost:8000", "LOCALHOST.", "127.0.0.1:1", "[::1]:8000"])
def test_loopback_names_are_served(client, host):
    assert client.get("/healthz", headers={"host": host}).status_code == 200


def test_budget_bounds_pixels_in_flight_under_concurrency(places):
    """12 concurrent 40x40 uploads against a budget of two: all answered 200, never more than
    two images' pixels reserved at once."""
    import asyncio

    import httpx

    app = create_app(places["run"], decode_budget=2 * 40 * 40, decode_wait_s=30.0)

    async def flood() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            send = [
                c.post("/v1/scan", files={"file": (f"{i}.png", GOOD, "image/png")})
                for i in range(12)
            ]
            return [r.status_code for r in await asyncio.gather(*send)]

    assert asyncio.run(flood()) == [200] * 12
    assert app.state.budget.peak == 2 * 40 * 40 and app.state.budget.in_flight == 0


def test_serve_command_wires_hosts_and_token(places, monkeypatch, capsys):
    """`serve --host 0.0.0.0 --allowed-host scanner.lab` with the token from the environment:
    the app it would serve answers that name with the token, and refuses others."""
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("DEEPSHIELD_TOKEN", "s3cret")
    monkeypatch.setattr(
        sys, "argv", ["deepshield", "serve", str(places["run"]), "--host", "0.0.0.0",
                      "--allowed-host", "scanner.lab", "--port", "8123"],
    )  # fmt: skip
    from deepshield.cli import main

    main()  # returns: exit code 0
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8123
    c = TestClient(seen["app"], base_url="http://scanner.lab")
    auth = {"authorization": "Bearer s3cret"}
    assert c.get("/healthz", headers=auth).status_code == 200
    assert c.get("/healthz").status_code == 401
    assert c.get("/healthz", headers={**auth, "host": "evil.example"}).status_code == 400


def test_defend_detector_keeps_seed_zero(places, monkeypatch, tmp_path):
    """--seed 0 over a config file's seed 5 is a seed, not a missing flag (it was dropped)."""
    import deepshield.runs.adversarial_detector as adv

    class Seen(Exception):
        pass

    def capture(cfg, out, force=False):
        raise Seen(cfg.train.seed)

    monkeypatch.setattr(adv, "train_adversarial_detector", capture)
    config = tmp_path / "det.yaml"
    config.write_text(yaml.safe_dump({"protect": str(places["run"]), "train": {"seed": 5}}))
    monkeypatch.setattr(
        sys, "argv", ["deepshield", "defend", "detector", "-c", str(config), "--seed", "0"]
    )
    from deepshield.cli import main

    with pytest.raises(Seen) as e:
        main()
    assert e.value.args == (0,)


def test_dataset_options_are_checked_against_the_loader_signature():
    """Names and kinds from the loader's own signature; a loader taking **kw takes anything."""
    from deepshield.data.registry import Source, check_options
    from deepshield.errors import ConfigError

    def keyword_only(arg, *, seed, n: int = 10, scale: float = 1.0, flag: bool = False): ...
    def positional(arg, seed=0, size=None): ...
    def anything(arg, *, seed, **kw): ...

    src = Source("kw", keyword_only, "test")
    check_options(src, {"n": 3, "scale": 2, "flag": True})
    for bad, words in [
        ({"size": 3}, "no option size; it accepts n=10, scale=1.0, flag=False"),
        ({"n": "abc"}, "n='abc' should be an integer"),
        ({"n": True}, "n=True should be an integer"),
        ({"scale": "x"}, "scale='x' should be a number"),
        ({"flag": 1}, "flag=1 should be true or false"),
        ({"seed": 1}, "no option seed"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            check_options(src, bad)
    check_options(Source("pos", positional, "test"), {"size": [32, 32]})
    with pytest.raises(ConfigError, match="it accepts size=None"):
        check_options(Source("pos", positional, "test"), {"n": 1})
    check_options(Source("any", anything, "test"), {"whatever": object()})


def test_main_gives_back_the_signal_handlers_it_set(monkeypatch, capsys):
    """Run in another program's process (here pytest's), `main` leaves Ctrl-C as it found it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert run_in_process(["nosuch"], monkeypatch, capsys)[0] == 2
    assert {s: signal.getsignal(s) for s in before} == before


def test_help_shows_bracketed_defaults_from_the_installed_script() -> None:
    """Help texts are plain text: "[fgsm]" or "[decision.json's, else 0.5]" in an option's help
    is printed, not taken for markup and dropped (as rich markup did)."""
    for argv, shown in (
        (["serve", "--help"], "[decision.json's, else 0.5]"),
        (["defend", "detector", "--help"], "[fgsm]"),
    ):
        done = subprocess.run(
            [str(SCRIPT), *argv],
            env=script_env() | {"COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert shown in " ".join(done.stdout.split()), done.stdout


def test_an_interrupt_that_lands_in_a_callback_is_not_lost(capsys):
    """CI once sent SIGINT while the import system ran a module-lock weakref callback: Python
    printed 'Exception ignored' and the training went on for its 500 epochs. The interrupt is
    now delivered again once the main thread is out of the callback."""
    import weakref

    from deepshield.cli import Interrupted, _interrupt, _interrupts_raise

    class Thing:
        pass

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job
    with pytest.raises(Interrupted) as caught, _interrupts_raise():
        thing = Thing()
        ref = weakref.ref(thing, lambda _: _interrupt(signal.SIGINT, None))  # noqa: F841
        del thing  # the callback raises where Python can only ignore it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # plain Python code: the re-sent signal lands here
            pass
    assert caught.value.exit_code == 130
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
