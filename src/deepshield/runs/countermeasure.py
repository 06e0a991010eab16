"""ASVspoof-style evaluation of a speech detector (a spoofing countermeasure, CM): min t-DCF in
the 2021 and 2019 forms, EER per attack system (seen in training or not), and the score file.

ASV assumption: the t-DCF needs the error rates of the speaker-verification (ASV) system behind
the CM. Without real ASV scores deepshield uses `metrics.min_tdcf`'s default, an ideal ASV for
bona fide trials that accepts every spoof (Pfa_asv = Pmiss_asv = Pmiss_spoof_asv = 0), the worst
case for the CM. For that ASV the 2021 and 2019 forms reduce to the same function,
(0.9405 Pmiss_cm + 0.5 Pfa_cm) / 0.5, so the two numbers agree; they differ once real ASV rates
are passed to `metrics.min_tdcf(..., asv=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepshield.data.splits import Splits, TensorSet
from deepshield.errors import InputError
from deepshield.files import atomic_write_csv
from deepshield.metrics import CostModel, LegacyCostModel, eer, min_tdcf, write_scores
from deepshield.report.html import table
from deepshield.run import RunDir

ASV_ASSUMPTION = "ideal ASV, accepts every spoof (Pfa_asv = Pmiss_asv = Pmiss_spoof_asv = 0)"


def system_name(splits: Splits, code: int) -> str:
    """The name of meta["system"] code `code` ("system <code>" when the source names none)."""
    return splits.systems[code] if code < len(splits.systems) else f"system {code}"


def countermeasure_metrics(ds: TensorSet, scores: np.ndarray, splits: Splits) -> dict[str, Any]:
    """CM numbers for `ds` (labels 1 = spoof) with scores [N] = P(spoof).

    Keys: min_tdcf (2021 revised form), min_tdcf_2019 (legacy form), tdcf_asv (the ASV assumed),
    undefined {key: why it is None},
    and when the samples carry meta["system"]: per_system {name: {eer, n_spoof, seen}} with the EER
    of all bona fide trials against that system's spoofs, and eer_seen / eer_unseen pooling the
    systems that do / do not occur in `splits.train`.
    """
    y = ds.y.numpy()
    out: dict[str, Any] = {"tdcf_asv": ASV_ASSUMPTION, "undefined": {}}
    for key, model in (("min_tdcf", CostModel()), ("min_tdcf_2019", LegacyCostModel())):
        try:
            out[key] = min_tdcf(y, scores, cost_model=model)[0]
        except InputError as e:  # one class, or fewer than 3 distinct scores: no t-DCF curve
            out[key], out["undefined"][key] = None, f"{e} ({len(y)} clips)"
    if "system" not in ds.meta:
        return out
    system = ds.meta["system"].numpy()
    trained = splits.train.meta.get("system")
    seen_codes = set(trained[splits.train.y == 1].tolist()) if trained is not None else set()
    bona = y == 0
    per_system: dict[str, Any] = {}
    groups: dict[bool, np.ndarray] = {True: bona.copy(), False: bona.copy()}
    for code in sorted(set(system[y == 1].tolist())):
        spoof = (y == 1) & (system == code)
        seen = code in seen_codes
        groups[seen] |= spoof
        rate = eer(y[bona | spoof], scores[bona | spoof])[0] if bona.any() else None
        per_system[system_name(splits, code)] = {
            "eer": rate,
            "n_spoof": int(spoof.sum()),
            "seen": seen,
        }
    out["per_system"] = per_system
    for seen, key in ((True, "eer_seen"), (False, "eer_unseen")):
        m = groups[seen]
        has_both = bona.any() and (y[m] == 1).any()
        out[key] = eer(y[m], scores[m])[0] if has_both else None
        if not has_both:
            kind = "seen in" if seen else "unseen in"
            out["undefined"][key] = f"no spoofs of systems {kind} training, or no bona fide"
    return out


def write_score_file(
    run: RunDir, name: str, ds: TensorSet, scores: np.ndarray, splits: Splits
) -> Path:
    """`name` in the run folder: ASVspoof `utt src key score` lines (score = -P(spoof), see
    `metrics.write_scores`); src is the attack system of a spoof, `-` for bona fide."""
    y = ds.y.numpy()
    system = ds.meta.get("system")
    sources = None
    if system is not None:
        sources = [
            "-" if label == 0 else system_name(splits, int(code)).replace(" ", "_")
            for label, code in zip(y.tolist(), system.tolist(), strict=True)
        ]
    ids = ["_".join(n.split()) or f"utt{i}" for i, n in enumerate(ds.names)]
    return write_scores(run.output(name), ids, sources, y, scores)


def countermeasure_html(metrics: dict[str, Any], score_file: str) -> str:
    """Report fragment: the t-DCF's ASV assumption, the per-system EER table, the score file."""
    html = "<p class='muted'>min t-DCF: ASVspoof 2021 form (min_tdcf) and 2019 legacy form "
    html += f"(min_tdcf_2019), ASV assumed: {metrics['tdcf_asv']}.</p>"
    if "per_system" in metrics:
        per = [{"system": k, **v} for k, v in metrics["per_system"].items()]
        html += "<h3>EER per attack system (all bona fide vs that system)</h3>" + table(per)
    return html + f"<p>ASVspoof score file: <code>{score_file}</code></p>"


FILE_COLUMNS = [
    "file",
    "label",
    "p_fake",
    "p_fake_raw",
    "verdict",
    "unsure_reason",
    "container",
    "encoding",
    "bit_depth",
    "channels",
    "source_rate",
    "source_seconds",
    "rms_dbfs",
    "clipped_fraction",
    "tiled",
    "cut_seconds",
    "done",
]


def file_verdicts(ds: TensorSet, raw: np.ndarray, decision: Any) -> list[dict[str, Any]]:
    """Per clip of `ds` (raw P(fake) [N]): the calibrated p_fake, the verdict the scan service
    and `deepshield scan` give (the decision's rule: fake / real, "unsure" inside the band around
    the threshold or for a degenerate clip, `media.degenerate`, with the reason) and the reader's
    record (meta["audio"], when present)."""
    from deepshield.media.audio import records
    from deepshield.media.degenerate import verdict

    p = decision.calibrate(raw)
    recs = list(records(ds.meta["audio"])) if "audio" in ds.meta else [None] * len(ds)
    rows = []
    for name, label, pf, pr, rec in zip(ds.names, ds.y.tolist(), p, raw, recs, strict=True):
        shown, reason = verdict(decision.explained_verdict(float(pf)), rec)
        row = {"file": name, "label": label, "p_fake": float(pf), "p_fake_raw": float(pr)}
        row.update(verdict=shown, unsure_reason=reason)
        if rec is not None:
            d = rec.as_dict()
            row.update({k: d[k] for k in FILE_COLUMNS[6:-1]}, done="; ".join(d["done"]))
        rows.append(row)
    return rows


def write_file_verdicts(run: RunDir, name: str, rows: list[dict[str, Any]]) -> Path:
    """`name` (CSV, FILE_COLUMNS) in the run folder: one row per clip from `file_verdicts`."""
    return atomic_write_csv(run.output(name), FILE_COLUMNS, rows)


UNSURE_LISTED = 50  # unsure clips named in the evaluation's JSON (all are in the CSV)


def unsure_summary(rows: list[dict[str, Any]], csv_name: str) -> dict[str, Any]:
    """The evaluation's `files` entry: where the per-file CSV is, how many clips are unsure and
    the reasons of the first UNSURE_LISTED of them."""
    unsure = [(r["file"], r["unsure_reason"]) for r in rows if r["verdict"] == "unsure"]
    listed = dict(unsure[:UNSURE_LISTED])
    return {"csv": csv_name, "n": len(rows), "unsure": len(unsure), "unsure_files": listed}


def unsure_line(files: dict[str, Any]) -> str:
    """One line: how many clips are unsure and where each clip's verdict and record are."""
    head = f"{files['unsure']} of {files['n']} clips unsure (degenerate audio)"
    shown = list(files["unsure_files"].items())[:3]
    more = "; ".join(f"{k}: {v}" for k, v in shown) + (" ..." if files["unsure"] > 3 else "")
    return f"{head}{': ' + more if shown else ''}; per clip: {files['csv']}"
