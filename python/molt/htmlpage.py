"""Self-contained offline HTML pages for the study tools (molt-study): one file, no network.

A page is its CSS, its data as JSON in a <script type="application/json"> element, and inline
JavaScript that draws everything (tables, SVG plots) from that data. Nothing is fetched: no
CDN, no fonts, no images, so a page opens from a laptop's disk or an air-gapped cluster.

    html = page("title", css, body, data, script)
    write_text(path, html)                       # atomic: a temp file renamed over the old one
"""
import html as _html
import json
import math
import os
import tempfile

__all__ = ["BASE_CSS", "COMMON_JS", "escape", "finite", "json_script", "page", "write_text"]

escape = _html.escape

BASE_CSS = """
:root { --fg: #1d2327; --muted: #66707a; --line: #d8dde2; --bg: #ffffff; --panel: #f5f7f9;
        --mark: #ffd84d; --accent: #2b6cb0; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 24px; font: 13px/1.45 system-ui, -apple-system, "Segoe UI",
       sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 18px; margin: 0 0 6px; }
h2 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 4px;
         padding: 8px 12px; }
.row { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
svg text { font: 11px system-ui, sans-serif; fill: var(--fg); }
button, select { font: inherit; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
"""

# Helpers every page's script may use: el(tag, attrs, children), svg(tag, attrs), fmt(x).
COMMON_JS = r"""
const SVGNS = "http://www.w3.org/2000/svg";
function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children || []) e.append(c);
  return e;
}
function svg(tag, attrs, children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children || []) e.append(c);
  return e;
}
function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const d = digits === undefined ? 3 : digits;
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(d - 1);
  return Number(x.toPrecision(d)).toString();
}
function pageData() { return JSON.parse(document.getElementById("data").textContent); }
"""


def finite(obj):
    """NaN and ±Inf become null: JSON has no such numbers and JSON.parse would refuse them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_script(obj, element_id="data"):
    """`obj` as a JSON data block; "</" is escaped so no string in it can close the element."""
    text = json.dumps(finite(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="{escape(element_id)}">{text}</script>'


def page(title, css, body, data, script):
    """A complete HTML document: BASE_CSS + css, body (trusted markup), the data block, then
    COMMON_JS and `script` (in a function of its own, so its names shadow no window property,
    such as `top`) run at the end of the body."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n"
        # No resource of any kind may come from elsewhere: the page is checked offline.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
        f"<style>{BASE_CSS}{css}</style>\n</head>\n<body>\n{body}\n"
        "<noscript><p>This page draws itself with JavaScript; enable it to see the data (the "
        "same data is in the JSON file beside this page).</p></noscript>\n"
        f"{json_script(data)}\n<script>{COMMON_JS}\n(() => {{\n{script}\n}})();</script>\n"
        "</body>\n</html>\n")


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
