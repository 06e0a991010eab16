"""Max |deepshield - reference| of each metric over the ASVspoof 5 fixtures (official evaluation
package outputs; minCllr: the fixtures' non-official PAV reference) and of AP against scikit-learn.

    DEEPSHIELD_SHARED=../shared PYTHONPATH=src python benchmarks/metrics_reference.py

Prints one markdown table row per metric: the largest absolute difference over all cases.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from deepshield.metrics import asvspoof5 as a5
from deepshield.metrics import average_precision, min_cllr

FOLDER = Path(os.environ.get("DEEPSHIELD_SHARED", "../shared")) / "reference/metrics/asvspoof5"


def _cases(pattern: str) -> list[tuple[dict, dict[str, np.ndarray], np.ndarray]]:
    """(reference json, float columns, key column) per fixture."""
    out = []
    for path in sorted(FOLDER.glob(pattern)):
        ref = json.loads(path.read_text())
        with open(FOLDER / ref["csv"], newline="") as f:
            rows = list(csv.DictReader(f))
        cols = {c: np.array([float(r[c]) for r in rows]) for c in rows[0] if c != "key"}
        out.append((ref, cols, np.array([r["key"] for r in rows])))
    return out


def _track1(diff: Callable[[str, float], None]) -> None:
    for ref, cols, key in _cases("t1_*.json"):
        r, s = ref["results"], cols["score"]
        b, sp, spoof = s[key == "bonafide"], s[key == "spoof"], key == "spoof"
        diff("EER", a5.eer(b, sp).value - r["compute_eer"]["eer"])
        diff("minDCF", a5.min_dcf(b, sp).value - r["compute_mindcf"]["min_dcf"])
        diff("actDCF", a5.act_dcf(b, sp).value - r["compute_actDCF"]["act_dcf"])
        diff("Cllr", a5.cllr(b, sp) - r["calculate_CLLR"]["cllr"])
        pav_ref = ref["non_official_reference"]["min_cllr_pav"]
        diff("minCllr (PAV; non-official reference)", min_cllr(spoof, -s) - pav_ref)
        ap = average_precision(spoof, -s) - average_precision_score(spoof, -s)
        diff("AP (against scikit-learn)", ap)


def _track2(diff: Callable[[str, float], None]) -> None:
    for ref, cols, key in _cases("t2_*.json"):
        r = ref["results"]
        by = {
            c: tuple(v[key == k] for k in ("target", "nontarget", "spoof")) for c, v in cols.items()
        }
        adcf = a5.a_dcf(*by["sasv_score"]).value
        diff("a-DCF (ASVspoof 5 costs)", adcf - r["a_dcf_asvspoof5_costs"]["min_a_dcf"])
        paper = a5.a_dcf(*by["sasv_score"], costs=a5.ADCF_PAPER).value
        diff("a-DCF (a_dcf.py default costs)", paper - r["a_dcf_default_costmodel"]["min_a_dcf"])
        cm = cols["cm_score"]
        tdcf = a5.min_tdcf(cm[key != "spoof"], cm[key == "spoof"]).value
        diff("min t-DCF", tdcf - r["compute_tDCF_hardcoded_asv"]["min_tDCF"])
        teer = 100 * a5.t_eer(by["cm_score"], by["asv_score"])
        diff("t-EER (percent)", teer - r["t_eer"]["t_eer_percent_full_search"])


def main() -> None:
    worst: dict[str, float] = {}

    def diff(name: str, value: float) -> None:
        worst[name] = max(worst.get(name, 0.0), abs(value))

    _track1(diff)
    _track2(diff)
    print("| metric | max abs difference |\n|---|---|")
    for name, value in worst.items():
        print(f"| {name} | {value:.1e} |")


if __name__ == "__main__":
    main()
