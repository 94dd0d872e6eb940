"""The linearised model of a Llama-layout causal LM around one prompt, with MOLTs and residual
dictionaries spliced in (docs/attribution.md has the math and the choices).

    lin = Linearized(model, ids, molts={15: Molt.from_run("RUN")},
                     dicts={"mid.15": Dictionary.from_run("SAE_PRE"),
                            "post.15": Dictionary.from_run("SAE_POST")})
    reads = lin.frozen(lin.leaves())          # the frozen forward: exact at the clean point

Frozen around the prompt: attention patterns, every RMSNorm's scale 1/rms(r), the MOLT gates.
MLPs of the other layers are constants (their clean outputs: error nodes). A dictionary at a
site ("mid.L": the residual entering layer L's MLP norm; "post.L": the block's output) splices
the residual there: r := Σ_s a_s d_s + b_dec + ε, with the activations a_s, the error ε and the
bias as leaves, so nothing upstream passes a site except through its leaves. A MOLT layer's
output is Σ_τ g_τ U_τ V_τ N r + b_dec + ε_M with the gates frozen. The frozen forward is then
affine in the leaves and equals the clean forward at the clean leaves.

Everything computes in float64 (params read from float32 runs are widened).
"""
import json
import os

import torch

__all__ = ["Molt", "Dictionary", "Linearized", "site_layer", "SITE_KINDS"]

F64 = torch.float64
SITE_KINDS = ("mid", "post")


def _t(a):
    return torch.as_tensor(a).detach().to(F64).clone()


def site_layer(site):
    """("mid" | "post", layer) of a site name "mid.L" / "post.L"."""
    kind, _, layer = str(site).partition(".")
    if kind not in SITE_KINDS or not layer.isdigit():
        raise ValueError(f"bad site {site!r}: expected mid.L or post.L")
    return kind, int(layer)


def _run_model(run):
    path = os.path.join(os.fspath(run), "bundle", "manifest.json")
    if not os.path.isfile(path):
        raise ValueError(f"{run}: not a molt-train run directory (no bundle/manifest.json)")
    with open(path) as f:
        return json.load(f)["model"]


def _run_tensors(run):
    from . import run_weights
    return {k: _t(v) for k, v in run_weights(run).items()}


class Molt:
    """A MOLT's params as float64 tensors: gates g = φ(enc_w x − enc_b) (jumprelu or relu) and
    transforms τ = (bucket k, n) with U_τ = u_k[n] [d, R], V_τ = v_k[n] [R, d], numbered bucket
    by bucket (the runtime's order)."""

    def __init__(self, enc_w, enc_b, us, vs, dec_b=None, gate="jumprelu", theta=None, name=""):
        self.enc_w, self.enc_b = _t(enc_w), _t(enc_b)
        self.us, self.vs = [_t(u) for u in us], [_t(v) for v in vs]
        self.d = self.enc_w.shape[1]
        self.dec_b = torch.zeros(self.d, dtype=F64) if dec_b is None else _t(dec_b)
        if gate not in ("jumprelu", "relu"):
            raise ValueError(f"a MOLT gate is jumprelu or relu, not {gate!r}")
        self.gate, self.name = gate, name
        T = self.enc_w.shape[0]
        self.theta = torch.zeros(T, dtype=F64) if theta is None else _t(theta).reshape(-1).expand(T)
        self.where = [(k, n) for k, u in enumerate(self.us) for n in range(u.shape[0])]
        if len(self.where) != T:
            raise ValueError(f"{len(self.where)} transforms in the buckets, {T} gates")
        self.ranks = [self.us[k].shape[2] for k, _ in self.where]
        self.offsets = [sum(u.shape[0] for u in self.us[:k]) for k in range(len(self.us))]

    @property
    def T(self):
        return len(self.where)

    @classmethod
    def from_tensors(cls, model, t, name=""):
        if model.get("kind") != "molt":
            raise ValueError(f"not a MOLT (kind {model.get('kind')!r})")
        nb = len(model["buckets"])
        gate = model["gate"]["kind"]
        return cls(t["enc_w"], t["enc_b"], [t[f"u{k}"] for k in range(nb)],
                   [t[f"v{k}"] for k in range(nb)], t.get("dec_b"), gate,
                   t.get("theta") if gate == "jumprelu" else None, name or model.get("name", ""))

    @classmethod
    def from_run(cls, run):
        """The trained MOLT of a molt-train run directory, in raw space."""
        return cls.from_tensors(_run_model(run), _run_tensors(run), name=os.fspath(run))

    def transform(self, tau):
        k, n = self.where[tau]
        return self.us[k][n], self.vs[k][n]

    def pre(self, x):
        return x @ self.enc_w.T - self.enc_b

    def gates(self, x):
        pre = self.pre(x)
        if self.gate == "jumprelu":
            return pre * (pre > self.theta.clamp(min=0))
        return pre.clamp(min=0)

    def apply(self, x, g):
        """Σ_τ g_τ U_τ V_τ x for rows x [n, d] and gates g [n, T] (no bias)."""
        out = torch.zeros_like(x)
        for k, (u, v) in enumerate(zip(self.us, self.vs)):
            gk = g[:, self.offsets[k]:self.offsets[k] + u.shape[0]]
            z = torch.einsum("nrd,pd->pnr", v, x) * gk[..., None]
            out = out + torch.einsum("ndr,pnr->pd", u, z)
        return out

    def forward(self, x):
        return self.apply(x, self.gates(x)) + self.dec_b


class Dictionary:
    """A dictionary on the residual stream (an SAE: molt's transcoder fitted to (r, r)), float64:
    pre = r enc_wᵀ + enc_b, a = relu / jumprelu / topk(pre), R(r) = a dec_w + dec_b."""

    def __init__(self, enc_w, enc_b, dec_w, dec_b=None, act="relu", theta=None, k=None, name=""):
        self.enc_w, self.enc_b, self.dec_w = _t(enc_w), _t(enc_b), _t(dec_w)
        self.F, self.d = self.enc_w.shape
        self.dec_b = torch.zeros(self.d, dtype=F64) if dec_b is None else _t(dec_b)
        if act not in ("relu", "jumprelu", "topk"):
            raise ValueError(f"unknown dictionary activation {act!r}")
        if act == "topk" and not k:
            raise ValueError("a topk dictionary needs k")
        self.act, self.k, self.name = act, k, name
        self.theta = torch.zeros(self.F, dtype=F64) if theta is None else \
            _t(theta).reshape(-1).expand(self.F)

    @classmethod
    def from_tensors(cls, model, t, name=""):
        if model.get("kind") != "transcoder":
            raise ValueError(f"a residual dictionary is a molt transcoder run (kind "
                             f"{model.get('kind')!r})")
        if model.get("skip"):
            raise ValueError("a residual dictionary must have skip = false (a skip path would "
                             "pass the residual past the splice)")
        gate = model["gate"]
        return cls(t["enc_w"], t["enc_b"], t["dec_w"], t.get("dec_b"), gate["kind"],
                   t.get("theta") if gate["kind"] == "jumprelu" else None, gate.get("k"),
                   name or model.get("name", ""))

    @classmethod
    def from_run(cls, run):
        return cls.from_tensors(_run_model(run), _run_tensors(run), name=os.fspath(run))

    def pre(self, r):
        return r @ self.enc_w.T + self.enc_b

    def acts(self, r):
        pre = self.pre(r)
        if self.act == "jumprelu":
            return pre * (pre > self.theta.clamp(min=0))
        if self.act == "topk":
            vals, idx = pre.topk(int(self.k), dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, vals.clamp(min=0))
        return pre.clamp(min=0)

    def decode(self, a):
        return a @ self.dec_w + self.dec_b

    def affine(self, a_row):
        """(P, c) with R(r) = P r + c on the active set of a_row [F] (linear there)."""
        act = a_row != 0
        E, D = self.enc_w[act], self.dec_w[act]
        return D.T @ E, D.T @ self.enc_b[act] + self.dec_b


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _w(lin):
    return lin.weight.detach().to(F64)


class Linearized:
    """The clean float64 pass of `model` on token ids [P] and the frozen linear model around it.

    molts: {layer: Molt}; dicts: {"mid.L" | "post.L": Dictionary}. A MOLT layer L needs a
    dictionary at mid.L (its sources; docs/attribution.md)."""

    def __init__(self, model, ids, molts=None, dicts=None):
        self.molts = dict(molts or {})
        self.dicts = dict(dicts or {})
        base = getattr(model, "model", None)
        if base is None or not hasattr(base, "layers") or not hasattr(model, "lm_head"):
            raise ValueError("not a Llama-layout causal LM (model.model.layers, lm_head)")
        cfg = model.config
        if getattr(cfg, "attention_bias", False):
            raise ValueError("attention biases are not supported (a Llama-layout model has none)")
        self.model, self.cfg = model, cfg
        self.layers = list(base.layers)
        self.L = len(self.layers)
        self.ids = torch.as_tensor(ids).reshape(-1).long()
        self.P = int(self.ids.numel())
        if self.P == 0:
            raise ValueError("the prompt has no tokens")
        self.d = int(cfg.hidden_size)
        for site in self.dicts:
            kind, layer = site_layer(site)
            if not 0 <= layer < self.L:
                raise ValueError(f"site {site}: the model has layers 0..{self.L - 1}")
            if self.dicts[site].d != self.d:
                raise ValueError(f"site {site}: dictionary width {self.dicts[site].d}, model {self.d}")
        for layer, m in self.molts.items():
            if not 0 <= layer < self.L:
                raise ValueError(f"MOLT layer {layer}: the model has layers 0..{self.L - 1}")
            if m.d != self.d:
                raise ValueError(f"MOLT at layer {layer}: width {m.d}, model {self.d}")
            if f"mid.{layer}" not in self.dicts:
                raise ValueError(f"the MOLT at layer {layer} needs a dictionary at mid.{layer} "
                                 "(--sae-pre)")
        self.sites = sorted(self.dicts, key=lambda s: (site_layer(s)[1], SITE_KINDS.index(site_layer(s)[0])))
        self._clean()

    # -- the clean pass -----------------------------------------------------------------------

    def _norm(self, mod, r):
        eps = float(getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-6)))
        s = torch.rsqrt(r.square().mean(-1) + eps)
        return s, mod.weight.detach().to(F64)

    def _attention(self, attn, x, cos, sin):
        H = int(self.cfg.num_attention_heads)
        KV = int(getattr(self.cfg, "num_key_value_heads", H) or H)
        hd = int(getattr(attn, "head_dim", self.d // H))
        P = x.shape[0]
        q = (x @ _w(attn.q_proj).T).view(P, H, hd).transpose(0, 1)
        k = (x @ _w(attn.k_proj).T).view(P, KV, hd).transpose(0, 1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=0)
        scores = q @ k.transpose(1, 2) * float(getattr(attn, "scaling", hd ** -0.5))
        mask = torch.ones(P, P, dtype=torch.bool).triu(1)
        return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)

    def _attend(self, l, x):
        """The attention block's output with the frozen pattern of layer l, linear in x."""
        attn = self.layers[l].self_attn
        H, KV, hd = self.A[l].shape[0], self.kv_heads, self.head_dim
        v = (x @ self.Wv[l].T).view(-1, KV, hd).transpose(0, 1).repeat_interleave(H // KV, dim=0)
        o = (self.A[l] @ v).transpose(0, 1).reshape(x.shape[0], H * hd)
        return o @ self.Wo[l].T

    def _mlp(self, mlp, x):
        for name in ("gate_proj", "up_proj", "down_proj"):
            lin = getattr(mlp, name, None)
            if lin is None or getattr(lin, "bias", None) is not None:
                raise ValueError("not a bias-free SwiGLU MLP (gate_proj, up_proj, down_proj)")
        return mlp.act_fn(x @ _w(mlp.gate_proj).T) * (x @ _w(mlp.up_proj).T) @ _w(mlp.down_proj).T

    @torch.no_grad()
    def _clean(self):
        base = self.model.model
        H = int(self.cfg.num_attention_heads)
        self.kv_heads = int(getattr(self.cfg, "num_key_value_heads", H) or H)
        self.head_dim = int(getattr(self.layers[0].self_attn, "head_dim", self.d // H))
        pos = torch.arange(self.P)[None]
        cos, sin = base.rotary_emb(torch.zeros(1, self.P, self.d), pos)
        cos, sin = cos[0].to(F64), sin[0].to(F64)
        self.emb = base.embed_tokens.weight.detach().to(F64)[self.ids]
        self.Wv = [_w(b.self_attn.v_proj) for b in self.layers]
        self.Wo = [_w(b.self_attn.o_proj) for b in self.layers]
        self.s_in, self.w_in, self.s_post, self.w_post, self.A = [], [], [], [], []
        self.r_pre, self.r_mid, self.r_post, self.mlp_out = [], [], [], []
        self.gates, self.molt_err, self.acts, self.sae_err = {}, {}, {}, {}
        r = self.emb
        for l, block in enumerate(self.layers):
            self.r_pre.append(r)
            s, w = self._norm(block.input_layernorm, r)
            self.s_in.append(s)
            self.w_in.append(w)
            x = r * s[:, None] * w
            self.A.append(self._attention(block.self_attn, x, cos, sin))
            r = r + self._attend(l, x)
            self.r_mid.append(r)
            self._site_clean(f"mid.{l}", r)
            s, w = self._norm(block.post_attention_layernorm, r)
            self.s_post.append(s)
            self.w_post.append(w)
            x = r * s[:, None] * w
            y = self._mlp(block.mlp, x)
            self.mlp_out.append(y)
            if l in self.molts:
                g = self.molts[l].gates(x)
                self.gates[l] = g
                self.molt_err[l] = y - self.molts[l].apply(x, g) - self.molts[l].dec_b
            r = r + y
            self.r_post.append(r)
            self._site_clean(f"post.{l}", r)
        self.s_final, self.w_final = self._norm(base.norm, r)
        self.x_final = r * self.s_final[:, None] * self.w_final
        self.W_U = _w(self.model.lm_head)
        self.logits = self.x_final @ self.W_U.T

    def _site_clean(self, site, r):
        if site in self.dicts:
            D = self.dicts[site]
            a = D.acts(r)
            self.acts[site] = a
            self.sae_err[site] = r - D.decode(a)

    # -- the frozen model ---------------------------------------------------------------------

    def leaves(self):
        """The clean leaves: every tensor the frozen residual stream is the sum of (fresh copies)."""
        out = {"emb": self.emb.clone()}
        for l in range(self.L):
            if l in self.molts:
                out[f"molt_err.{l}"] = self.molt_err[l].clone()
                out[f"molt_bias.{l}"] = self.molts[l].dec_b.expand(self.P, self.d).clone()
            else:
                out[f"mlp.{l}"] = self.mlp_out[l].clone()
        for site in self.sites:
            out[f"feat.{site}"] = self.acts[site].clone()
            out[f"sae_err.{site}"] = self.sae_err[site].clone()
            out[f"sae_bias.{site}"] = self.dicts[site].dec_b.expand(self.P, self.d).clone()
        return out

    def taps(self):
        """Zero tensors added at r⁺ of each MOLT layer (after its output, before post.L): their
        gradients are the cotangents ∂h/∂r⁺ the carriers need."""
        return {f"tap.{l}": torch.zeros(self.P, self.d, dtype=F64) for l in self.molts}

    def molt_input(self, l, r):
        return r * self.s_post[l][:, None] * self.w_post[l]

    def frozen(self, leaves, taps=None, gates=None):
        """The frozen forward: {site: the residual arriving there (before the splice), "final":
        the final norm's output [P, d]}. gates: {layer: [P, T]} overrides the frozen gates."""
        taps = taps or {}
        gates = gates or {}
        reads = {}
        r = leaves["emb"]
        for l in range(self.L):
            x = r * self.s_in[l][:, None] * self.w_in[l]
            r = r + self._attend(l, x)
            r = self._splice(f"mid.{l}", r, leaves, reads)
            if l in self.molts:
                m = self.molts[l]
                x = self.molt_input(l, r)
                r = r + m.apply(x, gates.get(l, self.gates[l])) + leaves[f"molt_bias.{l}"] + \
                    leaves[f"molt_err.{l}"]
                if f"tap.{l}" in taps:
                    r = r + taps[f"tap.{l}"]
            else:
                r = r + leaves[f"mlp.{l}"]
            r = self._splice(f"post.{l}", r, leaves, reads)
        reads["final"] = r * self.s_final[:, None] * self.w_final
        return reads

    def _splice(self, site, r, leaves, reads):
        reads[site] = r
        if site not in self.dicts:
            return r
        return leaves[f"feat.{site}"] @ self.dicts[site].dec_w + leaves[f"sae_bias.{site}"] + \
            leaves[f"sae_err.{site}"]

    def clean_reads(self):
        """What the clean pass read at each site and the final norm (the frozen forward's values
        at the clean leaves, computed without it)."""
        reads = {}
        for l in range(self.L):
            reads[f"mid.{l}"] = self.r_mid[l]
            reads[f"post.{l}"] = self.r_post[l]
        reads["final"] = self.x_final
        return reads

    # -- the frozen model's transpose ----------------------------------------------------------

    def _attend_T(self, l, gy):
        """The adjoint of _attend for cotangents gy [B, P, d]: ∂⟨gy, attend(x)⟩/∂x."""
        H, KV, hd = self.A[l].shape[0], self.kv_heads, self.head_dim
        B, P = gy.shape[0], gy.shape[1]
        go = (gy @ self.Wo[l]).view(B, P, H, hd).transpose(1, 2)        # [B, H, P, hd]
        gv = self.A[l].transpose(1, 2) @ go                              # [B, H, P, hd]
        gv = gv.view(B, KV, H // KV, P, hd).sum(2)                       # heads -> kv heads
        return gv.transpose(1, 2).reshape(B, P, KV * hd) @ self.Wv[l]

    def adjoint(self, cots, gates=None):
        """Reverse pass of frozen() for a batch of cotangents on its reads ({"mid.L" | "post.L" |
        "final": [B, P, d]}): the gradients of every leaf and tap, batched ([B, ...]). The
        frozen model is linear, so this is its transpose, written out (autograd on frozen() is
        the second route the tests compare it with)."""
        gates = gates or {}
        B = next(iter(cots.values())).shape[0]
        zero = torch.zeros(B, self.P, self.d, dtype=F64)
        out = {}
        g = cots.get("final", zero) * (self.s_final[:, None] * self.w_final)
        for l in reversed(range(self.L)):
            g = self._splice_T(f"post.{l}", g, cots, out)
            if l in self.molts:
                m = self.molts[l]
                out[f"tap.{l}"] = out[f"molt_bias.{l}"] = out[f"molt_err.{l}"] = g
                gl = gates.get(l, self.gates[l])
                back = torch.zeros_like(g)
                for k, (u, v) in enumerate(zip(m.us, m.vs)):
                    gk = gl[:, m.offsets[k]:m.offsets[k] + u.shape[0]]
                    z = torch.einsum("ndr,bpd->bpnr", u, g) * gk[..., None]
                    back = back + torch.einsum("nrd,bpnr->bpd", v, z)
                g = g + back * (self.s_post[l][:, None] * self.w_post[l])
            else:
                out[f"mlp.{l}"] = g
            g = self._splice_T(f"mid.{l}", g, cots, out)
            g = g + self._attend_T(l, g) * (self.s_in[l][:, None] * self.w_in[l])
        out["emb"] = g
        return out

    def _splice_T(self, site, g, cots, out):
        read = cots.get(site)
        if site not in self.dicts:
            return g if read is None else g + read
        out[f"feat.{site}"] = g @ self.dicts[site].dec_w.T
        out[f"sae_err.{site}"] = out[f"sae_bias.{site}"] = g
        return torch.zeros_like(g) if read is None else read
