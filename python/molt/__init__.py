"""molt: sparse mixtures of linear transforms (MOLTs) from Python, on the molt runtime.

    layer = molt.Layer("examples/specs/small.mlir", batch=256)   # or a bundle directory
    yhat = layer.forward(x)            # x: NumPy array or torch tensor [n, d], float32
    grads = layer.backward(x, dyhat)   # {"x": dL/dx, "<param>": dL/d<param>, ...}
    metrics = layer.train_step(x, y)   # one Adam step on MSE + sparsity penalty
    trained = molt.load("RUN")         # a molt-train run's layer, in raw space

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

__all__ = ["Layer", "MoltError", "load", "InvalidArgument", "NotFound", "DataLoss", "Unavailable",
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
        if a.device != _torch().device(device):
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


def _cached_bundle(out, fill):
    """The bundle at `out` in the cache, made once: `fill(work)` writes it in a scratch folder
    beside `out` and returns its path there, which is renamed into place (atomic: of several
    processes making the same bundle one wins, the others keep its copy)."""
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    work = tempfile.mkdtemp(prefix=os.path.basename(out) + ".", dir=os.path.dirname(out))
    try:
        made = fill(work)
        try:
            os.replace(made, out)
        except OSError:
            if not os.path.isfile(os.path.join(out, "manifest.json")):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


_BUILD_ID = None


def _build_id():
    """A fingerprint of the native extension (the compiler and runtime molt runs with)."""
    global _BUILD_ID
    if _BUILD_ID is None:
        with open(_molt.__file__, "rb") as f:
            _BUILD_ID = hashlib.sha256(f.read()).hexdigest()[:16]
    return _BUILD_ID


def _compile(spec_text, cache_dir):
    """Compiles spec text to a bundle in the cache (keyed by the text), reusing an earlier one."""
    # Keyed by the text and by this build of molt: another build may emit other ops or entries.
    key = hashlib.sha256(_build_id().encode() + b"\0" + spec_text.encode()).hexdigest()[:24]

    def fill(work):
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
            raise Unavailable("this molt was built without the compiler (no MLIR found at build "
                              "time) and no molt-compile is on PATH: install MLIR 19 "
                              "(scripts/bootstrap) and reinstall with `pip install .`, or pass a "
                              "bundle directory made by `molt-compile SPEC -o BUNDLE` (MOLT_COMPILE "
                              "names the tool)")
        return bundle

    return _cached_bundle(os.path.join(cache_dir or _cache_root(), key), fill)


def _resolve_bundle(spec, cache_dir):
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        if _is_run(spec):
            return os.path.join(spec, "bundle")
        if not os.path.isfile(os.path.join(spec, "manifest.json")):
            raise NotFound(f"{spec}: not a bundle or run directory (no manifest.json, no "
                           "bundle/manifest.json)")
        return spec
    if os.path.isfile(spec):
        with open(spec) as f:
            return _compile(f.read(), cache_dir)
    if "molt." in spec and "{" in spec:  # spec text
        return _compile(spec, cache_dir)
    raise NotFound(f"{spec}: no such spec file or bundle directory")


def _bundle_from_files(files):
    """A bundle directory holding `files` (relative path -> bytes): a pickled layer's bundle,
    written once into the cache under the hash of its contents."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")

    def fill(work):
        for name, data in files.items():
            path = os.path.join(work, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return work

    return _cached_bundle(os.path.join(_cache_root(), "pickled-" + h.hexdigest()[:24]), fill)


def _parse_device(device):
    """'cpu', 'cuda', 'cuda:N', 'cuda-emu' or a torch.device -> (backend name, torch device
    string of the layer's tensors)."""
    text = str(device)
    kind, sep, index = text.partition(":")
    if kind not in ("cpu", "cuda", "cuda-emu") or (sep and (kind != "cuda" or not index.isdigit())):
        raise InvalidArgument(f"unknown device {text!r} (expected cpu, cuda, cuda:N or cuda-emu)")
    if kind != "cuda":
        return kind, "cpu"
    # The CUDA backend picks its device once per process from MOLT_CUDA_DEVICE.
    have = int(os.environ.get("MOLT_CUDA_DEVICE") or 0)
    if sep and int(index) != have:
        raise InvalidArgument(f"device {text!r}: this process's molt runs on CUDA device {have}; set "
                        f"MOLT_CUDA_DEVICE={index} before the first CUDA layer")
    return "cuda", f"cuda:{have}"


# ---- run directories ------------------------------------------------------------------------

def _is_run(path):
    """A molt-train run directory: RUN/bundle plus a checkpoint or final weights."""
    return (os.path.isfile(os.path.join(path, "bundle", "manifest.json")) and
            any(os.path.isfile(os.path.join(path, f))
                for f in ("weights.safetensors", "checkpoint.safetensors")))


def read_metadata(path):
    """The `__metadata__` of a safetensors file (a dict of strings; {} when it has none)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise MoltError(f"{path}: not a safetensors file")
        n = int.from_bytes(head, "little")
        if n > 100 << 20:
            raise MoltError(f"{path}: not a safetensors file (header of {n} bytes)")
        try:
            return dict(json.loads(f.read(n)).get("__metadata__") or {})
        except ValueError:
            raise MoltError(f"{path}: not a safetensors file (bad header)") from None


def _is_bucket_tensor(name, letter):
    return len(name) > 1 and name[0] == letter and name[1:].isdigit()


def fold_normalization(tensors, x_scale, y_scale):
    """Params trained on x' = sx·x, y' = sy·y as params acting on raw x and producing raw y
    (study/src/trainer.cpp foldNormalization, docs/checkpoint.md): enc_w and v<k> × sx; u<k>,
    dec_w and dec_b ÷ sy; skip_w × sx/sy; thresholds and encoder biases unchanged."""
    out = {}
    for name, a in tensors.items():
        a = np.asarray(a, np.float32)
        if name == "enc_w" or _is_bucket_tensor(name, "v"):
            f = x_scale
        elif name in ("dec_w", "dec_b") or _is_bucket_tensor(name, "u"):
            f = 1.0 / y_scale
        elif name == "skip_w":
            f = x_scale / y_scale
        else:
            out[name] = a.copy()
            continue
        out[name] = (a.astype(np.float64) * f).astype(np.float32)
    return out


def run_weights(run):
    """The params of a run directory in raw (unnormalised) space: RUN/weights.safetensors when
    it is at least as new as the checkpoint, else the checkpoint's with its normalisation folded
    in (a run still training, or stopped before its end)."""
    run = os.fspath(run)
    weights = os.path.join(run, "weights.safetensors")
    ck = os.path.join(run, "checkpoint.safetensors")
    try:
        if os.path.isfile(weights) and (not os.path.isfile(ck) or
                                        os.path.getmtime(weights) >= os.path.getmtime(ck)):
            if read_metadata(weights).get("normalization") != "folded":
                raise MoltError(f"{weights}: not a molt-train weights file (no normalization="
                                "folded in its metadata)")
            return _molt.load_tensors(weights)
        meta = read_metadata(ck)
        sx, sy = float(meta["norm_x_scale"]), float(meta["norm_y_scale"])
        state = _molt.load_tensors(ck)
    except KeyError as e:
        raise DataLoss(f"{ck}: no {e.args[0]} in the checkpoint's metadata") from None
    return fold_normalization({k: v for k, v in state.items()
                               if not k.startswith(("m_", "v_", "train."))}, sx, sy)


def load(run, batch=256, device="cpu", **kwargs):
    """The trained layer of a molt-train run directory, in raw space (the normalisation folded
    in), ready to splice into the model the data came from. Same as `Layer(run)`."""
    if not _is_run(os.fspath(run)):
        raise MoltError(f"{os.fspath(run)}: not a run directory (needs bundle/ and "
                        "weights.safetensors or checkpoint.safetensors)")
    return Layer(run, batch=batch, device=device, **kwargs)


# ---- the layer ------------------------------------------------------------------------------

_SCHEDULE_KEYS = ("steps", "lr", "lr_warmup", "decay", "min_lr_fraction", "lambda_",
                  "lambda_warmup", "beta1", "beta2", "eps", "clip")


class Layer:
    """A compiled MOLT (or transcoder) bound to an executor on one device.

    `spec` is a bundle directory, a spec file, spec text or a molt-train run directory (whose
    trained params, in raw space, the layer starts from; see molt.load). `batch` is the
    executor's initial token count; a call with a different row count re-binds the executor
    (params and optimiser state carried over). Params start from the bundle's init with `seed`.
    `device` is "cpu", "cuda", "cuda:N", "cuda-emu" or a torch.device.

    The params live in one store (`Layer.params`: host arrays the executor computes on in place,
    or device tensors copied in before each call where the backend cannot alias memory); a
    molt.torch.MoltMLP of this layer exposes the same memory as its nn.Parameters, so a
    train_step, load_state_dict or optimiser step on either is seen by both.
    """

    def __init__(self, spec, batch=256, device="cpu", seed=0, cache_dir=None, lr=1e-3,
                 steps=1000, **schedule):
        run = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else None
        run = run if run and os.path.isdir(run) and _is_run(run) else None
        self.bundle = _resolve_bundle(spec, cache_dir)
        self.device, self.tensor_device = _parse_device(device)
        try:
            self._s = _molt.Session(self.bundle, max(int(batch), 1), self.device)
        except RuntimeError as e:
            if self.device != "cpu":
                raise Unavailable(f"device {str(device)!r} is unavailable: {e}") from None
            raise
        _live_layers.add(self)
        manifest = json.loads(self._s.manifest)
        self.model = manifest["model"]
        self.d_model = int(self.model["d_model"])
        self._params = [(n, tuple(s)) for n, s in self._s.params()]
        self.param_names = [n for n, _ in self._params]
        self._can_bind = self._s.can_bind()
        self._recorded = None  # recorded_names(), computed on first use
        self._int_tensors = {b["name"] for b in manifest.get("buffers", [])
                             if b.get("dtype") == "i32"}
        self._buffer_shapes = {b["name"]: b["shape"] for b in manifest.get("buffers", [])}
        self._s.init_params(seed)
        self.params = {}
        for n in self.param_names:
            a = np.array(self._s.read(n))
            self.params[n] = a if self.tensor_device == "cpu" else \
                _torch().from_numpy(a).to(self.tensor_device)
        self._attach_params()
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
        self.run = run
        if run:
            self.load_state_dict(run_weights(run))

    def __repr__(self):
        return (f"molt.Layer({self.model.get('kind')} {self.model.get('name')!r}, "
                f"d={self.d_model}, batch={self.batch}, device={self.device!r})")

    @property
    def batch(self):
        return self._s.batch

    # -- pickling: the bundle's files, the params and optimiser state, the schedule ------------

    def __getstate__(self):
        if not os.path.isfile(os.path.join(self.bundle, "manifest.json")):
            raise MoltError(f"cannot pickle the layer: its bundle {self.bundle} is gone")
        files = {}
        for root, _, names in os.walk(self.bundle):
            for f in names:
                full = os.path.join(root, f)
                with open(full, "rb") as fh:
                    files[os.path.relpath(full, self.bundle)] = fh.read()
        return {"bundle_files": files, "batch": self.batch,
                "device": self.device if self.device != "cuda" else self.tensor_device,
                "state": self.state_dict(optimizer=True),
                "schedule": {k: getattr(self.schedule, k) for k in _SCHEDULE_KEYS},
                "step": self.step, "adam_step": self.adam_step, "metrics": dict(self.metrics)}

    def __setstate__(self, st):
        self.__init__(_bundle_from_files(st["bundle_files"]), batch=st["batch"],
                      device=st["device"], **st["schedule"])
        self.load_state_dict(st["state"])
        self.step, self.adam_step, self.metrics = st["step"], st["adam_step"], st["metrics"]

    # -- the param store ----------------------------------------------------------------------

    def _attach_params(self):
        """Points the executor's params at the store (after creation and every re-bind)."""
        if self._can_bind:
            for n in self.param_names:
                self._s.bind(n, self.params[n])

    def _push_params(self):
        """Where the executor cannot alias the store, copies the store in before a call."""
        if self._can_bind:
            return
        for n, a in self.params.items():
            if _is_torch(a):
                self.view(n, like=a).copy_(a)
            else:
                self._s.write(n, a)

    def _pull_params(self):
        """... and copies the executor's updated params back after a train_step."""
        if self._can_bind:
            return
        for n, a in self.params.items():
            if _is_torch(a):
                a.copy_(self.view(n, like=a))
            else:
                np.copyto(a, self._s.read(n))

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
        cannot alias (CUDA), copies them into the executor's own storage. Params bound here are
        the store's again after the block."""
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
                if name in self.params:
                    self._s.bind(name, self.params[name])
                else:
                    self._s.unbind(name)

    def _run(self, entry):
        self._s.run(entry)
        self._s.synchronize()

    def _release(self):
        """Frees the native session (at interpreter exit); the layer is unusable afterwards."""
        self._s = None
        self.schedule = None

    def _prepare(self, x, what="x"):
        x = _device_f32(x, self.tensor_device)
        n = _rows(x, self.d_model, what)
        if n and n != self._s.rows:
            # Within the prepared batch no re-preparing; beyond it the executor grows to n.
            grows = n > self.batch
            self._s.set_rows(n)
            if grows:
                self._attach_params()
        return x, n

    def _empty(self, like, *shape):
        if like is not None and _is_torch(like):
            return _torch().zeros(*shape, device=like.device)
        return np.zeros(shape, np.float32)

    # -- compute ------------------------------------------------------------------------------

    def forward(self, x, out=None, params=None, record=None):
        """ŷ for rows x [n, d]. Returns a view of the executor's `yhat` (overwritten by the next
        call), or writes into `out` (bound as `yhat`, no copy) and returns it. `params`
        (name -> array) are used instead of the layer's own, bound without a copy. `record`
        (from record_tensors(n)) receives what backward(..., recorded=record) reads (the pair
        lists), so that gradient needs no second forward."""
        like = x
        x, n = self._prepare(x)
        if out is not None and tuple(out.shape) != (n, self.d_model):
            raise ValueError(f"out must be [{n}, {self.d_model}]")
        if n == 0:
            return out if out is not None else self._empty(like, 0, self.d_model)
        self._push_params()
        tensors = {"x": x}
        for name, a in (params or {}).items():
            tensors[name] = _device_f32(a, self.tensor_device)
        if out is not None:
            tensors["yhat"] = out
        if record is not None and self._can_bind:
            tensors.update(record)
        with self.bind(tensors):
            self._run("forward")
            if record is not None and not self._can_bind:
                for name, a in record.items():
                    a.copy_(self.view(name, like=a))
        if out is not None and not self._can_bind:
            (out.copy_ if _is_torch(out) else lambda v: np.copyto(out, v))(
                self.view("yhat", like=out))
        return out if out is not None else self.view("yhat", like=like)

    def recorded_names(self):
        """The tensors the gradient entries take from `forward` (the compiled plan says which)."""
        if self._recorded is None:
            names = set()
            for entry in ("backward", "vjp"):
                if self._s.has_entry(entry):
                    names.update(self._s.recorded(entry))
            self._recorded = sorted(names)
        return self._recorded

    def record_tensors(self, n, like=None):
        """Fresh arrays for forward(..., record=) at n rows, shaped as the executor's tensors."""
        torch = _torch() if like is not None and _is_torch(like) else None
        out = {}
        for name in self.recorded_names():
            shape = tuple(self._buffer_dims(name, n))
            dtype = "int32" if name in self._int_tensors else "float32"
            if torch is not None:
                # Zeroed: the kernels write only the listed pairs, and an op's output must be
                # the same on every call (torch.library.opcheck, torch.compile).
                out[name] = torch.zeros(shape, dtype=getattr(torch, dtype), device=like.device)
            else:
                out[name] = np.zeros(shape, dtype)
        return out

    def _buffer_dims(self, name, n):
        """A buffer's shape at n rows (B = n, P = n·T, Pk = n·N_k: docs/bundle.md)."""
        m = self.model
        T = sum(b["count"] for b in m["buckets"]) if m["kind"] == "molt" else m["features"]
        out = []
        for d in self._buffer_shapes[name]:
            if isinstance(d, int):
                out.append(d)
            elif d == "B":
                out.append(n)
            elif d == "P":
                out.append(n * T)
            else:
                out.append(n * m["buckets"][int(d[1:])]["count"])
        return out

    def backward(self, x, d_yhat, params=None, input_grad=True, recorded=None, out=None):
        """Gradients of ⟨ŷ(x), d_yhat⟩: {"x": dL/dx (when input_grad), p: dL/dp for each param},
        from the bundle's compiled `vjp` entry (`backward` without the input gradient). With
        `recorded` (the record of a forward(x, record=...) on the same x and params) no forward
        runs; else forward runs first. Gradients are views of the executor's d_<p> / d_x
        (overwritten by the next call) unless `out` ({"d_<p>" / "d_x": array}) is given, into
        which they are written (bound, no copy). `params` are used instead of the layer's own."""
        entry = "vjp" if input_grad else "backward"
        if not self._s.has_entry(entry):
            raise InvalidArgument(f"this bundle has no {entry!r} entry (a forward-only bundle, "
                                  "or one compiled before molt emitted it): recompile it")
        like = x
        x, n = self._prepare(x)
        d_yhat = _device_f32(d_yhat, self.tensor_device)
        if tuple(d_yhat.shape) != (n, self.d_model):
            raise ValueError(f"d_yhat must be [{n}, {self.d_model}]")
        if n == 0:
            grads = {p: self._empty(like, *s) for p, s in self._params}
            if input_grad:
                grads["x"] = self._empty(like, 0, self.d_model)
            return grads
        self._push_params()
        tensors = {"x": x, "d_yhat": d_yhat}
        for name, a in (params or {}).items():
            tensors[name] = _device_f32(a, self.tensor_device)
        out = dict(out or {})
        if self._can_bind:
            tensors.update(out)
            if recorded is not None:
                tensors.update(recorded)
        with self.bind(tensors):
            if recorded is None:
                self._run("forward")
            elif not self._can_bind:
                for name, a in recorded.items():
                    self.view(name, like=a).copy_(a) if _is_torch(a) else \
                        np.copyto(self.view(name), a)
            self._run(entry)
            names = ["d_" + p for p in self.param_names] + (["d_x"] if input_grad else [])
            views = {}
            for name in names:
                if name in out:
                    if not self._can_bind:
                        v = self.view(name, like=out[name])
                        out[name].copy_(v) if _is_torch(out[name]) else np.copyto(out[name], v)
                    views[name] = out[name]
                else:
                    views[name] = self.view(name, like=like)
        grads = {p: views["d_" + p] for p in self.param_names}
        if input_grad:
            grads["x"] = views["d_x"]
        return grads

    def schedule_at(self, step):
        """The schedule's λ and learning rate at 1-based `step` (what train_step uses)."""
        s = self._s.step_scalars(self.schedule, int(step), 0)
        return {"lambda": s[0], "lr": s[1]}

    def train_step(self, x, y):
        """One optimiser step on the batch (x, y) [n, d]; returns its metrics.

        Under an initialised torch.distributed process group of several ranks, (x, y) is this
        rank's part of the global batch: the gradients are averaged over the ranks before the
        update (molt.distributed), and the metrics are the global batch's."""
        from . import distributed
        x, n = self._prepare(x)
        if n == 0:
            raise ValueError("train_step needs at least one row")
        y = _device_f32(y, self.tensor_device)
        if tuple(y.shape) != (n, self.d_model):
            raise ValueError(f"y must be [{n}, {self.d_model}]")
        scalars = self._s.step_scalars(self.schedule, self.step + 1, self.adam_step)
        self._s.write("scalars", np.asarray(scalars, dtype=np.float32))
        self._push_params()
        with self.bind({"x": x, "y": y}):
            if distributed.enabled():
                self._run(_molt.TRAIN_GRAD_ENTRY)
                names = ["stats"] + ["d_" + p for p in self.param_names]
                distributed.reduce_step(names, [self._s.view(k) for k in names])
                self._run(_molt.TRAIN_APPLY_ENTRY)
                n *= distributed.world_size()
            else:
                self._run("train_step")
        self._pull_params()
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
        if n == 0:
            raise ValueError("evaluate needs at least one row")
        y = _device_f32(y, self.tensor_device)
        # The penalty reads λ; evaluate at the schedule's current point.
        self._s.write("scalars", np.asarray(
            self._s.step_scalars(self.schedule, max(self.step, 1), self.adam_step), np.float32))
        self._push_params()
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
        self._push_params()
        return self._s.jacobian(x)

    # -- state --------------------------------------------------------------------------------

    def state_dict(self, optimizer=False):
        """Copies of every param (and m_<p>, v_<p> with optimizer=True) as NumPy arrays, keyed
        as save(), load_state_dict(), MoltMLP.state_dict() and a run's weights file key them."""
        out = {n: _host_f32(a).copy() for n, a in self.params.items()}
        if optimizer:
            out.update({f"{k}_{p}": np.array(self._s.read(f"{k}_{p}"))
                        for p in self.param_names for k in ("m", "v")})
        return out

    def load_state_dict(self, state, strict=True, normalized=False):
        """Params from a dict (NumPy arrays / torch tensors, e.g. a MoltMLP's state_dict) or a
        safetensors file (save()'s, or a run's weights.safetensors). m_<p>/v_<p> are loaded too.
        A run's checkpoint.safetensors holds training's normalised-space weights and is refused
        unless `normalized=True` (the layer then works in training's scale); molt.load(RUN)
        gives the raw-space layer."""
        if isinstance(state, (str, os.PathLike)):
            path = os.fspath(state)
            meta = read_metadata(path) if os.path.isfile(path) else {}
            if meta.get("format") == "molt-checkpoint" and not normalized:
                raise InvalidArgument(
                    f"{path} holds the normalised-space weights training sees (x scaled "
                    f"by {meta.get('norm_x_scale')}, y by {meta.get('norm_y_scale')}), not "
                    "raw-space ones: load the run with molt.load(RUN) (or "
                    "RUN/weights.safetensors), or pass normalized=True to work in "
                    "training's space")
            state = _molt.load_tensors(path)
        missing = [p for p in self.param_names if p not in state]
        if strict and missing:
            raise InvalidArgument(f"state has no {', '.join(missing)}")
        known = set(self._s.names())
        for name, value in state.items():
            if name not in known or name.startswith("d_"):
                if strict and name not in known and not name.startswith("train."):
                    raise InvalidArgument(f"state has unknown tensor {name!r}")
                continue
            want = tuple(self._s.shape(name))
            if tuple(value.shape) != want:
                raise InvalidArgument(f"{name}: shape {list(value.shape)}, the layer has "
                                      f"{list(want)}")
            if name in self.params:  # in place: whoever shares the store sees it
                dst = self.params[name]
                if _is_torch(dst):
                    dst.copy_(value.detach() if _is_torch(value) else
                              _torch().from_numpy(_host_f32(value)))
                else:
                    np.copyto(dst, _host_f32(value))
            else:
                self._s.write(name, _host_f32(value))

    def save(self, path, optimizer=False):
        save_tensors(path, self.state_dict(optimizer), {"format": "molt-state"})


def _ratio(a, b):
    return float(a / b) if b > 0 else float("nan")
