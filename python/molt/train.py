"""python -m molt.train: molt-train's flags and run directory, data-parallel under torchrun.

    python -m molt.train SPEC_OR_BUNDLE --data D --out RUN [--steps N --batch B ...]
    torchrun --nproc-per-node 4 -m molt.train SPEC --data D --out RUN --batch 4096
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m molt.train SPEC --data D --out RUN

The loop is molt-train's own (study/src/run.cpp, in-process): under torchrun each rank trains on
its part of every global batch (--batch is the global batch), the gradients are all-reduced by
torch.distributed (molt.distributed) before the fused Adam, and rank 0 alone writes RUN.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from . import _molt, distributed

PROG = "molt.train"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 1 (molt's tool convention)
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.exit(1)


def _parser():
    o = _molt.TrainOptions()  # the defaults are molt-train's
    p = _Parser(prog=f"python -m {PROG}", description=(
        "Trains a molt layer or transcoder on activation shards (molt-train's flags). Under "
        "torchrun: data-parallel over torch.distributed (gloo on cpu, NCCL on cuda); --batch "
        "is the global batch, split evenly over the ranks; rank 0 writes RUN."))
    p.add_argument("input", metavar="SPEC_OR_BUNDLE",
                   help="a bundle directory made by molt-compile, or a .mlir spec")
    p.add_argument("--layer", default="", help="with a spec: the layer or transcoder to train "
                   "(e.g. @transcoder; default: the first layer)")
    p.add_argument("--data", required=True, help="training data: a .safetensors file or a "
                   "directory of shards with x [n,d] and y [n,d]")
    p.add_argument("--val", default="", help="validation data, evaluated at the end")
    p.add_argument("--out", required=True, help="the run directory")
    p.add_argument("--steps", type=int, default=o.steps, help="total training steps")
    p.add_argument("--schedule-steps", type=int, default=0, help="length the LR and lambda "
                   "schedules are planned over (default: --steps; kept on --resume)")
    p.add_argument("--batch", type=int, default=o.batch, help="tokens per step (global)")
    p.add_argument("--lr", type=float, default=o.lr, help="peak learning rate")
    p.add_argument("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=-1.0,
                   help="sparsity penalty weight (default: the spec's)")
    p.add_argument("--decay", default=o.decay, help="LR decay after warm-up: cosine, linear "
                   "or constant")
    p.add_argument("--seed", type=int, default=o.seed, help="seed for initialisation and "
                   "shuffling")
    p.add_argument("--device", default=o.device, help="cpu, cuda, or cuda-emu")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "checkpoint")
    p.add_argument("--log-every", type=int, default=o.log_every)
    p.add_argument("--checkpoint-every", type=int, default=o.checkpoint_every)
    p.add_argument("--dead-window", type=int, default=o.dead_window, help="tokens without "
                   "activity after which a transform counts as dead")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _compile(spec, symbol, out):
    if _molt.HAS_COMPILER:
        _molt.compile_spec(spec, out, symbol)
        return
    compiler = os.environ.get("MOLT_COMPILE") or shutil.which("molt-compile")
    if not compiler:
        raise RuntimeError("this molt was built without the compiler and no molt-compile is on "
                           "PATH (set MOLT_COMPILE); pass a bundle directory instead")
    cmd = [compiler, spec, "-o", out] + (["--symbol", symbol] if symbol else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip() or f"{compiler} failed")


def main(argv=None):
    args = _parser().parse_args(argv)
    o = _molt.TrainOptions()
    for name in ("data", "val", "out", "steps", "schedule_steps", "batch", "lr", "lambda_",
                 "decay", "seed", "device", "resume", "log_every", "checkpoint_every",
                 "dead_window", "quiet"):
        setattr(o, name, getattr(args, name))
    scratch = None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and args.batch % world:  # before the rendezvous, which would wait on peers
        sys.stderr.write(f"{PROG}: error: --batch {args.batch} does not divide by the world "
                         f"size {world}\n")
        return 1
    try:
        rank, world = distributed.init_from_env(args.device)
        o.quiet = o.quiet or rank != 0
        if not args.input.endswith(".mlir"):
            o.bundle = args.input
        elif not args.resume:  # a resumed run uses RUN/bundle
            # Each rank compiles into a scratch directory of its own; runTraining copies it
            # into RUN (rank 0) only once the run is known to start.
            scratch = tempfile.mkdtemp(prefix="molt-train-")
            _compile(args.input, args.layer, os.path.join(scratch, "bundle"))
            o.bundle, o.spec = os.path.join(scratch, "bundle"), args.input
        reduce = distributed.reduce_step if world > 1 else None
        _molt.run_training(o, rank, world, reduce)
    except (RuntimeError, ValueError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if distributed.enabled():
            distributed._dist().destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
