"""The audit's report card: a score in [0, 1] and a status per item, read off audit.json's items,
its figures and its report.html section.

Scores (docs/audit.md): clean = AUC (fail for a collapsed detector, one that calls >= 95 % of the
test images one class); white-box L-inf / L2 and transfer = share of fakes still
detected at the reference budget (REFERENCE_EPS), worst case over the attacks of the item;
gradient masking = share of the checks passed; explanations = 1 when the randomisation sanity
check passes; a collapsed detector fails every robustness item (no attack is needed to pass fakes
through it, or none can, and neither says anything about robustness). Status: pass / warn / fail
(skipped or error where an item has no result).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from deepshield.audit.budgets import REFERENCE_EPS
from deepshield.audit.checks import eps_text
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
CLEAN_PASS, CLEAN_WARN = 0.9, 0.75  # clean AUC at or above: pass / warn
ROBUST_PASS, ROBUST_WARN = 0.9, 0.5  # share of fakes still detected at the reference budget


def row_at(rows: Sequence[Mapping[str, Any]], eps: float) -> Mapping[str, Any] | None:
    """The row of `rows` at budget `eps` (None when the ladder lacks it)."""
    return next((r for r in rows if math.isclose(r["eps"], eps, abs_tol=1e-9)), None)


def eps_half(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Smallest eps of the ladder at which at least half of the fakes pass as real (None: never)."""
    hits = [r["eps"] for r in rows if (r.get("fake_passed_as_real") or 0.0) >= 0.5]
    return min(hits) if hits else None


def _ok(item: Mapping[str, Any] | None) -> bool:
    return bool(item) and "error" not in item and "rows" in item


def collapsed_clean(items: Mapping[str, Any]) -> str | None:
    """The class a collapsed detector calls >= 95 % of the clean test images ("real"/"fake"),
    or None when it works (or the clean item is missing)."""
    c = items.get("clean")
    return c.get("collapsed_to") if isinstance(c, Mapping) and c.get("collapsed") else None


def _robustness(items: Mapping[str, Any], keys: Sequence[str], norm: str) -> dict[str, Any]:
    """Worst case over the attacks `keys` at the reference budget of `norm`; a collapsed
    detector fails (it passes no fake, or flags every real, without any attack)."""
    ref = REFERENCE_EPS[norm]
    present = [k for k in keys if _ok(items.get(k))]
    if not present:
        return _missing(items, keys)
    collapsed = collapsed_clean(items)
    if collapsed is not None:
        return {
            "score": 0.0,
            "status": "fail",
            "summary": f"not graded: the detector is COLLAPSED (calls the clean test images "
            f"{collapsed}), so fakes passed under attack say nothing about robustness",
            "eps_half": None,
            "reference_eps": ref,
            "commands": [items[k]["command"] for k in present],
        }
    passed = {}
    for k in present:
        row = row_at(items[k]["rows"], ref)
        if row is not None and row.get("fake_passed_as_real") is not None:
            passed[k] = row["fake_passed_as_real"]
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
        summary += f"; at {eps_text(ref, norm)} {100 * worst:.0f}% pass"
        summary += f" (worst of {attacks})" if several else ""
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


def _clean(items: Mapping[str, Any]) -> dict[str, Any]:
    c = items.get("clean")
    if not c or "error" in c:
        return _missing(items, ["clean"])
    auc = c["auc"]
    status = "fail" if auc is None or auc < CLEAN_WARN else "warn" if auc < CLEAN_PASS else "pass"
    summary = (
        f"accuracy {c['accuracy']:.3f}, balanced accuracy {_num(c.get('balanced_accuracy'))}, "
        f"fakes passed as real {_num(c['fake_passed_as_real'])}, reals flagged as fake "
        f"{_num(c['real_flagged_as_fake'])}, AUC {_num(auc)}, EER {_num(c['eer'])} on {c['n']} "
        "test images"
    )
    collapsed = collapsed_clean(items)
    if collapsed is not None:  # whatever its AUC, at its threshold it tells nothing apart
        status = "fail"
        summary = f"COLLAPSED: calls >= 95 % of the test images {collapsed}; " + summary
    return {"score": auc, "status": status, "summary": summary, "commands": [c["command"]]}


def _transfer(items: Mapping[str, Any]) -> dict[str, Any]:
    if not _ok(items.get("transfer")):
        return _missing(items, ["transfer"])
    t = items["transfer"]
    out = _robustness(items, ["transfer"], "linf")
    out["summary"] = (
        f"surrogate {t['surrogate']['model']} ({t['surrogate']['run']}): " + out["summary"]
    )
    commands = [t["surrogate"]["command"]] if t["surrogate"].get("command") else []
    out["commands"] = commands + out["commands"]
    return out


def _masking(items: Mapping[str, Any]) -> dict[str, Any]:
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


def _explanations(items: Mapping[str, Any]) -> dict[str, Any]:
    e = items.get("explanations")
    if not e or "error" in e:
        return _missing(items, ["explanations"])
    s = e["sanity"]
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


def score_card(items: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per card item: item, score (0..1 or None), status, summary, commands."""
    rows = {
        "clean detection": _clean(items),
        "white-box L-inf": _robustness(items, LINF_ATTACKS, "linf"),
        "white-box L2": _robustness(items, L2_ATTACKS, "l2"),
        "transfer (black-box)": _transfer(items),
        "gradient masking": _masking(items),
        "explanations": _explanations(items),
    }
    return [{"item": k, **v} for k, v in rows.items()]


# -- figures and the report section -----------------------------------------------------------


def curves_figure(items: Mapping[str, Any], keys: Sequence[str], norm: str) -> Figure | None:
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
    scale = 255 if norm == "linf" else 1
    fig = plot_curve(
        [e * scale for e in xs],
        series,
        xlabel="eps (x 1/255, L-inf)" if norm == "linf" else "eps (L2, pixels in [0, 1])",
        ylabel="fakes passed as real",
        title=f"Evasion under {'L-inf' if norm == 'linf' else 'L2'} attacks",
    )
    ax = fig.axes[0]
    ax.set_xscale("symlog", linthresh=1 if norm == "linf" else 0.25)
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
    body += _sweep_table(items)
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
    "real_flagged_as_fake": "Reals flagged as fake",
    "balanced_accuracy": "Balanced accuracy",
}


def _sweep_table(items: Mapping[str, Any]) -> str:
    """Fakes passed as real, reals flagged as fake and balanced accuracy per attack and eps (one
    row per sweep; "broke" says whether the attack fooled any image at some budget)."""
    out = ""
    for norm, keys in (("linf", (*LINF_ATTACKS, "noise", "transfer")), ("l2", L2_ATTACKS)):
        present = [k for k in keys if _ok(items.get(k))]
        if not present:
            continue
        xs = sorted({r["eps"] for k in present for r in items[k]["rows"]})
        unit = "L-inf" if norm == "linf" else "L2"
        for key, title in SWEEP_TABLES.items():
            rows = []
            for k in present:
                by_eps = {r["eps"]: r.get(key) for r in items[k]["rows"]}
                row: dict[str, Any] = {"attack": TITLES[k], "images": items[k]["n"]}
                row["broke"] = _broke(items[k]["rows"])
                row.update({eps_text(e, norm): by_eps.get(e) for e in xs})
                rows.append(row)
            out += f"<h3>{title} ({unit})</h3>" + table(rows, digits=2)
    return out


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
    return (
        f"budget {b['name']}: {audit.get('subset') or audit['n_attacked']} of the "
        f"{audit['dataset']} test split attacked, "
        f"PGD {b['steps']} steps "
        f"x {b['restarts']} restart(s), CW-L2 on {b['cw_n']} images, AutoAttack "
        f"{b['autoattack'] or 'off'}, seed {audit['seed']}; {audit.get('seconds', 0):.0f} s."
    )
