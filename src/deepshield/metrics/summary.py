"""The numbers `deepshield metrics` prints for one system's trials: ASVspoof 5 track 1 (EER,
minDCF, actDCF, Cllr), minCllr, AUC and AP, and track 2 (a-DCF, min t-DCF, t-EER) for SASV files.
A metric that cannot be computed is None, with its reason under "undefined"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deepshield.errors import InputError
from deepshield.metrics import asvspoof5 as a5
from deepshield.metrics.calibration import min_cllr
from deepshield.metrics.curves import auc
from deepshield.metrics.decision import average_precision
from deepshield.metrics.score_files import Trials

TRACK1 = ("eer", "min_dcf", "act_dcf", "cllr", "min_cllr", "auc", "ap")
TRACK2 = ("a_dcf", "min_tdcf", "t_eer")


def _try(out: dict[str, Any], key: str, compute: Callable[[], float | None], why: str) -> None:
    """out[key] = compute(), or None with a reason in out["undefined"]."""
    try:
        value = compute()
    except InputError as e:
        value, why = None, str(e)
    if value is not None and not np.isfinite(value):
        value, why = None, f"infinite: {why}"
    out[key] = value
    if value is None:
        out["undefined"][key] = why


def _track1(out: dict[str, Any], t: Trials) -> None:
    if t.cm is None:
        for key in TRACK1:
            out[key] = None
            out["undefined"][key] = "the file has no CM scores ('-')"
        return
    bona, spoof = t.cm[t.spoof == 0], t.cm[t.spoof == 1]
    llr_b, llr_s = t.llr_cm[t.spoof == 0], t.llr_cm[t.spoof == 1]
    wrong = "an LLR of +-inf (P(fake) of exactly 0 or 1) on the wrong class"
    _try(out, "eer", lambda: a5.eer(bona, spoof).value, "")
    _try(out, "min_dcf", lambda: a5.min_dcf(bona, spoof).value, "")
    _try(out, "act_dcf", lambda: a5.act_dcf(llr_b, llr_s).value, "")
    _try(out, "cllr", lambda: a5.cllr(llr_b, llr_s), wrong)
    _try(out, "min_cllr", lambda: min_cllr(t.spoof, -t.cm), "")
    _try(out, "auc", lambda: auc(t.spoof, -t.cm), "")
    _try(out, "ap", lambda: average_precision(t.spoof, -t.cm), "")


def _by_class(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(values[labels == name] for name in ("target", "nontarget", "spoof"))


def _teer(t: Trials) -> float | None:
    return a5.t_eer(_by_class(t.cm, t.asv_labels), _by_class(t.asv, t.asv_labels))


def _track2(out: dict[str, Any], t: Trials) -> None:
    present = [name for name in ("target", "nontarget", "spoof") if np.any(t.asv_labels == name)]
    missing = sorted({"target", "nontarget", "spoof"} - set(present))
    if missing:
        for key in TRACK2:
            out[key] = None
            out["undefined"][key] = f"no {', '.join(missing)} trials in the key file"
        return
    if t.sasv is None:
        out["a_dcf"], out["undefined"]["a_dcf"] = None, "the file has no SASV scores ('-')"
    else:
        _try(out, "a_dcf", lambda: a5.a_dcf(*_by_class(t.sasv, t.asv_labels)).value, "")
    if t.cm is None:
        out["min_tdcf"], out["undefined"]["min_tdcf"] = None, "the file has no CM scores ('-')"
    else:
        bona, spoof = t.cm[t.spoof == 0], t.cm[t.spoof == 1]
        _try(out, "min_tdcf", lambda: a5.min_tdcf(bona, spoof).value, "")
    if t.cm is None or t.asv is None:
        out["t_eer"], out["undefined"]["t_eer"] = None, "t-EER needs both CM and ASV scores"
    else:
        _try(out, "t_eer", lambda: _teer(t), "no ASV operating point meets the t-EER condition")


def score_summary(t: Trials) -> dict[str, Any]:
    """{format, orientation, n_bonafide, n_spoof, eer (fraction), min_dcf, act_dcf, cllr,
    min_cllr, auc, ap, [a_dcf, min_tdcf, t_eer (fraction)], undefined: {metric: reason}}."""
    out: dict[str, Any] = {
        "format": t.fmt,
        "orientation": t.orientation,
        "n_bonafide": int(np.sum(t.spoof == 0)),
        "n_spoof": int(np.sum(t.spoof == 1)),
        "undefined": {},
    }
    _track1(out, t)
    if t.fmt == "asvspoof5-sasv":
        _track2(out, t)
    return out
