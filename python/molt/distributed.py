"""Data-parallel molt on torch.distributed (docs/distributed.md).

molt's fused train step is split in two (the bundle's `train_grad` and `train_apply` entries);
between them every rank's `stats` are summed and its gradients d_<p> averaged with
torch.distributed, so the fused Adam applies the same update everywhere. gloo on the CPU, NCCL
on CUDA; the gradients travel in flat buckets of at most `BUCKET_BYTES`.

    torchrun --nproc-per-node 2 -m molt.train SPEC --data D --out RUN --batch 1024
"""
import os

import numpy as np

__all__ = ["enabled", "rank", "world_size", "init_from_env", "reduce_step", "BUCKET_BYTES"]

BUCKET_BYTES = 25 << 20  # torch DDP's default bucket size


def _dist():
    import torch.distributed as dist
    return dist


def enabled():
    """True when a torch.distributed process group of more than one rank is initialised."""
    try:
        dist = _dist()
    except ImportError:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return _dist().get_rank() if enabled() else 0


def world_size():
    return _dist().get_world_size() if enabled() else 1


def init_from_env(device):
    """Joins the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...: its own
    rendezvous, multi-node included). A no-op for a single process. Returns (rank, world)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist = _dist()
    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            import torch
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            os.environ.setdefault("MOLT_CUDA_DEVICE", str(local))  # the runtime's device
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _as_torch(a):
    import torch
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_dlpack(a)


def reduce_step(names, arrays, group=None):
    """In place: `stats` summed over the ranks, every other tensor (d_<p>) averaged. The
    gradients go in flat buckets (one all-reduce each, all in flight together)."""
    import torch
    dist = _dist()
    world = dist.get_world_size(group)
    tensors = [_as_torch(a) for a in arrays]
    stats = [t for n, t in zip(names, tensors) if n == "stats"]
    grads = [t for n, t in zip(names, tensors) if n != "stats"]
    # The stats ride in the first bucket (scaled back after) so that small layers need a single
    # collective per step.
    buckets, current, size = [], [], 0
    for t in stats + grads:
        if current and size + t.numel() * 4 > BUCKET_BYTES:
            buckets.append(current)
            current, size = [], 0
        current.append(t)
        size += t.numel() * 4
    if current:
        buckets.append(current)
    flats, works = [], []
    for bucket in buckets:
        flat = torch.cat([t.reshape(-1) for t in bucket])
        flats.append(flat)
        works.append(dist.all_reduce(flat, group=group, async_op=True))
    for bucket, flat, work in zip(buckets, flats, works):
        work.wait()
        offset = 0
        for t in bucket:
            n = t.numel()
            part = flat[offset:offset + n].view_as(t)
            offset += n
            if any(t is s for s in stats):
                t.copy_(part)
            else:
                t.copy_(part / world)
    if tensors and tensors[0].device.type == "cuda":
        torch.cuda.current_stream().synchronize()  # the runtime's stream reads them next
