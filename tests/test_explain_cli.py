"""`deepshield explain` and deepshield.runs.explain on trained runs: grids, explain_<method>.json,
the report section, and the sanity and localisation checks on a simplenet trained on
synthetic-faces:easy (localized fakes, so each fake's artefact box is known)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deepshield import models
from deepshield.cli import main
from deepshield.config import TrainConfig
from deepshield.errors import ConfigError
from deepshield.explain import grad_cam
from deepshield.run import RunDir
from deepshield.runs.explain import explain_run, method_name, output_tag
from deepshield.runs.training import run_training

FACES = {"n": 640, "size": 48, "localized": True}


def train_run(path: Path, data_kwargs: dict, epochs: int) -> RunDir:
    cfg = TrainConfig(
        dataset="synthetic-faces:easy",
        data_kwargs=data_kwargs,
        model="simplenet",
        lr=2e-3,
        batch_size=32,
        epochs=epochs,
        seed=0,
        device="cpu",
    )
    return run_training(cfg, path)


def untrained_run(path: Path, model: str, dataset: str, data_kwargs: dict) -> RunDir:
    """A run folder holding an untrained `model` (enough to explain; no training needed)."""
    cfg = TrainConfig(dataset=dataset, data_kwargs=data_kwargs, model=model, seed=0)
    run = RunDir.create(path)
    run.write_yaml("config.yaml", cfg.model_dump(mode="json"))
    run.save_model(models.create(model))
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """simplenet trained 3 epochs on 448 localized synthetic-faces:easy images (48 px)."""
    return train_run(tmp_path_factory.mktemp("explain") / "run", FACES, epochs=3)


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:
    """Run `deepshield ARGS` in-process; (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["deepshield", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the command on a trained detector --------------------------------------------------------


def test_explain_gradcam_writes_grids_json_and_report_section(trained, monkeypatch, capsys):
    code, out, err = cli(
        ["explain", str(trained.path), "--method", "gradcam", "--n", "3", "--sanity-samples", "8"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    s = json.loads((trained.path / "explain_gradcam.json").read_text())
    assert s["method"] == "grad_cam" and s["layer"] == "net.features"
    # the same 96 test images, the same predictions as the training run's own evaluation
    test = trained.read_json("metrics.json")["test"]
    assert s["samples"] == 96 and s["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert sum(s["outcomes"].values()) == 96
    assert s["outcomes"]["real-correct"] + s["outcomes"]["real-wrong"] == 48
    for group, count in s["outcomes"].items():
        png = trained.path / f"plots/explain_gradcam_{group}.png"
        assert (group in s["grids"]) == (count > 0) == png.is_file()
        if count:
            assert png.read_bytes()[:4] == b"\x89PNG"
    assert (trained.path / s["class_means"]).is_file()
    assert set(s["class_mean_stats"]) == {"real", "fake"}
    # the printed summary repeats the JSON's numbers
    assert f"sanity Spearman {s['sanity']['spearman_mean']:.3f}" in out
    assert f"ratio mean {s['localization']['ratio_mean']:.2f}" in out
    section = (trained.path / "sections/explain_gradcam.html").read_text()
    assert "Explanations: Grad-CAM on synthetic-faces:easy (test)" in section
    assert all(p in section for p in s["grids"].values())
    report = (trained.path / "report.html").read_text()
    assert "Explanations: Grad-CAM" in report and "Evaluation on" in report
    assert not re.search(r'src="plots/explain_', report)  # every figure inlined


@pytest.fixture(scope="module")
def gradcam(trained: RunDir) -> dict:
    """explain_run's Grad-CAM summary of the trained detector (24 sanity samples, 4 draws)."""
    return explain_run(trained, "grad_cam", n=1, sanity_samples=24, sanity_repeats=4)


def test_sanity_trained_grad_cam_differs_from_randomised_weights(gradcam):
    """Adebayo et al.'s parameter-randomisation test on a real trained detector."""
    s = gradcam["sanity"]
    assert s["samples"] == 24 and len(s["spearman_per_repeat"]) == 4
    assert s["passed"] and s["spearman_mean"] < 0.5  # measured 0.18 (0.47, 0.42, -0.18, -0.05)
    assert s["undefined_pairs"] < 24  # most maps are defined (not all-zero)


def test_localisation_grad_cam_energy_concentrates_in_the_artefact_box(gradcam):
    loc = gradcam["localization"]
    assert loc["samples"] == gradcam["outcomes"]["fake-correct"] >= 30
    # measured: energy in box 0.37 vs box area 0.16, ratio mean 2.34, 98 % of fakes above 1
    assert loc["energy_in_box_mean"] > 1.8 * loc["box_area_share_mean"]
    assert loc["ratio_mean"] > 1.8 and loc["share_above_1"] > 0.75
    assert min(loc["ratios"]) == pytest.approx(loc["ratio_min"], abs=1e-4)


def test_localisation_ratio_is_recomputed_from_the_maps_and_boxes(trained, gradcam):
    """Independent recomputation: Grad-CAM of every correctly detected test fake, box share."""
    from deepshield import data

    ds = data.load("synthetic-faces:easy", seed=0, **FACES).test
    model = trained.load_model()
    x, y = ds.tensors()
    with torch.no_grad():
        hit = (y == 1) & (model(x).argmax(1) == 1)
    maps = grad_cam(model, x[hit], 1).numpy()  # [k, 48, 48]
    ratios = []
    for m, (x0, y0, x1, y1) in zip(maps, ds.meta["boxes"][hit].tolist(), strict=True):
        inside = m[y0:y1, x0:x1].sum() / m.sum()
        ratios.append(inside / ((x1 - x0) * (y1 - y0) / 48**2))
    np.testing.assert_allclose(gradcam["localization"]["ratios"], ratios, rtol=1e-3)


def test_saliency_and_smoothgrad_runs_are_reproducible_and_tagged(trained):
    a = explain_run(trained, "saliency", n=1, max_samples=40, sanity_samples=6, seed=3)
    assert a["samples"] == 40 and a["layer"] is None
    assert a["outcomes"]["real-correct"] + a["outcomes"]["real-wrong"] == 20  # stratified
    assert a["localization"]["ratio_mean"] > 1.2  # input gradients also favour the box
    b = explain_run(trained, "saliency", n=1, max_samples=40, sanity_samples=6, seed=3)
    drop = ("seconds",)
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    sg = explain_run(trained, "smoothgrad", n=1, max_samples=8, sanity_samples=2, sanity_repeats=1)
    assert (trained.path / "explain_smoothgrad.json").is_file()
    assert sg["class_mean_stats"]["fake"]["max"] > 0
    assert "Explanations: SmoothGrad" in (trained.path / "report.html").read_text()


def test_another_dataset_or_its_options_get_their_own_tagged_files(trained, monkeypatch, capsys):
    args = ["explain", str(trained.path), "-d", "synthetic-faces:easy", "--data-arg", "n=40"]
    args += ["--data-arg", "size=48", "--method", "saliency", "--n", "1"]
    code, out, err = cli(args, monkeypatch, capsys)
    assert code == 0, err
    tag = "saliency_synthetic-faces_easy_n-40_size-48"
    s = json.loads((trained.path / f"explain_{tag}.json").read_text())
    assert s["tag"] == tag and s["dataset"] == "synthetic-faces:easy"
    assert s["data_kwargs"] == {"n": 40, "size": 48} and s["samples"] == 6  # 15 % of 40
    assert f"explain_{tag}.json" in out
    # without -d, options update the run's own: the same 96 test images, in the val split
    own = explain_run(trained, "saliency", data_kwargs={"localized": True}, split="val", n=1)
    assert own["tag"] == "saliency_localized-True_val" and own["data_kwargs"] == FACES
    assert own["samples"] == 96 and own["dataset"] == "synthetic-faces:easy"
    assert output_tag("grad_cam") == "gradcam"


# -- speech runs, models without convolutions, bad input --------------------------------------


def test_speech_run_draws_grad_cam_over_the_front_end_spectrogram(tmp_path):
    run = untrained_run(tmp_path / "mel", "mel_cnn", "synthetic-speech", {"n": 20, "length": 8000})
    s = explain_run(run, "gradcam", n=2, sanity_samples=4, sanity_repeats=1)
    assert s["layer"] == "blocks.3" and s["localization"] is None
    assert set(s["class_mean_stats"]) == {"bonafide", "spoof"}
    assert all((run.path / p).is_file() for p in s["grids"].values())
    assert len(s["grids"]) >= 2
    with pytest.raises(ConfigError, match="use --method gradcam"):
        explain_run(run, "saliency")


def test_model_without_convolution_is_told_to_use_saliency(tmp_path, monkeypatch, capsys):
    run = untrained_run(tmp_path / "mlp", "mlp3", "synthetic-faces:easy", {"n": 40, "size": 32})
    code, _, err = cli(["explain", str(run.path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "use --method saliency" in err
    s = explain_run(run, "saliency", n=1, sanity_samples=4, sanity_repeats=1)
    assert s["layer"] is None and s["samples"] == 6


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method", "lime"], "use saliency, gradcam or smoothgrad"),
        (["--split", "dev"], "'dev' is not one of train, val, test"),
        (["--n", "0"], "'--n': Input should be greater than or equal to 1"),
        (["--layer", "net.featurs"], r"unknown layer 'net.featurs'.*net\.features"),
        (["--method", "saliency", "--layer", "net.features"], "gradcam only"),
    ],
)
def test_bad_options_fail_in_one_line(tmp_path, monkeypatch, capsys, args, match):
    run = untrained_run(tmp_path / "r", "simplenet", "synthetic-faces:easy", {"n": 40, "size": 32})
    code, _, err = cli(["explain", str(run.path), *args], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and re.search(match, err), err


def test_missing_run_folder_fails_in_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = cli(["explain", str(tmp_path / "nope")], monkeypatch, capsys)
    assert code == 2 and "no such run folder" in err and err.count("\n") == 1


def test_method_names_accept_the_usual_spellings():
    assert [method_name(m) for m in ("gradcam", "Grad-CAM", "grad_cam")] == ["grad_cam"] * 3
    assert method_name("SmoothGrad") == "smoothgrad"
    with pytest.raises(ConfigError):
        method_name("gradient")


# -- the full-size check (slow) ---------------------------------------------------------------


@pytest.mark.slow
def test_sanity_and_localisation_on_a_minute_trained_detector(tmp_path):
    """simplenet trained ~1 min on 1400 localized 64-px images: the numbers in docs/explain.md."""
    run = train_run(tmp_path / "run", {"n": 2000, "size": 64, "localized": True}, epochs=4)
    g = explain_run(run, "grad_cam", n=4, sanity_samples=32, sanity_repeats=5)
    assert g["accuracy"] > 0.8  # measured 0.863
    assert g["sanity"]["passed"] and g["sanity"]["spearman_mean"] < 0.4
    assert g["localization"]["ratio_mean"] > 2.0
    s = explain_run(run, "saliency", n=4, sanity_samples=32, sanity_repeats=5)
    assert s["sanity"]["passed"] and s["localization"]["ratio_mean"] > 1.5
