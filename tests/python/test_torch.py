"""molt.torch: a MOLT inside a PyTorch model. Gradients through the runtime's backward against
autograd of a pure-PyTorch reference MOLT with the same params (float64), zero-copy by data
pointers, and training in an ordinary torch loop. Skipped where torch is not installed, except under CI=true or MOLT_REQUIRE_TORCH=1 (scripts/test),
where that fails."""
import os

import numpy as np
import pytest

from conftest import random_params, required  # noqa: E402

torch = required("torch")
molt = pytest.importorskip("molt")
import molt.torch as mt  # noqa: E402


class JumpReLU(torch.autograd.Function):
    """g = pre·H(pre − θ⁺) with θ⁺ = max(θ, 0), so g ≥ 0; θ's gradient is the rectangle
    straight-through estimator of docs/bundle.md (gate_bwd): Σ dg·(−θ⁺/ε)·[|pre − θ⁺| < ε/2]."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        th = theta.clamp(min=0)
        ctx.save_for_backward(pre, th)
        ctx.eps = eps
        return pre * (pre > th)

    @staticmethod
    def backward(ctx, dg):
        pre, th = ctx.saved_tensors
        near = ((pre - th).abs() < ctx.eps / 2).to(dg.dtype)
        return dg * (pre > th), (dg * (-th / ctx.eps) * near).sum(0), None


def reference_molt(model, P, x):
    """Dense over every transform, float64, plain autograd (docs/architecture.md §1)."""
    pre = x @ P["enc_w"].T - P["enc_b"]
    if model["gate"]["kind"] == "jumprelu":
        g = JumpReLU.apply(pre, P["theta"], model["gate"]["bandwidth"])
    else:
        g = torch.relu(pre)
    y = P["dec_b"].expand_as(x).clone()
    off = 0
    for k, b in enumerate(model["buckets"]):
        n = b["count"]
        h = torch.einsum("bj,nrj->bnr", x, P[f"v{k}"])
        out = torch.einsum("bnr,ndr->bnd", h, P[f"u{k}"])
        y = y + torch.einsum("bn,bnd->bd", g[:, off:off + n], out)
        off += n
    return y


def layer_with_params(fixture_bundle, name, batch, seed=3):
    layer = molt.Layer(fixture_bundle(name), batch=batch)
    p = random_params(layer, seed)
    layer.load_state_dict(p)
    return layer, p


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-molt-relu-l1"])
def test_gradients_match_pytorch_reference(fixture_bundle, name):
    layer, p = layer_with_params(fixture_bundle, name, batch=64)
    mlp = mt.MoltMLP(layer)
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.normal(size=(4, 16, 8)), dtype=torch.float32, requires_grad=True)
    w = torch.tensor(rng.normal(size=(4, 16, 8)), dtype=torch.float32)
    (mlp(x) * w).sum().backward()

    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items()}
    xr = x.detach().double().requires_grad_(True)
    y_ref = reference_molt(layer.model, P, xr.reshape(-1, 8)).reshape(4, 16, 8)
    (y_ref * w.double()).sum().backward()

    np.testing.assert_allclose(x.grad.numpy(), xr.grad.numpy(), rtol=1e-4, atol=1e-4)
    for n in layer.param_names:
        np.testing.assert_allclose(getattr(mlp, n).grad.numpy(), P[n].grad.numpy(), rtol=1e-4,
                                   atol=1e-4, err_msg=n)
    if "theta" in P:
        assert P["theta"].grad.abs().max() > 0  # the estimator was exercised


def test_torch_tensors_cross_without_copies(fixture_bundle):
    layer, _ = layer_with_params(fixture_bundle, "tiny-molt", batch=16)
    x = torch.randn(16, 8)
    y = layer.forward(x)
    assert isinstance(y, torch.Tensor) and y.data_ptr() == layer.data_ptr("yhat")
    with layer.bind({"x": x}):
        assert layer.data_ptr("x") == x.data_ptr()
    out = torch.empty(16, 8)
    assert layer.forward(x, out=out).data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, y)
    # Params of the torch module are the executor's params during a call.
    mlp = mt.MoltMLP(layer)
    seen = {}
    orig = layer._run

    def spy(entry):
        seen.update({n: layer.data_ptr(n) for n in layer.param_names})
        orig(entry)

    layer._run = spy
    mlp(x)
    assert seen == {n: p.data_ptr() for n, p in mlp.named_parameters()}


def test_trains_in_an_ordinary_loop(fixture_bundle):
    torch.manual_seed(0)
    layer, _ = layer_with_params(fixture_bundle, "tiny-molt", batch=64)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), mt.MoltMLP(layer), torch.nn.Linear(8, 4))
    target = torch.nn.Linear(8, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        x = torch.randn(64, 8)
        loss = ((model(x) - target(x).detach()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert model[0].weight.grad.abs().sum() > 0  # gradients flow through the MOLT to inputs
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_cuda_matches_cpu_and_shares_memory(fixture_bundle):
    if not (torch.cuda.is_available() and molt.HAS_CUDA_BACKEND):
        pytest.skip("no CUDA device or no CUDA backend in this build")
    # A manifest-only bundle: the CUDA executor writes its kernels' wrappers itself.
    bundle = os.environ.get("MOLT_TEST_CUDA_BUNDLE") or fixture_bundle("tiny-molt")
    cpu = molt.Layer(bundle, batch=128)
    gpu = molt.Layer(bundle, batch=128, device="cuda")
    p = random_params(cpu, 5, scale=0.2)
    cpu.load_state_dict(p)
    gpu.load_state_dict(p)
    x = torch.randn(128, cpu.d_model)
    xg = x.cuda()
    yg = gpu.forward(xg)
    assert yg.is_cuda and yg.data_ptr() == gpu.data_ptr("yhat")
    if gpu._can_bind:  # a CUDA backend that aliases caller memory: inputs cross without copies
        with gpu.bind({"x": xg}):
            assert gpu.data_ptr("x") == xg.data_ptr()
    torch.testing.assert_close(yg.cpu(), cpu.forward(x), rtol=1e-4, atol=1e-4)
    mlp_c, mlp_g = mt.MoltMLP(cpu), mt.MoltMLP(gpu)
    xc = x.clone().requires_grad_(True)
    xg = x.cuda().requires_grad_(True)
    mlp_c(xc).square().sum().backward()
    mlp_g(xg).square().sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-3, atol=1e-3)
    for n in cpu.param_names:
        torch.testing.assert_close(getattr(mlp_g, n).grad.cpu(), getattr(mlp_c, n).grad, rtol=1e-3,
                                   atol=1e-3, msg=n)
