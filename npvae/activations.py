"""Elementwise activations, each a layer with a hand-written backward.

An activation has no parameters; it keeps what its backward needs (its input
or its output) from the last ``forward``. Shapes: any; ``backward(dout)``
returns ``dx`` of the same shape as ``x``.

Derivations: ``tutorials/derivations.md``, section "Activations".
"""

from . import parallel
from .backend import xp_of


def sigmoid(x):
    """sigma(x) = 1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2.

    The tanh form never overflows (``exp(-x)`` does for x < -88 in float32).
    """
    xp = xp_of(x)
    out = xp.tanh(x * 0.5)
    out += 1
    out *= 0.5
    return out


def softplus(x):
    """softplus(x) = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)).

    The exponent is never positive, so nothing overflows; this form is also
    several times faster than ``logaddexp(0, x)`` in NumPy.
    """
    xp = xp_of(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


class Activation:
    """Base class: no parameters, so ``params`` and ``grads`` are empty."""

    def __init__(self):
        self.params = {}
        self.grads = {}

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(Activation):
    """relu(x) = max(x, 0);  dx = dout * [x > 0].

    Derivation: ``derivations.md#relu``.
    """

    def forward(self, x):
        # max(x, 0), in blocks across npvae's threads when it has several (npvae.parallel)
        self.out = parallel.apply(xp_of(x).maximum, x, 0)
        return self.out

    def backward(self, dout):
        return parallel.apply(_times_positive, dout, self.out)  # dout * (out > 0)


def _times_positive(dout, y, out=None):
    """dout * (y > 0) (into ``out`` when given)."""
    return xp_of(dout).multiply(dout, y > 0, out=out)


class LeakyReLU(Activation):
    """leaky_relu(x) = x if x > 0 else alpha * x;  dx = dout * (1 or alpha).

    Derivation: ``derivations.md#leaky-relu``.
    """

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        self.x = x
        return xp_of(x).where(x > 0, x, self.alpha * x)

    def backward(self, dout):
        return xp_of(dout).where(self.x > 0, dout, self.alpha * dout)

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"


class Tanh(Activation):
    """tanh(x);  dx = dout * (1 - tanh(x)^2).

    Derivation: ``derivations.md#tanh``.
    """

    def forward(self, x):
        self.out = xp_of(x).tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out * self.out)


class Sigmoid(Activation):
    """sigmoid(x) = 1 / (1 + exp(-x));  dx = dout * s * (1 - s).

    Derivation: ``derivations.md#sigmoid``.
    """

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)


class Softplus(Activation):
    """softplus(x) = log(1 + exp(x));  dx = dout * sigmoid(x).

    Derivation: ``derivations.md#softplus``.
    """

    def forward(self, x):
        self.x = x
        return softplus(x)

    def backward(self, dout):
        return dout * sigmoid(self.x)


ACTIVATIONS = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
}
