"""Harvesting: forward hooks on any torch.nn.Module that stream its (input, output) rows into
safetensors shards (docs/architecture.md §3: `x` [n, d], `y` [n, d], F32) or straight into a callback.

    with molt.harvest.Harvester(model.encoder.layer[3].mlp, out_dir="acts/train") as h:
        for batch in loader:
            model(batch)
    # or train while harvesting:
    Harvester(mlp, sink=lambda x, y: layer.train_step(x, y), rows=layer.batch)

Torch is never imported here: a hook receives whatever the module gives, and anything with
`.detach()` or NumPy's array protocol is accepted.
"""
import os

import numpy as np

from . import save_tensors

__all__ = ["Harvester"]


def _rows_f32(t, d):
    if hasattr(t, "detach"):
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.float().numpy()
    a = np.asarray(t, dtype=np.float32)
    if d is not None and a.shape[-1] != d:
        raise ValueError(f"expected rows of width {d}, got shape {list(a.shape)}")
    return a.reshape(-1, a.shape[-1])


class Harvester:
    """Hooks `module`; each forward call contributes its rows (all leading dims flattened).

    out_dir: write shard_00000.safetensors, ... of `shard_rows` rows each (atomically).
    sink:    call sink(x, y) with blocks of exactly `rows` rows (e.g. layer.train_step).
    mask:    optional callable returning a boolean [..] mask per call, to drop padding tokens.
    At least one of out_dir / sink. close() flushes the tail (a short last shard; a sink gets
    the tail only with flush_partial=True) and removes the hook.
    """

    def __init__(self, module, out_dir=None, shard_rows=65536, sink=None, rows=None,
                 input_index=0, mask=None, max_rows=None, flush_partial=False):
        if out_dir is None and sink is None:
            raise ValueError("Harvester needs out_dir or sink")
        self.out_dir, self.shard_rows, self.sink = out_dir, int(shard_rows), sink
        self.block = int(rows or shard_rows)
        self.input_index, self.mask, self.max_rows = input_index, mask, max_rows
        self.flush_partial = flush_partial
        self.rows = 0    # rows taken so far
        self.shards = 0  # shards written
        self.d = None
        self._file_x, self._file_y = [], []
        self._sink_x, self._sink_y = [], []
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            if any(f.endswith(".safetensors") for f in os.listdir(out_dir)):
                raise FileExistsError(f"{out_dir}: already holds shards; refusing to mix runs")
        self._handle = module.register_forward_hook(self._hook)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _hook(self, module, inputs, output):
        if self.max_rows is not None and self.rows >= self.max_rows:
            return
        x = _rows_f32(inputs[self.input_index], self.d)
        y = _rows_f32(output[0] if isinstance(output, tuple) else output, x.shape[1])
        self.d = x.shape[1]
        if self.mask is not None:
            keep = np.asarray(self.mask(), dtype=bool).reshape(-1)
            x, y = x[keep], y[keep]
        if self.max_rows is not None:
            x, y = x[: self.max_rows - self.rows], y[: self.max_rows - self.rows]
        self.add(x, y)

    def add(self, x, y):
        """Feeds rows directly (what the hook does), for producers that are not torch modules."""
        x, y = _rows_f32(x, self.d), _rows_f32(y, None)
        if x.shape != y.shape:
            raise ValueError(f"x {list(x.shape)} and y {list(y.shape)} differ")
        self.d = x.shape[1]
        self.rows += len(x)
        if self.out_dir is not None:
            self._file_x.append(x)
            self._file_y.append(y)
            self._drain(self._file_x, self._file_y, self.shard_rows, self._write_shard)
        if self.sink is not None:
            self._sink_x.append(x)
            self._sink_y.append(y)
            self._drain(self._sink_x, self._sink_y, self.block, self.sink)

    @staticmethod
    def _drain(xs, ys, n, emit, partial=False):
        total = sum(len(a) for a in xs)
        if total < n and not (partial and total):
            return
        x, y = np.concatenate(xs), np.concatenate(ys)
        start = 0
        while len(x) - start >= n:
            emit(x[start:start + n], y[start:start + n])
            start += n
        if partial and start < len(x):
            emit(x[start:], y[start:])
            start = len(x)
        xs[:] = [x[start:]] if start < len(x) else []
        ys[:] = [y[start:]] if start < len(y) else []

    def _write_shard(self, x, y):
        path = os.path.join(self.out_dir, f"shard_{self.shards:05d}.safetensors")
        save_tensors(path, {"x": x, "y": y})
        self.shards += 1

    def close(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.out_dir is not None:
            self._drain(self._file_x, self._file_y, self.shard_rows, self._write_shard, True)
        if self.sink is not None and self.flush_partial:
            self._drain(self._sink_x, self._sink_y, self.block, self.sink, True)
