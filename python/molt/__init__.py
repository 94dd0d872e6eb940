"""molt: sparse mixtures of linear transforms (MOLTs) from Python, on the molt runtime.

    layer = molt.Layer("examples/specs/small.mlir", batch=256)   # or a bundle directory
    yhat = layer.forward(x)            # x: NumPy array or torch tensor [n, d], float32
    grads = layer.backward(x, dyhat)   # {"x": dL/dx, "<param>": dL/d<param>, ...}
    metrics = layer.train_step(x, y)   # one Adam step on MSE + sparsity penalty

Tensors cross without copies where the backend allows it: `x` (and `out`, and params passed to
backward) are bound as the executor's own storage for the duration of the call, and results are
views of executor memory (DLPack). A result is overwritten by the next call on the same layer:
copy it to keep it. See docs/embedding.md.
"""
import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import weakref
from contextlib import contextmanager

import numpy as np

from . import _molt

__all__ = ["Layer", "MoltError", "InvalidArgument", "NotFound", "DataLoss", "Unavailable",
           "InternalError", "IoError", "Cancelled", "load_tensors", "save_tensors",
           "request_stop", "stop_requested", "clear_stop", "stop_on_signals", "HAS_COMPILER"]

HAS_COMPILER = _molt.HAS_COMPILER
HAS_CUDA_BACKEND = _molt.HAS_CUDA_BACKEND
load_tensors = _molt.load_tensors

# One exception class per molt::Status code, raised by the extension itself (python/src/
# molt_ext.cpp, check()); all derive from MoltError (a RuntimeError). InvalidArgument is also a
# ValueError and NotFound a LookupError.
MoltError = _molt.MoltError
InvalidArgument = _molt.InvalidArgument
NotFound = _molt.NotFound
DataLoss = _molt.DataLoss
Unavailable = _molt.Unavailable
InternalError = _molt.InternalError
IoError = _molt.IoError
Cancelled = _molt.Cancelled

# The training loops' stop flag (study/include/molt/stop.h), shared with the C++ trainer: a
# Python loop polls stop_requested() between steps, saves, and exits (docs/reliability.md).
request_stop = _molt.request_stop
stop_requested = _molt.stop_requested
clear_stop = _molt.clear_stop


@contextmanager
def stop_on_signals():
    """Within the block SIGTERM and SIGINT set the stop flag instead of killing the process (a
    second one ends it at once, exit 128 + signal). Poll stop_requested() between steps, write a
    checkpoint, then leave (molt-train exits 75 there)."""
    _molt.install_stop_handlers()
    try:
        yield
    finally:
        _molt.restore_signal_handlers()


# Every live Layer's native session is released at interpreter exit, even when something (an
# autograd graph held in a global) still references the Layer: otherwise nanobind reports the
# sessions as leaked instances.
_live_layers = weakref.WeakSet()


@atexit.register
def _release_sessions():
    for layer in list(_live_layers):
        layer._release()


def save_tensors(path, tensors, metadata=None):
    """Writes float32 tensors (NumPy arrays or torch tensors) to a safetensors file atomically."""
    _molt.save_tensors(str(path), {k: _host_f32(v) for k, v in tensors.items()},
                       dict(metadata or {}))


# ---- arrays ---------------------------------------------------------------------------------

def _is_torch(a):
    return type(a).__module__.split(".")[0] == "torch"


def _host_f32(a):
    """A C-contiguous float32 NumPy array with the values of `a` (no copy when it already is)."""
    if _is_torch(a):
        a = a.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        return np.ascontiguousarray(a.float().numpy())
    return np.ascontiguousarray(a, dtype=np.float32)


def _device_f32(a, device):
    """`a` as float32, contiguous, on the layer's device; the same object when it already is."""
    if _is_torch(a):
        a = a.detach()
        if a.dtype != _torch().float32:
            a = a.float()
        if a.device.type != device:
            a = a.to(device)
        return a.contiguous()
    if device != "cpu":
        return _torch().from_numpy(_host_f32(a)).to(device)
    return _host_f32(a)


def _torch():
    import torch  # only when torch tensors or the CUDA device are in use
    return torch


def _wrap_like(view, like):
    """A view of executor memory in the framework of `like` (NumPy or torch), sharing memory."""
    if like is not None and _is_torch(like):
        torch = _torch()
        if isinstance(view, np.ndarray):
            return torch.from_numpy(view)
        return torch.from_dlpack(view)
    if not isinstance(view, np.ndarray):
        return _torch().from_dlpack(view)
    return view


def _rows(a, d, what):
    shape = tuple(a.shape)
    if len(shape) != 2 or shape[1] != d:
        raise ValueError(f"{what} must be [n, {d}], got {list(shape)}")
    return shape[0]


# ---- compiling specs ------------------------------------------------------------------------

def _cache_root():
    return os.environ.get("MOLT_BUNDLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "molt", "bundles")


def _compile(spec_text, cache_dir):
    """Compiles spec text to a bundle in the cache (keyed by the text), reusing an earlier one."""
    key = hashlib.sha256(spec_text.encode()).hexdigest()[:24]
    out = os.path.join(cache_dir or _cache_root(), key)
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    work = tempfile.mkdtemp(prefix=key + ".", dir=os.path.dirname(out))
    try:
        spec_path = os.path.join(work, "spec.mlir")
        with open(spec_path, "w") as f:
            f.write(spec_text)
        bundle = os.path.join(work, "bundle")
        compiler = os.environ.get("MOLT_COMPILE") or shutil.which("molt-compile")
        if HAS_COMPILER:
            _molt.compile_spec(spec_path, bundle)
        elif compiler:
            r = subprocess.run([compiler, spec_path, "-o", bundle], capture_output=True, text=True)
            if r.returncode != 0:
                raise InvalidArgument(r.stderr.strip() or f"{compiler} failed")
        else:
            raise Unavailable("this molt was built without the compiler and no molt-compile is "
                              "on PATH (set MOLT_COMPILE); pass a bundle directory instead")
        try:
            os.replace(bundle, out)  # atomic: a concurrent compile of the same text loses cleanly
        except OSError:
            if not os.path.isfile(os.path.join(out, "manifest.json")):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _resolve_bundle(spec, cache_dir):
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "manifest.json")):
            raise NotFound(f"{spec}: not a bundle (no manifest.json)")
        return spec
    if os.path.isfile(spec):
        with open(spec) as f:
            return _compile(f.read(), cache_dir)
    if "molt." in spec and "{" in spec:  # spec text
        return _compile(spec, cache_dir)
    raise NotFound(f"{spec}: no such spec file or bundle directory")


# ---- the layer ------------------------------------------------------------------------------

class Layer:
    """A compiled MOLT (or transcoder) bound to an executor on one device.

    `spec` is a bundle directory, a spec file or spec text. `batch` is the executor's initial
    token count; a call with a different row count re-binds the executor (params and optimiser
    state carried over). Params start from the bundle's init with `seed`.
    """

    def __init__(self, spec, batch=256, device="cpu", seed=0, cache_dir=None, lr=1e-3,
                 steps=1000, **schedule):
        self.bundle = _resolve_bundle(spec, cache_dir)
        self._s = _molt.Session(self.bundle, int(batch), device)
        _live_layers.add(self)
        self.device = device
        manifest = json.loads(self._s.manifest)
        self.model = manifest["model"]
        self.d_model = int(self.model["d_model"])
        self._params = [(n, tuple(s)) for n, s in self._s.params()]
        self.param_names = [n for n, _ in self._params]
        self._can_bind = self._s.can_bind()
        self._s.init_params(seed)
        self.schedule = _molt.Schedule()
        self.schedule.lr, self.schedule.steps = lr, steps
        penalty = self.model.get("penalty", {})
        self.schedule.lambda_ = penalty.get("lambda", 0.0)
        self.schedule.lambda_warmup = penalty.get("warmup", 0.0)
        for k, v in schedule.items():
            if not hasattr(self.schedule, k):
                raise TypeError(f"unknown schedule setting {k!r}")
            setattr(self.schedule, k, v)
        self.step = 0       # completed train steps (skipped ones included)
        self.adam_step = 0  # updates applied
        self.metrics = {}   # the last train_step's or evaluate's numbers

    def __repr__(self):
        return (f"molt.Layer({self.model.get('kind')} {self.model.get('name')!r}, "
                f"d={self.d_model}, batch={self.batch}, device={self.device!r})")

    @property
    def batch(self):
        return self._s.batch

    # -- raw access ---------------------------------------------------------------------------

    def view(self, name, like=None):
        """The executor's tensor `name` as a zero-copy view (NumPy, or torch when `like` is)."""
        return _wrap_like(self._s.view(name), like)

    def data_ptr(self, name):
        """The address the executor reads and writes for `name` (for zero-copy checks)."""
        v = self._s.view(name)
        if isinstance(v, np.ndarray):
            return v.ctypes.data
        return _torch().from_dlpack(v).data_ptr()

    @contextmanager
    def bind(self, tensors):
        """Binds caller arrays as executor storage for the block (no copy), or, where the backend
        cannot alias (CUDA), copies them into the executor's own storage."""
        bound = []
        try:
            for name, a in tensors.items():
                if self._can_bind:
                    self._s.bind(name, a)
                    bound.append(name)
                else:
                    self.view(name, like=a).copy_(a) if _is_torch(a) else \
                        np.copyto(self.view(name), a)
            if self.device == "cuda":
                # Work the caller queued on its stream (producing `a`) must finish first.
                _torch().cuda.current_stream().synchronize()
            yield
        finally:
            for name in bound:
                self._s.unbind(name)

    def _run(self, entry):
        self._s.run(entry)
        self._s.synchronize()

    def _release(self):
        """Frees the native session (at interpreter exit); the layer is unusable afterwards."""
        self._s = None
        self.schedule = None

    def _prepare(self, x, what="x"):
        x = _device_f32(x, self.device)
        n = _rows(x, self.d_model, what)
        if n != self.batch:
            self._s.set_batch(n)
        return x, n

    # -- compute ------------------------------------------------------------------------------

    def forward(self, x, out=None, params=None):
        """ŷ for rows x [n, d]. Returns a view of the executor's `yhat` (overwritten by the next
        call), or writes into `out` (bound as `yhat`, no copy) and returns it. `params`
        (name -> array) are used instead of the layer's own, bound without a copy."""
        like = x
        x, n = self._prepare(x)
        tensors = {"x": x}
        for name, a in (params or {}).items():
            tensors[name] = _device_f32(a, self.device)
        if out is not None:
            if tuple(out.shape) != (n, self.d_model):
                raise ValueError(f"out must be [{n}, {self.d_model}]")
            tensors["yhat"] = out
        with self.bind(tensors):
            self._run("forward")
        if out is not None and not self._can_bind:
            (out.copy_ if _is_torch(out) else lambda v: np.copyto(out, v))(
                self.view("yhat", like=out))
        return out if out is not None else self.view("yhat", like=like)

    def backward(self, x, d_yhat, params=None, input_grad=True):
        """Gradients of ⟨ŷ(x), d_yhat⟩: {"x": dL/dx (when input_grad), p: dL/dp for each param}.
        Param gradients are views of the executor's d_<p> (overwritten by the next call).
        `params` (name -> array) are used instead of the layer's own, bound without a copy."""
        if not self._s.has_entry(_molt.BACKWARD_ENTRY):
            raise InvalidArgument("this bundle has no train_step, so no backward")
        like = x
        x, n = self._prepare(x)
        d_yhat = _device_f32(d_yhat, self.device)
        if tuple(d_yhat.shape) != (n, self.d_model):
            raise ValueError(f"d_yhat must be [{n}, {self.d_model}]")
        tensors = {"x": x, "d_yhat": d_yhat}
        for name, a in (params or {}).items():
            tensors[name] = _device_f32(a, self.device)
        with self.bind(tensors):
            self._run(_molt.BACKWARD_ENTRY)
            grads = {p: self.view("d_" + p, like=like) for p in self.param_names}
            if input_grad:
                dx = self._s.input_grad(_host_f32(x), _host_f32(d_yhat))
                grads["x"] = _wrap_like(dx, like) if not _is_torch(like) else \
                    _torch().from_numpy(dx).to(like.device)
        return grads

    def train_step(self, x, y):
        """One optimiser step on the batch (x, y) [n, d]; returns its metrics.

        Under an initialised torch.distributed process group of several ranks, (x, y) is this
        rank's part of the global batch: the gradients are averaged over the ranks before the
        update (molt.distributed), and the metrics are the global batch's."""
        from . import distributed
        x, n = self._prepare(x)
        y = _device_f32(y, self.device)
        if tuple(y.shape) != (n, self.d_model):
            raise ValueError(f"y must be [{n}, {self.d_model}]")
        scalars = self._s.step_scalars(self.schedule, self.step + 1, self.adam_step)
        self._s.write("scalars", np.asarray(scalars, dtype=np.float32))
        with self.bind({"x": x, "y": y}):
            if distributed.enabled():
                self._run(_molt.TRAIN_GRAD_ENTRY)
                names = ["stats"] + ["d_" + p for p in self.param_names]
                distributed.reduce_step(names, [self._s.view(k) for k in names])
                self._run(_molt.TRAIN_APPLY_ENTRY)
                n *= distributed.world_size()
            else:
                self._run("train_step")
        stats = self._stats()
        self.step += 1
        skipped = bool(stats[5] > 0 or not np.isfinite(stats[0]))
        if not skipped:
            self.adam_step += 1
        loss = (stats[0] + scalars[0] * stats[2]) / n
        self.metrics = {"step": self.step, "loss": loss, "mse": stats[0] / n,
                        "nmse": _ratio(stats[0], stats[1]), "l0": stats[3] / n,
                        "penalty": stats[2] / n, "grad_norm": float(np.sqrt(stats[4])),
                        "lr": scalars[1], "lambda": scalars[0], "skipped": skipped}
        return dict(self.metrics)

    def evaluate(self, x, y):
        """NMSE, FVU and L0 on (x, y) without changing params."""
        x, n = self._prepare(x)
        y = _device_f32(y, self.device)
        # The penalty reads λ; evaluate at the schedule's current point.
        self._s.write("scalars", np.asarray(
            self._s.step_scalars(self.schedule, max(self.step, 1), self.adam_step), np.float32))
        with self.bind({"x": x, "y": y}):
            self._run("eval")
        stats = self._stats()
        d = self.d_model
        mean_y = stats[6] / (n * d)
        var_total = stats[1] - n * d * mean_y * mean_y
        self.metrics = {"nmse": _ratio(stats[0], stats[1]), "fvu": _ratio(stats[0], var_total),
                        "l0": stats[3] / n, "mse": stats[0] / n}
        return dict(self.metrics)

    def _stats(self):
        return [float(v) for v in self._s.read("stats")]

    def jacobian(self, x):
        """Exact Jacobians ∂ŷ/∂x per row: float64 NumPy [n, d, d] (runtime's jacobian.h)."""
        x = _host_f32(x)
        _rows(x, self.d_model, "x")
        return self._s.jacobian(x)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self, optimizer=False):
        """Copies of every param (and m_<p>, v_<p> with optimizer=True) as NumPy arrays."""
        names = list(self.param_names)
        if optimizer:
            names += [f"{k}_{p}" for p in self.param_names for k in ("m", "v")]
        return {n: np.array(self._s.read(n)) for n in names}

    def load_state_dict(self, state, strict=True):
        """Params from a dict (NumPy arrays / torch tensors) or a safetensors file (a state dict
        saved by save(), a molt-train checkpoint or weights file). m_<p>/v_<p> are loaded too."""
        if isinstance(state, (str, os.PathLike)):
            state = _molt.load_tensors(os.fspath(state))
        missing = [p for p in self.param_names if p not in state]
        if strict and missing:
            raise InvalidArgument(f"state has no {', '.join(missing)}")
        known = set(self._s.names())
        for name, value in state.items():
            if name not in known or name.startswith("d_"):
                if strict and name not in known:
                    raise InvalidArgument(f"state has unknown tensor {name!r}")
                continue
            a = _host_f32(value)
            want = tuple(self._s.shape(name))
            if tuple(a.shape) != want:
                raise InvalidArgument(f"{name}: shape {list(a.shape)}, the layer has "
                                      f"{list(want)}")
            self._s.write(name, a)

    def save(self, path, optimizer=False):
        save_tensors(path, self.state_dict(optimizer), {"format": "molt-state"})


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")
