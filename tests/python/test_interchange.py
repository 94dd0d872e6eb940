"""molt.interchange: peers' MOLT / transcoder layouts written here to their documented layouts
(docs/interchange.md), read into molt's params and written back. Each check compares the
peer's own forward formula (float64 NumPy, written from the peer's layout) with molt's
(conftest.reference_forward, or the runtime) on the imported params."""
import json
import os

import numpy as np
import pytest

molt = pytest.importorskip("molt")
from molt import interchange  # noqa: E402
from conftest import reference_forward  # noqa: E402

RNG = np.random.default_rng(7)


def _save(path, cfg_name, cfg, weights_name, tensors):
    os.makedirs(path, exist_ok=True)
    molt.save_tensors(os.path.join(path, weights_name),
                      {k: np.asarray(v, np.float32) for k, v in tensors.items()})
    with open(os.path.join(path, cfg_name), "w") as f:
        json.dump(cfg, f)


def _f32(a):
    return np.asarray(a, np.float32).astype(np.float64)


def _x(n, d, scale=1.0):
    return RNG.normal(0, scale, (n, d))


# ---- crosslayer-transcoder ------------------------------------------------------------------

def _clt_files(path, d=12, N=2, ranks=(4, 2), standardize=True):
    counts = [N << i for i in range(len(ranks))]
    T = sum(counts)
    t = {"e.weight": RNG.normal(0, 0.5, (T, d)), "e.bias": RNG.normal(0, 0.3, T),
         "nonlinearity.theta": RNG.uniform(-0.1, 0.3, (1, 1, T))}
    for k, (R, n) in enumerate(zip(ranks, counts)):
        t[f"Us.{k}"] = RNG.normal(0, 0.4, (n, R, d))
        t[f"Vs.{k}"] = RNG.normal(0, 0.4, (n, d, R))
    if standardize:
        t["input_standardizer.mean"] = RNG.normal(0, 0.5, (1, d))
        t["input_standardizer.std"] = RNG.uniform(0.5, 2.0, (1, d))
        t["output_standardizer.mean"] = RNG.normal(0, 0.5, (1, d))
        t["output_standardizer.std"] = RNG.uniform(0.5, 2.0, (1, d))
    cfg = {"model_class": "Molt", "d_acts": d, "N": N, "ranks": list(ranks),
           "nonlinearity": {"kind": "jumprelu", "theta": 0.03, "bandwidth": 0.1}}
    _save(path, "config.json", cfg, "model.safetensors", t)
    return {k: _f32(v) for k, v in t.items()}


def _clt_forward(t, x, ranks):
    d = x.shape[1]
    mu = t.get("input_standardizer.mean", np.zeros((1, d)))[0]
    sd = t.get("input_standardizer.std", np.ones((1, d)))[0]
    xs = (x - mu) / sd
    pre = xs @ t["e.weight"].T + t["e.bias"]
    theta = t["nonlinearity.theta"].reshape(-1)
    g = pre * ((pre > theta) & (pre > 0))
    recon, col = np.zeros_like(x), 0
    for k in range(len(ranks)):
        U, V = t[f"Us.{k}"], t[f"Vs.{k}"]
        for i in range(U.shape[0]):
            recon += g[:, col:col + 1] * ((xs @ V[i]) @ U[i])
            col += 1
    mo = t.get("output_standardizer.mean", np.zeros((1, d)))[0]
    so = t.get("output_standardizer.std", np.ones((1, d)))[0]
    return recon * so + mo


def test_clt_molt_reads_with_standardizers_folded(tmp_path):
    t = _clt_files(str(tmp_path / "clt"))
    imp = interchange.read(str(tmp_path / "clt"))
    assert interchange.detect(str(tmp_path / "clt")) == "clt-molt"
    assert imp.model["buckets"] == [{"rank": 4, "count": 2}, {"rank": 2, "count": 4}]
    x = _x(40, 12, 2.0)
    want = _clt_forward(t, x, (4, 2))
    got = reference_forward(imp.model, imp.params, x - imp.x_offset)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.mean(np.abs(want)) > 0.1  # the gates do open


def test_clt_molt_round_trips(tmp_path):
    _clt_files(str(tmp_path / "a"))
    imp = interchange.read(str(tmp_path / "a"))
    interchange.write(str(tmp_path / "b"), "clt-molt", imp.model, imp.params, imp.x_offset)
    again = interchange.read(str(tmp_path / "b"))
    assert again.model["buckets"] == imp.model["buckets"]
    for k, v in imp.params.items():
        np.testing.assert_allclose(again.params[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(again.x_offset, imp.x_offset, rtol=1e-7)
    written = molt.load_tensors(str(tmp_path / "b" / "model.safetensors"))
    assert written["Us.0"].shape == (2, 4, 12) and written["Vs.1"].shape == (4, 12, 2)


def test_clt_molt_refuses_counts_it_cannot_hold(tmp_path):
    model = {"kind": "molt", "d_model": 4, "gate": {"kind": "relu"}, "decoder_bias": True,
             "buckets": [{"rank": 2, "count": 3}, {"rank": 1, "count": 2}]}
    with pytest.raises(interchange.InterchangeError, match="N·2"):
        interchange.write(str(tmp_path / "x"), "clt-molt", model, {})


# ---- Language-Model-SAEs --------------------------------------------------------------------

def _lm_files(path, d=10, rank_counts=None, include_norm=False):
    rank_counts = rank_counts or {1: 3, 4: 2, 2: 4}
    groups = sorted(rank_counts.items())
    T = sum(rank_counts.values())
    t = {"W_E": RNG.normal(0, 0.5, (d, T)), "b_E": RNG.normal(0, 0.2, T),
         "b_D": RNG.normal(0, 0.3, d),
         "activation_function.log_jumprelu_threshold": np.log(RNG.uniform(0.01, 0.3, T))}
    for R, n in groups:
        t[f"U_matrices.{R}"] = RNG.normal(0, 0.5, (n, d, R))
        t[f"V_matrices.{R}"] = RNG.normal(0, 0.5, (n, R, d))
    cfg = {"sae_type": "molt", "d_model": d, "rank_counts": {str(r): n for r, n in groups},
           "act_fn": "jumprelu", "use_decoder_bias": True, "expansion_factor": T / d,
           "sparsity_include_decoder_norm": include_norm, "hook_point_in": "blocks.3.ln2",
           "hook_point_out": "blocks.3.mlp_out"}
    _save(path, "config.json", cfg, "sae_weights.safetensors", t)
    return {k: _f32(v) for k, v in t.items()}, groups


def _lm_forward(t, groups, x, include_norm):
    pre = x @ t["W_E"] + t["b_E"]
    theta = np.exp(t["activation_function.log_jumprelu_threshold"])
    norms = np.concatenate([np.linalg.norm(np.einsum("ndr,nre->nde", t[f"U_matrices.{R}"],
                                                     t[f"V_matrices.{R}"]).reshape(n, -1), axis=1)
                            for R, n in groups])
    z = pre * norms if include_norm else pre
    acts = z * (z > theta)
    if include_norm:
        acts = acts / norms
    y, col = np.zeros_like(x) + t["b_D"], 0
    for R, n in groups:
        U, V = t[f"U_matrices.{R}"], t[f"V_matrices.{R}"]
        for i in range(n):
            y += acts[:, col:col + 1] * (x @ V[i].T @ U[i].T)
            col += 1
    return y


@pytest.mark.parametrize("include_norm", [False, True])
def test_lm_saes_molt_reads(tmp_path, include_norm):
    t, groups = _lm_files(str(tmp_path / "lm"), include_norm=include_norm)
    imp = interchange.read(str(tmp_path / "lm"))
    assert [b["rank"] for b in imp.model["buckets"]] == [1, 2, 4]  # ascending, as lm-saes
    x = _x(50, 10)
    want = _lm_forward(t, groups, x, include_norm)
    np.testing.assert_allclose(reference_forward(imp.model, imp.params, x), want,
                               rtol=1e-4, atol=1e-4)
    assert imp.meta["hook_point_in"] == "blocks.3.ln2"


def test_lm_saes_molt_round_trips_bit_for_bit(tmp_path):
    _lm_files(str(tmp_path / "a"))
    imp = interchange.read(str(tmp_path / "a"))
    interchange.write(str(tmp_path / "b"), "lm-saes-molt", imp.model, imp.params, meta=imp.meta)
    a = molt.load_tensors(str(tmp_path / "a" / "sae_weights.safetensors"))
    b = molt.load_tensors(str(tmp_path / "b" / "sae_weights.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=2e-7, atol=0, err_msg=k)


def test_a_molt_layer_exports_to_lm_saes_in_ascending_rank_order(tmp_path, fixture_bundle):
    from conftest import random_params
    layer = molt.Layer(fixture_bundle("tiny-molt"), batch=16)  # ranks [4, 2]: descending
    layer.load_state_dict(random_params(layer, 3))
    model, params = interchange.from_layer(layer)
    interchange.write(str(tmp_path / "lm"), "lm-saes-molt", model, params)
    t = {k: _f32(v) for k, v in molt.load_tensors(str(tmp_path / "lm" / "sae_weights.safetensors")).items()}
    cfg = json.load(open(tmp_path / "lm" / "config.json"))
    assert cfg["rank_counts"] == {"2": 3, "4": 2}
    x = _x(16, 8).astype(np.float32)
    want = np.asarray(layer.forward(x), np.float64)
    got = _lm_forward(t, [(2, 3), (4, 2)], x.astype(np.float64), False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).mean() > 1e-3


# ---- SAELens-style transcoder ---------------------------------------------------------------

def _saelens_files(path, arch, d=9, F=20, skip=False, apply_b_dec=False):
    t = {"W_enc": RNG.normal(0, 0.5, (d, F)), "b_enc": RNG.normal(0, 0.2, F),
         "W_dec": RNG.normal(0, 0.5, (F, d)), "b_dec": RNG.normal(0, 0.3, d)}
    if arch == "jumprelu":
        t["threshold"] = RNG.uniform(0.0, 0.4, F)
    if skip:
        t["W_skip"] = RNG.normal(0, 0.2, (d, d))
    cfg = {"architecture": arch, "d_in": d, "d_out": d, "d_sae": F, "dtype": "float32",
           "apply_b_dec_to_input": apply_b_dec, "hook_name": "blocks.2.ln2.hook_normalized",
           "hook_name_out": "blocks.2.hook_mlp_out"}
    _save(path, "cfg.json", cfg, "sae_weights.safetensors", t)
    return {k: _f32(v) for k, v in t.items()}


def _saelens_forward(t, x, arch, apply_b_dec):
    pre = (x - t["b_dec"] * apply_b_dec) @ t["W_enc"] + t["b_enc"]
    acts = pre * (pre > t["threshold"]) if arch == "jumprelu" else np.maximum(pre, 0)
    y = acts @ t["W_dec"] + t["b_dec"]
    if "W_skip" in t:
        y += x @ t["W_skip"].T
    return y


def _molt_transcoder_forward(model, p, x):
    pre = x @ p["enc_w"].T.astype(np.float64) + p["enc_b"]
    if model["gate"]["kind"] == "jumprelu":
        g = pre * (pre > np.maximum(p["theta"], 0))
    else:
        g = np.maximum(pre, 0)
    y = g @ p["dec_w"] + p["dec_b"]
    if "skip_w" in p:
        y += x @ p["skip_w"].T
    return y


@pytest.mark.parametrize("arch,skip,apply_b_dec", [("standard", False, True),
                                                    ("jumprelu", True, False)])
def test_saelens_transcoder_reads_and_round_trips(tmp_path, arch, skip, apply_b_dec):
    t = _saelens_files(str(tmp_path / "a"), arch, skip=skip, apply_b_dec=apply_b_dec)
    imp = interchange.read(str(tmp_path / "a"))
    assert imp.model["kind"] == "transcoder" and imp.model["skip"] == skip
    x = _x(30, 9)
    want = _saelens_forward(t, x, arch, apply_b_dec)
    np.testing.assert_allclose(_molt_transcoder_forward(imp.model, imp.params, x), want,
                               rtol=1e-4, atol=1e-4)
    interchange.write(str(tmp_path / "b"), "saelens-transcoder", imp.model, imp.params,
                      meta=imp.meta)
    again = interchange.read(str(tmp_path / "b"))
    cfg = json.load(open(tmp_path / "b" / "cfg.json"))
    assert cfg["apply_b_dec_to_input"] is False
    assert cfg["hook_name"] == "blocks.2.ln2.hook_normalized"
    assert cfg["architecture"] == arch and cfg["d_sae"] == 20
    for k, v in imp.params.items():
        np.testing.assert_allclose(again.params[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


def test_unknown_layouts_are_refused(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(interchange.InterchangeError, match="not a layout"):
        interchange.read(str(tmp_path / "empty"))
    _lm_files(str(tmp_path / "lm"))
    with pytest.raises(interchange.InterchangeError, match="no field 'd_acts'"):
        interchange.read(str(tmp_path / "lm"), format="clt-molt")


@pytest.mark.skipif(not molt.HAS_COMPILER, reason="needs the compiler to build a matching spec")
def test_to_layer_runs_the_imported_molt(tmp_path):
    t, groups = _lm_files(str(tmp_path / "lm"), d=8, rank_counts={2: 3, 4: 2})
    layer = interchange.to_layer(interchange.read(str(tmp_path / "lm")), batch=32,
                                 cache_dir=str(tmp_path / "cache"))
    x = _x(32, 8).astype(np.float32)
    want = _lm_forward(t, groups, x.astype(np.float64), False)
    np.testing.assert_allclose(np.asarray(layer.forward(x), np.float64), want, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.skipif(not molt.HAS_COMPILER, reason="needs the compiler to build a matching spec")
def test_to_layer_runs_an_imported_skip_transcoder(tmp_path):
    t = _saelens_files(str(tmp_path / "tc"), "jumprelu", d=8, F=12, skip=True, apply_b_dec=True)
    imp = interchange.read(str(tmp_path / "tc"))
    layer = interchange.to_layer(imp, batch=24, cache_dir=str(tmp_path / "cache"))
    x = _x(24, 8).astype(np.float32)
    want = _saelens_forward(t, x.astype(np.float64), "jumprelu", True)
    np.testing.assert_allclose(np.asarray(layer.forward(x), np.float64), want, rtol=1e-4,
                               atol=1e-4)
    model, params = interchange.from_layer(layer)
    assert model["kind"] == "transcoder" and model["skip"] and model["features"] == 12
