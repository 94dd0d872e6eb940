"""Harvesting: forward hooks on any torch.nn.Module that stream its (input, output) rows into
safetensors shards (docs/architecture.md §3: `x` [n, d], `y` [n, d], F32) or straight into a callback.

    with molt.harvest.Harvester(model.encoder.layer[3].mlp, out_dir="acts/train") as h:
        for batch in loader:
            model(batch)
    # or train while harvesting:
    Harvester(mlp, sink=lambda x, y: layer.train_step(x, y), rows=layer.batch)

Hugging Face transformers models: `from_transformers(model, layer)` hooks the MLP of block
`layer` (`model.model.layers[i].mlp` for Llama / Qwen / Mistral / Gemma, `transformer.h[i].mlp`
for GPT-2), with x the MLP's own input, the residual stream entering the block's pre-MLP norm
(source="resid_mid") or the block's output (source="resid_post"), and y the MLP's output or x
itself (y="x", the rows of a residual SAE).

Torch is never imported here: a hook receives whatever the module gives, and anything with
`.detach()` or NumPy's array protocol is accepted.
"""
import os

import numpy as np

from . import save_tensors

__all__ = ["Harvester", "from_transformers", "transformer_blocks"]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


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
    x_from:  optional other module whose input (argument `input_index`) is taken as x instead
             of `module`'s own (e.g. the residual stream entering a norm before an MLP); it
             must run before `module` in each forward pass.
    x_of:    "input" (default) or "output": x is `module`'s output (the first element of a
             tuple) instead of its input, e.g. the residual stream a transformer block writes.
    y_is_x:  y := x, the (r, r) rows an autoencoder (an SAE: a transcoder fitted to (r, r)) is
             trained on; `module`'s output is then not read (unless x_of="output").
    At least one of out_dir / sink. close() flushes the tail (a short last shard; a sink gets
    the tail only with flush_partial=True) and removes the hooks.
    """

    def __init__(self, module, out_dir=None, shard_rows=65536, sink=None, rows=None,
                 input_index=0, mask=None, max_rows=None, flush_partial=False, x_from=None,
                 x_of="input", y_is_x=False):
        if out_dir is None and sink is None:
            raise ValueError("Harvester needs out_dir or sink")
        if x_of not in ("input", "output"):
            raise ValueError(f"x_of must be 'input' or 'output', not {x_of!r}")
        if x_of == "output" and x_from is not None:
            raise ValueError("x_of='output' reads the hooked module itself; it excludes x_from")
        self.x_of, self.y_is_x = x_of, bool(y_is_x)
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
        self._captured, self._x_from = None, x_from is not None
        self._handles = [module.register_forward_hook(self._hook)]
        if x_from is not None:
            self._handles.append(x_from.register_forward_pre_hook(self._capture))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _capture(self, module, inputs):
        self._captured = inputs[self.input_index]

    def _hook(self, module, inputs, output):
        if self.max_rows is not None and self.rows >= self.max_rows:
            return
        if self._x_from:
            if self._captured is None:
                raise RuntimeError("Harvester: x_from did not run before the hooked module")
            source, self._captured = self._captured, None
        elif self.x_of == "output":
            source = _first(output)
        else:
            source = inputs[self.input_index]
        x = _rows_f32(source, self.d)
        y = x if self.y_is_x else _rows_f32(_first(output), x.shape[1])
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
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.out_dir is not None:
            self._drain(self._file_x, self._file_y, self.shard_rows, self._write_shard, True)
        if self.sink is not None and self.flush_partial:
            self._drain(self._sink_x, self._sink_y, self.block, self.sink, True)


# ---- Hugging Face transformers --------------------------------------------------------------

# The norm in front of each block's MLP, by the attribute names the architectures use.
_PRE_MLP_NORMS = ("post_attention_layernorm",   # Llama, Qwen2/3, Mistral, Phi-3
                  "pre_feedforward_layernorm",  # Gemma 2/3
                  "ln_2")                       # GPT-2, GPT-J


def transformer_blocks(model):
    """The list of transformer blocks of a transformers model (a *ForCausalLM or its base)."""
    for path in ("model.layers", "layers", "model.language_model.layers",
                 "language_model.model.layers", "transformer.h", "h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} "
                     "(looked for model.layers, transformer.h, gpt_neox.layers)")


def from_transformers(model, layer, source="mlp", attention_mask=None, y="mlp", **kwargs):
    """A Harvester on block `layer` of a transformers model. x is the MLP's input
    (source="mlp", i.e. after the pre-MLP norm), the residual stream entering that norm
    (source="resid_mid") or the block's output, the residual stream after the MLP's add
    (source="resid_post"). y is the MLP's output (y="mlp"; not with resid_post) or x itself
    (y="x": the (r, r) rows of a residual SAE). `attention_mask`, a callable returning the
    current batch's mask [batch, seq], drops padding tokens. Other arguments are Harvester's."""
    if source not in ("mlp", "resid_mid", "resid_post"):
        raise ValueError(f"source must be 'mlp', 'resid_mid' or 'resid_post', not {source!r}")
    if y not in ("mlp", "x"):
        raise ValueError(f"y must be 'mlp' or 'x', not {y!r}")
    if source == "resid_post" and y != "x":
        raise ValueError("source='resid_post' comes after the MLP; it needs y='x'")
    block = transformer_blocks(model)[layer]
    if attention_mask is not None:
        kwargs["mask"] = lambda: _host_bool(attention_mask())
    if source == "resid_post":
        return Harvester(block, x_of="output", y_is_x=True, **kwargs)
    norm = None
    if source == "resid_mid":
        norm = next((getattr(block, n) for n in _PRE_MLP_NORMS if hasattr(block, n)), None)
        if norm is None:
            raise ValueError(f"block {layer} ({type(block).__name__}) has none of the pre-MLP "
                             f"norms {', '.join(_PRE_MLP_NORMS)}")
        if y == "x":  # the norm's own input is x; the MLP need not be hooked at all
            return Harvester(norm, y_is_x=True, **kwargs)
    mlp = getattr(block, "mlp", None)
    if mlp is None:
        raise ValueError(f"block {layer} ({type(block).__name__}) has no .mlp")
    return Harvester(mlp, x_from=norm, y_is_x=y == "x", **kwargs)


def _host_bool(mask):
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool)
