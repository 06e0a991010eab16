"""Small sets said out loud: a metric that is None says why, and a threshold fitted on fewer
than 20 samples of a class carries the counts wherever it is used (decision.json, evaluate's
decision entry, the service's /healthz and answers, `serve`'s start line)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from deepshield.metrics import detector_metrics
from deepshield.metrics.decision import MIN_PER_CLASS, few_per_class
from deepshield.runs.decision import Decision, decision_metrics, fit_decision
from deepshield.service import create_app


@pytest.mark.parametrize(
    ("real", "fake", "warned"), [(20, 20, False), (19, 40, True), (40, 3, True), (0, 0, True)]
)
def test_few_per_class_warns_below_twenty_of_either_class(real, fake, warned) -> None:
    said = few_per_class(real, fake)
    assert (said is not None) is warned
    if warned:
        assert f"only {real} real and {fake} fake" in said and str(MIN_PER_CLASS) in said


def test_a_decision_fitted_on_a_small_validation_split_says_so_in_every_output() -> None:
    g = np.random.default_rng(0)
    y = np.r_[np.zeros(6), np.ones(30)]
    s = np.clip(y * 0.6 + g.random(36) * 0.4, 0, 1)
    small = fit_decision(y, s)
    assert small.val_counts == {"n": 36, "fake": 30, "real": 6}
    assert "only 6 real and 30 fake" in small.warning
    again = Decision.from_dict(small.to_dict())
    assert again.warning == small.warning and small.to_dict()["warning"] == small.warning
    assert decision_metrics(y, s, small)["warning"] == small.warning
    y_big = np.r_[np.zeros(25), np.ones(25)]
    big = fit_decision(y_big, np.clip(y_big * 0.6 + g.random(50) * 0.4, 0, 1))
    assert big.warning is None and decision_metrics(y_big, y_big, big)["warning"] is None


def test_detector_metrics_on_one_class_says_why_each_none() -> None:
    m = detector_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["auc"] is None and m["eer"] is None and m["real_flagged_as_fake"] is None
    assert set(m["undefined"]) == {"auc", "eer", "eer_threshold", "real_flagged_as_fake"}
    assert "only fake samples (3)" in m["undefined"]["auc"]
    assert "undefined" not in detector_metrics([0, 1], [0.2, 0.9])


def test_countermeasure_tdcf_on_two_clips_is_none_with_its_reason() -> None:
    import torch

    from deepshield.data.splits import Splits, TensorSet
    from deepshield.runs.countermeasure import countermeasure_metrics

    ds = TensorSet(torch.zeros(2, 8), torch.tensor([0, 1]))
    splits = Splits("toy", ds, ds, ds, ["bonafide", "spoof"], "audio")
    m = countermeasure_metrics(ds, np.array([0.1, 0.9]), splits)
    assert m["min_tdcf"] is None and m["min_tdcf_2019"] is None
    assert (
        "fewer than 3 distinct" in m["undefined"]["min_tdcf"]
        and "2 clips" in m["undefined"]["min_tdcf"]
    )


def test_serving_an_eer_threshold_from_a_two_clip_test_split_warns_with_the_counts(
    tmp_path,
) -> None:
    from fastapi.testclient import TestClient

    from test_service import make_run

    metrics = {"test": {"n_real": 1, "n_fake": 1, "eer": 0.0, "eer_threshold": 0.9999995}}
    run = make_run(tmp_path / "run", metrics=metrics)
    health = TestClient(create_app(run.path, threshold="eer"), base_url="http://localhost")
    info = health.get("/healthz").json()
    assert info["threshold"] == 0.9999995
    assert "only 1 real and 1 fake test samples" in info["threshold_warning"]
    assert create_app(run.path).state.scanner.describe()["threshold_warning"] is None


def test_serve_start_line_shows_the_threshold_unrounded_and_the_warning(
    tmp_path, monkeypatch
) -> None:
    import uvicorn

    from deepshield.cli import app
    from test_service import make_run

    metrics = {"test": {"n_real": 1, "n_fake": 1, "eer": 0.0, "eer_threshold": 0.9999995}}
    run = make_run(tmp_path / "run", metrics=metrics)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = CliRunner().invoke(app, ["serve", str(run.path), "--threshold", "eer"])
    assert result.exit_code == 0, result.output
    assert "threshold 0.9999995" in result.output
    assert "warning: threshold fitted on only 1 real and 1 fake test samples" in result.output
