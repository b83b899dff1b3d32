"""The dense (affine) layer, stacks of layers (``Sequential``, ``MLP``), and flat storage.

Every layer keeps its parameters and their gradients side by side, in two
dicts with the same keys (``params["W"]`` and ``grads["W"]``), so an optimizer
is a loop over keys and never needs to know what a layer is. ``backward``
overwrites ``grads`` (it does not accumulate) and returns the gradient for
the layer's input.

Derivations: ``tutorials/derivations.md``, section "Dense layer".
"""

import numpy as np

from . import parallel
from .activations import ACTIVATIONS
from .errors import ConfigError

INITS = ("he", "glorot", "pytorch")


def init_weights(n_in, n_out, init, rng, *, shape=None, bias=None):
    """Initial ``(W, b)`` as float64 host arrays of shapes (n_in, n_out), (n_out,).

    ``n_in`` and ``n_out`` are the fans: how many inputs feed each output and
    how many outputs each input feeds. A convolution passes its fans (C_in k k,
    C_out k k) with its weight's ``shape`` and its ``bias`` size instead.

    - ``he``: W ~ N(0, 2 / n_in), b = 0. Keeps the activations' variance
      through ReLU layers (He et al., 2015).
    - ``glorot``: W ~ U(-a, a), a = sqrt(6 / (n_in + n_out)), b = 0. For tanh
      and sigmoid (Glorot and Bengio, 2010).
    - ``pytorch``: W, b ~ U(-1/sqrt(n_in), 1/sqrt(n_in)), what ``torch.nn.Linear``
      does by default; used to reproduce PyTorch's VAE example.
    """
    shape = (n_in, n_out) if shape is None else shape
    bias = n_out if bias is None else bias
    if init == "he":
        return rng.normal(0.0, np.sqrt(2.0 / n_in), shape), np.zeros(bias)
    if init == "glorot":
        a = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-a, a, shape), np.zeros(bias)
    if init == "pytorch":
        a = 1.0 / np.sqrt(n_in)
        return rng.uniform(-a, a, shape), rng.uniform(-a, a, bias)
    raise ConfigError(f"init={init!r} is unknown; choose one of {', '.join(INITS)}")


def parameters(W, b, dtype, xp):
    """A layer's ``(params, grads)``: W and b in ``dtype`` on ``xp``, and zero gradients
    of the same shapes beside them, under the same keys."""
    params = {"W": xp.asarray(W, dtype=dtype), "b": xp.asarray(b, dtype=dtype)}
    return params, {k: xp.zeros_like(v) for k, v in params.items()}


class Dense:
    """Affine layer: out = x @ W + b.

    Shapes: x (B, n_in), W (n_in, n_out), b (n_out,), out (B, n_out).

    Backward (``derivations.md#dense-layer``), from dout = dL/dout (B, n_out):
        dW = x^T @ dout        (n_in, n_out)
        db = sum_i dout[i]     (n_out,)
        dx = dout @ W^T        (B, n_in)
    """

    def __init__(self, n_in, n_out, *, rng, init="he", dtype=np.float32, xp=np):
        self.params, self.grads = parameters(*init_weights(n_in, n_out, init, rng), dtype, xp)
        self.xp = xp

    def forward(self, x):
        self.x = x
        out = parallel.matmul(x, self.params["W"], self.xp)
        out += self.params["b"]
        return out

    def backward(self, dout, need_dx=True):
        """Fill ``grads`` from ``dout`` (B, n_out); return dx (B, n_in), or None.

        ``need_dx=False`` skips dx (a first layer's input is data, and
        dout @ W^T would be a fifth of the model's matrix work for nothing).
        """
        products = [(self.x.T, dout, self.grads["W"])]               # dW = x^T dout
        if need_dx:
            products.append((dout, self.params["W"].T, None))        # dx = dout W^T
        # two independent products: at once, across npvae's threads (npvae.parallel)
        products = parallel.matmuls(products, self.xp)
        dout.sum(axis=0, out=self.grads["b"])
        return products[1] if need_dx else None

    def __repr__(self):
        n_in, n_out = self.params["W"].shape
        return f"Dense({n_in}, {n_out})"


class Sequential:
    """Layers applied in order: dense, convolutional, activations, reshapes.

    ``params`` and ``grads`` name each tensor ``"{layer}.{key}"``, e.g.
    ``"0.W"``; they are the layers' own arrays, not copies. Layers without
    parameters (activations, reshapes) keep their place in the numbering.
    """

    def __init__(self, layers):
        self.layers = list(layers)

    @property
    def params(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    @property
    def grads(self):
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout, need_dx=True):
        """Backpropagate dout through every layer; return dx, or None.

        The chain rule, applied layer by layer from the last: each backward
        turns the gradient for its output into the gradient for its input.
        With ``need_dx=False`` it stops at the first layer with parameters,
        which skips its dx (nothing before it needs a gradient).
        Derivation: ``derivations.md#dense-layer``.
        """
        first = 0 if need_dx else next(
            (i for i, layer in enumerate(self.layers) if layer.params), 0)
        for layer in reversed(self.layers[first + 1:]):
            dout = layer.backward(dout)
        head = self.layers[first]
        return head.backward(dout, need_dx=need_dx) if head.params else head.backward(dout)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(map(repr, self.layers))})"


class MLP(Sequential):
    """Dense layers with an activation between them (none after the last).

    ``MLP([784, 400, 40], "relu")`` is Dense(784, 400), ReLU, Dense(400, 40).
    Shapes: x (B, sizes[0]) -> out (B, sizes[-1]). Parameters are named as
    in ``Sequential``: ``"0.W"``, ``"0.b"``, ``"2.W"``, ...
    """

    def __init__(self, sizes, activation="relu", *, rng, init=None, dtype=np.float32, xp=np):
        if len(sizes) < 2 or any(int(n) != n or n < 1 for n in sizes):
            raise ConfigError(f"MLP sizes={list(sizes)!r} must be two or more positive integers")
        default = default_init(activation)  # also checks the activation's name
        init = default if init is None else init
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers.append(Dense(n_in, n_out, rng=rng, init=init, dtype=dtype, xp=xp))
            layers.append(ACTIVATIONS[activation]())
        super().__init__(layers[:-1])  # no activation after the output layer

    @staticmethod
    def shapes(sizes):
        """``{"0.W": (n_in, n_out), "0.b": (n_out,), "2.W": ...}``: the names and shapes
        ``MLP(sizes).params`` would have, without allocating anything."""
        return {f"{2 * i}.{k}": shape for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
                for k, shape in (("W", (n_in, n_out)), ("b", (n_out,)))}


def default_init(activation):
    """``he`` for ReLU-like activations, ``glorot`` otherwise; a ConfigError if unknown."""
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation={activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}"
        )
    return "he" if activation in ("relu", "leaky_relu") else "glorot"


def flatten_parameters(layers, xp=np):
    """Move every parameter and gradient of ``layers`` into two flat buffers.

    Returns ``(theta, dtheta)``: 1-D arrays holding all parameters and all
    gradients, in layer order. Each layer's ``params[k]`` and ``grads[k]``
    become reshaped views into them, so layers read and write exactly as
    before, while an optimizer can update every parameter in one vectorised
    pass over ``theta`` (and a global norm is one reduction over ``dtheta``).
    """
    tensors = [(layer, k) for layer in layers for k in layer.params]
    dtype = tensors[0][0].params[tensors[0][1]].dtype
    total = sum(layer.params[k].size for layer, k in tensors)
    theta = xp.empty(total, dtype=dtype)
    dtheta = xp.zeros(total, dtype=dtype)
    offset = 0
    for layer, k in tensors:
        p = layer.params[k]
        view = slice(offset, offset + p.size)
        theta[view] = p.ravel()
        layer.params[k] = theta[view].reshape(p.shape)
        layer.grads[k] = dtheta[view].reshape(p.shape)
        offset += p.size
    return theta, dtheta
