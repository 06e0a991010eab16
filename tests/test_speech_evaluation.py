"""Speech detectors through the standard train / evaluate pipeline: min t-DCF in both forms,
per-attack EER (seen and unseen), ASVspoof score files in the run folder, Grad-CAM on speech
models, and the speech-folder labels.csv / split= options."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import shared_path
from deepshield import data, models
from deepshield.cli import app
from deepshield.config import TrainConfig
from deepshield.data.registry import register_source
from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import ConfigError, DataError
from deepshield.explain import grad_cam
from deepshield.metrics import LegacyCostModel, eer, min_tdcf, read_scores
from deepshield.predict import fake_scores, predict_logits
from deepshield.run import RunDir
from deepshield.runs.training import run_training

TOY_SYSTEMS = ["bonafide", "buzz", "hiss", "clip"]  # clip: an attack only the test split has
RATE = 16000


def _toy_clip(system: int, rng: np.random.Generator, length: int) -> np.ndarray:
    """A two-tone 'voice'; each spoof system leaves its own artefact."""
    t = np.arange(length) / RATE
    f0 = rng.uniform(120, 260)
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.15 * np.sin(2 * np.pi * 2.1 * f0 * t)
    x += 0.01 * rng.standard_normal(length)
    if system == 1:
        x += 0.05 * np.sin(2 * np.pi * 5500 * t)
    elif system == 2:
        x += 0.05 * rng.standard_normal(length)
    elif system == 3:
        x = np.clip(3 * x, -0.35, 0.35)
    return x.astype(np.float32)


def _toy_set(systems: list[int], n_bona: int, rng: np.random.Generator, length: int) -> TensorSet:
    codes = [0] * n_bona + systems
    x = torch.from_numpy(np.stack([_toy_clip(c, rng, length) for c in codes]))
    y = torch.tensor([int(c > 0) for c in codes])
    names = [f"t{i:03d}-{TOY_SYSTEMS[c]}" for i, c in enumerate(codes)]
    return TensorSet(x, y, names, {"system": torch.tensor(codes)})


@register_source("test-toy-speech", description="test only", modality="audio", builtin=True)
def _load_toy(arg: str | None, *, seed: int = 0, length: int = 4000) -> Splits:
    rng = np.random.default_rng(seed)
    return Splits(
        "test-toy-speech",
        train=_toy_set([1, 2] * 16, 32, rng, length),
        val=_toy_set([1, 2] * 6, 12, rng, length),
        test=_toy_set([1, 2, 3] * 6, 18, rng, length),
        classes=["bonafide", "spoof"],
        modality="audio",
        sample_rate=RATE,
        systems=TOY_SYSTEMS,
    )


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    cfg = TrainConfig(
        dataset="test-toy-speech",
        model="mel_cnn",
        model_kwargs={"widths": [4, 8], "n_mels": 32},
        epochs=2,
        batch_size=16,
        lr=3e-3,
        device="cpu",
    )
    return run_training(cfg, tmp_path_factory.mktemp("runs") / "toy")


def test_speech_run_writes_tdcf_equal_to_metrics_on_its_score_file(speech_run):
    m = speech_run.read_json("metrics.json")["test"]
    rows = read_scores(speech_run.file("scores_test.txt"))
    assert m["min_tdcf"] == min_tdcf(rows.labels, rows.scores)[0]
    legacy = min_tdcf(rows.labels, rows.scores, cost_model=LegacyCostModel())[0]
    assert m["min_tdcf_2019"] == legacy
    # the ideal-ASV assumption makes both forms the same function (see train/countermeasure.py)
    assert m["min_tdcf"] == pytest.approx(m["min_tdcf_2019"], abs=1e-12)
    assert "ideal ASV" in m["tdcf_asv"]
    assert m["eer"] == eer(rows.labels, rows.scores)[0]


def test_score_file_round_trips_the_models_test_scores(speech_run):
    splits = data.load("test-toy-speech")
    model = speech_run.load_model("best")
    expected = fake_scores(predict_logits(model, splits.test)).numpy()
    rows = read_scores(speech_run.file("scores_test.txt"))
    assert rows.utt_ids == splits.test.names
    assert rows.labels.tolist() == splits.test.y.tolist()
    codes = splits.test.meta["system"].tolist()
    assert rows.sources == ["-" if c == 0 else TOY_SYSTEMS[c] for c in codes]
    np.testing.assert_array_equal(rows.scores, expected.astype(np.float64))


def test_per_system_eer_marks_the_unseen_attack(speech_run):
    m = speech_run.read_json("metrics.json")["test"]
    rows = read_scores(speech_run.file("scores_test.txt"))
    src = np.asarray(rows.sources)
    bona = src == "-"
    assert set(m["per_system"]) == {"buzz", "hiss", "clip"}
    for name, entry in m["per_system"].items():
        keep = bona | (src == name)
        assert entry["eer"] == eer(rows.labels[keep], rows.scores[keep])[0]
        assert entry["n_spoof"] == 6
        assert entry["seen"] == (name != "clip")
    unseen = bona | (src == "clip")
    assert m["eer_unseen"] == eer(rows.labels[unseen], rows.scores[unseen])[0]
    seen = bona | np.isin(src, ["buzz", "hiss"])
    assert m["eer_seen"] == eer(rows.labels[seen], rows.scores[seen])[0]
    report = speech_run.file("report.html").read_text()
    assert "EER per attack system" in report and "2019 legacy form" in report
    assert speech_run.exists("plots/det.png")


def test_evaluate_cli_scores_another_speech_set_into_its_own_files(speech_run, tmp_path):
    root = tmp_path / "clips"
    rng = np.random.default_rng(5)
    for c, system in (("bonafide", 0), ("spoof", 1)):
        (root / c).mkdir(parents=True)
        for i in range(3):
            sf.write(root / c / f"{c} {i}.wav", _toy_clip(system, rng, 4000), RATE)
    args = ["evaluate", str(speech_run.path), "-d", f"speech-folder:{root}"]
    args += ["--data-arg", "split=test", "--data-arg", "length=4000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    score_files = sorted(speech_run.path.glob("scores_speech-folder*.txt"))
    assert len(score_files) == 1
    rows = read_scores(score_files[0])
    assert len(rows.utt_ids) == 6 and rows.utt_ids[0] == "bonafide_0"  # spaces replaced
    evals = list(speech_run.path.glob("eval_speech-folder*.json"))
    out = speech_run.read_json(evals[0].name)
    assert out["min_tdcf"] == min_tdcf(rows.labels, rows.scores)[0]
    assert "per_system" not in out  # a folder carries no attack systems


def test_image_evaluation_has_no_speech_extras(tmp_path):
    from deepshield.runs.evaluation import write_evaluation

    g = torch.Generator().manual_seed(0)
    ds = TensorSet(torch.rand(20, 3, 8, 8, generator=g), torch.tensor([0, 1] * 10))
    splits = Splits("img", ds, ds, ds)
    run = RunDir.create(tmp_path / "img")
    out = write_evaluation(run, models.create("simplenet", widths=(4,)), splits)
    assert "min_tdcf" not in out and not list(run.path.glob("scores*.txt"))


# -- explanations on speech models ---------------------------------------------------------------
def test_grad_cam_on_mel_cnn_is_sized_to_its_log_mel_map():
    torch.manual_seed(0)
    model = models.create("mel_cnn")
    x = 0.1 * torch.randn(2, 6000).clamp(-1, 1)
    with torch.no_grad():
        size = model.frontend(x).shape[1:]  # [n_mels, frames]
    cams = [grad_cam(model, x, target=t) for t in (0, 1)]
    for cam in cams:
        assert cam.shape == (2, *size) and cam.min() >= 0 and cam.max() <= 1
    # some class has positive evidence in each sample (a map of no evidence stays all zero)
    peak = torch.stack([c.flatten(1).amax(1) for c in cams])  # [2 targets, B]
    assert (peak.amax(0) == 1).all()


def test_grad_cam_on_official_aasist_l_is_a_sub_band_by_time_map():
    weights = shared_path("data", "pretrained_aasist", "AASIST-L.pth")
    protocol = shared_path("data", "asvspoof2019_la_eval_samples", "protocol.txt")
    model = models.load_weights(models.create("aasist_l"), weights).eval()
    clips = data.load(f"asvspoof:{protocol}", split="test", length=16000).test
    x = clips.x[[0, 5]]  # one spoof, one bona fide (protocol order)
    assert clips.y[[0, 5]].tolist() == [1, 0]
    cam = grad_cam(model, x, target=None)
    with torch.no_grad():  # the pooled |sinc| front-end map: [1, 23 sub-bands, frames]
        sinc = model.sinc(x.unsqueeze(1))
        size = torch.nn.functional.max_pool2d(sinc.abs().unsqueeze(1), 3).shape[2:]
    assert cam.shape == (2, *size) and size[0] == 23
    assert cam.min() >= 0 and (cam.flatten(1).amax(1) == 1).all()


# -- speech-folder options -----------------------------------------------------------------------
def test_speech_folder_labels_csv_and_single_split(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    lines = ["path,label,extra"]
    for i in range(6):
        sf.write(tmp_path / "a" / f"c{i}.wav", 0.1 * rng.standard_normal(1600), 8000)
        lines.append(f"a/c{i}.wav,{i % 2},x")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    s = data.load(f"speech-folder:{tmp_path}", labels="labels.csv", split="test", length=4000)
    assert s.counts()["test"] == {"bonafide": 3, "spoof": 3, "total": 6}
    assert s.test.names == [f"c{i}" for i in range(6)] and s.test.y.tolist() == [0, 1] * 3
    assert s.counts()["train"]["total"] == 0
    split = data.load(f"speech-folder:{tmp_path}", labels="labels.csv", seed=1, length=4000)
    assert sum(split.counts()[p]["total"] for p in ("train", "val", "test")) == 6
    (tmp_path / "bad.csv").write_text("path,label\na/c0.wav,maybe\n")
    with pytest.raises(DataError, match=r"bad\.csv line 2: label 'maybe' is not 0/real/bonafide"):
        data.load(f"speech-folder:{tmp_path}", labels="bad.csv")
    with pytest.raises(ConfigError, match="split='all'"):
        data.load(f"speech-folder:{tmp_path}", labels="labels.csv", split="all")
    # saved from Excel as "CSV UTF-8" (a byte-order mark, CRLF): read as the plain file
    excel = "\ufeff" + "\r\n".join(lines) + "\r\n"
    (tmp_path / "excel.csv").write_text(excel, newline="")
    s = data.load(f"speech-folder:{tmp_path}", labels="excel.csv", split="test", length=4000)
    assert s.test.names == [f"c{i}" for i in range(6)] and s.test.y.tolist() == [0, 1] * 3
    # European Excel (';') with words for labels: the labels CSV reader of every folder source
    words = ["path;label"] + [f"a/c{i}.wav;{('bonafide', 'spoof')[i % 2]}" for i in range(6)]
    (tmp_path / "words.csv").write_text("\n".join(words) + "\n")
    s = data.load(f"speech-folder:{tmp_path}", labels="words.csv", split="test", length=4000)
    assert s.test.y.tolist() == [0, 1] * 3
    (tmp_path / "gone.csv").write_text("path,label\na/c0.wav,0\na/none.wav,1\n")
    with pytest.raises(DataError, match=r"gone\.csv line 3: clip 'a/none\.wav' not found"):
        data.load(f"speech-folder:{tmp_path}", labels="gone.csv")


def test_speech_folder_reads_the_wavefake_labels_csv():
    root = shared_path("data", "speech_wavefake_ljspeech")
    s = data.load(f"speech-folder:{root}", labels="labels.csv", split="test", length=16000)
    assert s.counts()["test"] == {"bonafide": 6, "spoof": 5, "total": 11}
    assert "LJ007-0169" in s.test.names  # special/ is listed in labels.csv


@pytest.mark.slow
def test_demo_speech_step_writes_its_report_section(tmp_path):
    from deepshield.demo import DemoContext, speech_detector

    ctx = DemoContext(out=tmp_path / "demo")
    speech_detector(ctx)
    section = (tmp_path / "demo" / "sections" / "speech.html").read_text()
    m = RunDir.open(tmp_path / "demo" / "speech").read_json("metrics.json")["test"]
    assert f"{m['min_tdcf']:.4f}" in section and "sinusoidal" in section
    assert (tmp_path / "demo" / "plots" / "speech_det.png").is_file()
    assert "EER" in ctx.lines[-1]


def test_train_a_siamese_speech_detector_from_its_name_alone(tmp_path):
    args = ["train", "-d", "test-toy-speech", "-m", "siamese:mel_cnn", "-e", "1", "-b", "8"]
    args += [
        "--model-arg",
        "embed_dim=8",
        "--model-arg",
        "n_mels=32",
        "--model-arg",
        "widths=[4,8]",
    ]
    args += ["--device", "cpu"]
    args += ["--out", str(tmp_path / "sia")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunDir.open(tmp_path / "sia")
    assert "contrastive (margin 1)" in (run.path / "sections" / "training.html").read_text()
    model = run.load_model("best")
    assert type(model).__name__ == "Siamese" and model.num_features == 8
    assert run.read_json("metrics.json")["test"]["min_tdcf"] is not None
