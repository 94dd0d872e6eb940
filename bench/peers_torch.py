#!/usr/bin/env python3
"""PyTorch peers for bench_cuda: a dense MOLT (every transform for every token) and a gather /
index_add MOLT (only the listed pairs, padded per transform), timed on the same GPU.

Same model and activity as bench/bench_cuda.cpp: d, the reference schedule ref:N (N of rank 512,
2N of 256, 4N of 128, 8N of 64, 16N of 32), x ~ N(0, 1), enc_w ~ N(0, 1/d), theta = 1.5 so about
33 of 31N transforms fire per token. Train step = forward, MSE + lambda * sum tanh(g * ||U V||_F)
(norm through the r x r Grams, as molt does), backward, Adam. fp32 throughout (TF32 off).
Prints one table and one JSON line per peer.
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
except ImportError:  # the CPU box has no PyTorch; the GPU machine does
    sys.exit("peers_torch.py: error: PyTorch is not installed")


def make_params(d, n, device, seed=0):
    torch.manual_seed(seed)
    buckets = [(512, n), (256, 2 * n), (128, 4 * n), (64, 8 * n), (32, 16 * n)]
    T = sum(c for _, c in buckets)
    p = {
        "enc_w": torch.randn(T, d, device=device) / d ** 0.5,
        "enc_b": torch.zeros(T, device=device),
        "theta": torch.full((T,), 1.5, device=device),
        "dec_b": torch.zeros(d, device=device),
    }
    for k, (r, c) in enumerate(buckets):
        p[f"u{k}"] = torch.randn(c, d, r, device=device) / r ** 0.5
        p[f"v{k}"] = torch.randn(c, r, d, device=device) / d ** 0.5
    for v in p.values():
        v.requires_grad_(True)
    return buckets, p


def gate(x, p):
    pre = x @ p["enc_w"].T - p["enc_b"]
    return pre * (pre > p["theta"]).to(pre.dtype)


def norms(p, buckets):
    out = []
    for k in range(len(buckets)):
        u, v = p[f"u{k}"], p[f"v{k}"]
        gu = u.transpose(1, 2) @ u
        gv = v @ v.transpose(1, 2)
        out.append(((gu * gv).sum((1, 2))).clamp_min(0).sqrt())
    return torch.cat(out)


def dense_forward(x, p, buckets):
    """Every transform for every token, as two GEMMs per bucket."""
    g = gate(x, p)
    y = p["dec_b"].expand(x.shape[0], -1)
    off = 0
    for k, (r, c) in enumerate(buckets):
        v_all = p[f"v{k}"].reshape(c * r, -1)                      # [c r, d]
        u_all = p[f"u{k}"].permute(0, 2, 1).reshape(c * r, -1)     # [c r, d]
        h = (x @ v_all.T).view(-1, c, r) * g[:, off:off + c, None]
        y = y + h.reshape(-1, c * r) @ u_all
        off += c
    return y, g


def gather_forward(x, p, buckets):
    """Only listed pairs: per bucket, tokens gathered per transform (padded), two bmm, index_add."""
    g = gate(x, p)
    y = p["dec_b"].expand(x.shape[0], -1).clone()
    off = 0
    for k, (r, c) in enumerate(buckets):
        gk = g[:, off:off + c]
        nz = (gk.T != 0).nonzero()                # (t, tok), tokens ascending within t
        off += c
        if nz.numel() == 0:
            continue
        t_idx, tok = nz[:, 0], nz[:, 1]
        counts = torch.bincount(t_idx, minlength=c)
        start = torch.cumsum(counts, 0) - counts
        pos = torch.arange(t_idx.numel(), device=x.device) - start[t_idx]
        m = int(counts.max())
        xg = x.new_zeros(c, m, x.shape[1])
        xg[t_idx, pos] = x[tok]
        gg = x.new_zeros(c, m)
        gg = gg.index_put((t_idx, pos), gk[tok, t_idx])
        h = torch.bmm(xg, p[f"v{k}"].transpose(1, 2)) * gg[..., None]
        yg = torch.bmm(h, p[f"u{k}"].transpose(1, 2))
        y = y.index_add(0, tok, yg[t_idx, pos].to(y.dtype))  # bf16 under autocast
    return y, g


def train_step(fwd, x, y, p, buckets, opt, lam=0.01, c=1.0):
    opt.zero_grad(set_to_none=True)
    yhat, g = fwd(x, p, buckets)
    loss = ((yhat - y) ** 2).sum() / x.shape[0]
    loss = loss + lam * torch.tanh(c * g * norms(p, buckets)[None, :]).sum() / x.shape[0]
    loss.backward()
    opt.step()
    return loss


def timed(fn, iters, warmup=3, device="cuda"):
    """Milliseconds per call: CUDA events over `iters` calls, or on the CPU the median call."""
    for _ in range(warmup):
        fn()
    if device != "cuda":
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e3
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--n", type=int, default=16, help="schedule multiplier (ref:N)")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--precision", default="f32,bf16",
                    help="comma-separated: f32, and/or bf16 (torch.autocast: bf16 matmuls, fp32 "
                         "weights, like molt's bf16 bundles)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("peers_torch.py: error: no CUDA device visible to PyTorch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    buckets, p = make_params(a.d, a.n, dev)
    x = torch.randn(a.batch, a.d, device=dev)
    y = torch.randn(a.batch, a.d, device=dev)
    with torch.no_grad():
        l0 = float((gate(x, p) > 0).sum()) / a.batch
        yd, _ = dense_forward(x, p, buckets)
        yg, _ = gather_forward(x, p, buckets)
        agree = float((yd - yg).abs().max() / yd.abs().max())
    print(f"device {torch.cuda.get_device_name()}  d={a.d} ref:{a.n} T={sum(c for _, c in buckets)}"
          f"  batch {a.batch}  L0 {l0:.1f}  dense-vs-gather max rel diff {agree:.2e}")
    print(f"{'peer':12s} {'forward ms':>11s} {'train ms':>10s} {'train tok/s':>13s}")
    for prec in a.precision.split(","):
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16")
        for base, fwd in (("dense", dense_forward), ("gather", gather_forward)):
            name = base if prec == "f32" else f"{base}-{prec}"
            opt = torch.optim.Adam(p.values(), lr=1e-4)
            with torch.no_grad(), amp:
                f_ms = timed(lambda: fwd(x, p, buckets), a.iters)
            with amp:
                t_ms = timed(lambda: train_step(fwd, x, y, p, buckets, opt), a.iters)
            print(f"{name:12s} {f_ms:11.2f} {t_ms:10.2f} {a.batch / t_ms * 1e3:13.0f}")
            print(json.dumps({"peer": f"torch_{name}", "precision": prec, "forward_ms": f_ms,
                              "train_step_ms": t_ms, "train_tokens_per_s": a.batch / t_ms * 1e3,
                              "L0": l0, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
