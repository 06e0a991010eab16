"""Minimum normalised tandem detection cost (t-DCF) of a spoofing countermeasure (CM) in front of
an automatic speaker verification (ASV) system, as the official ASVspoof evaluation code computes it.

Two forms, picked by the cost model's type:
- `CostModel` (ASVspoof 2021, revised t-DCF, Kinnunen et al. TASLP 2020):
  C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv, C1 = Ptar Cmiss - C0, C2 = Pspoof Cfa_spoof Pfa_spoof_asv,
  t-DCF(t) = (C0 + C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / (C0 + min(C1, C2)).
- `LegacyCostModel` (ASVspoof 2019, Kinnunen et al. Odyssey 2018):
  C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv, C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv),
  t-DCF(t) = (C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / min(C1, C2).
Pmiss_cm / Pfa_cm run over the official CM operating points (see `deepshield.metrics.eer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from deepshield.errors import ConfigError, InputError
from deepshield.metrics import inputs
from deepshield.metrics.eer import asvspoof_det_curve, asvspoof_eer


@dataclass(frozen=True)
class AsvErrorRates:
    """Error rates of the ASV system, fractions in [0, 1]. Pfa_asv: nontargets accepted;
    Pmiss_asv: targets rejected; Pmiss_spoof_asv: spoofs rejected; Pfa_spoof_asv: spoofs accepted
    (None: 1 - Pmiss_spoof_asv)."""

    Pfa_asv: float
    Pmiss_asv: float
    Pmiss_spoof_asv: float
    Pfa_spoof_asv: float | None = None

    def __post_init__(self) -> None:
        if self.Pfa_spoof_asv is None:
            object.__setattr__(self, "Pfa_spoof_asv", 1.0 - self.Pmiss_spoof_asv)
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"ASV error rate {f.name}={v} is outside [0, 1]; pass a fraction")


def asv_error_rates(target: Any, nontarget: Any, spoof: Any) -> tuple[AsvErrorRates, float]:
    """(rates, threshold) of an ASV system from its scores (higher = target speaker): threshold at
    the ASV EER of target vs nontarget (official `compute_eer`), a trial accepted when its
    score >= threshold (official `obtain_asv_error_rates`)."""
    tar = inputs.scores(target, "asv target scores")
    non = inputs.scores(nontarget, "asv nontarget scores")
    spf = inputs.scores(spoof, "asv spoof scores")
    _, thr = asvspoof_eer(tar, non)
    rates = AsvErrorRates(
        Pfa_asv=float(np.sum(non >= thr) / non.size),
        Pmiss_asv=float(np.sum(tar < thr) / tar.size),
        Pmiss_spoof_asv=float(np.sum(spf < thr) / spf.size),
        Pfa_spoof_asv=float(np.sum(spf >= thr) / spf.size),
    )
    return rates, thr


@dataclass(frozen=True)
class _Priors:
    Pspoof: float = 0.05
    Ptar: float = 0.9405
    Pnon: float = 0.0095

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not v >= 0:
                raise ConfigError(f"t-DCF cost model {f.name}={v}; priors and costs must be >= 0")
        total = self.Pspoof + self.Ptar + self.Pnon
        if not abs(total - 1.0) <= 1e-10:
            raise ConfigError(f"t-DCF priors Pspoof + Ptar + Pnon = {total}; make them sum to 1")


@dataclass(frozen=True)
class CostModel(_Priors):
    """ASVspoof 2021 revised t-DCF parameters (defaults: the ASVspoof 2021 values).
    Cmiss: tandem rejects a target; Cfa: tandem accepts a nontarget; Cfa_spoof: accepts a spoof."""

    Cmiss: float = 1.0
    Cfa: float = 10.0
    Cfa_spoof: float = 10.0

    def normalized_tdcf(
        self, pmiss_cm: np.ndarray, pfa_cm: np.ndarray, asv: AsvErrorRates
    ) -> np.ndarray:
        """t-DCF / (C0 + min(C1, C2)) at each CM operating point, [P]."""
        c0 = self.Ptar * self.Cmiss * asv.Pmiss_asv + self.Pnon * self.Cfa * asv.Pfa_asv
        c1 = self.Ptar * self.Cmiss - c0
        c2 = self.Pspoof * self.Cfa_spoof * asv.Pfa_spoof_asv
        _check_weights(c1, c2, c0 + min(c1, c2), c0)
        return (c0 + c1 * pmiss_cm + c2 * pfa_cm) / (c0 + np.minimum(c1, c2))


@dataclass(frozen=True)
class LegacyCostModel(_Priors):
    """ASVspoof 2019 t-DCF parameters (defaults: the ASVspoof 2019 values).
    Cmiss_asv / Cfa_asv: ASV rejects a target / accepts a nontarget; Cmiss_cm / Cfa_cm: CM
    rejects a bona fide trial / passes a spoof."""

    Cmiss_asv: float = 1.0
    Cfa_asv: float = 10.0
    Cmiss_cm: float = 1.0
    Cfa_cm: float = 10.0

    def normalized_tdcf(
        self, pmiss_cm: np.ndarray, pfa_cm: np.ndarray, asv: AsvErrorRates
    ) -> np.ndarray:
        """t-DCF / min(C1, C2) at each CM operating point, [P]."""
        c1 = (
            self.Ptar * (self.Cmiss_cm - self.Cmiss_asv * asv.Pmiss_asv)
            - self.Pnon * self.Cfa_asv * asv.Pfa_asv
        )
        c2 = self.Cfa_cm * self.Pspoof * (1 - asv.Pmiss_spoof_asv)
        _check_weights(c1, c2, min(c1, c2))
        return (c1 * pmiss_cm + c2 * pfa_cm) / np.minimum(c1, c2)


def _check_weights(c1: float, c2: float, norm: float, c0: float = 0.0) -> None:
    if min(c0, c1, c2) < 0:
        raise InputError(
            f"t-DCF weights C0={c0:.4g}, C1={c1:.4g}, C2={c2:.4g} include a negative one; "
            "check the ASV error rates (fractions, not percentages) and the cost model"
        )
    if norm <= 0:
        raise InputError(
            "t-DCF normaliser is 0 (the ASV alone already rejects every spoof, or the costs are 0); "
            "the t-DCF is undefined for these ASV error rates and costs"
        )


_SCORE_KEYS = {"target", "nontarget", "spoof"}
_RATE_KEYS = {"Pfa_asv", "Pmiss_asv", "Pmiss_spoof_asv"}


def _asv_rates(asv: Mapping[str, Any] | AsvErrorRates | None) -> AsvErrorRates:
    if asv is None:
        return AsvErrorRates(Pfa_asv=0.0, Pmiss_asv=0.0, Pmiss_spoof_asv=0.0)
    if isinstance(asv, AsvErrorRates):
        return asv
    if isinstance(asv, Mapping) and set(asv) == _SCORE_KEYS:
        return asv_error_rates(asv["target"], asv["nontarget"], asv["spoof"])[0]
    if isinstance(asv, Mapping) and _RATE_KEYS <= set(asv) <= _RATE_KEYS | {"Pfa_spoof_asv"}:
        return AsvErrorRates(**{k: float(v) for k, v in asv.items()})
    raise InputError(
        f"asv={asv!r} is neither ASV scores {{target, nontarget, spoof}} nor ASV error rates "
        "{Pfa_asv, Pmiss_asv, Pmiss_spoof_asv}; pass one of those dicts or None"
    )


def min_tdcf(
    y_true: Any,
    scores: Any,
    *,
    asv: Mapping[str, Any] | AsvErrorRates | None = None,
    cost_model: CostModel | LegacyCostModel | None = None,
) -> tuple[float, float]:
    """(min normalised t-DCF, CM threshold at it) for y_true [N] in {0, 1} (1 = spoof) and CM scores
    [N] growing with "spoof" (flag as spoof when score >= threshold, as in `eer`).

    asv: ASV scores {"target", "nontarget", "spoof"} (higher = target; thresholded at their EER,
    see `asv_error_rates`), stated ASV error rates {"Pfa_asv", "Pmiss_asv", "Pmiss_spoof_asv"}
    (optionally "Pfa_spoof_asv"), an `AsvErrorRates`, or None: an ideal ASV for bona fide trials
    that accepts every spoof (Pfa_asv = Pmiss_asv = Pmiss_spoof_asv = 0), the worst case for the CM.
    cost_model: `CostModel()` (2021 revised form, the default) or `LegacyCostModel()` (2019 form).
    """
    y, s = inputs.labelled_scores(y_true, scores)
    if np.unique(s).size < 3:
        raise InputError(
            "scores hold fewer than 3 distinct values; the t-DCF needs soft scores "
            "(e.g. P(fake)), not hard decisions"
        )
    rates = _asv_rates(asv)
    model = CostModel() if cost_model is None else cost_model
    if not isinstance(model, (CostModel, LegacyCostModel)):
        raise InputError(
            f"cost_model={model!r}; pass deepshield.metrics.CostModel or LegacyCostModel"
        )
    pmiss_cm, pfa_cm, thresholds = asvspoof_det_curve(-s[y == 0], -s[y == 1])
    curve = model.normalized_tdcf(pmiss_cm, pfa_cm, rates)  # [N+1]
    i = int(np.argmin(curve))
    return float(curve[i]), float(-thresholds[i])
