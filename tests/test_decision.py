"""A run's decision (calibrator + operating threshold on validation): Platt equals scikit-learn's
logistic regression on Platt's targets, the threshold rules hold on the validation scores, the
verdict bands, decision.json round trips, and a run without one is explicitly uncalibrated."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from deepshield.errors import ConfigError, RunError
from deepshield.metrics import eer
from deepshield.run import RunDir
from deepshield.runs.decision import (
    DECISION_FILE,
    Decision,
    calibrate_run,
    fit_decision,
    load_decision,
    run_val_scores,
)
from test_sweep import trained_tiny_run


def _val_like(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels [n] and overconfident P(fake) [n] of a detector that ranks well but is miscalibrated."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    z = rng.normal(np.where(y == 1, 1.0, -1.0), 1.2) * 3
    return y, 1 / (1 + np.exp(-z))


def test_platt_equals_sklearn_logistic_regression_on_platt_targets() -> None:
    y, s = _val_like()
    d = fit_decision(y, s, rule="eer", calibration="platt")
    n1, n0 = int(y.sum()), int((y == 0).sum())
    t = np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))  # Platt's smoothed targets
    # soft targets as two weighted copies of each sample: label 1 weight t, label 0 weight 1 - t
    x2, y2, w2 = np.r_[s, s][:, None], np.r_[np.ones_like(y), np.zeros_like(y)], np.r_[t, 1 - t]
    lr = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(x2, y2, sample_weight=w2)
    grid = np.linspace(0, 1, 101)
    np.testing.assert_allclose(d.calibrate(grid), lr.predict_proba(grid[:, None])[:, 1], atol=1e-6)


@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_eer_rule_flags_the_val_samples_the_raw_eer_threshold_flags(calibration: str) -> None:
    y, s = _val_like()
    d = fit_decision(y, s, rule="eer", calibration=calibration)
    p = d.calibrate(s)
    flagged = p >= d.threshold
    fpr, fnr = flagged[y == 0].mean(), 1 - flagged[y == 1].mean()
    # on the calibrated scores, the threshold sits at their EER point
    assert d.threshold == pytest.approx(eer(y, p)[1])
    if calibration == "platt":  # monotone increasing: the same samples as the raw EER threshold
        raw = s >= eer(y, s)[1]
        np.testing.assert_array_equal(flagged, raw)
    assert abs(fpr - fnr) <= 2 / min((y == 0).sum(), (y == 1).sum()) + 0.05


def test_fpr_rule_keeps_false_alarms_under_the_target_and_catches_the_most() -> None:
    y, s = _val_like(n=1000)
    d = fit_decision(y, s, rule="fpr=0.01")
    p = d.calibrate(s)
    assert (p[y == 0] >= d.threshold).mean() <= 0.01
    lower = p[p < d.threshold].max()  # the next threshold down breaks the target
    assert (p[y == 0] >= lower).mean() > 0.01


def test_cost_rule_and_a_bad_rule() -> None:
    y, s = _val_like()
    assert 0 <= fit_decision(y, s, rule="cost").threshold <= 1
    with pytest.raises(ConfigError, match="operating-point rule"):
        fit_decision(y, s, rule="fpr=2")


def test_verdict_bands_around_the_threshold() -> None:
    d = Decision("eer", 0.6, band=0.1)
    assert [d.verdict(p) for p in (0.7, 0.69, 0.5, 0.49, None)] == [
        "fake",
        "unsure",
        "unsure",
        "real",
        None,
    ]
    never = Decision("fpr=0", float("inf"), band=0.05)
    assert never.verdict(1.0) == "real"


@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_decision_round_trips_through_json(calibration: str) -> None:
    y, s = _val_like()
    d = fit_decision(y, s, rule="eer", calibration=calibration)
    back = Decision.from_dict(json.loads(json.dumps(d.to_dict())))
    np.testing.assert_array_equal(back.calibrate(s), d.calibrate(s))
    assert (back.threshold, back.rule, back.band, back.val_counts) == (
        d.threshold,
        d.rule,
        d.band,
        d.val_counts,
    )
    inf = Decision("fpr=0", float("inf"))
    assert Decision.from_dict(json.loads(json.dumps(inf.to_dict()))).threshold == float("inf")
    with pytest.raises(RunError, match="deepshield calibrate"):
        Decision.from_dict({"rule": "eer"}, "x/decision.json")


def test_calibrate_run_writes_decision_json_fitted_on_val(tmp_path_factory, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_tiny_run(tmp_path_factory).path, run)
    (run / DECISION_FILE).unlink()  # the one `train` wrote
    before = load_decision(run)
    assert not before.calibrated and before.threshold == 0.5 and "calibrate" in before.note
    d = calibrate_run(run, rule="eer", calibration="platt")
    saved = json.loads((run / DECISION_FILE).read_text())
    y, s = run_val_scores(RunDir(run))
    assert saved["val_counts"] == {"n": len(y), "fake": int(y.sum()), "real": int((y == 0).sum())}
    ref = fit_decision(y, s, rule="eer", calibration="platt")
    assert load_decision(run).threshold == pytest.approx(ref.threshold) == d.threshold
    assert load_decision(None).note.startswith("uncalibrated")


# -- train writes it, evaluate reports it --------------------------------------------------------
def test_train_writes_the_decision_calibrate_writes(tmp_path_factory, tmp_path) -> None:
    trained = trained_tiny_run(tmp_path_factory).path
    written = json.loads((trained / DECISION_FILE).read_text())
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    again = calibrate_run(run, rule="eer", calibration="platt").to_dict()
    assert written["calibrated"] and written == json.loads(json.dumps(again))


def _brute_force_point(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    """(FPR, FNR) flagging fake when p >= t, by counting."""
    flagged = p >= t
    return float(flagged[y == 0].mean()), float((~flagged[y == 1]).mean())


def test_evaluation_decision_table_equals_a_brute_force_count(tmp_path_factory) -> None:
    from deepshield import data
    from deepshield.config import TrainConfig, parse_config
    from deepshield.predict import fake_scores, predict_logits

    run = trained_tiny_run(tmp_path_factory)
    table = run.read_json("metrics.json")["test"]["decision"]
    cfg = parse_config(run.read_yaml("config.yaml"), TrainConfig)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPSHIELD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        test = data.load(cfg.dataset, seed=cfg.seed, **cfg.data_kwargs).split("test")
    y = test.y.numpy()
    raw = fake_scores(predict_logits(run.load_model("best"), test)).numpy().astype(np.float64)
    d = load_decision(run.path)
    p = 1 / (1 + np.exp(-(d.calibrator.params["a"] * raw + d.calibrator.params["b"])))
    rows = {r["point"]: r for r in table["operating_points"]}
    assert rows["run"]["threshold"] == d.threshold
    candidates = np.r_[np.unique(p), np.inf]
    counts = np.array([_brute_force_point(y, p, t) for t in candidates])  # [P, 2]
    for name, row in rows.items():
        fpr, fnr = _brute_force_point(y, p, float(row["threshold"]))
        assert (row["fpr"], row["fnr"]) == pytest.approx((fpr, fnr), abs=1e-12), name
    ok = counts[:, 0] <= 0.01  # the fewest fakes passed among thresholds with FPR <= 1 %
    assert rows["fpr=0.01"]["fnr"] == pytest.approx(counts[ok, 1].min())
    gap = np.abs(counts[:, 0] - counts[:, 1]).min()  # EER: FPR and FNR as close as they get
    assert abs(rows["eer"]["fpr"] - rows["eer"]["fnr"]) == pytest.approx(gap)
    assert table["brier_raw"] == pytest.approx(np.mean((raw - y) ** 2))
    assert table["brier_calibrated"] == pytest.approx(np.mean((p - y) ** 2))
    bins = np.clip(np.ceil(p * 15).astype(int) - 1, 0, 14)  # (k/15, (k+1)/15], 0 in the first
    ece = sum(
        abs(y[bins == k].mean() - p[bins == k].mean()) * (bins == k).sum() for k in set(bins)
    ) / len(y)
    assert table["ece_calibrated"] == pytest.approx(ece)
    llr = d.calibrator.params["a"] * raw + d.calibrator.params["b"]  # calibrated log-odds
    llr -= np.log(y_val_fake_share(run) / (1 - y_val_fake_share(run)))  # minus the val prior
    bits = 0.5 * (
        np.log2(1 + np.exp(-llr[y == 1])).mean() + np.log2(1 + np.exp(llr[y == 0])).mean()
    )
    assert table["cllr_calibrated"] == pytest.approx(bits)
    assert 0 <= table["min_cllr"] <= min(table["cllr_calibrated"], table["cllr_raw"]) + 1e-12
    from deepshield.metrics import asvspoof5  # actDCF: the cost where the LLR says "fake"

    miss, fa = (
        np.mean(llr[y == 0] > -asvspoof5.ASVSPOOF5_DCF.bayes_threshold),
        np.mean(llr[y == 1] <= -asvspoof5.ASVSPOOF5_DCF.bayes_threshold),
    )
    assert table["act_dcf_calibrated"] == pytest.approx(
        asvspoof5.ASVSPOOF5_DCF.normalized(miss, fa)
    )
    assert table["min_dcf"] <= table["act_dcf_calibrated"] + 1e-12
    assert run.file("plots/reliability.png").is_file()


def y_val_fake_share(run: RunDir) -> float:
    """Share of fakes in the run's validation split (from decision.json's counts)."""
    counts = run.read_json(DECISION_FILE)["val_counts"]
    return counts["fake"] / counts["n"]


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [("--operating-point", "fpr=2", "fpr=F"), ("--calibration", "beta", "platt, isotonic")],
)
def test_train_refuses_a_bad_decision_flag_before_any_work(tmp_path, flag, value, words) -> None:
    from typer.testing import CliRunner

    from deepshield.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "-d", "synthetic-faces:easy", flag, value, "--out", str(out)]
    )
    assert result.exit_code == 2 and flag in result.output and words in result.output
    assert not out.exists()


def test_the_decision_rule_is_part_of_the_config_and_a_flag_overrides_the_file(
    tmp_path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from deepshield.cli import app
    from test_sweep import TINY

    monkeypatch.setenv("DEEPSHIELD_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "train.yaml"
    cfg.write_text(TINY.model_copy(update={"operating_point": "fpr=0.1"}).model_dump_json())
    from_file, flagged = tmp_path / "file", tmp_path / "flag"
    runner = CliRunner()
    assert runner.invoke(app, ["train", "-c", str(cfg), "--out", str(from_file)]).exit_code == 0
    args = ["train", "-c", str(cfg), "--operating-point", "eer", "--calibration", "isotonic"]
    assert runner.invoke(app, [*args, "--out", str(flagged)]).exit_code == 0
    for run, rule, calibration in ((from_file, "fpr=0.1", "platt"), (flagged, "eer", "isotonic")):
        recorded = RunDir(run).read_yaml("config.yaml")
        assert (recorded["operating_point"], recorded["calibration"]) == (rule, calibration)
        decision = json.loads((run / DECISION_FILE).read_text())
        assert decision["rule"] == rule and decision["calibrator"]["method"] == calibration
