"""molt-study transforms: a dashboard of a trained MOLT's transforms, read through the data.

    molt-study transforms RUN --data D --out DIR        (python -m molt.study transforms ...)

For every transform t (bucket, rank r_t): how often it opens on D (its frequency, the share of
rows with g_t > 0), ‖U_t V_t‖_F and the singular values of U_t V_t, and its top-activating
contexts twice over: by the gate g_t and by what it writes, ‖g_t U_t V_t x‖. Per bucket: the
density (frequency) against the rank, the claim being that higher ranks are denser.

D is activation data (a shard or a folder of shards, docs/architecture.md §3). Shards from
`molt-harvest --model smollm2` also hold per row `seq`, `pos` and `token`; with the harvest's
sequences.safetensors (beside D or in its parent) the contexts are the tokens around the row,
the row's own token marked, decoded with the harvested model's tokenizer (harvest.json names
its folder) when one loads, else shown as ids. Without token columns a context is a row number.

Writes DIR/transforms.json and DIR/transforms.html, a single offline page (htmlpage.py).
The gates are MoltMLP.gates (the runtime's gate rule); the per-transform output norms use
‖U z‖² = zᵀ(UᵀU)z with z = V x, over the open (row, transform) pairs only.
"""
import json
import os
import sys
import time

import numpy as np

from . import htmlpage
from ._cli import Parser, StudyError, guarded

__all__ = ["StudyError", "main", "analyse", "spectra", "render_html"]

PROG = "molt-study transforms"


def parse_args(argv, prog=PROG):
    ap = Parser(
        prog=prog,
        description="Per transform of a trained MOLT: rank, frequency, ‖U V‖_F, singular "
                    "spectrum, and the top-activating contexts by the gate g and by ‖g U V x‖ "
                    "with the token marked; density against rank per bucket. Writes "
                    "DIR/transforms.json and a self-contained offline page DIR/transforms.html.",
        epilog="Example: molt-study transforms RUN --data h/val --out dash "
               "(h from molt-harvest --model smollm2).")
    ap.add_argument("run", metavar="RUN", help="a molt-train run directory of a MOLT")
    ap.add_argument("--data", required=True, metavar="D",
                    help="activation data: a safetensors shard or a folder of shards")
    ap.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ap.add_argument("--top", type=int, default=8, help="contexts kept per transform and ranking (default 8)")
    ap.add_argument("--rows", type=int, default=0, help="read at most this many rows of D (default: all)")
    ap.add_argument("--chunk", type=int, default=8192, help="rows per pass (default 8192)")
    ap.add_argument("--left", type=int, default=8, help="context tokens before the marked one (default 8)")
    ap.add_argument("--right", type=int, default=3, help="context tokens after it (default 3)")
    ap.add_argument("--sequences", metavar="PATH",
                    help="the harvest's sequences.safetensors (default: beside D or in its parent)")
    ap.add_argument("--tokenizer", metavar="DIR",
                    help="a transformers tokenizer folder (default: the model harvest.json names)")
    ap.add_argument("--no-decode", action="store_true", help="show token ids, not text")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    for name in ("top", "chunk"):
        if getattr(args, name) <= 0:
            raise StudyError(f"--{name} must be positive")
    if args.rows < 0 or args.left < 0 or args.right < 0:
        raise StudyError("--rows, --left and --right must not be negative")
    return args


# ---- data -----------------------------------------------------------------------------------

def shard_files(path):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise StudyError(f"{path}: no such file or folder")
    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
    if not files:
        raise StudyError(f"{path}: no .safetensors shards in the folder")
    return files


def _load_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise StudyError(f"{path}: cannot read safetensors ({str(e).splitlines()[0]})") from None


_TOKEN_COLUMNS = ("seq", "pos", "token")


def read_blocks(files, d, chunk, max_rows):
    """Yields (x float32 [n, d] torch, columns {seq, pos, token} int64 NumPy or None) blocks."""
    taken = 0
    for path in files:
        t = _load_safetensors(path)
        if "x" not in t:
            raise StudyError(f"{path}: no tensor 'x' (activation shards hold x and y)")
        x = t["x"]
        if x.dim() != 2 or x.shape[1] != d:
            raise StudyError(f"{path}: x has shape {list(x.shape)}, the MOLT needs [n, {d}]")
        have = [c for c in _TOKEN_COLUMNS if c in t]
        if have and len(have) != 3:
            raise StudyError(f"{path}: has {', '.join(have)} but not all of seq, pos, token")
        cols = None
        if have:
            cols = {c: t[c].reshape(-1).long().numpy() for c in _TOKEN_COLUMNS}
            if any(len(v) != x.shape[0] for v in cols.values()):
                raise StudyError(f"{path}: seq, pos and token must have one entry per row of x")
        x = x.float()
        if not bool(x.isfinite().all()):
            raise StudyError(f"{path}: x holds NaN or Inf")
        for lo in range(0, x.shape[0], chunk):
            n = x.shape[0] - lo if not max_rows else min(x.shape[0] - lo, max_rows - taken)
            n = min(n, chunk)
            if n <= 0:
                return
            yield (x[lo:lo + n].contiguous(),
                   None if cols is None else {c: v[lo:lo + n] for c, v in cols.items()})
            taken += n


def _near(data, name):
    """`name` beside the data (a shard's folder, or the folder itself) or one level up."""
    base = data if os.path.isdir(data) else os.path.dirname(os.path.abspath(data))
    for folder in (base, os.path.dirname(os.path.abspath(base))):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def load_sequences(args):
    path = args.sequences or _near(args.data, "sequences.safetensors")
    if path is None:
        return None, None
    if not os.path.isfile(path):
        raise StudyError(f"--sequences {path}: not found")
    t = _load_safetensors(path)
    if "ids" not in t or t["ids"].dim() != 2:
        raise StudyError(f"{path}: no 2-D tensor 'ids' (molt-harvest's sequences.safetensors)")
    return t["ids"].long().numpy(), path


def _harvest_model(data):
    p = _near(data, "harvest.json")
    if p is None:
        return None
    try:
        with open(p) as f:
            return json.load(f).get("model")
    except (OSError, ValueError):
        return None


def load_tokenizer(args, log):
    """(tokenizer or None, where it came from)."""
    if args.no_decode:
        return None, None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source, kwargs = args.tokenizer, {}
    if source is None:
        model = _harvest_model(args.data) or ""
        if os.path.isdir(model):
            source = model
        elif "SmolLM2" in model:
            from . import lm
            cached = os.path.join(lm._model_cache_dir(), lm.SMOLLM2_CACHE_NAME)
            if os.path.isfile(os.path.join(cached, "tokenizer_config.json")):
                source = cached
            else:
                try:
                    source, name = os.path.split(lm.smollm2_gguf())
                except FileNotFoundError:
                    return None, None
                kwargs = {"gguf_file": name}
        else:
            return None, None
    elif not os.path.isdir(source):
        raise StudyError(f"--tokenizer {source}: not a folder")
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        return AutoTokenizer.from_pretrained(source, **kwargs), source
    except Exception as e:  # noqa: BLE001 - any failure to load means "show ids"
        why = (str(e).splitlines() or [type(e).__name__])[0]
        if args.tokenizer:
            raise StudyError(f"--tokenizer {source}: cannot load a tokenizer ({why})") from None
        log(f"{PROG}: no tokenizer from {source} ({why}); showing token ids")
        return None, None


# ---- the transforms -------------------------------------------------------------------------

def _buckets(mlp):
    """[(rank, count, U [N, d, R], V [N, R, d])] as float32 torch tensors, in transform order."""
    out = []
    for k, b in enumerate(mlp.layer.model["buckets"]):
        u = mlp.get_parameter(f"u{k}").detach()
        v = mlp.get_parameter(f"v{k}").detach()
        out.append((int(b["rank"]), int(b["count"]), u, v))
    return out


def spectra(mlp):
    """Per transform the singular values of U_t V_t (float64, descending). With U = Q_u R_u and
    Vᵀ = Q_v R_v, U V = Q_u (R_u R_vᵀ) Q_vᵀ, so they are those of the small R_u R_vᵀ."""
    import torch
    out = []
    for _, _, u, v in _buckets(mlp):
        ru = torch.linalg.qr(u.double(), mode="r").R
        rv = torch.linalg.qr(v.double().transpose(1, 2), mode="r").R
        out.extend(torch.linalg.svdvals(ru @ rv.transpose(1, 2)).numpy())
    return out


def _merge_top(best, block, other, row0, k):
    """Keeps the k largest entries per column: best = (values [≤k, T], rows, other values)."""
    import torch
    kk = min(k, block.shape[0])
    v, i = torch.topk(block, kk, dim=0)
    o = other.gather(0, i)
    vals, rows, oth = (torch.cat([best[0], v]), torch.cat([best[1], i + row0]),
                       torch.cat([best[2], o]))
    if vals.shape[0] > k:
        vals, j = torch.topk(vals, k, dim=0)
        rows, oth = rows.gather(0, j), oth.gather(0, j)
    return vals, rows, oth


def contributions(mlp, x, gates=None):
    """‖g_t U_t V_t x‖ [n, T] for rows x [n, d] (float32 torch), zero where t is closed; also
    returns the gates. Only open (row, t) pairs are computed."""
    import torch
    with torch.no_grad():
        g = mlp.gates(x) if gates is None else gates
        out = torch.zeros_like(g)
        opened = g > 0
        pairs = opened.T.nonzero()  # (t, row), sorted by t
        per_t = opened.sum(0).tolist()
        start, t = 0, 0
        for _, count, u, v in _buckets(mlp):
            gram = torch.einsum("ndr,nds->nrs", u, u)
            for i in range(count):
                m = per_t[t]
                if m:
                    rows = pairs[start:start + m, 1]
                    z = x[rows] @ v[i].T
                    q = ((z @ gram[i]) * z).sum(1).clamp_min(0).sqrt()
                    out[rows, t] = g[rows, t] * q
                start += m
                t += 1
    return out, g


def scan(mlp, blocks, k, log=None):
    """One pass over the data: per transform counts, sums and the top-k rows by g and by
    ‖g U V x‖. Returns a dict of NumPy arrays and the token columns of every row read."""
    import torch
    T = sum(c for _, c, _, _ in _buckets(mlp))
    opened = torch.zeros(T, dtype=torch.float64)
    gsum = torch.zeros(T, dtype=torch.float64)
    osum = torch.zeros(T, dtype=torch.float64)
    empty = (torch.zeros(0, T), torch.zeros(0, T, dtype=torch.long), torch.zeros(0, T))
    top_g, top_o = empty, empty
    cols, rows, l0 = [], 0, 0.0
    t0 = time.time()
    for x, c in blocks:
        out, g = contributions(mlp, x)
        o = (g > 0).sum(0, dtype=torch.float64)
        opened += o
        l0 += float(o.sum())
        gsum += g.sum(0, dtype=torch.float64)
        osum += out.sum(0, dtype=torch.float64)
        top_g = _merge_top(top_g, g, out, rows, k)
        top_o = _merge_top(top_o, out, g, rows, k)
        cols.append(c)
        rows += x.shape[0]
        if log:
            log(f"{PROG}: {rows} rows ({time.time() - t0:.1f} s)")
    if rows == 0:
        raise StudyError("the data holds no rows")
    if any(c is None for c in cols) and any(c is not None for c in cols):
        raise StudyError("some shards have seq/pos/token columns and others do not")
    columns = None if cols[0] is None else {n: np.concatenate([c[n] for c in cols])
                                             for n in _TOKEN_COLUMNS}
    np_ = lambda a: a.numpy()
    return {"rows": rows, "opened": np_(opened), "gate_sum": np_(gsum), "out_sum": np_(osum),
            "l0": l0 / rows, "top_gate": tuple(map(np_, top_g)),
            "top_out": tuple(map(np_, top_o))}, columns


def _spearman(a, b):
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):  # ties share their mean rank
            same = v == val
            r[same] = r[same].mean()
        return r
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


class _Contexts:
    """Turns a row index into what the page shows: the row's token and its neighbours."""

    def __init__(self, columns, ids, tokenizer, left, right):
        self.columns, self.ids, self.tok = columns, ids, tokenizer
        self.left, self.right = left, right
        self.cache = {}

    def text(self, token):
        if self.tok is None:
            return f"#{token}"
        if token not in self.cache:
            try:
                self.cache[token] = self.tok.decode([int(token)])
            except Exception:  # noqa: BLE001 - an id the tokenizer does not know
                self.cache[token] = f"#{token}"
        return self.cache[token]

    def __call__(self, row, value, other):
        ctx = {"row": int(row), "value": float(value), "other": float(other)}
        if self.columns is None:
            return ctx
        seq, pos, token = (int(self.columns[n][row]) for n in _TOKEN_COLUMNS)
        ctx.update(seq=seq, pos=pos, token=token)
        if self.ids is not None and 0 <= seq < self.ids.shape[0] and 0 <= pos < self.ids.shape[1]:
            lo, hi = max(0, pos - self.left), min(self.ids.shape[1], pos + self.right + 1)
            window = [int(i) for i in self.ids[seq, lo:hi]]
            if window[pos - lo] != token:
                raise StudyError(f"row {row}: its token {token} is not token {pos} of sequence "
                                 f"{seq} in the sequences file: the file is another harvest's")
            ctx.update(ids=window, mark=pos - lo)
        else:
            ctx.update(ids=[token], mark=0)
        ctx["text"] = [self.text(i) for i in ctx["ids"]]
        return ctx


def analyse(mlp, blocks, k=8, ids=None, tokenizer=None, left=8, right=3, log=None):
    """The report (a JSON-able dict) for MoltMLP `mlp` over `blocks` (see read_blocks); `ids`
    [sequences, length] and `tokenizer` make the contexts (see _Contexts)."""
    stats, columns = scan(mlp, blocks, k, log)
    contexts = _Contexts(columns, ids if columns is not None else None, tokenizer, left, right)
    sv = spectra(mlp)
    rows = stats["rows"]
    transforms, t = [], 0
    buckets = []
    for b, (rank, count, _, _) in enumerate(_buckets(mlp)):
        freqs = []
        for _ in range(count):
            n_open = float(stats["opened"][t])
            s = sv[t]
            frob = float(np.sqrt((s ** 2).sum()))
            entry = {
                "index": t, "bucket": b, "rank": rank, "opened": int(n_open),
                "frequency": n_open / rows, "frob": frob,
                "spectrum": [float(v) for v in s],
                "effective_rank": float(s.sum() ** 2 / (s ** 2).sum()) if frob > 0 else 0.0,
                "mean_gate": float(stats["gate_sum"][t] / n_open) if n_open else None,
                "mean_out": float(stats["out_sum"][t] / n_open) if n_open else None,
            }
            for key, (vals, idx, other) in (("top_gate", stats["top_gate"]),
                                            ("top_out", stats["top_out"])):
                entry[key] = [contexts(idx[j, t], vals[j, t], other[j, t])
                              for j in range(vals.shape[0]) if vals[j, t] > 0]
            transforms.append(entry)
            freqs.append(entry["frequency"])
            t += 1
        f = np.asarray(freqs)
        buckets.append({"bucket": b, "rank": rank, "count": count,
                        "mean_frequency": float(f.mean()), "median_frequency": float(np.median(f)),
                        "min_frequency": float(f.min()), "max_frequency": float(f.max()),
                        "dead": int((f == 0).sum()), "l0_share": float(f.sum())})
    by_rank = sorted(buckets, key=lambda b: b["rank"])
    means = [b["mean_frequency"] for b in by_rank]
    return {
        "rows": rows, "d_model": mlp.layer.d_model, "transforms_count": t,
        "l0": stats["l0"], "dead": sum(b["dead"] for b in buckets),
        "top": k, "has_tokens": contexts.columns is not None,
        "has_context": contexts.ids is not None,
        "decoded": contexts.tok is not None and contexts.columns is not None,
        "buckets": buckets,
        "density_vs_rank": {
            "mean_frequency_by_rank": [[b["rank"], b["mean_frequency"]] for b in by_rank],
            "increases_with_rank": all(a <= b for a, b in zip(means, means[1:])),
            "spearman_rank_frequency": _spearman([x["rank"] for x in transforms],
                                                 [x["frequency"] for x in transforms]),
        },
        "transforms": transforms,
    }


# ---- the page -------------------------------------------------------------------------------

_CSS = """
.ctx { white-space: nowrap; margin: 1px 0; font-size: 12px; max-width: 640px; overflow: hidden;
       text-overflow: ellipsis; }
.ctx .v { display: inline-block; min-width: 52px; color: var(--muted); text-align: right;
          margin-right: 6px; font-variant-numeric: tabular-nums; }
.tok { white-space: pre; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
       border-right: 1px dotted #c4cad0; padding: 0 1px; }
mark.tok { background: var(--mark); color: #000; border-radius: 2px; font-weight: 600; }
tr.transform.dead { color: var(--muted); }
#controls { margin: 6px 0; display: flex; gap: 12px; align-items: center; }
#density-plot .pt { fill: var(--accent); fill-opacity: 0.55; }
#density-plot .mean { stroke: #c53030; stroke-width: 2.5; }
#density-plot .axis { stroke: #8a949e; }
.spectrum rect { fill: #4a8ac9; }
"""

_BODY = """
<h1>MOLT transforms <span class="muted" id="title"></span></h1>
<div id="summary" class="panel"></div>
<div class="row">
  <div><h2>Density vs rank</h2><div id="density"></div></div>
  <div><h2>Buckets</h2><div id="buckets"></div></div>
</div>
<h2>Transforms</h2>
<div id="controls"></div>
<table id="transforms"></table>
<div id="pager"></div>
"""

_JS = r"""
const D = pageData();
const PAGE = 25;
document.getElementById("title").textContent = D.run;
document.getElementById("summary").append(
  el("div", {text: `${D.rows} rows of ${D.data} · d = ${D.d_model} · ${D.transforms_count} ` +
    `transforms in ${D.buckets.length} buckets · mean L0 ${fmt(D.l0)} · ${D.dead} never open · ` +
    (D.decoded ? "tokens decoded" : D.has_tokens ? "token ids (no tokenizer)" : "no token columns: rows shown")}),
  el("div", {class: "muted", text: "Spearman(rank, frequency) = " +
    fmt(D.density_vs_rank.spearman_rank_frequency) + "; bucket means " +
    (D.density_vs_rank.increases_with_rank ? "increase" : "do not increase") + " with rank"}));

function densityPlot() {
  const W = 460, H = 260, L = 56, R = 12, T = 10, B = 34;
  const ranks = D.buckets.map(b => b.rank).sort((a, b) => a - b);
  const floor = 0.5 / D.rows;
  const ly = f => Math.log10(Math.max(f, floor));
  const lo = ly(floor) - 0.15, hi = 0.05;
  const x = r => L + (ranks.indexOf(r) + 0.5) * (W - L - R) / ranks.length;
  const y = f => T + (hi - ly(f)) / (hi - lo) * (H - T - B);
  const s = svg("svg", {id: "density-plot", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  s.append(svg("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}),
           svg("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}));
  // Decades above the floor, and the floor itself: transforms that never opened sit there.
  for (let e = Math.ceil(ly(floor) + 0.25); e <= hi; e++) {
    s.append(svg("text", {x: L - 6, y: y(10 ** e) + 4, "text-anchor": "end", text: "1e" + e}));
  }
  s.append(svg("text", {x: L - 6, y: y(floor) + 4, "text-anchor": "end", text: "never"}));
  ranks.forEach(r => s.append(svg("text", {x: x(r), y: H - B + 15, "text-anchor": "middle", text: r})));
  s.append(svg("text", {x: (L + W) / 2, y: H - 4, "text-anchor": "middle", text: "rank"}),
           svg("text", {x: 12, y: T + (H - B) / 2, transform: `rotate(-90 12 ${T + (H - B) / 2})`,
                        "text-anchor": "middle", text: "frequency (log)"}));
  const span = (W - L - R) / ranks.length * 0.6;
  D.transforms.forEach((t, i) => {
    const jitter = ((i * 0.6180339) % 1 - 0.5) * span;
    s.append(svg("circle", {class: "pt", cx: x(t.rank) + jitter, cy: y(t.frequency), r: 2.5},
                 [svg("title", {text: `transform ${t.index}: ${fmt(t.frequency)}`})]));
  });
  D.buckets.forEach(b => s.append(svg("line", {class: "mean", x1: x(b.rank) - span / 2,
    x2: x(b.rank) + span / 2, y1: y(b.mean_frequency), y2: y(b.mean_frequency)})));
  document.getElementById("density").append(s);
}

function bucketTable() {
  const head = el("tr", {}, ["bucket", "rank", "count", "mean freq", "median", "max", "never open", "L0 share"]
    .map((h, i) => el("th", {class: i ? "num" : "", text: h})));
  const rows = D.buckets.map(b => el("tr", {class: "bucket"}, [b.bucket, b.rank, b.count,
    fmt(b.mean_frequency), fmt(b.median_frequency), fmt(b.max_frequency), b.dead, fmt(b.l0_share)]
    .map((v, i) => el("td", {class: i ? "num" : "", text: String(v)}))));
  document.getElementById("buckets").append(el("table", {id: "bucket-table"}, [head, ...rows]));
}

function spectrum(t) {
  const W = 90, H = 26, n = t.spectrum.length, top = t.spectrum[0] || 1;
  const s = svg("svg", {class: "spectrum", width: W, height: H});
  const w = W / Math.max(n, 1);
  t.spectrum.forEach((v, i) => s.append(svg("rect", {x: i * w + 0.5, width: Math.max(w - 1, 0.8),
    y: H - H * v / top, height: H * v / top})));
  s.append(svg("title", {text: "singular values: " + t.spectrum.map(v => fmt(v)).join(", ")}));
  return s;
}

// Newlines and tabs would break the line and runs of spaces (code indentation) widen it: they
// are shown as marks.
const shown = s => s.replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/ {3,}/g, m => `␣×${m.length}`);
function context(c, what, otherWhat) {
  const div = el("div", {class: "ctx", title: `row ${c.row}` + (c.seq !== undefined ?
    `, sequence ${c.seq}, position ${c.pos}` : "") + `; ${otherWhat} ${fmt(c.other)}`});
  div.append(el("span", {class: "v", text: fmt(c.value)}));
  if (!c.text) { div.append(el("span", {class: "muted", text: `row ${c.row}`})); return div; }
  c.text.forEach((s, i) => div.append(el(i === c.mark ? "mark" : "span",
    {class: "tok", "data-id": c.ids[i], text: shown(s)})));
  return div;
}

function contextCell(list, what, otherWhat) {
  const td = el("td", {class: what});
  if (!list.length) td.append(el("span", {class: "muted", text: "never open"}));
  list.forEach(c => td.append(context(c, what, otherWhat)));
  return td;
}

const state = {bucket: "all", sort: "index", page: 0};
function visible() {
  let v = D.transforms.filter(t => state.bucket === "all" || String(t.bucket) === state.bucket);
  const key = {index: t => t.index, frequency: t => -t.frequency, frob: t => -t.frob,
               rank: t => -t.rank}[state.sort];
  return v.slice().sort((a, b) => key(a) - key(b) || a.index - b.index);
}
function drawTable() {
  const table = document.getElementById("transforms");
  table.replaceChildren(el("tr", {}, ["#", "rank", "frequency", "‖UV‖_F", "spectrum",
    "top contexts by g", "top contexts by ‖g U V x‖"].map((h, i) =>
      el("th", {class: i && i < 4 ? "num" : "", text: h}))));
  const v = visible(), pages = Math.max(1, Math.ceil(v.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  for (const t of v.slice(state.page * PAGE, (state.page + 1) * PAGE)) {
    table.append(el("tr", {class: "transform" + (t.opened ? "" : " dead"), "data-index": t.index,
      "data-rank": t.rank}, [
      el("td", {class: "num", text: String(t.index)}),
      el("td", {class: "num rank", text: String(t.rank)}),
      el("td", {class: "num freq", text: fmt(t.frequency)}),
      el("td", {class: "num", text: fmt(t.frob)}),
      el("td", {}, [spectrum(t)]),
      contextCell(t.top_gate, "by-gate", "‖gUVx‖"),
      contextCell(t.top_out, "by-out", "g")]));
  }
  const pager = document.getElementById("pager");
  const prev = el("button", {id: "prev", text: "◀"}), next = el("button", {id: "next", text: "▶"});
  prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
  prev.onclick = () => { state.page--; drawTable(); };
  next.onclick = () => { state.page++; drawTable(); };
  pager.replaceChildren(prev, el("span", {text: ` page ${state.page + 1} of ${pages} `}), next);
}

function controls() {
  const bucket = el("select", {id: "bucket-filter"}, [el("option", {value: "all", text: "all buckets"}),
    ...D.buckets.map(b => el("option", {value: String(b.bucket), text: `rank ${b.rank} (${b.count})`}))]);
  const sort = el("select", {id: "sort"}, ["index", "frequency", "frob", "rank"].map(s =>
    el("option", {value: s, text: "sort by " + s})));
  bucket.onchange = () => { state.bucket = bucket.value; state.page = 0; drawTable(); };
  sort.onchange = () => { state.sort = sort.value; drawTable(); };
  document.getElementById("controls").append(bucket, sort);
}

// The view can be named in the address: transforms.html#sort=frequency&bucket=1&page=2.
const want = new URLSearchParams(location.hash.slice(1));
if (["index", "frequency", "frob", "rank"].includes(want.get("sort"))) state.sort = want.get("sort");
if (D.buckets.some(b => String(b.bucket) === want.get("bucket"))) state.bucket = want.get("bucket");
if (want.get("page")) state.page = Math.max(0, (parseInt(want.get("page"), 10) || 1) - 1);
densityPlot();
bucketTable();
controls();
document.getElementById("bucket-filter").value = state.bucket;
document.getElementById("sort").value = state.sort;
drawTable();
document.body.setAttribute("data-ready", "1");
"""


def render_html(report):
    return htmlpage.page(f"MOLT transforms: {report.get('run', '')}", _CSS, _BODY, report, _JS)


# ---- the command ----------------------------------------------------------------------------

def _log(message):
    print(message, file=sys.stderr, flush=True)


def _load_mlp(run, chunk):
    import molt
    from molt.torch import MoltMLP
    if not os.path.isdir(run):
        raise StudyError(f"{run}: no such run directory")
    try:
        layer = molt.load(run, batch=chunk)
    except molt.MoltError as e:
        raise StudyError(str(e).splitlines()[0]) from None
    if layer.model.get("kind") != "molt":
        raise StudyError(f"{run}: a {layer.model.get('kind')} run; transforms need a MOLT")
    return MoltMLP(layer)


def run(args, log=_log):
    t0 = time.time()
    say = (lambda m: None) if args.quiet else log
    mlp = _load_mlp(args.run, args.chunk)
    files = shard_files(args.data)
    ids, seq_path = load_sequences(args)
    tok, tok_source = load_tokenizer(args, say)
    blocks = read_blocks(files, mlp.layer.d_model, args.chunk, args.rows)
    report = analyse(mlp, blocks, args.top, ids, tok, args.left, args.right, say)
    report.update(run=os.path.abspath(args.run), data=os.path.abspath(args.data),
                  sequences=seq_path and os.path.abspath(seq_path), tokenizer=tok_source,
                  seconds=round(time.time() - t0, 2))
    os.makedirs(args.out, exist_ok=True)
    htmlpage.write_text(os.path.join(args.out, "transforms.json"),
                        json.dumps(htmlpage.finite(report), indent=1) + "\n")
    htmlpage.write_text(os.path.join(args.out, "transforms.html"), render_html(report))
    say(f"{PROG}: {report['transforms_count']} transforms over {report['rows']} rows -> "
        f"{os.path.join(args.out, 'transforms.html')} and transforms.json in "
        f"{time.time() - t0:.1f} s")
    return report


def main(argv=None, prog=PROG):
    return guarded(prog, lambda a: run(parse_args(a, prog)), argv)


if __name__ == "__main__":
    sys.exit(main())
