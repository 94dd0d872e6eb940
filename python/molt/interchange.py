"""Interchange: the MOLT and transcoder layouts peers publish, read into molt's params and
written from them (docs/interchange.md has the mapping, tensor by tensor).

    imported = molt.interchange.read("peer_dir")          # the format is detected
    layer = molt.interchange.to_layer(imported)           # compiles a matching spec
    molt.interchange.write("out_dir", "lm-saes-molt", *molt.interchange.from_layer(layer))

Formats:
  clt-molt            crosslayer-transcoder's Molt (config.json + model.safetensors)
  lm-saes-molt        Language-Model-SAEs' MixtureOfLinearTransform (config.json +
                      sae_weights.safetensors)
  saelens-transcoder  a SAELens-style transcoder (cfg.json + sae_weights.safetensors)

molt's own layout (docs/bundle.md): a MOLT has enc_w [T,d], enc_b [T] with pre = x·enc_wᵀ −
enc_b, theta [T] (JumpReLU, applied as max(θ, 0)), per rank bucket k u<k> [n_k,d,R_k] and
v<k> [n_k,R_k,d] with ŷ = Σ_t g_t U_t V_t x, and dec_b [d]; a transcoder has enc_w [F,d],
enc_b [F] with pre = x·enc_wᵀ + enc_b, theta [F], dec_w [F,d], skip_w [d,d], dec_b [d].
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import load_tensors, save_tensors

__all__ = ["Imported", "FORMATS", "detect", "read", "write", "spec_text", "to_layer",
           "from_layer"]

FORMATS = ("clt-molt", "lm-saes-molt", "saelens-transcoder")
_DEFAULT_PENALTY = {"kind": "tanh", "c": 4.0, "lambda": 0.01, "warmup": 0.1}


@dataclass
class Imported:
    """A layer in molt's terms: `model` as in a manifest's "model" (kind, d_model, buckets or
    features, gate, skip, decoder_bias), `params` by molt's names (float32), `x_offset` a
    vector to subtract from x before the layer (a peer's input centring that a MOLT cannot
    fold; None when there is none), and `meta` the peer's other config fields, kept."""
    model: dict
    params: dict
    x_offset: np.ndarray = None
    meta: dict = field(default_factory=dict)


class InterchangeError(ValueError):
    """A file that does not follow the layout it claims, or a layer the layout cannot hold."""


def _f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _tensors(path):
    try:
        return {k: np.asarray(v) for k, v in load_tensors(path).items()}
    except RuntimeError as e:
        raise InterchangeError(str(e)) from None


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InterchangeError(f"{path}: {e}") from None


def _field(cfg, name, where):
    if name not in cfg:
        raise InterchangeError(f"{where}: no field {name!r}")
    return cfg[name]


def _write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _need(t, name, shape=None):
    if name not in t:
        raise InterchangeError(f"no tensor {name!r} (the file has {', '.join(sorted(t))})")
    a = t[name]
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise InterchangeError(f"{name}: shape {list(a.shape)}, expected {list(shape)}")
    return a


# ---- detection ------------------------------------------------------------------------------

def detect(path):
    """The format of a directory (one of FORMATS), from its file names and config fields."""
    if os.path.isfile(os.path.join(path, "cfg.json")):
        return "saelens-transcoder"
    cfg_path = os.path.join(path, "config.json")
    if os.path.isfile(cfg_path):
        cfg = _json(cfg_path)
        if cfg.get("sae_type") == "molt" or "rank_counts" in cfg:
            return "lm-saes-molt"
        if "ranks" in cfg and ("N" in cfg or "d_acts" in cfg):
            return "clt-molt"
    raise InterchangeError(f"{path}: not a layout molt reads (no cfg.json, or a config.json "
                           f"of neither crosslayer-transcoder's Molt nor lm-saes' molt)")


def read(path, format=None):
    """Reads a peer's directory into an Imported."""
    path = os.fspath(path)
    fmt = format or detect(path)
    if fmt not in _READERS:
        raise InterchangeError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return _READERS[fmt](path)


def write(path, format, model, params, x_offset=None, meta=None):
    """Writes molt `model` / `params` (e.g. from_layer's) in a peer's layout into directory
    `path` (created; files replaced atomically)."""
    if format not in _WRITERS:
        raise InterchangeError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
    os.makedirs(path, exist_ok=True)
    params = {k: _f32(v) for k, v in params.items()}
    _WRITERS[format](os.fspath(path), model, params, x_offset, dict(meta or {}))


# ---- helpers on molt's MOLT -----------------------------------------------------------------

def _transforms(model):
    """(bucket, index in bucket, rank) per transform, in molt's transform order."""
    return [(k, i, b["rank"]) for k, b in enumerate(model["buckets"]) for i in range(b["count"])]


def _require(model, kind):
    if model.get("kind") != kind:
        raise InterchangeError(f"this layout holds a {kind}, not a {model.get('kind')}")


def _gate_theta(model, params, T):
    gate = model["gate"]
    if gate["kind"] == "jumprelu":
        return np.maximum(params["theta"], 0.0)  # what molt applies
    if gate["kind"] == "relu":
        return np.zeros(T, np.float32)
    raise InterchangeError(f"a {gate['kind']} gate has no counterpart in this layout")


def _frob_norms(params, model):
    """‖U_t V_t‖_F per transform, exactly, from the Gram matrices (R×R, never d×d)."""
    out = []
    for k, b in enumerate(model["buckets"]):
        U, V = params[f"u{k}"].astype(np.float64), params[f"v{k}"].astype(np.float64)
        utu = np.einsum("ndr,nds->nrs", U, U)
        vvt = np.einsum("nrd,nsd->nrs", V, V)
        out.append(np.sqrt(np.maximum((utu * vvt).sum(axis=(1, 2)), 0.0)))
    return np.concatenate(out)


# ---- crosslayer-transcoder's Molt -----------------------------------------------------------
#
# Molt(d_acts, N, ranks): bucket i holds N·2^i transforms of rank ranks[i]; e = Linear(d, T)
# (pre = e.weight·x' + e.bias); Us.i [n_i, R_i, d] and Vs.i [n_i, d, R_i] with the transform's
# output (x'·V)·U; JumpReLU nonlinearity.theta [1, n_layers, T] (open when pre > θ and pre >
# 0); dimension-wise standardizers x' = (x − μ_in)/σ_in and y = recon·σ_out + μ_out.

def _read_clt(path):
    where = os.path.join(path, "config.json")
    cfg = _json(where)
    d, N = int(_field(cfg, "d_acts", where)), int(_field(cfg, "N", where))
    ranks = [int(r) for r in _field(cfg, "ranks", where)]
    t = _tensors(os.path.join(path, cfg.get("weights", "model.safetensors")))
    layer = int(cfg.get("layer_index", 0))
    counts = [N << i for i in range(len(ranks))]
    T = sum(counts)
    w = _need(t, "e.weight", (T, d)).astype(np.float64)
    b = _need(t, "e.bias", (T,)).astype(np.float64)
    mu_in = t.get("input_standardizer.mean", np.zeros((1, d)))
    sd_in = t.get("input_standardizer.std", np.ones((1, d)))
    mu_out = t.get("output_standardizer.mean", np.zeros((1, d)))
    sd_out = t.get("output_standardizer.std", np.ones((1, d)))
    pick = lambda a: np.asarray(a, np.float64).reshape(-1, d)[layer]  # noqa: E731
    mu_in, sd_in, mu_out, sd_out = pick(mu_in), pick(sd_in), pick(mu_out), pick(sd_out)
    # x' = (x − μ)/σ: σ folds into everything that multiplies x; μ stays as the x offset.
    params = {"enc_w": w / sd_in, "enc_b": -b, "dec_b": mu_out}
    for k, (R, n) in enumerate(zip(ranks, counts)):
        U = _need(t, f"Us.{k}", (n, R, d)).astype(np.float64)
        V = _need(t, f"Vs.{k}", (n, d, R)).astype(np.float64)
        params[f"u{k}"] = np.transpose(U, (0, 2, 1)) * sd_out[None, :, None]
        params[f"v{k}"] = np.transpose(V, (0, 2, 1)) / sd_in[None, None, :]
    nl = cfg.get("nonlinearity", {"kind": "jumprelu"})
    gate = {"kind": nl.get("kind", "jumprelu")}
    if gate["kind"] == "jumprelu":
        theta = _need(t, "nonlinearity.theta")
        params["theta"] = np.asarray(theta, np.float64).reshape(-1, T)[
            layer if theta.size > T else 0]
        gate.update(threshold=float(nl.get("theta", 0.0)), bandwidth=float(nl.get("bandwidth", 1.0)))
    model = {"kind": "molt", "d_model": d, "gate": gate, "decoder_bias": True,
             "buckets": [{"rank": R, "count": n} for R, n in zip(ranks, counts)]}
    meta = {k: v for k, v in cfg.items() if k not in ("d_acts", "N", "ranks", "nonlinearity")}
    offset = mu_in.astype(np.float32) if np.any(mu_in != 0) else None
    return Imported(model, {k: _f32(v) for k, v in params.items()}, offset, meta)


def _write_clt(path, model, params, x_offset, meta):
    _require(model, "molt")
    d, buckets = model["d_model"], model["buckets"]
    N = buckets[0]["count"]
    if any(b["count"] != N << i for i, b in enumerate(buckets)):
        raise InterchangeError("crosslayer-transcoder's Molt holds N·2^i transforms in bucket "
                               f"i; this layer's counts are {[b['count'] for b in buckets]}")
    T = sum(b["count"] for b in buckets)
    out = {"e.weight": params["enc_w"], "e.bias": -params["enc_b"],
           # Their gate, like molt's, opens at pre > max(θ, 0): θ itself is written.
           "nonlinearity.theta": (params["theta"] if model["gate"]["kind"] == "jumprelu"
                                  else _gate_theta(model, params, T)).reshape(1, 1, T),
           "input_standardizer.mean": (np.zeros(d) if x_offset is None else x_offset).reshape(1, d),
           "input_standardizer.std": np.ones((1, d)),
           "output_standardizer.mean": params.get("dec_b", np.zeros(d)).reshape(1, d),
           "output_standardizer.std": np.ones((1, d))}
    for k in range(len(buckets)):
        out[f"Us.{k}"] = np.transpose(params[f"u{k}"], (0, 2, 1))
        out[f"Vs.{k}"] = np.transpose(params[f"v{k}"], (0, 2, 1))
    gate = model["gate"]
    cfg = dict(meta)
    cfg.update({"model_class": "Molt", "d_acts": d, "N": N,
                "ranks": [b["rank"] for b in buckets], "weights": "model.safetensors",
                "nonlinearity": {"kind": "jumprelu", "theta": gate.get("threshold", 0.0),
                                 "bandwidth": gate.get("bandwidth", 1.0)},
                "standardizer": "dimensionwise"})
    save_tensors(os.path.join(path, "model.safetensors"), out, {"format": "pt"})
    _write_json(os.path.join(path, "config.json"), cfg)


# ---- Language-Model-SAEs' MixtureOfLinearTransform ------------------------------------------
#
# W_E [d, T], b_E [T] with pre = x·W_E + b_E; transforms ordered by ascending rank, the rank-R
# group in U_matrices.R [n, d, R] and V_matrices.R [n, R, d] (output U(Vx)); JumpReLU
# threshold exp(activation_function.log_jumprelu_threshold) [T]; b_D [d]. With
# sparsity_include_decoder_norm the gate opens where pre·‖U_tV_t‖_F > θ_t.

def _read_lm_saes(path):
    where = os.path.join(path, "config.json")
    cfg = _json(where)
    d = int(_field(cfg, "d_model", where))
    groups = sorted((int(r), int(n)) for r, n in _field(cfg, "rank_counts", where).items())
    t = _tensors(os.path.join(path, "sae_weights.safetensors"))
    T = sum(n for _, n in groups)
    params = {"enc_w": _need(t, "W_E", (d, T)).T, "enc_b": -_need(t, "b_E", (T,))}
    for k, (R, n) in enumerate(groups):
        params[f"u{k}"] = _need(t, f"U_matrices.{R}", (n, d, R))
        params[f"v{k}"] = _need(t, f"V_matrices.{R}", (n, R, d))
    model = {"kind": "molt", "d_model": d, "buckets": [{"rank": R, "count": n} for R, n in groups],
             "decoder_bias": bool(cfg.get("use_decoder_bias", "b_D" in t))}
    if model["decoder_bias"]:
        params["dec_b"] = _need(t, "b_D", (d,))
    act = cfg.get("act_fn", "jumprelu")
    if act == "jumprelu":
        theta = np.exp(_need(t, "activation_function.log_jumprelu_threshold", (T,))
                       .astype(np.float64))
        if cfg.get("sparsity_include_decoder_norm"):
            theta = theta / np.maximum(_frob_norms(params, model), 1e-30)
        params["theta"] = theta
        model["gate"] = {"kind": "jumprelu", "threshold": float(np.median(theta)),
                         "bandwidth": float(cfg.get("jumprelu_threshold_window", 0.05))}
    elif act == "relu":
        model["gate"] = {"kind": "relu"}
    else:
        raise InterchangeError(f"act_fn {act!r}: molt's MOLT gates are jumprelu and relu")
    keep = ("hook_point_in", "hook_point_out", "norm_activation", "dtype")
    meta = {k: cfg[k] for k in keep if k in cfg}
    return Imported(model, {k: _f32(v) for k, v in params.items()}, None, meta)


def _write_lm_saes(path, model, params, x_offset, meta):
    _require(model, "molt")
    if x_offset is not None and np.any(x_offset != 0):
        raise InterchangeError("lm-saes' MOLT has no input offset to hold x_offset")
    d, T = model["d_model"], params["enc_w"].shape[0]
    spans = [(k, i, R) for k, i, R in _transforms(model)]
    # lm-saes orders transforms by ascending rank (a stable sort keeps each bucket's order).
    order = sorted(range(T), key=lambda t: spans[t][2])
    theta = _gate_theta(model, params, T)[order]
    out = {"W_E": params["enc_w"][order].T, "b_E": -params["enc_b"][order]}
    rank_counts = {}
    for R in sorted({b["rank"] for b in model["buckets"]}):
        members = [t for t in order if spans[t][2] == R]
        out[f"U_matrices.{R}"] = np.stack([params[f"u{spans[t][0]}"][spans[t][1]] for t in members])
        out[f"V_matrices.{R}"] = np.stack([params[f"v{spans[t][0]}"][spans[t][1]] for t in members])
        rank_counts[str(R)] = len(members)
    jumprelu = model["gate"]["kind"] == "jumprelu"
    if jumprelu:
        # log θ; a closed-at-zero threshold (θ⁺ = 0) becomes the smallest normal float.
        out["activation_function.log_jumprelu_threshold"] = np.log(
            np.maximum(theta, np.finfo(np.float32).tiny))
    if model.get("decoder_bias", True):
        out["b_D"] = params.get("dec_b", np.zeros(d))
    cfg = {"hook_point_in": "", "hook_point_out": ""}
    cfg.update(meta)
    cfg.update({"sae_type": "molt", "d_model": d, "rank_counts": rank_counts,
                "expansion_factor": T / d, "act_fn": "jumprelu" if jumprelu else "relu",
                "use_decoder_bias": bool(model.get("decoder_bias", True)),
                "sparsity_include_decoder_norm": False, "norm_activation": "inference",
                "jumprelu_threshold_window": model["gate"].get("bandwidth", 0.05)})
    save_tensors(os.path.join(path, "sae_weights.safetensors"),
                 {k: _f32(v) for k, v in out.items()})
    _write_json(os.path.join(path, "config.json"), cfg)


# ---- SAELens-style transcoder ---------------------------------------------------------------
#
# cfg.json with architecture (standard | jumprelu | topk), d_in, d_out, d_sae; weights W_enc
# [d_in, F], b_enc [F], W_dec [F, d_out], b_dec [d_out], threshold [F] (jumprelu), W_skip
# [d_out, d_in] (skip transcoders); pre = (x − b_dec·apply_b_dec_to_input)·W_enc + b_enc.

def _read_saelens(path):
    where = os.path.join(path, "cfg.json")
    cfg = _json(where)
    d_in, F = int(_field(cfg, "d_in", where)), int(_field(cfg, "d_sae", where))
    t = _tensors(os.path.join(path, "sae_weights.safetensors"))
    d_out = int(cfg.get("d_out", d_in))
    if d_out != d_in:
        raise InterchangeError(f"d_in {d_in} != d_out {d_out}: molt's transcoders map d to d")
    W_enc = _need(t, "W_enc", (d_in, F)).astype(np.float64)
    b_enc = _need(t, "b_enc", (F,)).astype(np.float64)
    b_dec = _need(t, "b_dec", (d_out,)).astype(np.float64)
    if cfg.get("apply_b_dec_to_input", False):
        b_enc = b_enc - b_dec @ W_enc  # (x − b_dec)·W_enc + b_enc, folded
    params = {"enc_w": W_enc.T, "enc_b": b_enc, "dec_w": _need(t, "W_dec", (F, d_out)),
              "dec_b": b_dec}
    arch = cfg.get("architecture", "standard")
    if arch == "jumprelu":
        params["theta"] = _need(t, "threshold", (F,))
        gate = {"kind": "jumprelu", "threshold": float(np.median(params["theta"])),
                "bandwidth": 0.05}  # a training setting SAELens does not store
    elif arch == "standard":
        gate = {"kind": "relu"}
    elif arch == "topk":
        gate = {"kind": "topk", "k": int(cfg.get("k", cfg.get("activation_fn_kwargs", {}).get("k", 0)))}
    else:
        raise InterchangeError(f"architecture {arch!r}: molt reads standard, jumprelu, topk")
    skip = "W_skip" in t
    if skip:
        params["skip_w"] = _need(t, "W_skip", (d_out, d_in))
    model = {"kind": "transcoder", "d_model": d_in, "features": F, "gate": gate, "skip": skip,
             "decoder_bias": True}
    keep = ("hook_name", "hook_name_out", "hook_layer", "model_name", "dtype")
    meta = {k: cfg[k] for k in keep if k in cfg}
    meta.update({k: cfg["metadata"][k] for k in keep if k in cfg.get("metadata", {})})
    return Imported(model, {k: _f32(v) for k, v in params.items()}, None, meta)


def _write_saelens(path, model, params, x_offset, meta):
    _require(model, "transcoder")
    if x_offset is not None and np.any(x_offset != 0):
        raise InterchangeError("a SAELens transcoder has no input offset to hold x_offset")
    d, F = model["d_model"], model["features"]
    gate = model["gate"]
    out = {"W_enc": params["enc_w"].T, "b_enc": params["enc_b"], "W_dec": params["dec_w"],
           "b_dec": params.get("dec_b", np.zeros(d))}
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}[gate["kind"]]
    if arch == "jumprelu":
        out["threshold"] = np.maximum(params["theta"], 0.0)
    if model.get("skip"):
        out["W_skip"] = params["skip_w"]
    cfg = dict(meta)
    cfg.update({"architecture": arch, "d_in": d, "d_out": d, "d_sae": F, "dtype": "float32",
                "device": "cpu", "apply_b_dec_to_input": False,
                "normalize_activations": "none"})
    if arch == "topk":
        cfg["k"] = gate["k"]
    save_tensors(os.path.join(path, "sae_weights.safetensors"),
                 {k: _f32(v) for k, v in out.items()})
    _write_json(os.path.join(path, "cfg.json"), cfg)


_READERS = {"clt-molt": _read_clt, "lm-saes-molt": _read_lm_saes,
            "saelens-transcoder": _read_saelens}
_WRITERS = {"clt-molt": _write_clt, "lm-saes-molt": _write_lm_saes,
            "saelens-transcoder": _write_saelens}


# ---- molt layers ----------------------------------------------------------------------------

def _float(v):
    text = repr(float(v))
    return text if ("." in text or "e" in text or "n" in text) else text + ".0"


def _gate_attr(gate):
    if gate["kind"] == "jumprelu":
        return (f"#molt.gate<jumprelu threshold = {_float(gate.get('threshold', 0.1))}, "
                f"bandwidth = {_float(gate.get('bandwidth', 0.05))}>")
    if gate["kind"] == "topk":
        return f"#molt.gate<topk k = {int(gate['k'])}>"
    return "#molt.gate<relu>"


def spec_text(model, penalty=None):
    """A spec (docs/spec.md) for `model`; `penalty` (kind, c, lambda, warmup) only matters for
    training and defaults to tanh c = 4, λ = 0.01."""
    p = dict(_DEFAULT_PENALTY, **(penalty or model.get("penalty") or {}))
    pen = (f"#molt.penalty<{p['kind']} " + (f"c = {_float(p['c'])}, " if p["kind"] == "tanh" else "")
           + f"lambda = {_float(p['lambda'])}, warmup = {_float(p['warmup'])}>")
    bias = "true" if model.get("decoder_bias", True) else "false"
    if model["kind"] == "molt":
        ranks = ", ".join(str(b["rank"]) for b in model["buckets"])
        counts = ", ".join(str(b["count"]) for b in model["buckets"])
        body = (f"molt.layer @molt {{d_model = {model['d_model']}, element_type = f32, "
                f"schedule = #molt.schedule<ranks = [{ranks}], counts = [{counts}]>, "
                f"gate = {_gate_attr(model['gate'])}, penalty = {pen}, decoder_bias = {bias}}}")
    else:
        skip = "true" if model.get("skip") else "false"
        body = (f"molt.transcoder @transcoder {{d_model = {model['d_model']}, element_type = f32, "
                f"features = {model['features']}, activation = {_gate_attr(model['gate'])}, "
                f"penalty = {pen}, skip = {skip}, decoder_bias = {bias}}}")
    return "module {\n  " + body + "\n}\n"


def to_layer(imported, **layer_args):
    """A molt.Layer holding the imported params (compiles spec_text(imported.model)). The
    layer computes on x − imported.x_offset when the peer centred its inputs."""
    from . import Layer
    layer = Layer(spec_text(imported.model), **layer_args)
    params = dict(imported.params)
    if "theta" in layer.param_names and "theta" not in params:
        params["theta"] = np.zeros(layer.state_dict()["theta"].shape, np.float32)
    layer.load_state_dict(params)
    return layer


def from_layer(layer):
    """(model, params) of a molt.Layer, for write()."""
    model = {k: layer.model[k] for k in ("kind", "d_model", "buckets", "features", "gate",
                                         "skip", "decoder_bias", "penalty") if k in layer.model}
    return model, layer.state_dict()
