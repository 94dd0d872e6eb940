#!/usr/bin/env python3
"""molt beside PyTorch on the CPU, in one run: the paths a PyTorch user takes.

Shape (issue 13's CPU targets): d = 768, the reference schedule ref:N (N of rank 512, 2N of
256, 4N of 128, 8N of 64, 16N of 32), batch 2048, x ~ N(0, 1), enc_w ~ N(0, 1/d), θ set so
L0 ≈ 24. Both sides get the same params. Rows:

* train step: molt.Layer.train_step (the compiled train_step) vs the PyTorch gather /
  index_add peer of bench/peers_torch.py with the same math (MSE + λ Σ tanh(c g ‖UV‖_F) with
  the norm through r×r Grams, backward, torch Adam);
* forward+backward: molt.torch.MoltMLP under autograd (loss Σ(ŷ−y)²/B) vs the same loss
  through the PyTorch peer; with the input gradient (x.requires_grad) and without;
* a 1-row forward of MoltMLP (no grad).

Run it with one command: `bench/peers_torch_cpu.py` (after the build; it finds build/python).
Prints one table and one JSON line; ratios are PyTorch time / molt time (higher is better).
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.environ.get("MOLT_PY_STAGE", os.path.join(ROOT, "build", "python")))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--n", type=int, default=8, help="schedule multiplier (ref:N)")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--theta", type=float, default=1.3, help="gate threshold (sets L0)")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch
    import make_fixture
    import molt
    import molt.torch as mt
    from peers_torch import gather_forward, make_params, norms, timed as timed_on

    def timed(fn, iters):
        return timed_on(fn, iters, warmup=2, device="cpu")
    torch.set_num_threads(a.threads)

    buckets, p = make_params(a.d, a.n, "cpu")
    with torch.no_grad():
        p["theta"].fill_(a.theta)
    lam, c = 0.01, 4.0
    out = tempfile.mkdtemp(prefix="molt-bench-")
    make_fixture.write(make_fixture.molt_manifest(
        "bench", a.d, buckets, gate="jumprelu", threshold=a.theta, bandwidth=0.05,
        penalty="tanh", c=c, lam=lam, warmup=0.0), out)
    layer = molt.Layer(out, batch=a.batch, lr=1e-4, steps=10 ** 6, lambda_warmup=0.0)
    layer.load_state_dict({k: v.detach().numpy() for k, v in p.items()})
    mlp = mt.MoltMLP(layer)
    torch.manual_seed(1)
    x = torch.randn(a.batch, a.d)
    y = torch.randn(a.batch, a.d)
    with torch.no_grad():
        l0 = float(((x @ p["enc_w"].T - p["enc_b"]) > p["theta"]).sum()) / a.batch
        ref, _ = gather_forward(x, p, buckets)
        agree = float((mlp(x) - ref).abs().max() / ref.abs().max())

    # -- train step ---------------------------------------------------------------------------
    opt = torch.optim.Adam(p.values(), lr=1e-4)

    def torch_train():
        opt.zero_grad(set_to_none=True)
        yhat, g = gather_forward(x, p, buckets)
        loss = ((yhat - y) ** 2).sum() / a.batch
        loss = loss + lam * torch.tanh(c * g * norms(p, buckets)[None, :]).sum() / a.batch
        loss.backward()
        opt.step()

    xn, yn = x.numpy(), y.numpy()
    rows = {}
    rows["train step"] = (timed(lambda: layer.train_step(xn, yn), a.iters),
                          timed(torch_train, a.iters))

    # -- autograd forward + backward ------------------------------------------------------------
    params = [q for q in p.values()]

    def torch_fb(need_x):
        xx = x.clone().requires_grad_(need_x)
        yhat, _ = gather_forward(xx, p, buckets)
        loss = ((yhat - y) ** 2).sum() / a.batch
        torch.autograd.grad(loss, params + ([xx] if need_x else []), allow_unused=True)

    def molt_fb(need_x):
        xx = x.clone().requires_grad_(need_x)
        loss = ((mlp(xx) - y) ** 2).sum() / a.batch
        torch.autograd.grad(loss, list(mlp.parameters()) + ([xx] if need_x else []))

    rows["fwd+bwd"] = (timed(lambda: molt_fb(False), a.iters), timed(lambda: torch_fb(False), a.iters))
    rows["fwd+bwd+dx"] = (timed(lambda: molt_fb(True), a.iters), timed(lambda: torch_fb(True), a.iters))

    # -- a 1-row forward ------------------------------------------------------------------------
    layer1 = molt.Layer(out, batch=1)
    layer1.load_state_dict({k: v.detach().numpy() for k, v in p.items()})
    mlp1 = mt.MoltMLP(layer1)
    x1 = x[:1].clone()
    with torch.no_grad():
        rows["1-row fwd"] = (timed(lambda: mlp1(x1), 20),
                             timed(lambda: gather_forward(x1, p, buckets), 20))

    load = os.getloadavg()[0]
    print(f"d={a.d} ref:{a.n} T={sum(n for _, n in buckets)} batch {a.batch} L0 {l0:.1f} "
          f"threads {a.threads}  molt-vs-torch max rel diff {agree:.1e}  load {load:.2f}")
    print(f"{'path':12s} {'molt ms':>9s} {'torch ms':>9s} {'torch/molt':>11s}")
    result = {"d": a.d, "n": a.n, "batch": a.batch, "L0": l0, "threads": a.threads, "load": load}
    for name, (m_ms, t_ms) in rows.items():
        print(f"{name:12s} {m_ms:9.1f} {t_ms:9.1f} {t_ms / m_ms:10.2f}x")
        result[name] = {"molt_ms": m_ms, "torch_ms": t_ms, "ratio": t_ms / m_ms}
    m, t = rows["fwd+bwd+dx"][0], rows["fwd+bwd"][0]
    print(f"input gradient cost: molt fwd+bwd+dx / fwd+bwd = {m / t:.2f}")
    result["dx_over_no_dx"] = m / t
    print(json.dumps(result))


if __name__ == "__main__":
    main()
