"""The audit's report card: a score in [0, 1] and a status per item, read off audit.json's items,
its figures and its report.html section.

Scores (docs/audit.md): clean = AUC (fail for a collapsed detector, one that calls >= 95 % of the
test images one class); calibration = 1 - ECE of the calibrated P(fake) on the clean test split;
white-box L-inf / L2 and transfer = share of fakes still
detected at the reference budget (the budget's `reference`), worst case over the attacks of the
item (the summary adds the share passed at the run's own threshold); speech: white noise =
balanced accuracy at the reference SNR;
gradient masking = share of the checks passed; explanations = 1 when the randomisation sanity
check passes; a collapsed detector fails every robustness item (no attack is needed to pass fakes
through it, or none can, and neither says anything about robustness). Status: pass / warn / fail
(skipped or error where an item has no result).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from deepshield.audit.budgets import REFERENCE_EPS
from deepshield.audit.checks import eps_text
from deepshield.explain.sanity import sanity_text, sanity_verdict
from deepshield.report.html import figure, table

# Items of the card, their sweeps and titles (order = order on the card).
LINF_ATTACKS = ("fgsm", "pgd_linf", "autoattack")
L2_ATTACKS = ("pgd_l2", "cw_l2")
TITLES = {
    "fgsm": "FGSM",
    "pgd_linf": "PGD L-inf",
    "pgd_l2": "PGD L2",
    "cw_l2": "CW-L2",
    "autoattack": "AutoAttack",
    "noise": "random noise",
    "transfer": "transfer (PGD L-inf from the surrogate)",
}
CLEAN_PASS, CLEAN_WARN = 0.9, 0.75  # clean AUC (speech noise: balanced accuracy) pass / warn
ECE_PASS, ECE_WARN = 0.05, 0.15  # ECE of the calibrated P(fake) at or below: pass / warn
FEW_CLIPS = 20  # a decision fitted on fewer validation samples of a class is flagged
ROBUST_PASS, ROBUST_WARN = 0.9, 0.5  # share of fakes still detected at the reference budget


def row_at(rows: Sequence[Mapping[str, Any]], eps: float) -> Mapping[str, Any] | None:
    """The row of `rows` at budget `eps` (None when the ladder lacks it)."""
    return next((r for r in rows if math.isclose(r["eps"], eps, abs_tol=1e-9)), None)


def eps_half(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Smallest eps of the ladder at which at least half of the fakes pass as real (None: never)."""
    hits = [r["eps"] for r in rows if (r.get("fake_passed_as_real") or 0.0) >= 0.5]
    return min(hits) if hits else None


def video_row_at(item: Mapping[str, Any], eps: float) -> Mapping[str, Any] | None:
    """A sweep item's video-level rates (`metrics.video_rates`) at budget `eps`: None without
    video-level numbers (not crops of videos, or one class of video in the subset)."""
    video = item.get("video_level")
    index = [k for k, r in enumerate(item["rows"]) if math.isclose(r["eps"], eps, abs_tol=1e-9)]
    return video["rows"][index[0]] if video and index else None


def _ok(item: Mapping[str, Any] | None) -> bool:
    return bool(item) and "error" not in item and "rows" in item


def collapsed_clean(items: Mapping[str, Any]) -> str | None:
    """The class a collapsed detector calls >= 95 % of the clean test images ("real"/"fake"),
    or None when it works (or the clean item is missing)."""
    c = items.get("clean")
    return c.get("collapsed_to") if isinstance(c, Mapping) and c.get("collapsed") else None


def _robustness(
    items: Mapping[str, Any], keys: Sequence[str], norm: str, reference: Mapping[str, float]
) -> dict[str, Any]:
    """Worst case over the attacks `keys` at the reference budget of `norm`; a collapsed
    detector fails (it passes no fake, or flags every real, without any attack)."""
    ref = reference[norm]
    present = [k for k in keys if _ok(items.get(k))]
    if not present:
        return _missing(items, keys)
    collapsed = collapsed_clean(items)
    if collapsed is not None:
        return {
            "score": 0.0,
            "status": "fail",
            "summary": f"not graded: the detector is COLLAPSED (calls the clean test samples "
            f"{collapsed}), so fakes passed under attack say nothing about robustness",
            "eps_half": None,
            "reference_eps": ref,
            "commands": [items[k]["command"] for k in present],
        }
    passed, at_threshold, videos, snr = {}, {}, {}, None
    for k in present:
        row = row_at(items[k]["rows"], ref)
        if row is not None and row.get("fake_passed_as_real") is not None:
            passed[k] = row["fake_passed_as_real"]
        if row is not None and row.get("fakes_passed_at_threshold") is not None:
            at_threshold[k] = row["fakes_passed_at_threshold"]
        video = video_row_at(items[k], ref)
        if video is not None:
            videos[k] = video["fake_passed_as_real"]
        snr = snr if row is None or row.get("snr_db_budget") is None else row["snr_db_budget"]
    halves = {k: eps_half(items[k]["rows"]) for k in present}
    found = [e for e in halves.values() if e is not None]
    first = min(found) if found else None
    who = ", ".join(TITLES[k] for k in present if halves[k] == first)
    worst = max(passed.values()) if passed else None
    score = None if worst is None else 1.0 - worst
    largest = max(r["eps"] for k in present for r in items[k]["rows"])
    several = len(keys) > 1  # name the attacks behind the numbers
    summary = (
        f"half of the fakes pass as real from eps {eps_text(first, norm)}"
        + (f" ({who})" if several else "")
        if first is not None
        else f"fewer than half of the fakes pass up to eps {eps_text(largest, norm)}"
    )
    if worst is not None:
        attacks = ", ".join(TITLES[k] for k in passed)
        where = eps_text(ref, norm) + ("" if snr is None else f" (SNR >= {snr:.0f} dB)")
        summary += f"; at {where} {100 * worst:.0f}% pass"
        summary += f" (worst of {attacks})" if several else ""
        if at_threshold:
            summary += f", {100 * max(at_threshold.values()):.0f}% at the run's threshold"
        if videos:
            k = max(videos, key=videos.__getitem__)
            summary += (f"; {100 * videos[k]:.0f}% of the fake videos ({_video_count(items[k])} "
                        f"videos, {items[k]['n']} crops attacked)")  # fmt: skip
    return {
        "score": score,
        "status": _robust_status(score),
        "summary": summary,
        "eps_half": first,
        "reference_eps": ref,
        "commands": [items[k]["command"] for k in present],
    }


def _robust_status(score: float | None) -> str:
    if score is None:
        return "skipped"
    return "pass" if score >= ROBUST_PASS else "warn" if score >= ROBUST_WARN else "fail"


def _missing(items: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """An item without results: the first error of its steps, or skipped."""
    errors = [
        items[k]["error"] for k in keys if isinstance(items.get(k), Mapping) and "error" in items[k]
    ]
    if errors:
        return {"score": None, "status": "error", "summary": errors[0], "commands": []}
    return {"score": None, "status": "skipped", "summary": "not run", "commands": []}


def _clean(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    c = items.get("clean")
    if not c or "error" in c:
        return _missing(items, ["clean"])
    auc = c["auc"]
    status = "fail" if auc is None or auc < CLEAN_WARN else "warn" if auc < CLEAN_PASS else "pass"
    summary = (
        f"accuracy {c['accuracy']:.3f}, balanced accuracy {_num(c.get('balanced_accuracy'))}, "
        f"fakes passed as real {_num(c['fake_passed_as_real'])}, reals flagged as fake "
        f"{_num(c['real_flagged_as_fake'])}, AUC {_num(auc)}, EER {_num(c['eer'])} on {c['n']} "
        "test samples"
    )
    cm = c.get("countermeasure")
    if cm:
        summary += (
            f"; min t-DCF {_num(cm['min_tdcf'])}, minDCF {_num(cm['min_dcf'])}, actDCF "
            f"{_num(cm['act_dcf'])} (ASVspoof 5 costs), Cllr {_num(cm['cllr'])} bits"
        )
    collapsed = collapsed_clean(items)
    if collapsed is not None:  # whatever its AUC, at its threshold it tells nothing apart
        status = "fail"
        summary = f"COLLAPSED: calls >= 95 % of the test samples {collapsed}; " + summary
    return {"score": auc, "status": status, "summary": summary, "commands": [c["command"]]}


def _calibration(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    """ECE / Brier of the raw and the calibrated P(fake) on the clean test split, and the actual
    error rates at the run's threshold (fixed on validation)."""
    c = items.get("clean")
    if not c or "error" in c:
        return _missing(items, ["clean"])
    d = c.get("decision")
    if d is None:
        return {"score": None, "status": "skipped", "summary": "one class only on the test split",
                "commands": []}  # fmt: skip
    ece = d["ece_calibrated"]
    status = "pass" if ece <= ECE_PASS else "warn" if ece <= ECE_WARN else "fail"
    run_point = next(r for r in d["operating_points"] if r["point"] == "run")
    where = f"the run's {d['rule']} threshold" if d["calibrated"] else "the default threshold"
    summary = (
        f"ECE {_num(d['ece_raw'])} raw -> {_num(ece)} calibrated, Brier {_num(d['brier_raw'])} "
        f"-> {_num(d['brier_calibrated'])}; at {where} "
        f"{_threshold(run_point['threshold'])}: fakes passed {_num(run_point['fnr'])}, reals "
        f"flagged {_num(run_point['fpr'])}"
    )
    counts = d.get("val_counts") or {}
    if d["calibrated"] and min(counts.get("fake", 0), counts.get("real", 0)) < FEW_CLIPS:
        status = "warn"
        summary = (
            f"FEW: calibrator and threshold fitted on {counts.get('real', 0)} real and "
            f"{counts.get('fake', 0)} fake validation samples (< {FEW_CLIPS} of a class); "
            + summary
        )
    if not d["calibrated"]:
        status = "warn"
        summary = f"NOT CALIBRATED ({d['note']}); " + summary
    return {"score": 1 - ece, "status": status, "summary": summary, "commands": [c["command"]]}


def _threshold(t: float | str) -> str:
    return t if isinstance(t, str) else f"{t:.3f}"


def _snr_noise(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    """Speech: balanced accuracy under white noise at the reference SNR (fakes passed and reals
    flagged at every SNR in the summary)."""
    item = items.get("snr_noise")
    if not _ok(item):
        return _missing(items, ["snr_noise"])
    ref = item["reference_snr_db"]
    row = next((r for r in item["rows"] if r["snr_db"] == ref), None)
    score = None if row is None else row.get("balanced_accuracy")
    status = (
        "skipped" if score is None
        else "pass" if score >= CLEAN_PASS else "warn" if score >= CLEAN_WARN else "fail"
    )  # fmt: skip
    per = "; ".join(
        f"{r['snr_db']:g} dB: fakes passed {_num(r['fake_passed_as_real'])}, reals flagged "
        f"{_num(r['real_flagged_as_fake'])}"
        for r in item["rows"]
    )
    summary = f"balanced accuracy {_num(score)} at {ref:g} dB SNR; {per}"
    return {"score": score, "status": status, "summary": summary, "commands": [item["command"]]}


EVERYDAY_PASS, EVERYDAY_WARN = 0.05, 0.15  # the largest AUC drop under the quick processing grid


def _everyday(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    """Everyday processing (runs.everyday quick grid, real encoders): score = the lowest AUC over
    the settings; pass when no setting costs more than 0.05 AUC, warn up to 0.15."""
    item = items.get("everyday")
    if not _ok(item):
        return _missing(items, ["everyday"])
    drop = item["largest_auc_drop"]
    status = "pass" if drop <= EVERYDAY_PASS else "warn" if drop <= EVERYDAY_WARN else "fail"
    return {
        "score": item["lowest_auc"]["auc"],
        "status": status,
        "summary": item["line"],
        "commands": [item.get("command") or "deepshield robustness RUN_DIR --grid quick"],
    }


def _transfer(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    if not _ok(items.get("transfer")):
        return _missing(items, ["transfer"])
    t = items["transfer"]
    out = _robustness(items, ["transfer"], "linf", reference)
    out["summary"] = (
        f"surrogate {t['surrogate']['model']} ({t['surrogate']['run']}): " + out["summary"]
    )
    commands = [t["surrogate"]["command"]] if t["surrogate"].get("command") else []
    out["commands"] = commands + out["commands"]
    return out


def _masking(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    m = items.get("masking")
    if not m or "error" in m:
        return _missing(items, ["masking"])
    done = [c for c in m["checks"] if c["status"] != "skipped"]
    warned = [c for c in done if c["status"] == "warn"]
    if not done:
        return {"score": None, "status": "skipped", "summary": "no check could run", "commands": []}
    summary = (
        f"{len(warned)} of {len(done)} warning signs: " + "; ".join(c["detail"] for c in warned)
        if warned
        else f"no warning sign ({len(done)} checks)"
    )
    return {
        "score": 1 - len(warned) / len(done),
        "status": "warn" if warned else "pass",
        "summary": summary,
        "commands": [],
    }


def _explanations(items: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    e = items.get("explanations")
    if not e or "error" in e:
        return _missing(items, ["explanations"])
    s = e["sanity"]
    if sanity_verdict(s["spearman_mean"], s["bound"]) == "undefined":
        return {
            "score": None,
            "status": "warn",
            "summary": "Grad-CAM sanity check "
            + sanity_text(s["spearman_mean"], s["bound"], s.get("undefined_pairs")),
            "commands": [e["command"]],
        }
    verdict = "below" if s["passed"] else "not below"
    return {
        "score": 1.0 if s["passed"] else 0.0,
        "status": "pass" if s["passed"] else "fail",
        "summary": f"Grad-CAM rank correlation with weight-randomised models {_num(s['spearman_mean'])}"
        f" ({verdict} {s['bound']:g})",
        "commands": [e["command"]],
    }


def _num(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


Row = Callable[[Mapping[str, Any], Mapping[str, float]], dict[str, Any]]
# The card's rows in order: (title, function of (items, reference eps), shown only when this
# item key is present (None: always)). A new audit item (e.g. a processing grid) adds one here.
CARD_ROWS: list[tuple[str, Row, str | None]] = [
    ("clean detection", _clean, None),
    ("calibration", _calibration, None),
    ("white-box L-inf", lambda i, r: _robustness(i, LINF_ATTACKS, "linf", r), None),
    ("white-box L2", lambda i, r: _robustness(i, L2_ATTACKS, "l2", r), None),
    ("transfer (black-box)", _transfer, None),
    ("white noise (SNR)", _snr_noise, "snr_noise"),
    ("gradient masking", _masking, None),
    ("explanations", _explanations, None),
    ("everyday processing", _everyday, "everyday"),
]


def score_card(
    items: Mapping[str, Any], reference: Mapping[str, float] = REFERENCE_EPS, note: str = ""
) -> list[dict[str, Any]]:
    """One row per card item: item, score (0..1 or None), status, summary, commands. `note`
    (what the budget leaves out) is added to the summary of items the budget skipped."""
    out = []
    for title, row, needs in CARD_ROWS:
        if needs is not None and needs not in items:
            continue
        r = row(items, reference)
        if r["status"] == "skipped" and note:
            r["summary"] += f" ({note})"
        out.append({"item": title, **r})
    return out


# -- figures and the report section -----------------------------------------------------------


def curves_figure(
    items: Mapping[str, Any], keys: Sequence[str], norm: str, modality: str = "image"
) -> Figure | None:
    """Fakes passed as real vs eps for each sweep of `keys` present (None when none is)."""
    from deepshield.report.plots import plot_curve

    present = [k for k in keys if _ok(items.get(k))]
    if not present:
        return None
    xs = sorted({r["eps"] for k in present for r in items[k]["rows"]})
    series = {}
    for k in present:
        by_eps = {r["eps"]: r.get("fake_passed_as_real") for r in items[k]["rows"]}
        series[TITLES[k]] = [math.nan if by_eps.get(e) is None else by_eps[e] for e in xs]
    audio = modality == "audio"
    scale = 255 if norm == "linf" and not audio else 1
    unit = "L-inf" if norm == "linf" else "L2"
    xlabel = (
        f"eps ({unit}, waveform in [-1, 1])" if audio
        else "eps (x 1/255, L-inf)" if norm == "linf" else "eps (L2, pixels in [0, 1])"
    )  # fmt: skip
    fig = plot_curve(
        [e * scale for e in xs],
        series,
        xlabel=xlabel,
        ylabel="fakes passed as real",
        title=f"Evasion under {unit} attacks",
    )
    ax = fig.axes[0]
    positive = [e * scale for e in xs if e > 0]
    linthresh = min(positive) if audio and positive else 1 if norm == "linf" else 0.25
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_ylim(-0.02, 1.02)
    return fig


def card_html(audit: Mapping[str, Any]) -> str:
    """The report.html section: the card, the curves, the checks, the pictures, the commands."""
    card = audit["card"]
    rows = [
        {
            "item": r["item"],
            "score": r["score"],
            "status": r["status"],
            "finding": r["summary"],
        }
        for r in card
    ]
    body = _status_table(rows)
    items = audit["items"]
    body += f"<p class='muted'>{html.escape(_settings(audit))}</p>"
    figs = [f for f in audit.get("figures", []) if f]
    if figs:
        body += "<div class='figs'>" + "".join(figure(f) for f in figs) + "</div>"
    masking = items.get("masking")
    if masking and "checks" in masking:
        body += "<h3>Gradient-masking checks (Athalye et al., 2018)</h3>" + _status_table(
            [
                {"check": c["name"], "status": c["status"], "finding": c["detail"]}
                for c in masking["checks"]
            ]
        )
    body += _clean_tables(items)
    body += _sweep_table(items, audit.get("modality", "image"))
    body += _snr_table(items)
    commands = [audit["command"]] + [c for r in card for c in r["commands"]]
    body += "<h3>Reproduce</h3><pre>" + html.escape("\n".join(dict.fromkeys(commands))) + "</pre>"
    return body


def _status_table(rows: list[dict[str, Any]]) -> str:
    """table() with the status column coloured (pass / warn / fail)."""
    text = table(rows, digits=3)
    for status in ("pass", "warn", "fail", "error"):
        cls = "fail" if status == "error" else status
        text = text.replace(f"<td>{status}</td>", f"<td class='{cls}'>{status}</td>")
    return text


SWEEP_TABLES = {  # row key -> title of the card's per-attack tables
    "fake_passed_as_real": "Fakes passed as real",
    "fakes_passed_at_threshold": "Fakes passed as real at the run's threshold",
    "real_flagged_as_fake": "Reals flagged as fake",
    "reals_flagged_at_threshold": "Reals flagged as fake at the run's threshold",
    "balanced_accuracy": "Balanced accuracy",
}
SPEECH_TABLES = {  # speech sweeps add their budgets as SNRs
    "snr_db_budget": "SNR (dB) the budget allows at worst, median over clips",
    "snr_db_median": "SNR (dB) of the perturbations used, median over clips",
}


def _clean_tables(items: Mapping[str, Any]) -> str:
    """The clean item's operating points and raw vs calibrated ECE / Brier, and for speech its
    ASVspoof costs."""
    c = items.get("clean")
    if not c or "decision" not in c:
        return ""
    from deepshield.runs.evaluation import decision_html

    out = decision_html(c["decision"])
    cm = c.get("countermeasure")
    if cm:
        rows = [{"metric": k, "value": cm[k]} for k in ("min_tdcf", "min_dcf", "act_dcf", "cllr",
                                                        "min_cllr")]  # fmt: skip
        out += "<h3>ASVspoof costs of the clean scores</h3>" + table(rows, digits=4)
        out += (
            "<p class='muted'>min t-DCF: 2021 form, ideal ASV (as `deepshield evaluate`); minDCF,"
            " actDCF, Cllr: ASVspoof 5 track 1 costs on the calibrated P(fake) read as LLRs "
            "(the log-odds of bona fide)"
            + "".join(f"; {k}: undefined, {html.escape(v)}" for k, v in cm["undefined"].items())
            + ".</p>"
        )
    return out


def _snr_table(items: Mapping[str, Any]) -> str:
    """Speech: the detector's rates under white noise at each SNR."""
    item = items.get("snr_noise")
    if not _ok(item):
        return ""
    return (
        f"<h3>White noise at given SNRs ({item['n']} clips)</h3>"
        + table([{"SNR (dB)": r["snr_db"], **{k: r.get(k) for k in (
            "accuracy", "balanced_accuracy", "fake_passed_as_real", "real_flagged_as_fake",
            "fakes_passed_at_threshold", "reals_flagged_at_threshold")}}
            for r in item["rows"]], digits=3)
    )  # fmt: skip


def _sweep_table(items: Mapping[str, Any], modality: str = "image") -> str:
    """Fakes passed as real, reals flagged as fake (at 0.5 and at the run's threshold) and
    balanced accuracy per attack and eps (one row per sweep; "broke" says whether the attack
    fooled any sample at some budget); speech adds the budgets as SNRs."""
    out = ""
    tables = {**SWEEP_TABLES, **(SPEECH_TABLES if modality == "audio" else {})}
    for norm, keys in (("linf", (*LINF_ATTACKS, "noise", "transfer")), ("l2", L2_ATTACKS)):
        present = [k for k in keys if _ok(items.get(k))]
        if not present:
            continue
        xs = sorted({r["eps"] for k in present for r in items[k]["rows"]})
        unit = "L-inf" if norm == "linf" else "L2"
        for key, title in tables.items():
            if not any(key in r for k in present for r in items[k]["rows"]):
                continue
            rows = []
            for k in present:
                by_eps = {r["eps"]: r.get(key) for r in items[k]["rows"]}
                row: dict[str, Any] = {"attack": TITLES[k], "images": items[k]["n"]}
                row["broke"] = _broke(items[k]["rows"])
                row.update({eps_text(e, norm): by_eps.get(e) for e in xs})
                rows.append(row)
            out += f"<h3>{title} ({unit})</h3>" + table(rows, digits=2)
        out += _video_tables(items, present, xs, unit, norm)
    return out


VIDEO_TABLES = {  # video-level rate -> title (videos of crops: a video's score is its frames' mean)
    "fake_passed_as_real": "Fake videos passed as real",
    "real_flagged_as_fake": "Real videos flagged as fake",
}


def _video_tables(
    items: Mapping[str, Any], present: Sequence[str], xs: Sequence[float], unit: str, norm: str
) -> str:
    """Per attack and eps, the share of fake videos passed and real videos flagged at the
    sweep's video-level threshold (the run's, calibrated), for sweeps of crops of videos."""
    keys = [k for k in present if items[k].get("video_level")]
    if not keys:
        return ""
    out = ""
    for key, title in VIDEO_TABLES.items():
        rows = []
        for k in keys:
            row: dict[str, Any] = {"attack": TITLES[k], "videos": _video_count(items[k])}
            for e in xs:
                video = video_row_at(items[k], e)
                row[eps_text(e, norm)] = None if video is None else video[key]
            rows.append(row)
        t = items[keys[0]]["video_level"]["threshold"]
        out += f"<h3>{title} at {t:.3f} ({unit})</h3>" + table(rows, digits=2)
    return out


def _video_count(item: Mapping[str, Any]) -> int | None:
    """Videos behind a sweep item's video-level rows (those with crops in the attacked subset)."""
    clean = item["video_level"].get("clean")
    return None if clean is None else clean["n"]


def _broke(rows: Sequence[Mapping[str, Any]]) -> str:
    """ "yes: k of m" at the sweep's budget that broke most images, "NO" when none broke any,
    "-" for rows without success counts (the noise baseline)."""
    counted = [r for r in rows if "successes" in r and r["eps"] > 0]
    if not counted:
        return "-"
    best = max(counted, key=lambda r: r["successes"])
    if best["successes"] == 0:
        return f"NO: none of {best['attacked']}"
    return f"yes: {best['successes']} of {best['attacked']}"


def _settings(audit: Mapping[str, Any]) -> str:
    b = audit["budget"]
    note = f" {b['note']}." if b.get("note") else ""
    amp = audit.get("settings", {}).get("amp", "off")
    precision = "float32" if amp == "off" else f"{amp} (--amp; attack iterates in float32)"
    return (
        f"budget {b['name']}: {audit.get('subset') or audit['n_attacked']} of the "
        f"{audit['dataset']} test split attacked, "
        f"PGD {b['steps']} steps "
        f"x {b['restarts']} restart(s), CW-L2 on {b['cw_n']} samples, AutoAttack "
        f"{b['autoattack'] or 'off'}, seed {audit['seed']}, forwards in {precision}; "
        f"{audit.get('seconds', 0):.0f} s." + note
    )
