"""molt.torch as a torch op and a training loss: the custom ops under torch.compile(fullgraph)
and torch.func, double backward refused, the MOLT loss in a plain torch loop against
Layer.train_step, the shared param store and key scheme, dtypes, devices, pickling, empty
batches."""
import copy
import io
import pickle
import shutil

import numpy as np
import pytest

from conftest import random_params, required  # noqa: E402

torch = required("torch")
molt = pytest.importorskip("molt")
import molt.torch as mt  # noqa: E402


def make(fixture_bundle, name="tiny-molt", batch=32, seed=3, **kw):
    layer = molt.Layer(fixture_bundle(name), batch=batch, **kw)
    layer.load_state_dict(random_params(layer, seed))
    return layer


def rows(n, d=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 1, (n, d)).astype(np.float32))


# ---- the custom ops --------------------------------------------------------------------------

def test_compile_fullgraph_matches_eager(fixture_bundle):
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), mt.MoltMLP(make(fixture_bundle)),
                                torch.nn.Linear(8, 4))
    x = rows(32)
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1
    compiled = torch.compile(model, fullgraph=True)  # raises on any graph break
    y_eager = model(x)
    y_comp = compiled(x)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
    eager_grads = torch.autograd.grad(y_eager.square().sum(), list(model.parameters()))
    comp_grads = torch.autograd.grad(y_comp.square().sum(), list(model.parameters()))
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in comp_grads[2:-2])  # the MOLT's own params got some
    # The training loss (ŷ and the penalty, gates and Gram norms in torch) compiles whole too.
    mlp = model[1]
    loss = lambda xx: sum(t.square().sum() if t.dim() else t for t in mlp(xx, return_penalty=True))
    x1 = rows(32, seed=1)
    torch.testing.assert_close(torch.compile(loss, fullgraph=True)(x1), loss(x1), rtol=1e-5,
                               atol=1e-6)


def test_the_ops_pass_torch_library_opcheck(fixture_bundle):
    """torch's own checks of a custom op: schema, fake kernel, autograd registration, AOT
    dispatch (static and dynamic shapes), for the forward and the backward op."""
    mlp = mt.MoltMLP(make(fixture_bundle))
    k, r = mlp._arity
    fwd = getattr(torch.ops.molt, f"apply{k}_{r}")
    params = [p.detach().clone().requires_grad_(True) for p in mlp.parameters()]
    x = rows(16).requires_grad_(True)
    torch.library.opcheck(fwd, (x, *params, mlp._handle))
    record = fwd(x.detach(), *[p.detach() for p in params], mlp._handle)[1:]
    torch.library.opcheck(getattr(torch.ops.molt, f"apply{k}_{r}_backward"),
                          (x.detach(), rows(16, seed=1), *[p.detach() for p in params], *record,
                           mlp._handle, True))
    # The op's registered autograd (direct callers of torch.ops.molt) gives the module's grads.
    y = fwd(x, *params, mlp._handle)[0]
    grads = torch.autograd.grad(y.square().sum(), [x, *params])
    x2 = x.detach().requires_grad_(True)
    want = torch.autograd.grad(mlp(x2).square().sum(), [x2, *mlp.parameters()])
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b)


def test_func_jacrev_is_the_exact_jacobian_and_vjp_the_backward(fixture_bundle):
    layer = make(fixture_bundle)
    mlp = mt.MoltMLP(layer)
    x = rows(3, seed=4)
    jac = torch.func.jacrev(mlp)(x).detach()  # [3, 8, 3, 8]: vmap over the registered backward
    exact = layer.jacobian(x.numpy())
    for i in range(3):
        np.testing.assert_allclose(jac[i, :, i, :].numpy(), exact[i], rtol=1e-4, atol=1e-5)
        others = [j for j in range(3) if j != i]
        assert torch.count_nonzero(jac[i, :, others, :]) == 0  # rows do not interact
    xs = torch.stack([x, rows(3, seed=6)])  # vmap over a batch of inputs: the looped rule
    torch.testing.assert_close(torch.func.vmap(mlp)(xs).detach(), torch.stack(
        [mlp(xs[0]), mlp(xs[1])]).detach())
    params = dict(mlp.named_parameters())
    dy = rows(3, seed=5)
    _, vjp = torch.func.vjp(lambda p, xx: torch.func.functional_call(mlp, p, (xx,)), params, x)
    dp, dx = vjp(dy)
    dx, dp = dx.detach(), {k: v.detach() for k, v in dp.items()}
    ref = layer.backward(x.numpy(), dy.numpy())
    np.testing.assert_allclose(dx.numpy(), ref["x"], rtol=1e-5, atol=1e-6)
    for n in layer.param_names:
        np.testing.assert_allclose(dp[n].numpy(), ref[n], rtol=1e-5, atol=1e-6, err_msg=n)


def test_double_backward_is_refused_clearly(fixture_bundle):
    mlp = mt.MoltMLP(make(fixture_bundle))
    x = rows(4).requires_grad_(True)
    (gx,) = torch.autograd.grad(mlp(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        gx.sum().backward()


# ---- the MOLT loss in torch ------------------------------------------------------------------

def test_gram_norm_is_exact_not_the_product_of_norms(fixture_bundle):
    mlp = mt.MoltMLP(make(fixture_bundle))
    want = []
    for k in range(2):
        u, v = getattr(mlp, f"u{k}").detach(), getattr(mlp, f"v{k}").detach()
        for t in range(u.shape[0]):
            want.append(torch.linalg.matrix_norm((u[t] @ v[t]).double()))
            assert abs(want[-1] - u[t].norm() * v[t].norm()) > 1e-3  # the two differ here
    torch.testing.assert_close(mlp.norms().double(), torch.stack(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-transcoder-topk"])
def test_encode_lists_the_open_gates(fixture_bundle, name):
    layer = make(fixture_bundle, name)
    mlp = mt.MoltMLP(layer)
    x = rows(32, seed=2)
    enc = mlp.encode(x)
    assert enc.gates.shape == (32, layer.model.get("features", 5))
    for i in range(32):
        open_ = torch.nonzero(enc.gates[i] > 0).flatten()
        assert enc.l0[i] == len(open_)
        assert enc.indices[i, :len(open_)].tolist() == open_.tolist()
        assert (enc.indices[i, len(open_):] == -1).all()
        torch.testing.assert_close(enc.values[i, :len(open_)], enc.gates[i, open_])
    assert 0 < enc.l0.float().mean() < enc.gates.shape[1]
    # The runtime's own count of open (token, transform) pairs.
    assert enc.l0.float().mean().item() == pytest.approx(
        layer.evaluate(x.numpy(), x.numpy())["l0"], abs=1e-6)


def clip_(params, clip):
    """molt's clipping (kernels/cpu/optimizer.cpp): scale by clip/‖g‖ when ‖g‖ > clip."""
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
    if clip > 0 and norm > clip:
        for p in params:
            p.grad.mul_(float(clip / norm))
    return float(norm)


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder",
                                  "tiny-transcoder-jumprelu", "tiny-transcoder-topk"])
def test_torch_loop_equals_train_step(fixture_bundle, name):
    """N steps of autograd + torch.optim.Adam on mse + penalty, on molt's LR and λ schedule
    (molt.torch.Schedule), equal N Layer.train_steps: loss, L0 and grad-norm curves and the
    final params, within float tolerance."""
    steps, B = 25, 48
    ref = make(fixture_bundle, name, batch=B, lr=5e-3, steps=40, clip=0.5)
    mine = make(fixture_bundle, name, batch=B, lr=5e-3, steps=40, clip=0.5)
    mlp = mt.MoltMLP(mine)
    s = mine.schedule
    opt = torch.optim.Adam(mlp.parameters(), lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps)
    sched = mt.Schedule(opt, mlp)
    rng = np.random.default_rng(7)
    W = torch.from_numpy(rng.normal(0, 0.5, (8, 8)).astype(np.float32))
    curves = {"ref": [], "torch": []}
    for step in range(steps):
        x = torch.from_numpy(rng.normal(0, 1, (B, 8)).astype(np.float32))
        y = torch.tanh(x @ W)
        m = ref.train_step(x.numpy(), y.numpy())
        curves["ref"].append((m["loss"], m["l0"], m["grad_norm"], m["lambda"]))

        yhat, penalty = mlp(x, return_penalty=True)
        loss = (yhat - y).square().sum(-1).mean() + penalty
        l0 = mlp.encode(x).l0.double().mean().item()
        lam = mlp.penalty_lambda.item()
        opt.zero_grad()
        loss.backward()
        gnorm = clip_(list(mlp.parameters()), s.clip)
        opt.step()
        sched.step()
        curves["torch"].append((loss.item(), l0, gnorm, lam))
    r, t = np.array(curves["ref"]), np.array(curves["torch"])
    assert r[-1, 3] > r[0, 3]  # λ warmed up over the run
    np.testing.assert_allclose(t[:, 3], r[:, 3], rtol=1e-6)
    np.testing.assert_allclose(t[:, 0], r[:, 0], rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(t[:, 1], r[:, 1])
    np.testing.assert_allclose(t[:, 2], r[:, 2], rtol=2e-4, atol=1e-6)
    assert r[-1, 0] < r[0, 0]  # it learned something
    for n, v in ref.state_dict().items():
        np.testing.assert_allclose(getattr(mlp, n).detach().numpy(), v, rtol=1e-3, atol=2e-5,
                                   err_msg=n)


# ---- one param store, one key scheme ---------------------------------------------------------

def test_layer_and_module_share_one_param_store(fixture_bundle, tmp_path):
    layer = make(fixture_bundle, batch=16)
    mlp = mt.MoltMLP(layer)
    assert set(mlp.state_dict()) == set(layer.state_dict()) == set(layer.param_names)
    x, y = rows(16).numpy(), rows(16, seed=1).numpy()
    layer.train_step(x, y)                       # the layer's Adam reaches the module
    for n, v in layer.state_dict().items():
        np.testing.assert_array_equal(getattr(mlp, n).detach().numpy(), v)
    other = random_params(layer, 9)
    mlp.load_state_dict({k: torch.from_numpy(v) for k, v in other.items()})  # and back
    for n, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, other[n])
    with torch.no_grad():                        # an optimiser's in-place update reaches it too
        mlp.dec_b.add_(1.0)
    np.testing.assert_allclose(layer.forward(x[:5]).copy(), mlp(torch.from_numpy(x[:5])).detach())
    layer.forward(rows(7).numpy())               # a batch change keeps the sharing
    layer.train_step(x, y)
    np.testing.assert_array_equal(mlp.enc_w.detach().numpy(), layer.state_dict()["enc_w"])
    # save / load_state_dict / state_dict speak one key scheme, in both directions.
    path = str(tmp_path / "s.safetensors")
    layer.save(path)
    fresh = mt.MoltMLP(molt.Layer(fixture_bundle("tiny-molt"), batch=16, seed=5))
    fresh.load_state_dict(path)
    for n, v in layer.state_dict().items():
        np.testing.assert_array_equal(getattr(fresh, n).detach().numpy(), v)
    fresh.layer.load_state_dict(mlp.state_dict())


# ---- dtype, device, pickling, empty batches --------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_output_dtype_follows_the_input(fixture_bundle, dtype):
    dtype = getattr(torch, dtype)
    mlp = mt.MoltMLP(make(fixture_bundle))
    x = rows(16).to(dtype).requires_grad_(True)
    y = mlp(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y, mlp(x.detach().float()).to(dtype))  # computed in float32
    y.float().sum().backward()
    assert x.grad.dtype == dtype
    with pytest.raises(TypeError, match="float64"):
        mlp(rows(4).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mlp(rows(4)).dtype == torch.bfloat16


def test_devices_parse_and_cuda_is_a_clear_error(fixture_bundle):
    layer = molt.Layer(fixture_bundle("tiny-molt"), batch=4, device=torch.device("cpu"))
    assert layer.device == "cpu"
    with pytest.raises(molt.MoltError, match="unknown device 'tpu'"):
        molt.Layer(fixture_bundle("tiny-molt"), device="tpu")
    mlp = mt.MoltMLP(layer)
    mlp.to("cpu").to(torch.bfloat16)  # params stay float32, still the layer's
    assert mlp.enc_w.dtype == torch.float32 and mlp.enc_w.data_ptr() == layer.params["enc_w"].ctypes.data
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; tests/python/test_torch.py covers it")
    for dev in ("cuda", "cuda:0", torch.device("cuda:0")):
        with pytest.raises(molt.MoltError, match=r"device 'cuda(:0)?' is unavailable"):
            molt.Layer(fixture_bundle("tiny-molt"), device=dev)
    with pytest.raises(molt.MoltError, match="unavailable"):
        mlp.to("cuda:0")
    with pytest.raises(molt.MoltError, match="MOLT_CUDA_DEVICE=1"):
        molt.Layer(fixture_bundle("tiny-molt"), device="cuda:1")


def test_module_pickles_with_its_bundle_and_params(fixture_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLT_BUNDLE_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "bundle"
    shutil.copytree(fixture_bundle("tiny-molt"), bundle)
    layer = molt.Layer(str(bundle), batch=16, lr=3e-3)
    layer.load_state_dict(random_params(layer, 4))
    layer.train_step(rows(16).numpy(), rows(16, seed=1).numpy())
    mlp = mt.MoltMLP(layer)
    x = rows(16, seed=2)
    want = mlp(x).detach()
    blob = pickle.dumps(mlp)
    buf = io.BytesIO()
    torch.save(mlp, buf)
    deep = copy.deepcopy(mlp)
    alone = pickle.loads(pickle.dumps(layer))  # a Layer pickles by itself too
    np.testing.assert_array_equal(alone.forward(x.numpy()), layer.forward(x.numpy()))
    shutil.rmtree(bundle)  # the copies carry the bundle themselves
    copies = [pickle.loads(blob), torch.load(io.BytesIO(buf.getvalue()), weights_only=False),
              deep]
    for c in copies:
        torch.testing.assert_close(c(x), want)
        assert c.layer.step == 1 and c.layer.schedule.lr == pytest.approx(3e-3)
        for n in layer.param_names:  # each copy's params are its own layer's store
            assert getattr(c, n).data_ptr() == c.layer.params[n].ctypes.data
    with torch.no_grad():
        copies[2].dec_b.add_(1.0)  # a deep copy is independent of the original
    torch.testing.assert_close(mlp(x), want)
    assert not torch.allclose(copies[2](x), want)
    # Adam moments and the step count came along: the next step is the original's next step.
    a = copies[0].layer.train_step(x.numpy(), x.numpy())
    b = layer.train_step(x.numpy(), x.numpy())
    assert a["step"] == b["step"] == 2
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    np.testing.assert_allclose(copies[0].layer.state_dict(True)["m_enc_w"],
                               layer.state_dict(True)["m_enc_w"], rtol=1e-6, atol=1e-9)


def test_empty_batch_gives_an_empty_result(fixture_bundle):
    layer = make(fixture_bundle)
    mlp = mt.MoltMLP(layer)
    x = torch.zeros(0, 8, requires_grad=True)
    y = mlp(x)
    assert y.shape == (0, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 8) and mlp.enc_w.grad.abs().sum() == 0
    assert mlp(torch.zeros(2, 0, 8)).shape == (2, 0, 8)
    assert layer.forward(np.zeros((0, 8), np.float32)).shape == (0, 8)
    assert mlp.encode(torch.zeros(0, 8)).indices.shape == (0, 0)
