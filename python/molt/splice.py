"""Spliced evaluation of trained runs: how much of a causal LM's next-token loss survives when
one MLP is replaced by a MOLT or a transcoder, on the held-out sequences of a harvest.

    python -m molt.splice RUN [RUN ...] --data HARVEST [--sequences 16] [--json]

HARVEST is a folder written by `molt-harvest --model smollm2` (harvest.json names the model and
the layer, sequences.safetensors holds the token windows and which are held out, train/ the
rows whose mean output is the mean ablation). Each RUN is a molt-train run directory of that
layer (MOLT or transcoder), loaded with molt.load in raw space. The model runs once up to the
layer; every run, the zero and the mean ablation then re-run only the layers from there on
(molt.lm.SplicedEvaluator), so evaluating many runs in one call costs one tail pass each.

`molt-eval RUN --data D --splice HARVEST` calls this module (the LM is torch; the C++ tools link
no torch), and so does scripts/compare with every run of a comparison in one process.

Per run it reports ce_clean, ce_spliced, ce_zero, ce_mean (nats per predicted token), kl (mean
KL(clean ‖ spliced) per token), recovered_vs_mean = (ce_mean − ce_spliced) / (ce_mean −
ce_clean), recovered_vs_zero likewise, and spliced_tokens (predicted tokens).
"""
import argparse
import json
import os
import sys

import numpy as np

from . import lm
from ._cli import Parser, StudyError

__all__ = ["harvest_info", "held_out_ids", "train_mean_y", "model_of_harvest", "replacement",
           "evaluate_runs", "main"]

SMOLLM2_PREFIX = "HuggingFaceTB/SmolLM2-135M-Instruct"


class SpliceError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def harvest_info(data):
    path = os.path.join(data, "harvest.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except OSError:
        raise SpliceError(f"{data}: no harvest.json (not a molt-harvest folder)") from None
    except ValueError as e:
        raise SpliceError(f"{path}: not JSON ({e})") from None
    if "layer" not in info or "model" not in info:
        raise SpliceError(f"{path}: names no model and layer")
    return info


def held_out_ids(data, sequences=None):
    """The held-out token windows of a harvest as a LongTensor [n, T] (the first `sequences`)."""
    import torch
    from safetensors.numpy import load_file

    path = os.path.join(data, "sequences.safetensors")
    if not os.path.isfile(path):
        raise SpliceError(f"{data}: no sequences.safetensors (harvest a causal LM: "
                          "molt-harvest --model smollm2)")
    s = load_file(path)
    ids = s["ids"][s["val"].astype(bool)]
    if sequences is not None:
        ids = ids[:sequences]
    if len(ids) == 0:
        raise SpliceError(f"{path}: no held-out sequences")
    return torch.from_numpy(ids.astype(np.int64))


def train_mean_y(data):
    """The MLP's mean output over the harvest's training rows (float64): the mean ablation."""
    from safetensors import safe_open

    folder = os.path.join(data, "train")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")) if os.path.isdir(folder) else []
    total, n = None, 0
    for f in files:
        with safe_open(os.path.join(folder, f), "np") as st:
            y = st.get_tensor("y").astype(np.float64)
        total = y.sum(0) if total is None else total + y.sum(0)
        n += len(y)
    if not n:
        raise SpliceError(f"{folder}: no training rows for the mean ablation")
    return total / n


def model_of_harvest(info, model_dir=None):
    """The causal LM a harvest came from: SmolLM2 (offline, cached) or the saved model folder
    harvest.json names (tests use a tiny random one)."""
    try:
        if model_dir:
            return lm.causal_lm(model_dir)[0]
        if str(info["model"]).startswith(SMOLLM2_PREFIX):
            return lm.smollm2()[0]
        if os.path.isdir(info["model"]):
            return lm.causal_lm(info["model"])[0]
    except (OSError, ValueError) as e:
        raise SpliceError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    raise SpliceError(f"the harvest's model '{info['model']}' is not a causal LM this module "
                      "can load (molt-harvest --model smollm2 makes one)")


def replacement(run, rows):
    """x -> ŷ (torch, any leading shape) from a molt-train run, through molt.load in raw space.
    rows: the executor's token count (a chunk's batch x seq_len, so it binds once)."""
    import torch

    import molt

    try:
        layer = molt.load(run, batch=rows)
    except molt.MoltError as e:
        raise SpliceError(f"{run}: {e}") from None

    def forward(x):
        flat = x.detach().reshape(-1, x.shape[-1]).float().contiguous()
        if flat.shape[-1] != layer.d_model:
            raise SpliceError(f"{run}: d_model {layer.d_model}, the MLP's input has {flat.shape[-1]}")
        return torch.as_tensor(np.array(layer.forward(flat.numpy()))).reshape(x.shape)

    return forward


def evaluate_runs(runs, data, sequences=16, batch=4, model_dir=None, log=None):
    """{run: metrics} for each run directory on `data`'s held-out sequences."""
    info = harvest_info(data)
    ids = held_out_ids(data, sequences)
    mean_y = train_mean_y(data)
    model = model_of_harvest(info, model_dir)
    layer = int(info["layer"])
    rows = min(batch, len(ids)) * ids.shape[1]
    reps = {run: replacement(run, rows) for run in runs}
    if log:
        log(f"splicing {len(reps)} run(s) into layer {layer} on {len(ids)} held-out sequences "
            f"of {ids.shape[1]} tokens")
    try:
        evaluator = lm.SplicedEvaluator(model, layer, ids, mean_y=mean_y, batch=batch)
        out = evaluator.evaluate(reps)
    except ValueError as e:
        raise SpliceError(str(e)) from None
    for m in out.values():
        m["spliced_tokens"] = m.pop("tokens")
    return out


def parse_args(argv, prog):
    p = Parser(
        prog=prog,
        description="Next-token cross-entropy and KL to the clean model with a harvested "
                    "layer's MLP replaced by each run, and the fraction of loss recovered "
                    "relative to mean- and zero-ablating that MLP, on the harvest's held-out "
                    "sequences.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="molt-train run directories")
    p.add_argument("--data", required=True,
                   help="harvest folder (harvest.json, sequences.safetensors, train/)")
    p.add_argument("--sequences", type=int, default=16,
                   help="held-out sequences to evaluate on (default 16; 0: all)")
    p.add_argument("--batch", type=int, default=4, help="sequences per forward pass (default 4)")
    p.add_argument("--model-dir", help="the causal LM (default: the one harvest.json names)")
    p.add_argument("--json", action="store_true", help="one JSON object per run, one per line")
    p.add_argument("--prog", default=prog, help=argparse.SUPPRESS)  # molt-eval's name in errors
    return p.parse_args(argv)


TEXT_KEYS = (("ce_clean", "ce clean"), ("ce_spliced", "ce spliced"), ("ce_mean", "ce mean-abl"),
             ("ce_zero", "ce zero-abl"), ("kl", "kl"), ("recovered_vs_mean", "recovered vs mean"),
             ("recovered_vs_zero", "recovered vs zero"))


def main(argv=None, prog="molt-splice"):
    argv = sys.argv[1:] if argv is None else argv
    prog = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--prog"), prog)
    try:
        args = parse_args(argv, prog)
    except StudyError as e:  # a bad command line: one line, exit 1, as every molt tool
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    try:
        if args.sequences < 0 or args.batch <= 0:
            raise SpliceError("--sequences must be >= 0 and --batch positive")
        for run in args.runs:
            if not os.path.isdir(run):
                raise SpliceError(f"{run}: no such run directory")
        out = evaluate_runs(args.runs, args.data, args.sequences or None, args.batch, args.model_dir)
    except SpliceError as e:
        print(f"{args.prog}: error: {e}", file=sys.stderr)
        return 1
    for run in args.runs:
        m = out[run]
        if args.json:
            # Strict JSON (molt-eval parses it): a ratio with no ablation gap is null, not NaN.
            print(json.dumps({"run": run, **{k: (v if not isinstance(v, float) or np.isfinite(v)
                                               else None) for k, v in m.items()}}))
        else:
            print(f"{run}: spliced over {m['spliced_tokens']} tokens  " +
                  "  ".join(f"{name} {m[k]:.4f}" for k, name in TEXT_KEYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
