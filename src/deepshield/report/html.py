"""report.html: the run's sections (sections/*.html), in order, with plots inlined."""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepshield.files import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2329;line-height:1.45}
h1{border-bottom:2px solid #2b6cb0;padding-bottom:.2em}h2{margin-top:2em;color:#2b6cb0}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #cbd2d9;padding:.25em .6em;
text-align:right}th{background:#eef2f7}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #e1e5ea;margin:.3em 0}.figs img{max-width:48%}
code,pre{background:#f4f6f8;padding:.1em .3em;border-radius:3px}.muted{color:#6b7785}
.pass{color:#1f7a3a;font-weight:600}.warn{color:#b7791f;font-weight:600}.fail{color:#c53030;font-weight:600}
"""

_META = re.compile(r"<!-- (order|title): (.*?) -->")
_IMG = re.compile(r'src="(plots/[^"]+\.png)"')


def _read_section(path: Path) -> tuple[int, str, str]:
    text = path.read_text()
    meta = dict(_META.findall(text))
    return int(meta.get("order", 50)), meta.get("title", path.stem), _META.sub("", text).strip()


def _inline_images(fragment: str, root: Path) -> str:
    def repl(m: re.Match[str]) -> str:
        p = root / m.group(1)
        if not p.is_file():
            return m.group(0)
        return 'src="data:image/png;base64,' + base64.b64encode(p.read_bytes()).decode() + '"'

    return _IMG.sub(repl, fragment)


def build_report(folder: Path) -> Path:
    """Assemble folder/report.html from folder/sections/*.html (self-contained: images inlined)."""
    sections = sorted(
        (_read_section(p) for p in (folder / "sections").glob("*.html")), key=lambda s: s[0]
    )
    body = "\n".join(
        f"<section><h2>{html.escape(title)}</h2>\n{_inline_images(frag, folder)}</section>"
        for _, title, frag in sections
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>deepshield: {html.escape(folder.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>deepshield report: {html.escape(folder.name)}</h1>"
        f"<p class='muted'>{html.escape(str(folder))} &middot; built {stamp}</p>{body}</body></html>"
    )
    return atomic_write_text(folder / "report.html", page)


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, digits: int = 4) -> str:
    """An HTML table from a list of dicts (floats rounded to `digits`)."""
    if not rows:
        return "<p class='muted'>(no rows)</p>"
    columns = columns or list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return html.escape(str(v)) if v is not None else "&ndash;"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(run_relative_png: str, alt: str = "") -> str:
    """An <img> for plots/<name>.png (inlined when the report is built)."""
    return f'<img src="{html.escape(run_relative_png)}" alt="{html.escape(alt)}">'
