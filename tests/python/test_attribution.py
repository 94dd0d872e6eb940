"""The attribution graph's math in float64 on a tiny random Llama (no weights) with small random
MOLT and SAE params: completeness, carriers, interventions in the frozen model, three routes,
the planted MOLT, gate attribution and the error decomposition (docs/attribution.md)."""
import numpy as np
import pytest

from conftest import required

torch = required("torch")
transformers = required("transformers")

from molt.attribution import attribute, error_pairs, gate_attribution  # noqa: E402
from molt.linearized import F64, Dictionary, Linearized, Molt  # noqa: E402

D, LAYERS = 16, 3


def _tiny_model(seed=0, ones_norm_at=None):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=D, intermediate_size=24,
                                   num_hidden_layers=LAYERS, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than the init so patterns and features are not trivial
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.4)
            else:
                p.uniform_(0.6, 1.4)
        if ones_norm_at is not None:
            model.model.layers[ones_norm_at].post_attention_layernorm.weight.fill_(1.0)
    return model


def _random_molt(gen, ranks=(4, 2), counts=(2, 3)):
    T = sum(counts)
    us = [torch.randn(c, D, r, generator=gen, dtype=F64) * 0.5 for r, c in zip(ranks, counts)]
    vs = [torch.randn(c, r, D, generator=gen, dtype=F64) * 0.5 for r, c in zip(ranks, counts)]
    return Molt(torch.randn(T, D, generator=gen, dtype=F64) * 0.5,
                torch.randn(T, generator=gen, dtype=F64) * 0.1, us, vs,
                torch.randn(D, generator=gen, dtype=F64) * 0.1, "jumprelu",
                torch.full((T,), 0.05, dtype=F64))


def _random_sae(gen, F=24):
    return Dictionary(torch.randn(F, D, generator=gen, dtype=F64) / 4,
                      torch.randn(F, generator=gen, dtype=F64) * 0.2,
                      torch.randn(F, D, generator=gen, dtype=F64) / 4,
                      torch.randn(D, generator=gen, dtype=F64) * 0.1, "jumprelu",
                      torch.full((F,), 0.1, dtype=F64))


@pytest.fixture(scope="module")
def setup():
    model = _tiny_model()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 40, (7,), generator=gen)
    molts = {1: _random_molt(gen), 2: _random_molt(gen)}
    dicts = {f"{k}.{l}": _random_sae(gen) for l in (1, 2) for k in ("mid", "post")}
    lin = Linearized(model, ids, molts, dicts)
    return model, ids, lin, attribute(lin)


def _h_of(lin, g, row, leaves=None, gates=None):
    n = g.nodes[g.rows[row]]
    reads = lin.frozen(leaves or lin.leaves(), gates=gates)
    if n.kind == "feature":
        Dn = lin.dicts[n.where]
        return float(reads[n.where][n.pos] @ Dn.enc_w[n.index] + Dn.enc_b[n.index])
    return float(reads["final"][n.pos] @ (lin.W_U[n.index] - lin.W_U.mean(0)))


def test_the_clean_pass_is_the_transformers_forward(setup):
    model, ids, lin, _ = setup
    with torch.no_grad():
        ref = model(ids[None]).logits[0].double()
    assert (lin.logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    # the frozen forward at the clean leaves is the clean pass
    reads, clean = lin.frozen(lin.leaves()), lin.clean_reads()
    for k in list(lin.dicts) + ["final"]:
        assert (reads[k] - clean[k]).abs().max() <= 1e-12 * clean[k].abs().max()


def test_completeness_to_1e9(setup):
    _, _, lin, g = setup
    assert g.A.shape[0] > 20 and (g.A != 0).sum() > 100
    scale = max(1.0, float(g.h.abs().max()))
    assert float(g.completeness.max()) <= 1e-9 * scale
    # every target's value is rebuilt; error nodes carry part of it
    errs = [i for i, n in enumerate(g.nodes) if n.kind in ("sae_err", "molt_err", "mlp")]
    assert float(g.A[:, errs].abs().sum()) > 0


def test_carriers_sum_to_their_edge(setup):
    _, _, lin, g = setup
    assert len(g.carriers) > 50
    worst = 0.0
    for key, vals in g.carriers.items():
        if len(key) == 2:
            A = float(g.A[key[0], key[1]])
            worst = max(worst, abs(float(vals.sum()) - A) / max(1.0, abs(A)))
    assert worst <= 1e-12
    # some edges are carried by several transforms
    assert any(len(v) > 2 and (v[1:] != 0).sum() > 1 for v in g.carriers.values())


def _mid_edges(g, layer, n=6):
    """(row, col) edges from mid.L features to post.L features, largest first."""
    out = []
    for (key, vals) in g.carriers.items():
        if len(key) != 2:
            continue
        row, col = key
        s, t = g.nodes[col], g.nodes[g.rows[row]]
        if s.kind == "feature" and s.where == f"mid.{layer}" and t.where == f"post.{layer}":
            out.append((abs(float(g.A[row, col])), row, col))
    return [(r, c) for _, r, c in sorted(out, reverse=True)[:n]]


def test_doubling_a_source_moves_the_target_by_its_edge(setup):
    _, _, lin, g = setup
    checked = 0
    for row, col in _mid_edges(g, 1) + _mid_edges(g, 2):
        s = g.nodes[col]
        leaves = lin.leaves()
        leaves[f"feat.{s.where}"][s.pos, s.index] *= 2
        moved = _h_of(lin, g, row, leaves) - _h_of(lin, g, row)
        assert abs(moved - float(g.A[row, col])) <= 1e-10 * max(1.0, abs(moved))
        checked += 1
    # a post feature -> logit edge crosses the later layers' attention
    logit_rows = [i for i, r in enumerate(g.rows) if g.nodes[r].kind == "logit"]
    post = [c for c, n in enumerate(g.nodes) if n.kind == "feature" and n.where == "post.2"]
    row = logit_rows[0]
    col = max(post, key=lambda c: abs(float(g.A[row, c])))
    assert abs(float(g.A[row, col])) > 1e-6
    s = g.nodes[col]
    leaves = lin.leaves()
    leaves[f"feat.{s.where}"][s.pos, s.index] *= 2
    moved = _h_of(lin, g, row, leaves) - _h_of(lin, g, row)
    assert abs(moved - float(g.A[row, col])) <= 1e-10 * max(1.0, abs(moved))
    assert checked >= 6


def test_zeroing_a_gate_moves_the_target_by_its_carried_sum(setup):
    _, _, lin, g = setup
    layer = 1
    tried = 0
    for row, col in _mid_edges(g, layer, 4):
        p = g.nodes[col].pos
        for name_i, name in enumerate(g.carrier_names[(layer, p)][1:], start=1):
            tau = int(name.split(".T")[1])
            gates = {layer: lin.gates[layer].clone()}
            gates[layer][p, tau] = 0
            moved = _h_of(lin, g, row, gates=gates) - _h_of(lin, g, row)
            carried = sum(float(v[name_i]) for k, v in g.carriers.items()
                          if k[0] == row and (len(k) == 4 and k[3] == p or len(k) == 2 and
                                             g.nodes[k[1]].where == f"mid.{layer}" and
                                             g.nodes[k[1]].pos == p))
            assert abs(moved + carried) <= 1e-10 * max(1.0, abs(moved))
            tried += 1
    assert tried >= 4


def test_three_routes_agree(setup):
    """Closed form a_s w_tᵀ(I + M_p N_p)d_s, central finite differences of the frozen model,
    and autograd (the graph's backward passes)."""
    _, _, lin, g = setup
    for layer in (1, 2):
        m = lin.molts[layer]
        for row, col in _mid_edges(g, layer, 5):
            s, t = g.nodes[col], g.nodes[g.rows[row]]
            p = s.pos
            M = sum(lin.gates[layer][p, tau] * (m.transform(tau)[0] @ m.transform(tau)[1])
                    for tau in range(m.T))
            N = torch.diag(lin.w_post[layer]) * lin.s_post[layer][p]
            d_s = lin.dicts[s.where].dec_w[s.index]
            w_t = lin.dicts[t.where].enc_w[t.index]
            closed = float(s.value * w_t @ (torch.eye(D, dtype=F64) + M @ N) @ d_s)
            step = 1e-3 * abs(s.value)
            hs = []
            for sign in (1, -1):
                leaves = lin.leaves()
                leaves[f"feat.{s.where}"][p, s.index] += sign * step
                hs.append(_h_of(lin, g, row, leaves))
            fd = s.value * (hs[0] - hs[1]) / (2 * step)
            auto = float(g.A[row, col])
            assert abs(closed - auto) <= 1e-11 * max(1.0, abs(auto))
            assert abs(fd - auto) <= 1e-7 * max(1.0, abs(auto))


def test_gate_attribution_sums_to_the_gate(setup):
    _, _, lin, g = setup
    n = 0
    for layer in lin.molts:
        for p in range(lin.P):
            for tau in torch.nonzero(lin.gates[layer][p]).flatten().tolist():
                srcs, const, gv = gate_attribution(lin, layer, p, tau)
                assert abs(sum(v for _, v in srcs) + const - gv) <= 1e-10 * max(1.0, abs(gv))
                n += 1
    assert n >= 10


def test_error_pairs_sum_to_the_squared_error(setup):
    _, _, lin, g = setup
    for layer in lin.molts:
        for p in range(lin.P):
            e = error_pairs(lin, layer, p)
            total = sum(v for _, _, v in e["pairs"]) + sum(e["terms"].values())
            assert e["norm2"] > 0
            assert abs(total - e["norm2"]) <= 1e-9 * max(1.0, e["norm2"])


# ---- the planted MOLT ---------------------------------------------------------------------

def _planted(perm=None, rotate=None):
    """Orthonormal dictionaries (pre: Q[0:8], post: Q[8:16], always active, R(r) = P r); τ* =
    Q[8] Q[0]ᵀ carries feature 0 → feature 0 (= Q[8]); τ° = 40·Q[1] Q[0]ᵀ writes outside the
    post span; distractors live in the complements (U ⟂ Q[8], V ⟂ Q[0]). Gates constant 1."""
    gen = torch.Generator().manual_seed(11)
    Q = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=F64))[0].T
    beta = 20.0

    def sae(rows):
        E = Q[rows]
        return Dictionary(E, torch.full((8,), beta, dtype=F64), E, -beta * E.sum(0), "relu")

    def comp(x, q):  # x with its component along q removed
        return x - torch.outer(x @ q, q) if x.dim() == 2 else x - (x @ q) * q

    r1 = []  # bucket 0: rank 1, [τ*, τ°, distractor]
    r1.append((Q[8][:, None], Q[0][None]))
    r1.append((40 * Q[1][:, None], Q[0][None]))
    r1.append((comp(torch.randn(D, generator=gen, dtype=F64), Q[8])[:, None] * 0.1,
               comp(torch.randn(D, generator=gen, dtype=F64), Q[0])[None] * 0.1))
    r3 = []
    for _ in range(2):
        U = torch.randn(D, 3, generator=gen, dtype=F64) * 0.1
        V = torch.randn(3, D, generator=gen, dtype=F64) * 0.1
        U = U - torch.outer(Q[8], Q[8] @ U)
        V = V - torch.outer(V @ Q[0], Q[0])
        r3.append((U, V))
    if perm is not None:
        r1 = [r1[i] for i in perm]
    if rotate is not None:
        U, V = r3[0]
        r3[0] = (U @ rotate, torch.linalg.inv(rotate) @ V)
    us = [torch.stack([u for u, _ in r1]), torch.stack([u for u, _ in r3])]
    vs = [torch.stack([v for _, v in r1]), torch.stack([v for _, v in r3])]
    molt = Molt(torch.zeros(5, D, dtype=F64), -torch.ones(5, dtype=F64), us, vs, None, "relu")
    model = _tiny_model(seed=2, ones_norm_at=1)
    ids = torch.arange(2, 8)
    lin = Linearized(model, ids, {1: molt}, {"mid.1": sae(slice(0, 8)), "post.1": sae(slice(8, 16))})
    return lin, attribute(lin)


def _edge(g, site_s, f_s, site_t, f_t, p):
    col = next(c for c, n in enumerate(g.nodes)
               if n.kind == "feature" and n.where == site_s and n.index == f_s and n.pos == p)
    row = next(i for i, r in enumerate(g.rows) if g.nodes[r].kind == "feature" and
               g.nodes[r].where == site_t and g.nodes[r].index == f_t and g.nodes[r].pos == p)
    return row, col


def test_planted_transform_carries_its_edge_and_is_invariant():
    lin, g = _planted()
    base = {}
    for p in range(lin.P):
        row, col = _edge(g, "mid.1", 0, "post.1", 0, p)
        vals = g.carriers[(row, col)]
        names = g.carrier_names[(1, p)]
        A = float(g.A[row, col])
        assert abs(A) > 1e-3
        star = float(vals[names.index("L1.T0")])
        assert abs(star) / float(vals.abs().sum()) >= 0.99
        assert abs(star - A) <= 1e-12 * abs(A)
        base[p] = dict(zip(names, vals.tolist()))
    # permuting transform indices permutes the annotations
    perm = [2, 0, 1]  # new slot i holds old transform perm[i]
    lin2, g2 = _planted(perm=perm)
    for p in range(lin.P):
        row, col = _edge(g2, "mid.1", 0, "post.1", 0, p)
        got = dict(zip(g2.carrier_names[(1, p)], g2.carriers[(row, col)].tolist()))
        for new, old in enumerate(perm):
            assert abs(got[f"L1.T{new}"] - base[p][f"L1.T{old}"]) <= 1e-12
    # rotating a transform's inner basis (U R, R⁻¹ V) changes nothing
    R = torch.tensor([[1.0, 0.3, -0.2], [0.1, 0.9, 0.4], [-0.5, 0.2, 1.2]], dtype=F64)
    lin3, g3 = _planted(rotate=R)
    assert (g3.A - g.A).abs().max() <= 1e-11
    for key, vals in g.carriers.items():
        assert (g3.carriers[key] - vals).abs().max() <= 1e-11


def test_a_transform_writing_outside_the_sae_span_is_the_top_error_pair():
    lin, g = _planted()
    for p in range(lin.P):
        e = error_pairs(lin, 1, p)
        total = sum(v for _, _, v in e["pairs"]) + sum(e["terms"].values())
        assert abs(total - e["norm2"]) <= 1e-9 * e["norm2"]
        # among (feature, transform) pairs (the residual path and the bias are no pairs)
        pairs = [x for x in e["pairs"] if x[0][0] == "feature" and x[1] != "res"]
        top = max(pairs, key=lambda x: abs(x[2]))
        assert top[0] == ("feature", 0) and top[1] == "L1.T1"


def test_the_adjoint_is_autograd_of_the_frozen_model(setup):
    """The graph's backward passes (the frozen model's transpose, batched) against torch's
    autograd through frozen(), one target at a time, on a sample of targets of every kind."""
    from molt.attribution import _adjoint_grads, _autograd_grads, _target_dirs
    _, _, lin, g = setup
    targets = [g.nodes[r] for r in g.rows]
    pick = sorted({0, len(targets) // 3, len(targets) // 2, len(targets) - 1,
                   *[i for i, n in enumerate(targets) if n.where == "post.1"][:2]})
    dirs = _target_dirs(lin, [targets[i] for i in pick])
    leaves = lin.leaves()
    a, b = _adjoint_grads(lin, leaves, dirs), _autograd_grads(lin, leaves, dirs)
    assert set(b) <= set(a)
    for k in b:
        scale = max(1.0, float(b[k].abs().max()))
        assert (a[k] - b[k]).abs().max() <= 1e-12 * scale, k


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-molt-relu-l1"])
def test_the_compiled_frozen_gate_vjp_is_the_closed_form(fixture_bundle, name):
    """A fourth route for a MOLT layer: the compiled `vjp` entry (molt.Layer.backward, float32)
    against linearized.Molt in float64. The compiled d_x is Jᵀ·dy with each open gate's own
    slope (docs/bundle.md, gate_bwd_dx: d_x += da·enc_w_t); on one row that gate term is
    −enc_wᵀ·d_enc_b (pre = enc_w x − enc_b, so d_enc_b = −da), which leaves the frozen-gate
    VJP Σ_τ g_τ V_τᵀ U_τᵀ dy the attribution graph's edges use. Tolerance 1e-5 of the largest
    entry: the compiled path accumulates in float32 (unit roundoff 6e-8) over d = 8 and ranks
    ≤ 4: measured 0.8-1.8e-7 relative; a gate term left in is 0.5-1 of the largest entry."""
    import molt
    from conftest import random_params
    layer = molt.Layer(fixture_bundle(name), batch=1)
    p = random_params(layer, 11)
    layer.load_state_dict(p)
    m = Molt.from_tensors(layer.model, p)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (24, m.d)).astype(np.float32)
    dy = rng.normal(0, 1, (24, m.d)).astype(np.float32)
    X, DY = torch.tensor(x, dtype=F64), torch.tensor(dy, dtype=F64)
    g = m.gates(X)
    assert 0 < int((g > 0).sum()) < g.numel()  # some gates open, some shut: both paths matter
    # the closed form, transform by transform, and autograd through the frozen gates
    closed = sum(g[:, tau:tau + 1] * (DY @ m.transform(tau)[0] @ m.transform(tau)[1])
                 for tau in range(m.T))
    Xa = X.clone().requires_grad_(True)
    (m.apply(Xa, g) * DY).sum().backward()
    frozen_auto = Xa.grad
    Xb = X.clone().requires_grad_(True)
    (m.forward(Xb) * DY).sum().backward()  # gates live: the compiled d_x's own meaning
    live_auto = Xb.grad
    assert (closed - frozen_auto).abs().max() <= 1e-12 * max(1.0, float(closed.abs().max()))
    enc_w = m.enc_w
    compiled_live, compiled_frozen = [], []
    for i in range(len(x)):
        grads = layer.backward(x[i:i + 1], dy[i:i + 1], input_grad=True)
        d_x = torch.tensor(np.array(grads["x"]), dtype=F64)[0]
        compiled_live.append(d_x)
        compiled_frozen.append(d_x + torch.tensor(np.array(grads["enc_b"]), dtype=F64) @ enc_w)
    compiled_live, compiled_frozen = torch.stack(compiled_live), torch.stack(compiled_frozen)
    for got, want in ((compiled_live, live_auto), (compiled_frozen, closed)):
        assert (got - want).abs().max() <= 1e-5 * float(want.abs().max())
    # the two meanings differ by far more than the tolerance: the test tells them apart
    assert (live_auto - closed).abs().max() > 0.1 * float(closed.abs().max())
