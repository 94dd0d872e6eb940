"""A MOLT as a PyTorch module: autograd through the molt runtime, params owned by torch.

    mlp = molt.torch.MoltMLP(molt.Layer(spec, batch=512))
    model.layers[3].mlp = mlp          # trains in an ordinary loop with any torch optimiser

The module's nn.Parameters are bound to the executor as its params for every call (no copy on
the CPU), so torch optimisers, state_dict and DDP see ordinary tensors.
"""
import torch

from . import Layer

__all__ = ["MoltFunction", "MoltMLP"]


class MoltFunction(torch.autograd.Function):
    """ŷ = molt(x; params). Gradients reach x and every param (the runtime's backward)."""

    @staticmethod
    def forward(ctx, layer, names, x, *params):
        bound = dict(zip(names, params))
        # The result must outlive the next call on this layer, so it is cloned out of the view.
        y = layer.forward(x, params=bound).clone()
        ctx.layer, ctx.names = layer, names
        ctx.save_for_backward(x, *params)
        return y

    @staticmethod
    def backward(ctx, d_yhat):
        x, *params = ctx.saved_tensors
        layer, names = ctx.layer, ctx.names
        grads = layer.backward(x, d_yhat.contiguous(), params=dict(zip(names, params)),
                               input_grad=ctx.needs_input_grad[2])
        dx = grads["x"].to(x.dtype) if ctx.needs_input_grad[2] else None
        dparams = [grads[n].clone().to(p.device) if ctx.needs_input_grad[3 + i] else None
                   for i, (n, p) in enumerate(zip(names, params))]
        return (None, None, dx, *dparams)


class MoltMLP(torch.nn.Module):
    """Stands in for an MLP: [..., d] -> [..., d]. Params start from the layer's current ones."""

    def __init__(self, layer):
        super().__init__()
        if not isinstance(layer, Layer):
            raise TypeError("MoltMLP wraps a molt.Layer")
        self.layer = layer
        self.names = tuple(layer.param_names)
        state = layer.state_dict()
        device = torch.device(layer.device)
        # Parameter names may not contain dots; molt param names never do.
        self.params = torch.nn.ParameterDict(
            {n: torch.nn.Parameter(torch.from_numpy(state[n]).to(device)) for n in self.names})

    def forward(self, x):
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        y = MoltFunction.apply(self.layer, self.names, flat, *[self.params[n] for n in self.names])
        return y.reshape(*lead, y.shape[-1])

    def sync_to_layer(self):
        """Copies the torch params into the layer (e.g. before layer.jacobian or layer.save)."""
        self.layer.load_state_dict({n: p.detach() for n, p in self.params.items()}, strict=True)
