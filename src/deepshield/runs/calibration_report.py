"""calibration.html of a calibrated scan: per detector, the decision and its warnings, the error
rates in sample and out of fold with their 95 % intervals, per method, the calibration metrics,
the calibrated scores per class around the threshold, the reliability of the out-of-fold P(fake)
(the honest one), the ROC of the raw file scores, the files called wrong out of fold and the
files left out."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepshield.files import atomic_write_text
from deepshield.report.html import CSS, figure, table
from deepshield.run import RunDir

if TYPE_CHECKING:
    from deepshield.runs.scan_calibration import KindCalibration

SHOWN = 50  # files listed per table (wrong out of fold, left out)


def rate_text(r: dict[str, Any]) -> str:
    """'12.0 % (71/590, 95 % CI 9.6-14.9 %)' of a counted rate (`scan_calibration._rate`);
    'n/a (none)' without files. The one wording of calibrate's output and calibration.html."""
    if not r["of"]:
        return "n/a (none)"
    lo, hi = r["ci95"]
    share = f"{100 * r['rate']:.1f} % ({r['count']}/{r['of']}"
    return f"{share}, 95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)"


def _rates(fit: KindCalibration) -> str:
    keys = ("reals_called_fake", "fakes_called_real", "reals_unsure", "fakes_unsure")
    titles = [k.replace("_", " ") for k in keys]
    cv = fit.cross_validated
    rows = [
        {"": "in sample (optimistic)"}
        | {t: rate_text(fit.in_sample[k]) for k, t in zip(keys, titles, strict=True)}
    ]
    if cv["folds"]:
        name = f"{cv['folds']}-fold cross-validated (by {cv['groups']})"
        rows.append({"": name} | {t: rate_text(cv[k]) for k, t in zip(keys, titles, strict=True)})
    out = table(rows, ["", *titles])
    if by := cv["fakes_called_real_by_method"]:
        out += "<p>Fakes called real out of fold, by method:</p>" + table(
            [{"method": m, "fakes called real": rate_text(r)} for m, r in by.items()]
        )
    return out


def _plots(run: RunDir, fit: KindCalibration) -> str:
    """Three figures saved in plots/ (claimed): calibrated scores, out-of-fold reliability, ROC."""
    from deepshield.report.plots import plot_reliability, plot_roc, plot_score_hist

    y = np.asarray([f.label for f in fit.files])
    raw = np.asarray([f.raw for f in fit.files])
    p = fit.decision.calibrate(raw)
    names = [f"calibration_{fit.kind}_{n}" for n in ("scores", "reliability_cv", "roc")]
    run.save_plot(plot_score_hist(y, p, fit.decision.threshold), names[0])
    shown = [f"plots/{names[0]}.png"]
    held = [(label, q) for label, (q, _) in zip(y, fit.cv_files, strict=True) if q is not None]
    if held and len({label for label, _ in held}) == 2:
        run.save_plot(plot_reliability(*map(np.asarray, zip(*held, strict=True))), names[1])
        shown.append(f"plots/{names[1]}.png")
    run.save_plot(plot_roc(y, raw), names[2])
    shown.append(f"plots/{names[2]}.png")
    return "<div class='figs'>" + "".join(figure(s) for s in shown) + "</div>"


def _wrong(fit: KindCalibration) -> str:
    """The files whose out-of-fold verdict contradicts their label, highest miss first."""
    rows = [
        {"file": f.path, "label": "fake" if f.label else "real", "method": f.method}
        | {"raw": f.raw, "out-of-fold P(fake)": q, "out-of-fold verdict": v}
        for f, (q, v) in zip(fit.files, fit.cv_files, strict=True)
        if v == ("real" if f.label else "fake")
    ]
    rows.sort(key=lambda r: -abs(r["out-of-fold P(fake)"] - fit.decision.threshold))
    if not rows:
        return "<p>No file was called the wrong class out of fold.</p>"
    more = f" (the first {SHOWN} of {len(rows)})" if len(rows) > SHOWN else ""
    return f"<p>Called the wrong class out of fold{more}:</p>" + table(rows[:SHOWN])


def _faces(d: Any) -> str:
    face = d.conditions.get("face_px")
    if not face:
        return ""
    return (
        f". Face widths of these files: {face['p05']:.0f}-{face['p95']:.0f} px for 90 % (median "
        f"{face['median']:.0f}); a scanned file outside that range is noted"
    )


def _section(run: RunDir, fit: KindCalibration) -> str:
    d, c = fit.decision, fit.decision.val_counts
    model = d.fitted_for.get("model")
    role = "speech detector" if fit.kind == "audio" else "image detector"
    ins = fit.in_sample
    metrics = {"AUC of raw file scores": ins["auc_raw"], "ECE raw": ins["ece_raw"]}
    metrics |= {
        "ECE calibrated": ins["ece_calibrated"],
        "Brier calibrated": ins["brier_calibrated"],
    }
    metrics |= {"Cllr calibrated": ins["cllr_calibrated"], "minCllr": ins["min_cllr"]}
    warning = f"<p class='warn'>Warning: {html.escape(d.warning)}</p>" if d.warning else ""
    left = [{"file": p, "why": w} for p, w in list(fit.left_out.items())[:SHOWN]]
    return (
        f"<h2>{html.escape(str(model))} ({role})</h2>"
        f"<p>{html.escape(d.note)}. Threshold {d.threshold:.4f} on calibrated P(fake) "
        f"({d.rule} rule), unsure within &plusmn;{d.band:g}; {c['n']} files ({c['fake']} fake, "
        f"{c['real']} real). Frames {d.fitted_for.get('frames')}"
        + (f", faces {d.fitted_for['faces']}" if "faces" in d.fitted_for else "")
        + f"; weights SHA-256 {str(d.fitted_for.get('weights_sha256'))[:12]}...{_faces(d)}</p>"
        + warning
        + "<h3>Error rates (95 % Wilson intervals)</h3>"
        + _rates(fit)
        + "<h3>Calibration, in sample</h3>"
        + table([metrics])
        + _plots(run, fit)
        + _wrong(fit)
        + (f"<h3>Left out ({len(fit.left_out)})</h3>" + table(left) if left else "")
    )


def write_calibration_report(run: RunDir, fits: dict[str, KindCalibration]) -> Path:
    """Write calibration.html (and its plots) into the scan folder `run`."""
    body = "".join(_section(run, fit) for fit in fits.values())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>deepshield calibration</title>"
        f"<style>{CSS}</style></head><body><h1>deepshield calibration: "
        f"{html.escape(run.path.name)}</h1><p class='muted'>Decisions fitted on the file scores "
        "of this scan's labelled files; `deepshield scan ... --decision "
        f"{html.escape(str(run.path))}` applies them.</p>{body}</body></html>"
    )
    return atomic_write_text(run.output("calibration.html"), page)
