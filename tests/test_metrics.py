"""deepshield.metrics against scikit-learn, the official ASVspoof reference values, closed-form
cases and invariances; clear errors on bad input; ASVspoof score files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from conftest import shared_path
from deepshield.errors import ConfigError, DataError, InputError
from deepshield.metrics import (
    AsvErrorRates,
    CostModel,
    LegacyCostModel,
    accuracy,
    asv_error_rates,
    auc,
    confusion,
    det,
    detector_metrics,
    eer,
    min_tdcf,
    read_scores,
    roc,
    write_scores,
)
from deepshield.metrics.eer import asvspoof_det_curve

# -- random labelled scores (both classes present), with and without ties ------------------------

GRID = [k / 8 for k in range(-40, 41)]  # dyadic values: exact under 2x+1 and x**3, many ties


@st.composite
def labelled_scores(draw, values=None):
    extra = draw(st.lists(st.integers(0, 1), max_size=38))
    y = draw(st.permutations([0, 1, *extra]))  # tiny sets (n=2) included
    if values is None:
        values = st.one_of(
            st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),  # ties
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        )
    s = draw(st.lists(values, min_size=len(y), max_size=len(y)))
    return np.array(y), np.array(s)


@settings(deadline=None, max_examples=150)
@given(labelled_scores())
def test_roc_det_auc_equal_sklearn(data):
    y, s = data
    for ours, ref in ((roc(y, s), sk.roc_curve(y, s)), (det(y, s), sk.det_curve(y, s))):
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b)
    assert auc(y, s) == sk.roc_auc_score(y, s)


@settings(deadline=None, max_examples=150)
@given(labelled_scores())
def test_auc_is_mann_whitney_probability(data):
    y, s = data
    fake, real = s[y == 1][:, None], s[y == 0][None, :]
    pairs = np.mean((fake > real) + 0.5 * (fake == real))  # P(fake scores above real), ties 1/2
    assert abs(auc(y, s) - pairs) <= 1e-12


def test_roc_matches_sklearn_default_drop_intermediate():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    fpr, _, _ = roc(y, s)
    assert len(fpr) == len(sk.roc_curve(y, s, drop_intermediate=True)[0])
    assert len(fpr) < len(sk.roc_curve(y, s, drop_intermediate=False)[0])


# -- EER: hand-computed cases ------------------------------------------------------------------


def test_eer_hand_computed_crossing():
    # real: 0.1 0.35 0.6   fake: 0.3 0.7 0.9; flag fake when score >= t; FRR = reals flagged / 3,
    # FAR = fakes passed / 3. Thresholds at every score, descending, plus max + 0.001 (flag none):
    #   t=0.901: FRR 0,   FAR 1     |d| 1
    #   t=0.9:   FRR 0,   FAR 2/3   |d| 2/3
    #   t=0.7:   FRR 0,   FAR 1/3   |d| 1/3
    #   t=0.6:   FRR 1/3, FAR 1/3   |d| 0    <- EER = (1/3 + 1/3) / 2 = 1/3 at t = 0.6
    #   t=0.35:  FRR 2/3, FAR 1/3;  t=0.3: FRR 2/3, FAR 0;  t=0.1: FRR 1, FAR 0
    rate, thr = eer([0, 0, 0, 1, 1, 1], [0.1, 0.35, 0.6, 0.3, 0.7, 0.9])
    assert rate == pytest.approx(1 / 3, abs=1e-15)
    assert thr == 0.6


def test_eer_hand_computed_mean_of_frr_far():
    # real: 0.2 0.4   fake: 0.3 0.5 0.8 (N_real 2, N_fake 3)
    #   t=0.801: FRR 0,   FAR 1    |d| 1
    #   t=0.8:   FRR 0,   FAR 2/3  |d| 2/3
    #   t=0.5:   FRR 0,   FAR 1/3  |d| 1/3
    #   t=0.4:   FRR 1/2, FAR 1/3  |d| 1/6  <- smallest: EER = (1/2 + 1/3) / 2 = 5/12 at t = 0.4
    #   t=0.3:   FRR 1/2, FAR 0    |d| 1/2;  t=0.2: FRR 1, FAR 0
    rate, thr = eer([0, 0, 1, 1, 1], [0.2, 0.4, 0.3, 0.5, 0.8])
    assert rate == pytest.approx(5 / 12, abs=1e-15)
    assert thr == 0.4


def test_eer_hand_computed_ties_flag_reals_first():
    # real: 0.5 0.2   fake: 0.5 0.9. Official tie rule (ASVspoof orientation: targets sorted first
    # among equal scores) = here the real at 0.5 is flagged before the fake at 0.5:
    #   t=0.901: FRR 0,   FAR 1    |d| 1
    #   t=0.9:   FRR 0,   FAR 1/2  |d| 1/2
    #   t=0.5:   FRR 1/2, FAR 1/2  |d| 0   <- EER 1/2 at t = 0.5
    #   t=0.5:   FRR 1/2, FAR 0;   t=0.2: FRR 1, FAR 0
    # (flagging the fake first would give FRR 0, FAR 0 and an optimistic EER of 0)
    rate, thr = eer([0, 0, 1, 1], [0.5, 0.2, 0.5, 0.9])
    assert rate == 0.5
    assert thr == 0.5


def test_eer_inverted_and_perfect_detectors():
    # real 0.6 0.7, fake 0.1 0.2 (inverted): t=0.701: FRR 0, FAR 1; t=0.7: FRR 1/2, FAR 1;
    # t=0.6: FRR 1, FAR 1 (|d| 0) <- EER 1 at t = 0.6
    assert eer([0, 0, 1, 1], [0.6, 0.7, 0.1, 0.2]) == (1.0, 0.6)
    # fake 0.6 0.7, real 0.1 0.2 (perfect): t=0.7: FRR 0, FAR 1/2; t=0.6: FRR 0, FAR 0 <- EER 0
    assert eer([1, 1, 0, 0], [0.6, 0.7, 0.1, 0.2]) == (0.0, 0.6)


# -- EER and min t-DCF: the official ASVspoof reference values ---------------------------------

CASES = ["separable-ish", "overlapping", "imbalanced-small", "ties-rounded", "near-perfect"]


@pytest.fixture(scope="module")
def reference():
    return json.loads(shared_path("reference", "metrics", "asvspoof_cases.json").read_text())


def _case(reference, name):
    case = next(c for c in reference["cases"] if c["name"] == name)
    bona, spoof = np.array(case["cm_bonafide_scores"]), np.array(case["cm_spoof_scores"])
    y = np.r_[np.zeros(bona.size, int), np.ones(spoof.size, int)]
    s = -np.r_[bona, spoof]  # ASVspoof CM scores grow with bona fide; deepshield's with spoof
    asv = {k: case[f"asv_{k}_scores"] for k in ("target", "nontarget", "spoof")}
    return y, s, asv, case["expected"]


def test_reference_cases_are_all_covered(reference):
    assert [c["name"] for c in reference["cases"]] == CASES


@pytest.mark.parametrize("name", CASES)
def test_eer_reproduces_official(reference, name):
    y, s, _, expected = _case(reference, name)
    rate, thr = eer(y, s)
    assert rate == pytest.approx(expected["eer"], abs=1e-9)
    assert -thr == pytest.approx(expected["eer_threshold"], abs=1e-9)


@pytest.mark.parametrize("name", CASES)
def test_asv_error_rates_reproduce_official(reference, name):
    _, _, asv, expected = _case(reference, name)
    rates, thr = asv_error_rates(asv["target"], asv["nontarget"], asv["spoof"])
    assert thr == pytest.approx(expected["asv_eer_threshold"], abs=1e-9)
    for k in ("Pfa_asv", "Pmiss_asv", "Pmiss_spoof_asv", "Pfa_spoof_asv"):
        assert getattr(rates, k) == pytest.approx(expected[k], abs=1e-9), k


@pytest.mark.parametrize("name", CASES)
def test_min_tdcf_reproduces_official_both_forms(reference, name):
    y, s, asv, expected = _case(reference, name)
    stated = {k: expected[k] for k in ("Pfa_asv", "Pmiss_asv", "Pmiss_spoof_asv")}
    forms = (
        (CostModel(**reference["cost_model_2021"]), expected["min_tdcf_2021"]),
        (LegacyCostModel(**reference["cost_model_2019_legacy"]), expected["min_tdcf_2019_legacy"]),
    )
    for model, want in forms:
        assert min_tdcf(y, s, asv=asv, cost_model=model)[0] == pytest.approx(want, abs=1e-9)
        assert min_tdcf(y, s, asv=stated, cost_model=model)[0] == pytest.approx(want, abs=1e-9)
    assert CostModel() == CostModel(**reference["cost_model_2021"])
    assert LegacyCostModel() == LegacyCostModel(**reference["cost_model_2019_legacy"])


def test_min_tdcf_threshold_gives_the_minimum(reference):
    # continuous scores (no ties): the returned threshold, applied as "spoof when s >= t",
    # reproduces the minimum through the closed-form 2021 t-DCF
    y, s, _, e = _case(reference, "separable-ish")
    value, thr = min_tdcf(y, s, asv={k: e[k] for k in ("Pfa_asv", "Pmiss_asv", "Pmiss_spoof_asv")})
    pmiss_cm, pfa_cm = np.mean(s[y == 0] >= thr), np.mean(s[y == 1] < thr)
    c0 = 0.9405 * e["Pmiss_asv"] + 0.0095 * 10 * e["Pfa_asv"]
    c1, c2 = 0.9405 - c0, 0.05 * 10 * (1 - e["Pmiss_spoof_asv"])
    assert value == pytest.approx((c0 + c1 * pmiss_cm + c2 * pfa_cm) / (c0 + min(c1, c2)), 1e-12)


def test_min_tdcf_default_asv_and_stated_rates_closed_form():
    # scores of test_eer_hand_computed_crossing: operating points (Pmiss_cm, Pfa_cm) from t=0.901
    # down: (0,1) (0,2/3) (0,1/3) (1/3,1/3) (2/3,1/3) (2/3,0) (1,0)
    y, s = [0, 0, 0, 1, 1, 1], [0.1, 0.35, 0.6, 0.3, 0.7, 0.9]
    # default ASV (Pfa=Pmiss=Pmiss_spoof=0): C0 0, C1 = 0.9405, C2 = 0.5 in both forms;
    # t-DCF = (0.9405 Pmiss + 0.5 Pfa) / 0.5 -> minimum 1/3 at (0, 1/3), t = 0.7
    for model in (CostModel(), LegacyCostModel()):
        value, thr = min_tdcf(y, s, cost_model=model)
        assert value == pytest.approx(1 / 3, abs=1e-12)
        assert thr == 0.7
    # stated rates Pfa_asv 0.1, Pmiss_asv 0.2, Pmiss_spoof_asv 0.5:
    # 2021: C0 = 0.9405*0.2 + 0.0095*10*0.1, C1 = 0.9405 - C0, C2 = 0.05*10*0.5; min at (0, 1/3)
    rates = {"Pfa_asv": 0.1, "Pmiss_asv": 0.2, "Pmiss_spoof_asv": 0.5}
    c0 = 0.9405 * 0.2 + 0.0095 * 10 * 0.1
    c1, c2 = 0.9405 - c0, 0.25
    assert min_tdcf(y, s, asv=rates)[0] == pytest.approx((c0 + c2 / 3) / (c0 + min(c1, c2)), 1e-12)
    # 2019: C1 = 0.9405*(1 - 0.2) - 0.0095*10*0.1 = 0.7429, C2 = 10*0.05*0.5 = 0.25 -> (C2/3)/C2
    assert min_tdcf(y, s, asv=rates, cost_model=LegacyCostModel())[0] == pytest.approx(1 / 3)
    assert min_tdcf(y, s, asv=AsvErrorRates(**rates))[0] == min_tdcf(y, s, asv=rates)[0]


# -- invariances -------------------------------------------------------------------------------

MONOTONE = {
    "affine": lambda x: 2 * x + 1,
    "cube": lambda x: x**3,
    "exp": np.exp,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


@settings(deadline=None, max_examples=60)
@given(labelled_scores(st.sampled_from(GRID)), st.sampled_from(sorted(MONOTONE)))
def test_eer_invariant_to_monotone_transforms(data, name):
    y, s = data
    f = MONOTONE[name]
    rate, thr = eer(y, s)
    rate_f, thr_f = eer(y, f(s))
    assert rate_f == rate
    # the threshold is a score (never the flag-none point 0: one step from it always lowers
    # |FRR - FAR|), and moves with the scores
    assert thr_f == f(s)[s == thr][0]


@settings(deadline=None, max_examples=100)
@given(labelled_scores(), st.randoms(use_true_random=False))
def test_eer_invariant_to_trial_order(data, rnd):
    y, s = data
    p = np.array(rnd.sample(range(len(y)), len(y)))
    assert eer(y[p], s[p]) == eer(y, s)


@settings(deadline=None, max_examples=150)
@given(labelled_scores())
def test_swapping_labels_and_negating_scores_mirrors_operating_points(data):
    y, s = data
    frr, far, _ = asvspoof_det_curve(-s[y == 0], -s[y == 1])  # what eer(y, s) scans
    frr_sw, far_sw, _ = asvspoof_det_curve(s[y == 1], s[y == 0])  # what eer(1 - y, -s) scans
    np.testing.assert_array_equal(frr_sw, far[::-1])
    np.testing.assert_array_equal(far_sw, frr[::-1])
    diff = np.abs(frr - far)
    if np.sum(diff == diff.min()) == 1:  # unique best point: the same EER either way
        assert eer(1 - y, -s)[0] == eer(y, s)[0]


# -- detector_metrics, accuracy, confusion -----------------------------------------------------


def test_detector_metrics_hand_computed():
    y, s = [0, 0, 0, 1, 1, 1], [0.1, 0.35, 0.6, 0.3, 0.7, 0.9]
    m = detector_metrics(y, s, threshold=0.5)
    # called fake (s >= 0.5): reals 0.6 (wrong); fakes 0.7 0.9 (right), 0.3 passed as real
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["fake_passed_as_real"] == pytest.approx(1 / 3)
    assert m["real_flagged_as_fake"] == pytest.approx(1 / 3)
    # AUC: fake 0.3 beats 1 real, 0.7 and 0.9 beat 3 each -> 7/9
    assert m["auc"] == pytest.approx(7 / 9)
    assert (m["eer"], m["eer_threshold"]) == eer(y, s)
    assert (m["n"], m["n_real"], m["n_fake"], m["threshold"]) == (6, 3, 3, 0.5)
    json.dumps(m)  # JSON-ready


def test_detector_metrics_one_class_keeps_rates_drops_auc():
    m = detector_metrics([1, 1, 1, 1], [0.2, 0.6, 0.7, 0.4])
    assert m["fake_passed_as_real"] == 0.5
    assert m["accuracy"] == 0.5
    assert m["real_flagged_as_fake"] is m["auc"] is m["eer"] is m["eer_threshold"] is None


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_accuracy_and_confusion_match_sklearn(pairs):
    y, p = np.array(pairs).T
    assert accuracy(y, p) == sk.accuracy_score(y, p)
    np.testing.assert_array_equal(confusion(y, p, 4), sk.confusion_matrix(y, p, labels=range(4)))


def test_inputs_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    y, s = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    x = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    assert eer(torch.tensor(y), x) == eer(y, s)
    assert confusion(torch.tensor(y), torch.tensor([0, 1, 1, 1])).tolist() == [[1, 1], [0, 2]]


# -- bad input ---------------------------------------------------------------------------------

BAD = {
    "single class": ([0, 0, 0], [0.1, 0.2, 0.3], "both real and fake"),
    "nan score": ([0, 1, 1], [0.1, float("nan"), 0.3], "NaN"),
    "inf score": ([0, 1, 1], [0.1, float("inf"), 0.3], "NaN/inf"),
    "length mismatch": ([0, 1, 1], [0.1, 0.2], "3 samples but scores has 2"),
    "label 2": ([0, 1, 2], [0.1, 0.2, 0.3], "must be 0 .real. or 1 .fake."),
    "fractional label": ([0, 0.5, 1], [0.1, 0.2, 0.3], "non-integer"),
    "empty": ([], [], "empty"),
    "2-D": ([[0, 1]], [[0.1, 0.2]], "1-D"),
}


@pytest.mark.parametrize("fn", [roc, det, auc, eer, min_tdcf], ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_input_error(fn, case):
    y, s, message = BAD[case]
    with pytest.raises(InputError, match=message):
        fn(y, s)


def test_bad_tdcf_arguments():
    y, s = [0, 0, 1, 1], [0.1, 0.2, 0.7, 0.8]
    with pytest.raises(InputError, match="soft scores"):
        min_tdcf(y, [0, 0, 1, 1])
    with pytest.raises(InputError, match="neither ASV scores"):
        min_tdcf(y, s, asv={"Pfa_asv": 0.1})
    with pytest.raises(InputError, match="outside"):
        min_tdcf(y, s, asv={"Pfa_asv": 10, "Pmiss_asv": 0.1, "Pmiss_spoof_asv": 0.1})
    with pytest.raises(InputError, match="normaliser is 0"):  # ASV rejects every spoof
        min_tdcf(y, s, asv={"Pfa_asv": 0, "Pmiss_asv": 0, "Pmiss_spoof_asv": 1})
    with pytest.raises(InputError, match="CostModel or LegacyCostModel"):
        min_tdcf(y, s, cost_model={"Cmiss": 1})
    with pytest.raises(ConfigError, match="sum to 1"):
        CostModel(Ptar=0.5)
    with pytest.raises(ConfigError, match=">= 0"):
        LegacyCostModel(Cfa_cm=-1)


def test_confusion_label_out_of_range():
    with pytest.raises(InputError, match="num_classes=2"):
        confusion([0, 1, 2], [0, 1, 1])


# -- ASVspoof score files ----------------------------------------------------------------------


def test_score_file_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(size=50), 0.0, -0.0, 1e-300, 1 - 1e-16, 3.5e12]
    keys = ["spoof" if i % 3 else "bonafide" for i in range(s.size)]
    ids = [f"LA_E_{i:07d}" for i in range(s.size)]
    src = ["-" if k == "bonafide" else "A07" for k in keys]
    path = write_scores(tmp_path / "scores.txt", ids, src, keys, s)
    rows = read_scores(path)
    np.testing.assert_array_equal(rows.scores, s)
    assert (rows.utt_ids, rows.sources, rows.keys) == (ids, src, keys)
    np.testing.assert_array_equal(rows.labels, [k == "spoof" for k in keys])


def test_score_file_holds_asvspoof_orientation(tmp_path):
    path = write_scores(tmp_path / "s.txt", ["u1", "u2"], None, [0, 1], [0.25, 0.9])
    assert path.read_text().splitlines() == ["u1 - bonafide -0.25", "u2 - spoof -0.9"]
    rows = read_scores(path)
    assert eer(rows.labels, rows.scores) == eer([0, 1], [0.25, 0.9])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("u1 - bonafide 0.1\nu2 A01 spoof\n", 2, "3 fields"),
        ("u1 - bonafide 0.1\n\nu2 A01 fake 0.3\n", 3, "key 'fake'"),
        ("u1 - bonafide abc\n", 1, "not a finite number"),
        ("u1 - bonafide 0.1\nu2 - spoof nan\n", 2, "not a finite number"),
    ],
)
def test_bad_score_file_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}:{line}: .*{message}"):
        read_scores(path)


def test_empty_or_missing_score_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no trials"):
        read_scores(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="cannot read"):
        read_scores(tmp_path / "absent.txt")


def test_write_scores_rejects_bad_rows(tmp_path):
    with pytest.raises(InputError, match="whitespace"):
        write_scores(tmp_path / "s.txt", ["u 1"], None, ["spoof"], [0.1])
    with pytest.raises(InputError, match="key 'fake'"):
        write_scores(tmp_path / "s.txt", ["u1"], None, ["fake"], [0.1])
    with pytest.raises(InputError, match="keys has 1 entries but scores has 2"):
        write_scores(tmp_path / "s.txt", ["u1", "u2"], None, ["spoof"], [0.1, 0.2])
    assert not (tmp_path / "s.txt").exists()
