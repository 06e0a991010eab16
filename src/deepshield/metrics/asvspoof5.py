"""ASVspoof 5 metrics as the official evaluation package computes them (implemented from the
definitions, not copied): track 1 EER, minDCF, actDCF, Cllr; track 2 a-DCF, min t-DCF, t-EER.

Orientation: every function here takes scores in the ASVspoof orientation, HIGHER = BONA FIDE
(CM) or higher = accept / target (ASV, SASV). deepshield's P(fake) converts with `bonafide_high`.
Operating points (official `compute_det_curve`): trials sorted ascending with a stable sort,
point i (0..N) rejects the i lowest, ties put the "good" class first (bona fide before spoof;
target, nontarget, spoof). actDCF and Cllr read the scores as natural-log likelihood ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from deepshield.errors import InputError
from deepshield.metrics import inputs
from deepshield.metrics.calibration import llr_values, probabilities
from deepshield.metrics.eer import asvspoof_det_curve, asvspoof_eer
from deepshield.metrics.tdcf import AsvErrorRates, CostModel


@dataclass(frozen=True)
class DcfCosts:
    """Track 1 detection cost: prior of spoof, cost of rejecting bona fide, of accepting spoof."""

    p_spoof: float = 0.05
    c_miss: float = 1.0
    c_fa: float = 10.0

    @property
    def normaliser(self) -> float:
        """min(Cmiss (1 - Pspoof), Cfa Pspoof): the cost of the better trivial system."""
        return min(self.c_miss * (1 - self.p_spoof), self.c_fa * self.p_spoof)

    @property
    def bayes_threshold(self) -> float:
        """-ln(Cmiss (1 - Pspoof) / (Cfa Pspoof)): accept an LLR >= this (-ln 1.9 for ASVspoof 5)."""
        return float(-np.log(self.c_miss * (1 - self.p_spoof) / (self.c_fa * self.p_spoof)))

    def normalized(self, p_miss: Any, p_fa: Any) -> Any:
        """Normalised DCF at miss rate(s) (bona fide rejected) and false-accept rate(s) (spoof
        accepted)."""
        cost = self.c_miss * (1 - self.p_spoof) * p_miss + self.c_fa * self.p_spoof * p_fa
        return cost / self.normaliser


@dataclass(frozen=True)
class ADcfCosts:
    """Track 2 architecture-agnostic DCF parameters (defaults: those ASVspoof 5 ranks with)."""

    p_target: float = 0.95 * 0.99
    p_nontarget: float = 0.95 * 0.01
    p_spoof: float = 0.05
    c_miss: float = 1.0
    c_fa_asv: float = 10.0
    c_fa_cm: float = 10.0


ASVSPOOF5_DCF = DcfCosts()
ASVSPOOF5_ADCF = ADcfCosts()
ADCF_PAPER = ADcfCosts(p_target=0.9, p_nontarget=0.05, c_fa_cm=20.0)  # a_dcf.py's CostModel()
# ASV error rates the organisers fixed for the ASVspoof 5 min t-DCF (hard-coded in the package).
ASVSPOOF5_ASV_RATES = AsvErrorRates(
    Pfa_asv=0.01881016557566423,
    Pmiss_asv=0.01880141010575793,
    Pmiss_spoof_asv=1 - 0.4607082907604729,
    Pfa_spoof_asv=0.4607082907604729,
)
_TDCF_COSTS = CostModel(Pspoof=0.05, Ptar=0.95 * 0.99, Pnon=0.95 * 0.01)


class Cost(NamedTuple):
    """A cost and the threshold it is reached at (ASVspoof orientation)."""

    value: float
    threshold: float


def bonafide_high(p_fake: Any) -> np.ndarray:
    """deepshield P(fake) [N] in [0, 1] -> ASVspoof orientation: the log-odds of bona fide,
    ln((1 - p) / p) [N] (an LLR when P(fake) is calibrated at prior 0.5; +-inf at p = 0 / 1)."""
    p = probabilities(p_fake, "p_fake")
    with np.errstate(divide="ignore"):
        return np.log1p(-p) - np.log(p)


def _classes(bona: Any, spoof: Any) -> tuple[np.ndarray, np.ndarray]:
    b = inputs.scores(bona, "bona fide scores")
    s = inputs.scores(spoof, "spoof scores")
    return b, s


def eer(bona: Any, spoof: Any) -> Cost:
    """(EER as a fraction, threshold) exactly as official `compute_eer`: no interpolation, first
    point minimising |FRR - FAR|, reject score <= threshold."""
    return Cost(*asvspoof_eer(*_classes(bona, spoof)))


def min_dcf(bona: Any, spoof: Any, costs: DcfCosts = ASVSPOOF5_DCF) -> Cost:
    """(minimum normalised DCF over the DET points, first threshold reaching it)."""
    frr, far, thresholds = asvspoof_det_curve(*_classes(bona, spoof))
    curve = costs.normalized(frr, far)  # [N+1]
    i = int(np.argmin(curve))
    return Cost(float(curve[i]), float(thresholds[i]))


def _llrs(bona: Any, spoof: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bona fide and spoof LLRs as float64; +-inf allowed (a certain decision), NaN refused."""
    return llr_values(bona, "bona fide LLRs"), llr_values(spoof, "spoof LLRs")


def act_dcf(bona: Any, spoof: Any, costs: DcfCosts = ASVSPOOF5_DCF) -> Cost:
    """(normalised DCF at the Bayes threshold for LLR scores, that threshold): a trial is accepted
    as bona fide when its score >= -ln(beta). Not clipped: can exceed 1."""
    b, s = _llrs(bona, spoof)
    tau = costs.bayes_threshold
    return Cost(float(costs.normalized(np.mean(b < tau), np.mean(s >= tau))), tau)


def cllr(bona: Any, spoof: Any) -> float:
    """Log-likelihood-ratio cost in bits, both classes weighted 1/2, scores read as natural-log
    LLRs: 0 is perfect, 1 is a system that always says LLR = 0. logaddexp keeps it finite where
    the official naive form overflows (|score| > ~709); inf when an infinite LLR is wrong."""
    b, s = _llrs(bona, spoof)
    return float(0.5 * (np.mean(np.logaddexp(0, -b)) + np.mean(np.logaddexp(0, s))) / np.log(2))


def three_class_curve(
    target: np.ndarray, nontarget: np.ndarray, spoof: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p_miss, p_fa_nontarget, p_fa_spoof, thresholds), each [N+1]: point i rejects the i lowest
    of the stably sorted [target, nontarget, spoof]; thresholds[0] = min - 1e-8, then the last
    rejected score."""
    pooled = np.concatenate([target, nontarget, spoof])  # [N]
    cls = np.repeat([0, 1, 2], [target.size, nontarget.size, spoof.size])  # [N]
    order = np.argsort(pooled, kind="stable")
    rejected = [np.concatenate([[0], np.cumsum(cls[order] == k)]) for k in range(3)]  # 3 x [N+1]
    p_miss = rejected[0] / target.size
    p_fa_non = 1 - rejected[1] / nontarget.size
    p_fa_spf = 1 - rejected[2] / spoof.size
    thresholds = np.concatenate([[pooled[order[0]] - 1e-8], pooled[order]])
    return p_miss, p_fa_non, p_fa_spf, thresholds


def _three(target: Any, nontarget: Any, spoof: Any, what: str) -> list[np.ndarray]:
    return [
        inputs.scores(x, f"{what} {name} scores")
        for x, name in ((target, "target"), (nontarget, "nontarget"), (spoof, "spoof"))
    ]


def a_dcf(target: Any, nontarget: Any, spoof: Any, costs: ADcfCosts = ASVSPOOF5_ADCF) -> Cost:
    """(minimum normalised a-DCF, its threshold) of SASV scores (higher = accept) of target,
    nontarget and spoof trials, as the official `_calculate_a_dcf`."""
    tar, non, spf = _three(target, nontarget, spoof, "SASV")
    p_miss, p_fa_non, p_fa_spf, thresholds = three_class_curve(tar, non, spf)
    c = costs
    curve = (
        c.c_miss * c.p_target * p_miss
        + c.c_fa_asv * c.p_nontarget * p_fa_non
        + c.c_fa_cm * c.p_spoof * p_fa_spf
    ) / min(c.c_fa_asv * c.p_nontarget + c.c_fa_cm * c.p_spoof, c.c_miss * c.p_target)
    i = int(np.argmin(curve))
    return Cost(float(curve[i]), float(thresholds[i]))


def min_tdcf(bona: Any, spoof: Any, asv: AsvErrorRates = ASVSPOOF5_ASV_RATES) -> Cost:
    """(min normalised t-DCF, CM threshold) with the ASVspoof 5 costs and, by default, the
    organisers' fixed ASV error rates; CM scores higher = bona fide (bona fide = target and
    nontarget trials). InputError with fewer than 3 distinct scores (the official code exits)."""
    b, s = _classes(bona, spoof)
    if np.unique(np.concatenate([b, s])).size < 3:
        raise InputError("CM scores hold fewer than 3 distinct values; the t-DCF needs soft scores")
    frr, far, thresholds = asvspoof_det_curve(b, s)
    curve = _TDCF_COSTS.normalized_tdcf(frr, far, asv)
    i = int(np.argmin(curve))
    return Cost(float(curve[i]), float(thresholds[i]))


def _tandem_gap(
    pm_cm: np.ndarray, pf_cm: np.ndarray, asv: tuple[np.ndarray, ...], i: np.ndarray
) -> np.ndarray:
    """[J] tandem Pmiss - Pfa at ASV point j (asv = Pmiss, Pfa_non, Pfa_spf, each [J]) and CM
    point i[j], rho = 1/2; non-decreasing in i (Pmiss_cm grows, Pfa_cm falls)."""
    a, b, c = asv
    pm, pf = pm_cm[i], pf_cm[i]
    return (pm + (1 - pm) * a) - (0.5 * (1 - pm) * b + 0.5 * pf * c)


def _first_at_least(
    pm_cm: np.ndarray, pf_cm: np.ndarray, asv: tuple[np.ndarray, ...], key: np.ndarray
) -> np.ndarray:
    """[J] the first CM point i with gap(j, i) >= key[j] (I = number of points when none), by
    bisection over the monotone gap."""
    lo = np.zeros(key.size, dtype=np.int64)
    hi = np.full(key.size, pm_cm.size, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        below = _tandem_gap(pm_cm, pf_cm, asv, np.minimum(mid, pm_cm.size - 1)) < key
        active = lo < hi
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _closest_cm_points(
    pm_cm: np.ndarray, pf_cm: np.ndarray, asv: tuple[np.ndarray, ...]
) -> np.ndarray:
    """[J] per ASV point j the first CM point minimising |gap(j, i)|, as the official exhaustive
    argmin: the gap is monotone in i, so O(J log I) bisection finds the same point."""
    n = pm_cm.size
    k = _first_at_least(pm_cm, pf_cm, asv, np.zeros(asv[0].size))  # first gap >= 0
    right = np.abs(_tandem_gap(pm_cm, pf_cm, asv, np.minimum(k, n - 1)))
    left_gap = _tandem_gap(pm_cm, pf_cm, asv, np.maximum(k - 1, 0))
    use_left = (k > 0) & ((k == n) | (np.abs(left_gap) <= right))
    left = _first_at_least(pm_cm, pf_cm, asv, left_gap)  # first point of the left gap's value
    return np.where(use_left, left, np.minimum(k, n - 1))


def t_eer(cm: tuple[Any, Any, Any], asv: tuple[Any, Any, Any]) -> float | None:
    """Concurrent t-EER as a FRACTION (the official package prints percent) of a CM and an ASV
    system, each given as (target, nontarget, spoof) scores, higher = accept; None when no ASV
    operating point meets the official condition (then the t-EER is undefined)."""
    cm_tar, cm_non, cm_spf = _three(*cm, "CM")
    asv_tar, asv_non, asv_spf = _three(*asv, "ASV")
    a, b, c, _ = three_class_curve(asv_tar, asv_non, asv_spf)
    pm_cm, pf_cm, _ = asvspoof_det_curve(np.concatenate([cm_tar, cm_non]), cm_spf)
    i = _closest_cm_points(pm_cm, pf_cm, (a, b, c))  # [J]
    valid = a < 0.5 * b + 0.5 * c
    with np.errstate(divide="ignore", invalid="ignore"):
        crit = np.abs(b / c - pf_cm[i] / (1 - pm_cm[i]))
    crit = np.where(valid & np.isfinite(crit), crit, np.inf)  # inf never beats the start value
    if not np.any(np.isfinite(crit)):
        return None
    j = int(np.argmin(crit))
    return float(c[j] * pf_cm[i[j]])
