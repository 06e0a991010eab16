"""report.html of a scan: per file its verdict, face thumbnail, a strip of per-frame scores
(videos) and Grad-CAM overlays of the fake class on the highest-scoring frames."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepshield.files import atomic_write_text

if TYPE_CHECKING:
    from deepshield.run import RunDir

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1d2329}
table{border-collapse:collapse}td,th{border:1px solid #cbd2d9;padding:.3em .5em;vertical-align:top}
th{background:#eef2f7}.fake{color:#c53030;font-weight:600}.real{color:#1f7a3a;font-weight:600}
.unsure{color:#b7791f;font-weight:600}.muted{color:#6b7785}.ev img{height:160px;margin-right:4px}
img.thumb{width:96px;height:96px}
"""


def _frame_scores(out: RunDir) -> dict[str, dict[int, float | None]]:
    """path -> {frame index: frame score (max over faces) or None (no_face)}."""
    from deepshield.runs.scan import FRAME_COLUMNS, complete_rows

    frames: dict[str, dict[int, float | None]] = {}
    for r in complete_rows(out.file("scan_frames.csv"), FRAME_COLUMNS):
        per = frames.setdefault(r["path"], {})
        i, s = int(r["frame"]), float(r["score"]) if r["score"] else None
        old = per.get(i)
        per[i] = s if old is None else max(old, s) if s is not None else old
    return frames


def strip_svg(scores: list[float | None], threshold: float, width: int = 320) -> str:
    """An inline SVG: one bar per sampled frame, height = P(fake); grey ticks = no_face; the
    dashed line is the decision threshold."""
    h, n = 40, max(1, len(scores))
    bw = width / n
    bars = []
    for k, s in enumerate(scores):
        if s is None:
            bars.append(
                f"<rect x='{k * bw:.1f}' y='{h - 3}' width='{bw:.1f}' height='3' fill='#aaa'/>"
            )
        else:
            color = "#c53030" if s >= threshold else "#2b6cb0"
            bh = max(1.0, s * h)
            bars.append(
                f"<rect x='{k * bw:.1f}' y='{h - bh:.1f}' width='{max(bw - 1, 1):.1f}' "
                f"height='{bh:.1f}' fill='{color}'/>"
            )
    ty = h - min(max(threshold, 0.0), 1.0) * h
    line = f"<line x1='0' x2='{width}' y1='{ty:.1f}' y2='{ty:.1f}' stroke='#333' stroke-dasharray='3,2'/>"
    return (
        f"<svg width='{width}' height='{h}' style='background:#f4f6f8'>{''.join(bars)}{line}</svg>"
    )


def _row_html(r: dict[str, str], out: RunDir, frames: dict[int, float | None]) -> str:
    from deepshield.runs.scan import file_id

    fid = file_id(r["path"])
    thumb = out.path / "faces" / f"{fid}.jpg"
    img = f"<img class='thumb' src='faces/{fid}.jpg'>" if thumb.is_file() else ""
    score = f"{float(r['score']):.3f}" if r["score"] else "&ndash;"
    verdict = html.escape(r["verdict"])
    evidence = "".join(
        f"<img src='evidence/{p.name}' title='frame {p.stem.rsplit('_', 1)[1]}'>"
        for p in sorted(
            (out.path / "evidence").glob(f"{fid}_*.jpg"), key=lambda p: p.stat().st_mtime
        )
    )
    strip = ""
    if r["kind"] == "video" and frames:
        ordered = [frames[i] for i in sorted(frames)]
        strip = strip_svg(ordered, float(r["threshold"] or 0.5))
    audio = f"<br>audio: {html.escape(r['audio_verdict'])}" if r.get("audio_verdict") else ""
    said = " ".join(filter(None, (r["error"], r.get("note"))))
    n = int(float(r["frames"] or 0))
    parts = (
        f"{n} window{'s' * (n != 1)} of the model's clip"
        if r["kind"] == "audio"
        else f"{r['faces'] or 0} faces, {r['frames'] or 0} frames"
    )
    digest = r.get("sha256") or ""
    ident = (
        f"<br><span class='muted' title='SHA-256 {digest}, modified {r.get('mtime')}'>"
        f"{int(r['bytes']):,} bytes, SHA-256 {digest[:16]}...</span>"
        if digest
        else ""
    )
    error = f"<br><span class='muted'>{html.escape(said)}</span>" if said else ""
    return (
        f"<tr><td>{img}</td><td>{html.escape(r['path'])}<br><span class='muted'>{r['kind']}, "
        f"{parts}</span>{ident}{error}</td>"
        f"<td>{score}</td><td class='{verdict}'>{verdict}{audio}</td>"
        f"<td>{strip}<div class='ev'>{evidence}</div></td></tr>"
    )


def _detector_html(role: str, det: dict[str, Any]) -> str:
    """One paragraph naming a detector, its weights and its decision rule (and its warning)."""
    dec = det.get("decision", {})
    level = (
        " A file's P(fake) is the calibrator applied to its raw file score."
        if dec.get("level") == "file"
        else ""
    )
    warning = f" <b>Warning:</b> {html.escape(str(dec['warning']))}." if dec.get("warning") else ""
    return (
        f"<p>{role} <b>{html.escape(str(det.get('model')))}</b> from "
        f"<code>{html.escape(str(det.get('source')))}</code> (weights SHA-256 "
        f"{str(det.get('weights_sha256'))[:12]}...). Decision: threshold "
        f"{dec.get('threshold')} on {'calibrated' if dec.get('calibrated') else 'raw'} P(fake), "
        f"unsure band {dec.get('unsure_band')}. <i>{html.escape(str(dec.get('note')))}</i>"
        f"{level}{warning}</p>"
    )


def write_report(out: RunDir, settings: dict[str, Any], rows: list[dict[str, str]]) -> Path:
    """Write out/report.html from scan.csv rows, scan_frames.csv and the saved images."""
    frames = _frame_scores(out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    roles = (("detector", "Image detector"), ("speech_detector", "Speech detector"))
    head = "".join(_detector_html(role, settings[k]) for k, role in roles if settings.get(k))
    if settings.get("amp", "off") != "off":
        head += f"<p>Scored in {settings['amp']} (--amp).</p>"
    head += (
        f"<p>{', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}. Frame strips: one bar "
        "per sampled frame (height = P(fake), red above the threshold, grey = no face); overlays: "
        "Grad-CAM of the fake class on the highest-scoring frames, box = the face found.</p>"
    )
    body = "".join(_row_html(r, out, frames.get(r["path"], {})) for r in rows)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>deepshield scan</title>"
        f"<style>{_CSS}</style></head><body><h1>deepshield scan</h1>{head}<table><tr><th>face</th>"
        f"<th>file</th><th>P(fake)</th><th>verdict</th><th>evidence</th></tr>{body}</table>"
        "</body></html>"
    )
    return atomic_write_text(out.output("report.html"), page)
