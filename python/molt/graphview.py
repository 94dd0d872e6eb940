"""molt-study graph: an attribution graph (circuit-tracer's JSON) as one offline HTML page.

    molt-study graph GRAPH.json --out PAGE.html          (python -m molt.study graph ...)
    molt.graphview.write_html(graph_dict, "page.html")   (what `molt-study attribute --html` uses)

The graph is circuit-tracer's schema: {metadata{slug, scan, prompt_tokens, prompt,
schema_version}, qParams{pinnedIds, supernodes, ...}, nodes[{node_id, feature, layer, ctx_idx,
feature_type, activation?, influence?, clerp?, ...}], links[{source, target, weight, ...}]}. A
MOLT's links carry the extra key `carriers`: [{transform, value, share}, ...], the transforms
(and "res", the residual path) that carried the edge (docs/architecture.md, attribution). The
page draws the nodes as layers (rows: embeddings at the bottom, logits on top) × prompt
positions (columns), each edge coloured by its top carrier (the one with the largest |value|),
its width by |weight|; a supernode's members in one cell (a transform's rank-1 latents at one
position) are drawn as one square node, and the supernodes are listed with their members; clicking a node, a legend entry or a supernode picks out its edges (or
name it in the address: PAGE.html#node=ID, #carrier=12).
"""
import json
import os
import sys

from . import htmlpage
from ._cli import Parser, StudyError, guarded

__all__ = ["validate", "render_html", "write_html", "main", "top_carrier"]

PROG = "molt-study graph"

RESIDUAL_NAMES = ("res", "residual", None)


def top_carrier(link):
    """The carrier with the largest |value| of a link as a string ("res" for the residual path),
    or None when the link names no carriers."""
    carriers = link.get("carriers") or []
    if not carriers:
        return None
    best = max(carriers, key=lambda c: abs(float(c.get("value", 0.0))))
    t = best.get("transform")
    return "res" if t in RESIDUAL_NAMES else str(t)


def validate(graph, where="graph"):
    """Checks what the page needs of the schema; raises StudyError naming the first problem."""
    if not isinstance(graph, dict):
        raise StudyError(f"{where}: not a JSON object")
    for key, kind in (("metadata", dict), ("nodes", list), ("links", list)):
        if not isinstance(graph.get(key), kind):
            raise StudyError(f"{where}: no {key!r} {'object' if kind is dict else 'list'}")
    meta = graph["metadata"]
    tokens = meta.get("prompt_tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise StudyError(f"{where}: metadata.prompt_tokens must be a list of strings")
    ids = set()
    for i, n in enumerate(graph["nodes"]):
        if not isinstance(n, dict):
            raise StudyError(f"{where}: nodes[{i}] is not an object")
        for key in ("node_id", "layer", "ctx_idx", "feature_type"):
            if key not in n:
                raise StudyError(f"{where}: nodes[{i}] has no {key!r}")
        if not isinstance(n["ctx_idx"], int) or not 0 <= n["ctx_idx"] < max(len(tokens), 1):
            raise StudyError(f"{where}: nodes[{i}] ({n['node_id']}): ctx_idx {n['ctx_idx']!r} is "
                             f"not a position of the {len(tokens)} prompt tokens")
        if n["node_id"] in ids:
            raise StudyError(f"{where}: node_id {n['node_id']!r} appears twice")
        ids.add(n["node_id"])
    for i, link in enumerate(graph["links"]):
        if not isinstance(link, dict):
            raise StudyError(f"{where}: links[{i}] is not an object")
        for key in ("source", "target", "weight"):
            if key not in link:
                raise StudyError(f"{where}: links[{i}] has no {key!r}")
        for end in ("source", "target"):
            if link[end] not in ids:
                raise StudyError(f"{where}: links[{i}].{end} {link[end]!r} is no node's id")
        if not isinstance(link["weight"], (int, float)):
            raise StudyError(f"{where}: links[{i}].weight is not a number")
        for j, c in enumerate(link.get("carriers") or []):
            if not isinstance(c, dict) or "transform" not in c or \
                    not isinstance(c.get("value"), (int, float)):
                raise StudyError(f"{where}: links[{i}].carriers[{j}] needs a transform and a "
                                 "numeric value")
    for j, sn in enumerate((graph.get("qParams") or {}).get("supernodes") or []):
        if not isinstance(sn, list) or not sn or not all(isinstance(s, str) for s in sn):
            raise StudyError(f"{where}: qParams.supernodes[{j}] must be [name, node_id, ...]")
    return graph


_CSS = """
#graph { border: 1px solid var(--line); background: #fff; }
#graph .edge { fill: none; stroke-opacity: 0.75; }
#graph .edge.faded { stroke-opacity: 0.06; }
#graph .node circle { stroke: #222; stroke-width: 0.8; }
#graph .node.picked circle { stroke: #000; stroke-width: 2.5; }
#graph .node.faded { opacity: 0.25; }
#graph .layer-label, #graph .token { fill: var(--muted); }
#graph .token { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
#legend .swatch { display: inline-block; width: 14px; height: 10px; margin-right: 6px;
                  vertical-align: middle; border-radius: 2px; }
#legend .entry { cursor: pointer; padding: 1px 4px; border-radius: 3px; }
#legend .entry.picked { background: #e2e8f0; }
#info { min-width: 280px; max-width: 420px; }
#info table td { padding: 1px 6px; }
.supernode { cursor: pointer; padding: 1px 4px; }
.sn-members { color: var(--muted); font-size: 12px; }
"""

_BODY = """
<h1>Attribution graph <span class="muted" id="title"></span></h1>
<div class="panel" id="summary"></div>
<div class="row">
  <div id="canvas"></div>
  <div>
    <h2>Edges by top carrier</h2><div id="legend"></div>
    <h2>Transforms (supernodes)</h2><div id="supernodes"></div>
    <h2>Selection</h2><div id="info" class="panel muted">Click a node or a legend entry.</div>
  </div>
</div>
"""

_JS = r"""
const G = pageData();
const M = G.metadata, tokens = M.prompt_tokens;
document.getElementById("title").textContent = M.slug || "";
const PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#e377c2",
                 "#8c564b", "#bcbd22", "#393b79"];
const RESIDUAL = "#9aa3ab", OTHER = "#5a5a5a", NONE = "#c3c9cf";

function topCarrier(l) {
  if (!l.carriers || !l.carriers.length) return null;
  let best = l.carriers[0];
  for (const c of l.carriers) if (Math.abs(c.value) > Math.abs(best.value)) best = c;
  const t = best.transform;
  return (t === null || t === "res" || t === "residual") ? "res" : String(t);
}
// Carriers ranked by the |weight| of the edges they top; the first ten get their own colour.
const mass = new Map();
G.links.forEach(l => { const c = topCarrier(l); if (c !== null && c !== "res")
  mass.set(c, (mass.get(c) || 0) + Math.abs(l.weight)); });
const ranked = [...mass.keys()].sort((a, b) => mass.get(b) - mass.get(a));
const colour = c => c === null ? NONE : c === "res" ? RESIDUAL :
  ranked.indexOf(c) < PALETTE.length ? PALETTE[ranked.indexOf(c)] : OTHER;

// Rows: embeddings, then numeric layers ascending, other names, logits last.
const isLogit = n => n.feature_type === "logit" || n.is_target_logit;
const rowKey = n => isLogit(n) ? "logits" : String(n.layer);
const keys = [...new Set(G.nodes.map(rowKey))];
const order = k => k === "E" ? -1e9 : k === "logits" ? 1e9 : (isNaN(Number(k)) ? 1e8 : Number(k));
keys.sort((a, b) => order(a) - order(b) || a.localeCompare(b));
const colW = Math.max(90, Math.min(160, 1100 / Math.max(tokens.length, 1)));
const rowH = 70, left = 80, bottom = 46, top = 24;
const W = left + colW * tokens.length + 20, H = top + rowH * keys.length + bottom;
// A supernode's members in one cell (a transform's rank-1 latents at one position) are drawn
// as one node; edges to any member end there.
const byId = new Map(G.nodes.map(n => [n.node_id, n]));
const groupOf = new Map(), groups = new Map();
((G.qParams && G.qParams.supernodes) || []).forEach(sn => sn.slice(1).forEach(id => {
  const n = byId.get(id);
  if (!n || groupOf.has(id)) return;
  const key = sn[0] + "|" + rowKey(n) + "|" + n.ctx_idx;
  if (!groups.has(key)) groups.set(key, {id: key, n, name: sn[0], members: []});
  groups.get(key).members.push(id);
  groupOf.set(id, key);
}));
const drawn = G.nodes.filter(n => !groupOf.has(n.node_id)).map(n => ({id: n.node_id, n, members: null}))
  .concat([...groups.values()]);
const pos = new Map();
const cells = new Map();
drawn.forEach(d => { const k = rowKey(d.n) + "|" + d.n.ctx_idx;
  if (!cells.has(k)) cells.set(k, []); cells.get(k).push(d); });
for (const [k, list] of cells) {
  list.forEach((d, i) => {
    const r = keys.indexOf(rowKey(d.n));
    const x = left + colW * d.n.ctx_idx + colW * (i + 1) / (list.length + 1);
    const y = top + rowH * (keys.length - 1 - r) + rowH / 2;
    pos.set(d.id, [x, y]);
  });
}
const at = id => pos.get(groupOf.get(id) || id);
const maxW = Math.max(...G.links.map(l => Math.abs(l.weight)), 1e-30);
const S = svg("svg", {id: "graph", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
keys.forEach((k, r) => {
  const y = top + rowH * (keys.length - 1 - r) + rowH / 2;
  S.append(svg("text", {class: "layer-label", x: 8, y: y + 4,
    text: k === "E" ? "embed" : k === "logits" ? "logits" : "layer " + k}));
});
tokens.forEach((t, i) => S.append(svg("text", {class: "token", x: left + colW * (i + 0.5),
  y: H - 18, "text-anchor": "middle", "data-pos": i, text: JSON.stringify(t).slice(1, -1)})));
const edges = G.links.map((l, i) => {
  const [x1, y1] = at(l.source), [x2, y2] = at(l.target);
  const c = topCarrier(l), my = (y1 + y2) / 2;
  const p = svg("path", {class: "edge", d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`,
    stroke: colour(c), "stroke-width": 0.6 + 5 * Math.abs(l.weight) / maxW,
    "data-carrier": c === null ? "" : c, "data-source": l.source, "data-target": l.target},
    [svg("title", {text: `${l.source} → ${l.target}: ${fmt(l.weight)}` + (c === null ? "" :
      "; carriers " + l.carriers.map(k => `${k.transform} ${fmt(k.value)}`).join(", "))})]);
  S.append(p);
  return p;
});
const typeColour = {embedding: "#e2e8f0", logit: "#fbd38d", "mlp reconstruction error": "#cbd5e0"};
const nodeEls = drawn.map(d => {
  const n = d.n, [x, y] = pos.get(d.id);
  const shape = d.members ? svg("rect", {x: -7, y: -7, width: 14, height: 14, rx: 3,
      fill: "#b794f4"}) :
    svg("circle", {r: isLogit(n) || n.feature_type === "embedding" ? 7 : 5.5,
      fill: typeColour[n.feature_type] || "#90cdf4"});
  const g = svg("g", {class: "node" + (d.members ? " group" : ""), "data-id": d.id,
    "data-type": n.feature_type, transform: `translate(${x},${y})`}, [shape,
      svg("title", {text: d.members ? `${d.name}: ${d.members.length} latents at position ` +
        n.ctx_idx : `${n.node_id} (${n.feature_type})` + (n.clerp ? ": " + n.clerp : "")})]);
  if (d.members) g.setAttribute("data-members", d.members.join(" "));
  g.onclick = () => d.members ? pickGroup(d) : pickNode(n);
  S.append(g);
  return g;
});
const ringed = test => nodeEls.forEach(g => g.classList.toggle("picked", test(g)));
document.getElementById("canvas").append(S);

function pick(test) {
  edges.forEach((e, i) => e.classList.toggle("faded", test !== null && !test(G.links[i])));
}
function pickNode(n) {
  pick(l => l.source === n.node_id || l.target === n.node_id);
  ringed(g => g.getAttribute("data-id") === n.node_id);
  const rows = [["node", n.node_id], ["type", n.feature_type], ["layer", n.layer],
    ["position", `${n.ctx_idx} (${JSON.stringify(tokens[n.ctx_idx])})`],
    ["activation", fmt(n.activation)], ["influence", fmt(n.influence)], ["label", n.clerp || ""]];
  const info = document.getElementById("info");
  info.classList.remove("muted");
  const ins = G.links.filter(l => l.target === n.node_id)
    .sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 8);
  info.replaceChildren(el("table", {}, rows.map(([k, v]) => el("tr", {}, [el("td", {text: k}),
    el("td", {text: String(v)})]))), el("div", {text: ins.length ? "strongest inputs:" : ""}),
    ...ins.map(l => el("div", {class: "mono", text: `${l.source}  ${fmt(l.weight)}` +
      (l.carriers ? "  [" + l.carriers.map(c => `${c.transform}: ${fmt(c.share)}`).join(", ") + "]" : "")})));
}

function pickGroup(d) {
  const members = new Set(d.members);
  pick(l => members.has(l.source) || members.has(l.target));
  ringed(g => g.getAttribute("data-id") === d.id);
  const info = document.getElementById("info");
  info.classList.remove("muted");
  info.replaceChildren(el("div", {text: `${d.name} at position ${d.n.ctx_idx} ` +
    `(${JSON.stringify(tokens[d.n.ctx_idx])}): ${d.members.length} rank-1 latents`}),
    el("div", {class: "sn-members", text: d.members.join(", ")}));
}

const legend = document.getElementById("legend");
const entries = [...ranked.slice(0, PALETTE.length)];
if (G.links.some(l => topCarrier(l) === "res")) entries.push("res");
if (ranked.length > PALETTE.length) entries.push("other");
if (G.links.some(l => topCarrier(l) === null)) entries.push("none");
entries.forEach(c => {
  const sw = c === "other" ? OTHER : c === "none" ? NONE : colour(c);
  const label = c === "res" ? "residual path" : c === "other" ? "other transforms" :
    c === "none" ? "no carriers (not through a MOLT)" : "transform " + c;
  const n = G.links.filter(l => { const t = topCarrier(l);
    return c === "other" ? t !== null && t !== "res" && ranked.indexOf(t) >= PALETTE.length :
      c === "none" ? t === null : t === c; }).length;
  const e = el("div", {class: "entry", "data-carrier": c}, [el("span", {class: "swatch",
    style: `background:${sw}`}), el("span", {text: `${label} (${n} edges)`})]);
  e.onclick = () => {
    const on = !e.classList.contains("picked");
    legend.querySelectorAll(".entry").forEach(x => x.classList.remove("picked"));
    e.classList.toggle("picked", on);
    pick(on ? (l => { const t = topCarrier(l); return c === "other" ?
      t !== null && t !== "res" && ranked.indexOf(t) >= PALETTE.length :
      c === "none" ? t === null : t === c; }) : null);
  };
  legend.append(e);
});

const sns = (G.qParams && G.qParams.supernodes) || [];
const snBox = document.getElementById("supernodes");
if (!sns.length) snBox.append(el("div", {class: "muted", text: "none"}));
sns.forEach(sn => {
  const e = el("div", {class: "supernode", "data-name": sn[0]}, [
    el("div", {text: sn[0]}), el("div", {class: "sn-members", text: sn.slice(1).join(", ")})]);
  const members = new Set(sn.slice(1));
  e.onclick = () => {  // the group's nodes and every edge that touches one of them
    pick(l => members.has(l.source) || members.has(l.target));
    ringed(g => (g.getAttribute("data-members") || g.getAttribute("data-id")).split(" ")
      .some(id => members.has(id)));
  };
  snBox.append(e);
});

// A selection can be named in the address: graph.html#node=ID or #carrier=12 (or res).
const want = new URLSearchParams(location.hash.slice(1));
const wantNode = G.nodes.find(n => n.node_id === want.get("node"));
if (wantNode) pickNode(wantNode);
const wantEntry = [...legend.querySelectorAll(".entry")].find(e =>
  e.getAttribute("data-carrier") === want.get("carrier"));
if (wantEntry) wantEntry.onclick();

document.getElementById("summary").append(el("div", {text:
  `${G.nodes.length} nodes · ${G.links.length} edges · ${tokens.length} prompt tokens · ` +
  `${ranked.length} transforms top an edge · prompt: ${JSON.stringify(M.prompt || tokens.join(""))}`}));
document.body.setAttribute("data-ready", "1");
"""


def render_html(graph):
    validate(graph)
    title = (graph.get("metadata") or {}).get("slug") or "graph"
    return htmlpage.page(f"Attribution graph: {title}", _CSS, _BODY, graph, _JS)


def write_html(graph, path):
    """Validates `graph` (a dict in circuit-tracer's schema) and writes its page to `path`."""
    htmlpage.write_text(path, render_html(graph))
    return path


def read_graph(path):
    try:
        with open(path, encoding="utf-8") as f:
            graph = json.load(f)
    except ValueError as e:
        raise StudyError(f"{path}: not JSON ({e})") from None
    return validate(graph, path)


def parse_args(argv, prog=PROG):
    ap = Parser(prog=prog,
                description="Draw an attribution graph (circuit-tracer's JSON, links optionally "
                            "carrying `carriers`) as a self-contained offline HTML page: layers "
                            "× prompt positions, edges coloured by their top carrier.")
    ap.add_argument("graph", metavar="GRAPH.json", help="the graph file")
    ap.add_argument("--out", required=True, metavar="PAGE.html", help="the page to write")
    return ap.parse_args(argv)


def _run(argv, prog):
    args = parse_args(argv, prog)
    graph = read_graph(args.graph)
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise StudyError(f"--out {args.out}: the folder {folder} does not exist")
    write_html(graph, args.out)
    print(f"{prog}: {len(graph['nodes'])} nodes, {len(graph['links'])} edges -> {args.out}",
          file=sys.stderr)


def main(argv=None, prog=PROG):
    return guarded(prog, lambda a: _run(a, prog), argv)


if __name__ == "__main__":
    sys.exit(main())
