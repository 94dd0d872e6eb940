"""A MOLT as a PyTorch module: registered torch.library custom ops, the MOLT loss in torch.

    mlp = molt.torch.MoltMLP(molt.Layer(spec, batch=512))     # or MoltMLP.from_run("RUN")
    model.layers[3].mlp = mlp            # ŷ = mlp(x): [..., d] -> [..., d]
    yhat, penalty = mlp(x, return_penalty=True)
    loss = (yhat - y).square().sum(-1).mean() + penalty      # molt-train's loss, any optimiser
    enc = mlp.encode(x)                  # the open gates per token: indices, values, l0

The layer runs as the custom ops `molt::apply<k>_<r>` (forward: ŷ and the r tensors the
backward reads, the pair lists; k = the number of params) and `molt::apply<k>_<r>_backward` (the
bundle's compiled `backward`, or `vjp` with the input gradient), each with a fake (meta)
kernel, registered autograd and a vmap rule, so `torch.compile(..., fullgraph=True)`,
`torch.func.vjp` / `jacrev` and `vmap` see one opaque op. Double backward is refused. The sparsity penalty λ/B·Σ_i Σ_t S(g_it·‖U_tV_t‖_F) (the
transcoder's S(a_if·‖dec_w_f‖)) is plain differentiable torch on the gates and params: the
exact Gram norm sqrt(trace((UᵀU)(VVᵀ))), the JumpReLU threshold's straight-through estimator of
docs/bundle.md.

The module's nn.Parameters are the layer's param store (`Layer.params`, the same memory), so a
`Layer.train_step`, `load_state_dict` or torch optimiser step on either is seen by both, and
`state_dict()` keys (`enc_w`, `u0`, ...) are those of `Layer.save` and a run's weights file.
The kernels compute in float32: bf16 / fp16 inputs are computed in float32 and the result is
cast back (autocast's dtype under autocast); float64 input is refused. The params stay float32
whatever `.to(dtype)` / `.half()` asks (the kernels' master weights); `.to(device)` moves the
layer. The module pickles (`torch.save(module)`, `copy.deepcopy`) with its bundle and params.
"""
import itertools
import os
import weakref
from collections import namedtuple

import numpy as np
import torch

from . import Layer, MoltError, load

__all__ = ["MoltMLP", "Encoding", "Schedule"]

# ---- the custom ops -------------------------------------------------------------------------
# Ops take tensors and scalars only, so a layer enters as the integer handle of a registry.

_layers = weakref.WeakValueDictionary()
_next_handle = itertools.count(1)


def _handle(layer):
    h = getattr(layer, "_torch_handle", None)
    if h is None or _layers.get(h) is not layer:
        h = next(_next_handle)
        layer._torch_handle = h
        _layers[h] = layer
    return h


def _layer(handle):
    layer = _layers.get(handle)
    if layer is None:
        raise MoltError(f"molt::apply: no live molt.Layer has handle {handle}")
    return layer


def _forward_impl(x, *rest):
    *params, layer = rest
    L = _layer(layer)
    record = L.record_tensors(x.shape[0], like=x)
    y = x.new_empty(x.shape)
    if x.shape[0] == 0:
        return (y.zero_(), *record.values())
    # yhat and the record are bound (written in place): the op's results own their memory.
    L.forward(x, out=y, params=dict(zip(L.param_names, params)), record=record)
    return (y, *record.values())


def _backward_impl(x, d_yhat, *rest):
    *rest, layer, input_grad = rest
    L = _layer(layer)
    k = len(L.param_names)
    params, records = rest[:k], rest[k:]
    out = {"d_" + n: torch.empty_like(p) for n, p in zip(L.param_names, params)}
    if input_grad:
        out["d_x"] = torch.empty_like(x)
    if x.shape[0] == 0:
        return (x.new_zeros(x.shape), *[o.zero_() for o in out.values()][:k])
    L.backward(x, d_yhat.contiguous(), params=dict(zip(L.param_names, params)),
               input_grad=input_grad, recorded=dict(zip(L.recorded_names(), records)), out=out)
    dx = out["d_x"] if input_grad else x.new_zeros(x.shape)
    return (dx, *[out["d_" + n] for n in L.param_names])


def _no_double_backward(ctx, *grads):
    raise RuntimeError("molt: double backward (a gradient of molt's gradient: create_graph=True "
                       "through molt::apply<k>, torch.func.hessian, jacfwd(jacrev)) is not "
                       "supported; the runtime has no second-order kernels")


def _looped_vmap(op):
    """A vmap rule that runs `op` once per batch entry (the kernels have no batch dimension)."""
    def rule(info, in_dims, *args):
        outs = [op(*[a if d is None else a.select(d, i) for a, d in zip(args, in_dims)])
                for i in range(info.batch_size)]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
        return torch.stack(outs), 0
    return rule


_ops_by_arity = {}


def _ops(k, r):
    """The ops for a layer of k params whose backward reads r recorded tensors,
    `molt::apply{k}_{r}` (ŷ and the record) and `molt::apply{k}_{r}_backward`: one tensor
    argument per param and per recorded tensor (functorch transforms refuse list-of-tensor
    arguments). The forward's record (the pair lists) is what the backward reads, so the
    gradient runs no second forward."""
    if (k, r) in _ops_by_arity:
        return _ops_by_arity[(k, r)]
    ps = "".join(f"Tensor p{i}, " for i in range(k))
    rs = "".join(f"Tensor r{i}, " for i in range(r))
    fwd = torch.library.custom_op(f"molt::apply{k}_{r}", _forward_impl, mutates_args=(),
                                  schema=f"(Tensor x, {ps}int layer) -> "
                                         f"({', '.join(['Tensor'] * (r + 1))})")
    bwd = torch.library.custom_op(f"molt::apply{k}_{r}_backward", _backward_impl,
                                  mutates_args=(),
                                  schema=f"(Tensor x, Tensor d_yhat, {ps}{rs}int layer, "
                                         f"bool input_grad) -> ({', '.join(['Tensor'] * (k + 1))})")

    def fake_forward(x, *rest):
        L = _layer(rest[-1])
        return (x.new_empty(x.shape), *L.record_tensors(x.shape[0], like=x).values())

    fwd.register_fake(fake_forward)
    bwd.register_fake(lambda x, d_yhat, *rest: (x.new_empty(x.shape),
                                                *[p.new_empty(p.shape) for p in rest[:k]]))

    # Dynamo wraps torch.ops overloads, not the CustomOpDef objects: call the ops through those.
    fwd_op = getattr(torch.ops.molt, f"apply{k}_{r}").default
    bwd_op = getattr(torch.ops.molt, f"apply{k}_{r}_backward").default

    def setup(ctx, inputs, output):
        x, *rest = inputs
        ctx.save_for_backward(x, *rest[:-1], *output[1:])
        ctx.mark_non_differentiable(*output[1:])
        ctx.layer = rest[-1]

    def grad(ctx, d_yhat, *unused):
        x, *saved = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[0])
        grads = bwd_op(x, d_yhat, *saved, ctx.layer, need_x)
        return (grads[0] if need_x else None, *grads[1:], None)

    fwd.register_autograd(grad, setup_context=setup)
    bwd.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)
    fwd.register_vmap(_looped_vmap(fwd))
    bwd.register_vmap(_looped_vmap(bwd))

    class Apply(torch.autograd.Function):
        """The op's autograd as an autograd.Function with setup_context: torch.func's grad
        transforms (vjp, jacrev) accept that, not an op's registered autograd (torch 2.15).
        Same setup and backward as the op's; torch.compile traces it into one graph."""
        generate_vmap_rule = True

        @staticmethod
        def forward(x, *rest):
            return fwd_op(x, *rest)

        @staticmethod
        def setup_context(ctx, inputs, output):
            setup(ctx, inputs, output)

        @staticmethod
        def backward(ctx, d_yhat, *unused):
            return grad(ctx, d_yhat)

    _ops_by_arity[(k, r)] = (fwd, bwd, Apply)
    return _ops_by_arity[(k, r)]


# ---- gates and the penalty, in torch --------------------------------------------------------

class _JumpReLU(torch.autograd.Function):
    """g = pre·H(pre − θ⁺), θ⁺ = max(θ, 0); θ's gradient is the rectangle straight-through
    estimator Σ dg·(−θ⁺/ε)·[|pre − θ⁺| < ε/2] (the runtime's gate_bwd)."""

    @staticmethod
    def forward(pre, theta, eps):
        return pre * (pre > theta.clamp(min=0))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pre, theta, eps = inputs
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps

    @staticmethod
    def backward(ctx, dg):
        pre, theta = ctx.saved_tensors
        th = theta.clamp(min=0)
        near = ((pre - th).abs() < ctx.eps / 2).to(dg.dtype)
        return dg * (pre > th), (dg * (-th / ctx.eps) * near).sum(0), None


def _safe_sqrt(t):
    """sqrt with gradient 0 at 0 (the runtime's frob_norm_bwd skips n_t = 0)."""
    pos = t > 0
    return torch.where(pos, t, torch.ones_like(t)).sqrt() * pos


Encoding = namedtuple("Encoding", "gates indices values l0")
Encoding.__doc__ = """The gates of a batch of tokens [n, d]: `gates` [n, T] dense and
differentiable (0 where closed), and per token the open ones: `indices` [n, k] (long, −1 where
padded; k = the largest L0 in the batch), `values` [n, k] (0 where padded), `l0` [n] (long)."""


class MoltMLP(torch.nn.Module):
    """Stands in for an MLP: [..., d] -> [..., d], on the params of `layer` (shared, not copied).

    `penalty_lambda` (a buffer, not saved) is the λ of the penalty mlp(x, return_penalty=True)
    returns; it starts at the schedule's full λ, and molt.torch.Schedule ramps it as training
    does."""

    def __init__(self, layer):
        super().__init__()
        if not isinstance(layer, Layer):
            raise TypeError("MoltMLP wraps a molt.Layer")
        self.layer = layer
        self.names = tuple(layer.param_names)
        self._alias_params()
        self.register_buffer("penalty_lambda", torch.tensor(float(layer.schedule.lambda_)),
                             persistent=False)

    @classmethod
    def from_run(cls, run, batch=256, device="cpu", **kwargs):
        """The trained layer of a molt-train run directory, in raw space (molt.load)."""
        return cls(load(run, batch=batch, device=device, **kwargs))

    def extra_repr(self):
        return repr(self.layer)

    # -- the shared store ---------------------------------------------------------------------

    def _alias_params(self):
        """Makes each nn.Parameter's data the layer's store (after __init__, unpickling, a move)."""
        self._handle = _handle(self.layer)
        self._arity = (len(self.names), len(self.layer.recorded_names()))
        _ops(*self._arity)  # registered here, never while torch.compile traces forward
        for n in self.names:
            store = self.layer.params[n]
            t = torch.from_numpy(store) if isinstance(store, np.ndarray) else store
            p = self._parameters.get(n)
            if p is None:
                self.register_parameter(n, torch.nn.Parameter(t))
            elif p.data_ptr() != t.data_ptr():
                with torch.no_grad():
                    t.copy_(p.detach().to(t.device))
                p.data = t

    def __setstate__(self, state):
        super().__setstate__(state)
        self._alias_params()

    def _apply(self, fn, recurse=True):
        # Params stay float32 on the layer's device; a device change moves the layer itself.
        try:
            probe = fn(torch.empty(0, device=self.layer.tensor_device))
        except RuntimeError as e:  # torch itself cannot reach the device
            raise MoltError("the target device is unavailable: " + str(e).splitlines()[0]) from None
        if probe.device != torch.device(self.layer.tensor_device):
            state = self.layer.__getstate__()
            state["device"] = str(probe.device)
            moved = Layer.__new__(Layer)
            moved.__setstate__(state)
            grads = {n: self._parameters[n].grad for n in self.names}
            self.layer = moved
            for n in self.names:
                p = self._parameters[n]
                p.data = torch.from_numpy(moved.params[n]) if isinstance(
                    moved.params[n], np.ndarray) else moved.params[n]
                p.grad = None if grads[n] is None else grads[n].to(probe.device)
            self._handle = _handle(moved)
        for k, b in self._buffers.items():
            if b is not None:
                self._buffers[k] = b.to(probe.device)
        return self

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """As torch's (in place into the shared store), and also a safetensors path or a dict of
        NumPy arrays (Layer.load_state_dict's rules: a run's normalised checkpoint is refused)."""
        if assign:
            raise MoltError("MoltMLP.load_state_dict(assign=True) would unshare the params from "
                            "the layer; load in place (assign=False)")
        if isinstance(state_dict, (str, os.PathLike)) or not all(
                torch.is_tensor(v) for v in state_dict.values()):
            self.layer.load_state_dict(state_dict, strict=strict)
            return torch.nn.modules.module._IncompatibleKeys([], [])
        return super().load_state_dict(state_dict, strict=strict)

    def sync_to_layer(self):
        """Kept for old callers: the params are the layer's, so there is nothing to copy."""

    # -- compute ------------------------------------------------------------------------------

    def _check(self, x):
        if x.dtype == torch.float64:
            raise TypeError("molt computes in float32 (bf16 and fp16 inputs are cast); a float64 "
                            "input would be rounded silently: pass x.float()")
        if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise TypeError(f"molt needs floating-point input, got {x.dtype}")
        if x.shape[-1] != self.layer.d_model:
            raise ValueError(f"x must be [..., {self.layer.d_model}], got {list(x.shape)}")
        if x.device != torch.device(self.layer.tensor_device):
            raise ValueError(f"x is on {x.device}, the layer on {self.layer.tensor_device}: move "
                             "one of them (mlp.to(device))")

    def _param_list(self):
        return [self._parameters[n] for n in self.names]

    def forward(self, x, return_penalty=False):
        """ŷ [..., d] (in x's dtype, autocast's under autocast); with return_penalty also the
        differentiable penalty λ/B·Σ S(g·‖UV‖_F), so that molt-train's loss is
        (ŷ − y).square().sum(-1).mean() + penalty."""
        self._check(x)
        out_dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            out_dtype = torch.get_autocast_dtype(x.device.type)
        flat = x.reshape(-1, x.shape[-1]).to(torch.float32).contiguous()
        with torch.autocast(x.device.type, enabled=False):
            apply = _ops_by_arity[self._arity][2].apply
            y = apply(flat, *self._param_list(), self._handle)[0]
            y = y.to(out_dtype).reshape(x.shape)
            if not return_penalty:
                return y
            return y, self.penalty(self.gates(flat))

    def gates(self, x):
        """The dense gates [n, T] of rows x [n, d] (float32), differentiable in x and params."""
        m = self.layer.model
        P = self._parameters
        gate = m["gate"]
        if m["kind"] == "molt":
            pre = x @ P["enc_w"].T - P["enc_b"]
        else:
            pre = x @ P["enc_w"].T + P["enc_b"]
        if gate["kind"] == "jumprelu":
            return _JumpReLU.apply(pre, P["theta"], float(gate["bandwidth"]))
        if gate["kind"] == "topk":
            vals, idx = pre.topk(int(gate["k"]), dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        return torch.relu(pre)

    def norms(self):
        """Per transform ‖U_tV_t‖_F = sqrt(trace((UᵀU)(VVᵀ))) (the transcoder: ‖dec_w_f‖)."""
        P = self._parameters
        m = self.layer.model
        if m["kind"] != "molt":
            return _safe_sqrt(P["dec_w"].square().sum(-1))
        out = []
        for k in range(len(m["buckets"])):
            u, v = P[f"u{k}"], P[f"v{k}"]  # [N, d, R], [N, R, d]
            gu = torch.einsum("ndr,nds->nrs", u, u)
            gv = torch.einsum("nrd,nsd->nrs", v, v)
            out.append(_safe_sqrt((gu * gv).sum((1, 2))))
        return torch.cat(out)

    def penalty(self, gates):
        """λ/B·Σ_i Σ_t S(g_it·n_t) for gates [B, T] (S = tanh(c·) or identity, the spec's)."""
        pen = self.layer.model.get("penalty", {})
        p = gates * self.norms()
        s = torch.tanh(float(pen.get("c", 1.0)) * p) if pen.get("kind") == "tanh" else p
        return self.penalty_lambda * s.sum() / max(gates.shape[0], 1)

    def encode(self, x):
        """The open gates per token of x [..., d] (see Encoding); leading dims are flattened."""
        self._check(x)
        g = self.gates(x.reshape(-1, x.shape[-1]).to(torch.float32))
        opened = g > 0
        l0 = opened.sum(-1)
        k = int(l0.max()) if g.shape[0] else 0
        # Open ones first (stable: ascending transform index), then the padding.
        order = torch.sort((~opened).to(torch.int8), dim=-1, stable=True).indices[:, :k]
        keep = torch.arange(k, device=g.device) < l0[:, None]
        indices = torch.where(keep, order, torch.full_like(order, -1))
        values = torch.where(keep, g.gather(-1, order), torch.zeros((), dtype=g.dtype))
        return Encoding(g, indices, values, l0)


class Schedule:
    """molt-train's learning-rate and λ schedule (the layer's Schedule) on a torch optimiser:
    call step() after each optimizer.step(), as torch's LR schedulers."""

    def __init__(self, optimizer, mlp):
        self.optimizer, self.mlp, self.step_count = optimizer, mlp, 0
        self._set(1)

    def _set(self, step):
        s = self.mlp.layer.schedule_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = s["lr"]
        with torch.no_grad():
            self.mlp.penalty_lambda.fill_(s["lambda"])

    def step(self):
        self.step_count += 1
        self._set(self.step_count + 1)
