"""molt.Layer on the CPU: forward/backward/train_step/jacobian/state against float64 references,
and zero-copy exchange shown by data pointers."""
import os

import numpy as np
import pytest

molt = pytest.importorskip("molt")
from conftest import random_params, reference_forward  # noqa: E402


def make(fixture_bundle, name="tiny-molt", batch=16, seed=3):
    layer = molt.Layer(fixture_bundle(name), batch=batch)
    params = random_params(layer, seed)
    layer.load_state_dict(params)
    return layer, params


def rows(n, d, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n, d)).astype(np.float32)


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder"])
def test_forward_matches_reference(fixture_bundle, name):
    layer, p = make(fixture_bundle, name)
    x = rows(16, layer.d_model)
    y = layer.forward(x)
    np.testing.assert_allclose(y, reference_forward(layer.model, p, x), rtol=1e-4, atol=1e-5)


def test_output_is_a_view_of_executor_memory(fixture_bundle):
    layer, _ = make(fixture_bundle)
    y = layer.forward(rows(16, 8))
    assert y.ctypes.data == layer.data_ptr("yhat")
    assert not y.flags.owndata


def test_input_and_out_are_bound_without_copy(fixture_bundle):
    layer, p = make(fixture_bundle)
    x = rows(16, 8, seed=1)
    out = np.full((16, 8), np.nan, np.float32)
    own_x, own_yhat = layer.data_ptr("x"), layer.data_ptr("yhat")
    with layer.bind({"x": x, "yhat": out}):
        # While bound, the executor's tensors live at the caller's addresses.
        assert layer.data_ptr("x") == x.ctypes.data
        assert layer.data_ptr("yhat") == out.ctypes.data
    assert layer.data_ptr("x") == own_x and layer.data_ptr("yhat") == own_yhat
    r = layer.forward(x, out=out)
    assert r is out
    np.testing.assert_allclose(out, reference_forward(layer.model, p, x), rtol=1e-4, atol=1e-5)
    # The executor never copied x into its own storage: it read the caller's rows in place.
    assert not layer.view("x").any()


def test_batch_change_keeps_params(fixture_bundle):
    """More rows than prepared grow the executor (params kept); fewer run in its capacity
    without re-preparing (its storage stays where it was)."""
    layer, p = make(fixture_bundle, batch=4)
    storage = {}  # capacity -> where yhat lived when that capacity was first seen
    for n in (4, 7, 2, 7):
        x = rows(n, 8, seed=n)
        y = layer.forward(x)
        assert y.shape == (n, 8)
        np.testing.assert_allclose(y, reference_forward(layer.model, p, x), rtol=1e-4, atol=1e-5)
        storage.setdefault(layer.batch, layer.data_ptr("yhat"))
    assert sorted(storage) == [4, 7]
    assert layer.data_ptr("yhat") == storage[7]


def finite_difference(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        hi = f()
        a[i] = old - eps
        lo = f()
        a[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder"])
def test_backward_matches_finite_differences(fixture_bundle, name):
    layer, p = make(fixture_bundle, name, batch=6)
    x = rows(6, 8, seed=5)
    dy = rows(6, 8, seed=6)
    grads = {k: np.array(v) for k, v in layer.backward(x, dy).items()}
    P = {k: v.astype(np.float64) for k, v in p.items()}
    X = x.astype(np.float64)

    def loss():
        return float((reference_forward(layer.model, P, X) * dy).sum())

    np.testing.assert_allclose(grads["x"], finite_difference(loss, X), rtol=1e-3, atol=1e-4)
    for name_ in layer.param_names:
        if name_ == "theta":
            continue  # a straight-through estimate, not a derivative: checked below
        np.testing.assert_allclose(grads[name_], finite_difference(loss, P[name_]), rtol=1e-3,
                                   atol=1e-4, err_msg=name_)


def test_theta_gradient_is_the_rectangle_estimator(fixture_bundle):
    layer, p = make(fixture_bundle, batch=64)
    x = rows(64, 8, seed=7)
    dy = rows(64, 8, seed=8)
    g = layer.backward(x, dy)
    # d_theta_t = Σ dg·(−θ⁺/ε)·[|pre−θ⁺| < ε/2] with θ⁺ = max(θ, 0), dg = ⟨U_t V_t x, δ⟩
    # (docs/bundle.md, gate_bwd).
    X, P = x.astype(np.float64), {k: v.astype(np.float64) for k, v in p.items()}
    pre = X @ P["enc_w"].T - P["enc_b"]
    eps, theta = layer.model["gate"]["bandwidth"], np.maximum(P["theta"], 0)
    want = np.zeros_like(theta)
    t = 0
    for k, b in enumerate(layer.model["buckets"]):
        for i in range(b["count"]):
            dg = (((X @ P[f"v{k}"][i].T) @ P[f"u{k}"][i].T) * dy).sum(1)
            near = np.abs(pre[:, t] - theta[t]) < eps / 2
            want[t] = (dg * (-theta[t] / eps) * near).sum()
            t += 1
    assert np.count_nonzero(want) >= 2  # the rectangle saw some near-threshold pairs
    np.testing.assert_allclose(g["theta"], want, rtol=1e-4, atol=1e-5)


def test_jacobian_matches_finite_differences(fixture_bundle):
    layer, p = make(fixture_bundle)
    x = rows(3, 8, seed=9)
    J = layer.jacobian(x)
    assert J.shape == (3, 8, 8)
    for r in range(3):
        X = x[r:r + 1].astype(np.float64)
        fd = np.stack([(reference_forward(layer.model, p, X + e) - reference_forward(layer.model, p, X - e))[0]
                       / 2e-6 for e in np.eye(8)[:, None, :] * 1e-6], axis=1)
        np.testing.assert_allclose(J[r], fd, rtol=1e-4, atol=1e-5)


def test_train_step_learns_a_linear_map(fixture_bundle):
    layer = molt.Layer(fixture_bundle("tiny-molt"), batch=64, lr=1e-2, steps=300, seed=1)
    rng = np.random.default_rng(0)
    A = rng.normal(0, 0.3, (8, 8)).astype(np.float32)
    first = None
    for step in range(300):
        x = rng.normal(0, 1, (64, 8)).astype(np.float32)
        m = layer.train_step(x, x @ A.T)
        first = first if first is not None else m["mse"]
    assert set(m) >= {"loss", "mse", "nmse", "l0", "grad_norm", "lr", "skipped"}
    assert layer.step == 300 and layer.adam_step == 300
    x = rng.normal(0, 1, (64, 8)).astype(np.float32)
    ev = layer.evaluate(x, x @ A.T)
    assert ev["mse"] < 0.5 * first
    ref = reference_forward(layer.model, layer.state_dict(), x)
    want_nmse = ((ref - x @ A.T) ** 2).sum() / ((x @ A.T) ** 2).sum()
    assert ev["nmse"] == pytest.approx(want_nmse, rel=1e-3)


def test_state_dict_round_trip(fixture_bundle, tmp_path):
    layer, p = make(fixture_bundle)
    path = str(tmp_path / "state.safetensors")
    layer.save(path)
    other = molt.Layer(fixture_bundle("tiny-molt"), batch=16, seed=99)
    other.load_state_dict(path)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, p[k])
    with pytest.raises(molt.MoltError, match="shape"):
        other.load_state_dict({**p, "enc_b": np.zeros(3, np.float32)})
    with pytest.raises(molt.MoltError, match="no dec_b"):
        other.load_state_dict({k: v for k, v in p.items() if k != "dec_b"})


def test_bad_inputs_are_one_line_errors(fixture_bundle, tmp_path):
    with pytest.raises(molt.MoltError, match="no such spec"):
        molt.Layer(str(tmp_path / "missing"))
    with pytest.raises(molt.MoltError, match="not a bundle"):
        molt.Layer(str(tmp_path))
    layer, _ = make(fixture_bundle)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        layer.forward(np.zeros((4, 5), np.float32))


def test_the_spec_cache_is_keyed_by_the_build(tmp_path, monkeypatch):
    """A bundle cached by one build of molt is not reused by another (its ops or entries may
    differ): the key holds the extension's fingerprint as well as the spec text."""
    if not molt.HAS_COMPILER:
        pytest.skip("needs the in-process compiler")
    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "specs",
                             "small.mlir")).read()
    cache = str(tmp_path / "cache")
    a = molt.Layer(text, batch=4, cache_dir=cache)
    assert molt.Layer(text, batch=4, cache_dir=cache).bundle == a.bundle
    monkeypatch.setattr(molt, "_BUILD_ID", "another-build")
    b = molt.Layer(text, batch=4, cache_dir=cache)
    assert b.bundle != a.bundle and os.path.isfile(os.path.join(b.bundle, "manifest.json"))


def test_spec_is_compiled_once_into_the_cache(fixture_bundle, tmp_path, monkeypatch):
    if molt.HAS_COMPILER:
        pytest.skip("this build compiles in-process; the molt-compile route is not taken")
    # A stand-in molt-compile that counts its calls and writes a known bundle.
    calls = tmp_path / "calls"
    fake = tmp_path / "molt-compile"
    fake.write_text("#!/bin/sh\necho x >> %s\nmkdir -p \"$3\" && cp %s/manifest.json \"$3\"/\n"
                    % (calls, fixture_bundle("tiny-molt")))
    fake.chmod(0o755)
    monkeypatch.setenv("MOLT_COMPILE", str(fake))
    spec = tmp_path / "tiny.mlir"
    spec.write_text("module { molt.layer @molt { d_model = 8 } }\n")
    a = molt.Layer(str(spec), batch=4, cache_dir=str(tmp_path / "cache"))
    b = molt.Layer(spec.read_text(), batch=4, cache_dir=str(tmp_path / "cache"))
    assert a.bundle == b.bundle and a.d_model == 8
    assert calls.read_text().count("x") == 1
    fake.write_text("#!/bin/sh\necho 'spec.mlir:1:1: error: bad spec' >&2\nexit 1\n")
    with pytest.raises(molt.MoltError, match="bad spec"):
        molt.Layer("module { molt.layer @other { d_model = 4 } }", cache_dir=str(tmp_path / "c2"))
