"""Worker for tests/python/test_distributed.py, started by torchrun (not a test module).

    dist_worker.py slow-train ARGS...   python -m molt.train ARGS, each all-reduce delayed by
                                        20 ms so that a test can kill the run mid-way
    dist_worker.py layer BUNDLE DATA OUT STEPS
                                        Layer.train_step on this rank's half of each batch;
                                        rank 0 saves the params to OUT
"""
import sys
import time


def slow_train(argv):
    from molt import distributed, train
    reduce = distributed.reduce_step

    def delayed(names, arrays, group=None):
        time.sleep(0.02)
        reduce(names, arrays, group)

    distributed.reduce_step = delayed
    return train.main(argv)


def layer(bundle, data, out, steps):
    import torch.distributed as dist

    import molt
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    t = molt.load_tensors(data)
    b = 64 // world
    lay = molt.Layer(bundle, batch=b, seed=3, steps=int(steps))
    for s in range(int(steps)):
        rows = slice(s * 64 + rank * b, s * 64 + (rank + 1) * b)
        metrics = lay.train_step(t["x"][rows], t["y"][rows])
    if rank == 0:
        lay.save(out)
        with open(out + ".loss", "w") as f:
            f.write(repr(metrics["loss"]))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    sys.exit(slow_train(args) if mode == "slow-train" else layer(*args))
