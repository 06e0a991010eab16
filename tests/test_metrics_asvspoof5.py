"""ASVspoof 5 metrics against the official evaluation package's outputs on the shared fixtures
(../shared/reference/metrics/asvspoof5, README there), and the t-EER search against an
exhaustive search written from the definition."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import shared_path
from deepshield.errors import InputError
from deepshield.metrics import asvspoof5 as a5
from deepshield.metrics import min_cllr
from deepshield.metrics.eer import asvspoof_det_curve

TOL = 1e-12
T1 = ["a_gaussian", "b_calibrated_llr", "c_miscalibrated", "d_ties", "e_small_imbalanced",
      "f_near_perfect"]  # fmt: skip
T2 = ["t2a_gaussian_sum", "t2b_ties_min", "t2c_small"]


def _fixture(name: str) -> tuple[dict, list[dict[str, str]]]:
    folder = shared_path("reference", "metrics", "asvspoof5")
    ref = json.loads((folder / f"{name}.json").read_text())
    with open(folder / ref["csv"], newline="") as f:
        return ref, list(csv.DictReader(f))


def _track1(case: str) -> tuple[dict, np.ndarray, np.ndarray]:
    ref, rows = _fixture(f"t1_{case}")
    keys = np.array([r["key"] for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    return ref, scores[keys == "bonafide"], scores[keys == "spoof"]


@pytest.mark.parametrize("case", T1)
def test_track1_equals_official(case: str) -> None:
    ref, bona, spoof = _track1(case)
    r = ref["results"]
    e, m, act = a5.eer(bona, spoof), a5.min_dcf(bona, spoof), a5.act_dcf(bona, spoof)
    assert abs(e.value - r["compute_eer"]["eer"]) <= TOL
    assert e.threshold == r["compute_eer"]["eer_threshold"]
    assert abs(m.value - r["compute_mindcf"]["min_dcf"]) <= TOL
    assert m.threshold == r["compute_mindcf"]["min_dcf_threshold"]
    assert abs(act.value - r["compute_actDCF"]["act_dcf"]) <= TOL
    assert act.threshold == r["compute_actDCF"]["threshold"]
    assert abs(a5.cllr(bona, spoof) - r["calculate_CLLR"]["cllr"]) <= TOL
    wrapper = r["calculate_minDCF_EER_CLLR_actDCF"]
    assert abs(m.value - wrapper["minDCF"]) <= TOL and abs(e.value - wrapper["eer"]) <= TOL


@pytest.mark.parametrize("case", T1)
def test_min_cllr_equals_pav_reference(case: str) -> None:
    ref, bona, spoof = _track1(case)
    y = np.r_[np.zeros(bona.size), np.ones(spoof.size)]  # deepshield: 1 = spoof, scores grow
    got = min_cllr(y, -np.r_[bona, spoof])  # with spoof, so the ASVspoof scores are negated
    assert abs(got - ref["non_official_reference"]["min_cllr_pav"]) <= TOL
    assert got <= a5.cllr(bona, spoof) + TOL  # recalibration can only lower Cllr


def _track2(case: str) -> tuple[dict, dict[str, tuple[np.ndarray, ...]]]:
    ref, rows = _fixture(f"t2_{case}")
    keys = np.array([r["key"] for r in rows])
    cols = {
        c: np.array([float(r[c]) for r in rows]) for c in ("cm_score", "asv_score", "sasv_score")
    }
    by = {c: tuple(v[keys == k] for k in ("target", "nontarget", "spoof")) for c, v in cols.items()}
    return ref, by


@pytest.mark.parametrize("case", T2)
def test_track2_equals_official(case: str) -> None:
    ref, by = _track2(case)
    r = ref["results"]
    adcf = a5.a_dcf(*by["sasv_score"])
    assert abs(adcf.value - r["a_dcf_asvspoof5_costs"]["min_a_dcf"]) <= TOL
    assert adcf.threshold == r["a_dcf_asvspoof5_costs"]["min_a_dcf_thresh"]
    paper = a5.a_dcf(*by["sasv_score"], costs=a5.ADCF_PAPER)
    assert abs(paper.value - r["a_dcf_default_costmodel"]["min_a_dcf"]) <= TOL
    tar, non, spf = by["cm_score"]
    tdcf = a5.min_tdcf(np.r_[tar, non], spf)
    assert abs(tdcf.value - r["compute_tDCF_hardcoded_asv"]["min_tDCF"]) <= TOL
    assert tdcf.threshold == r["compute_tDCF_hardcoded_asv"]["argmin_cm_threshold"]
    teer = a5.t_eer(by["cm_score"], by["asv_score"])
    assert abs(100 * teer - r["calculate_aDCF_tdcf_tEER"]["t_eer_percent"]) <= 1e-10


def _teer_exhaustive(cm: tuple, asv: tuple) -> float | None:
    """The t-EER definition, searched over every (ASV point, CM point) pair with plain loops."""
    a, b, c, _ = a5.three_class_curve(*asv)
    pm, pf, _ = asvspoof_det_curve(np.r_[cm[0], cm[1]], cm[2])
    best, out = np.inf, None
    for j in range(a.size):
        gap = np.abs(pm + (1 - pm) * a[j] - (0.5 * (1 - pm) * b[j] + 0.5 * pf * c[j]))
        i = int(np.argmin(gap))
        if not a[j] < 0.5 * b[j] + 0.5 * c[j]:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            crit = abs(b[j] / c[j] - pf[i] / (1 - pm[i]))
        if crit < best:
            best, out = crit, float(c[j] * pf[i])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_t_eer_bisection_equals_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = rng.integers(5, 60, size=3)
    decimals = 0 if seed % 2 else 6  # odd seeds: heavy ties
    cm = tuple(
        np.round(rng.normal(mu, 1.0, k), decimals) for mu, k in zip((2, 2, -1), n, strict=True)
    )
    asv = tuple(
        np.round(rng.normal(mu, 1.5, k), decimals) for mu, k in zip((3, -2, 1), n, strict=True)
    )
    assert a5.t_eer(cm, asv) == _teer_exhaustive(cm, asv)


def test_cllr_stays_finite_where_the_naive_form_overflows() -> None:
    # the official naive log1p(exp(800)) is inf; the exact value is 800/ln2 bits / 2 / 1 trial
    got = a5.cllr(np.array([-800.0]), np.array([-5.0]))
    assert got == pytest.approx(0.5 * (800 + np.log1p(np.exp(-5.0))) / np.log(2), rel=1e-12)


def test_act_dcf_threshold_and_convention() -> None:
    tau = a5.ASVSPOOF5_DCF.bayes_threshold
    assert tau == pytest.approx(-np.log(1.9), abs=1e-15)
    # a bona fide score exactly at tau is accepted, a spoof at tau is a false accept
    at = a5.act_dcf(np.array([tau, 5.0]), np.array([tau, -5.0]))
    assert at.value == pytest.approx(10 * 0.05 * 0.5 / 0.5)
    worst = a5.act_dcf(np.array([-9.0]), np.array([9.0]))
    assert worst.value == pytest.approx((0.95 + 0.5) / 0.5)  # not clipped: 2.9


def test_bonafide_high_conversion_is_the_bona_fide_log_odds() -> None:
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    llr = a5.bonafide_high(p)
    assert llr[0] == np.inf and llr[-1] == -np.inf and llr[2] == 0.0
    assert 1 / (1 + np.exp(-llr[1])) == pytest.approx(0.9, abs=1e-15)
    with pytest.raises(InputError, match=r"p_fake\[0\] = 1.5"):
        a5.bonafide_high([1.5])


def test_min_tdcf_refuses_hard_decisions() -> None:
    with pytest.raises(InputError, match="fewer than 3 distinct"):
        a5.min_tdcf([1.0, 1.0, 0.0], [0.0, 0.0])
