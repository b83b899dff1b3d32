"""MADE (Germain, Gregor, Murray and Larochelle, 2015): an autoregressive prior over codes.

A VQ-VAE's codes are a grid of G positions (7 x 7 = 49, read in raster
order), each one of N codes. Their prior is factorised by the chain rule,

    p(c) = prod_t p(c_t | c_1, ..., c_{t-1}),

and one masked MLP gives every factor at once: its input is the codes one-hot
(B, G N), its output N logits per position (B, G, N), and masks on the
weights cut every path from an input at position t' to an output at position
t unless t' < t. Each unit gets a degree: an input unit of position t has
degree t (1-based), a hidden unit a degree in 1 .. G - 1 (cyclically, so every
degree is represented), an output of position t degree t. A weight from
unit j of degree d_j to unit o of degree d'_o is kept where M_jo = 1:

    M_jo = [d'_o >= d_j]   (into a hidden unit)      M_jo = [d'_o > d_j]   (into an output)

so a hidden unit of degree d sees positions 1 .. d only, and position t's
logits see hidden units of degree < t: never its own code or a later one.

Loss: the negative log-likelihood in nats per example, summed over the G
positions (a softmax cross-entropy each), averaged over the batch. Sampling
draws the positions one by one, G passes.

Derivation: ``tutorials/derivations.md``, section "Masked autoregressive prior".
"""

import math

import numpy as np

from .activations import ACTIVATIONS
from .backend import get_xp, to_numpy, xp_of
from .checks import MODEL_DTYPES, one_of, parameter_count, positive_int, sizes
from .errors import ConfigError
from .layers import INITS, MLP, Dense, Sequential, default_init, flatten_parameters


def log_softmax(logits):
    """log softmax over the last axis, stably: eta - max(eta) - log sum exp(eta - max(eta))."""
    xp = xp_of(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def categorical_nll(logits, codes):
    """-log p(codes) under independent softmaxes, summed over positions.

        nll_i = sum_t ( log sum_v exp(eta_itv) - eta_{i t c_it} )

    Shapes: logits eta (B, G, N), codes c (B, G) integers in [0, N) -> (B,).
    """
    logp = log_softmax(logits)
    return -xp_of(logits).take_along_axis(logp, codes[..., None], axis=-1)[..., 0].sum(axis=-1)


def categorical_nll_backward(dout, logits, codes):
    """d nll / d eta = dout * (softmax(eta) - onehot(c)): (B,) or scalar, (B, G, N) -> (B, G, N).

    Derivation: ``derivations.md#masked-autoregressive-prior``.
    """
    xp = xp_of(logits)
    dlogits = xp.exp(log_softmax(logits))
    picked = xp.take_along_axis(dlogits, codes[..., None], axis=-1)
    xp.put_along_axis(dlogits, codes[..., None], picked - 1, axis=-1)
    dout = xp.asarray(dout, dtype=logits.dtype)
    return dlogits * (dout[..., None, None] if dout.ndim else dout)


def degrees(n_positions, n_codes, hidden):
    """The MADE degrees: [inputs (G N,), each hidden layer (H,), outputs (G N,)], 1-based."""
    position = np.repeat(np.arange(1, n_positions + 1), n_codes)
    inner = [np.arange(h) % max(1, n_positions - 1) + 1 for h in hidden]
    return [position, *inner, position]


def masks(n_positions, n_codes, hidden):
    """One 0/1 mask M (n_in, n_out) per layer, from the units' degrees (``degrees``).

    M_jo = [d'_o >= d_j] into hidden units, [d'_o > d_j] into outputs, with d_j the
    degree of input unit j and d'_o that of output unit o.
    """
    deg = degrees(n_positions, n_codes, hidden)
    found = [(deg[i + 1][None, :] >= deg[i][:, None]) for i in range(len(deg) - 2)]
    found.append(deg[-1][None, :] > deg[-2][:, None])
    return [m.astype(np.float64) for m in found]


def parameter_shapes(n_positions, n_codes, hidden):
    """``{"0.W": (G N, H_1), "0.b": (H_1,), ..., }``: the names and shapes of a ``MADE``'s
    parameters, without allocating anything.

    A ConfigError for sizes that are not positive integers, a hidden layer of
    fewer than G - 1 units (a degree would have no unit), or a model beyond
    ``checks.max_parameters()``.
    """
    n_positions, n_codes = positive_int("n_positions", n_positions), positive_int("n_codes", n_codes)
    hidden = sizes("hidden", hidden)
    if any(h < n_positions - 1 for h in hidden):
        raise ConfigError(f"hidden={hidden!r}: each masked layer needs at least "
                          f"n_positions - 1 = {n_positions - 1} units")
    shapes = MLP.shapes([n_positions * n_codes, *hidden, n_positions * n_codes])
    parameter_count(sum(math.prod(s) for s in shapes.values()))
    return shapes


class MaskedDense(Dense):
    """A dense layer whose weight is multiplied by a fixed 0/1 mask M: out = x (W * M) + b.

    Shapes: x (B, n_in), W and M (n_in, n_out), b (n_out,).
    Backward (``derivations.md#masked-autoregressive-prior``), from dout (B, n_out):
        dW = (x^T dout) * M      the masked weights get no gradient
        db = sum_i dout[i]
        dx = dout (W * M)^T
    W starts masked (W * M), so the masked weights are 0 and stay 0.
    """

    def __init__(self, n_in, n_out, mask, *, rng, init="he", dtype=np.float32, xp=np):
        super().__init__(n_in, n_out, rng=rng, init=init, dtype=dtype, xp=xp)
        self.mask = xp.asarray(mask, dtype=dtype)
        self.params["W"] *= self.mask

    def forward(self, x):
        self.x = x
        return self.xp.matmul(x, self.params["W"] * self.mask) + self.params["b"]

    def backward(self, dout, need_dx=True):
        """Fill ``grads``: dW = (x^T dout) * M, db = sum of dout; return dx = dout (W * M)^T."""
        self.grads["W"][...] = self.xp.matmul(self.x.T, dout) * self.mask
        dout.sum(axis=0, out=self.grads["b"])
        return self.xp.matmul(dout, (self.params["W"] * self.mask).T) if need_dx else None

    def __repr__(self):
        n_in, n_out = self.params["W"].shape
        return f"MaskedDense({n_in}, {n_out})"


class MADE:
    """A masked MLP giving p(c_t | c_<t) for a grid of codes: the VQ-VAE's prior.

    Parameters
    ----------
    n_positions : G, the positions of the grid (49 for 7 x 7), raster order.
    n_codes : N, the codes each position takes.
    hidden : the masked hidden layers' widths, each at least G - 1 so that
        every degree has a unit.
    activation, init, dtype, backend : as ``npvae.VAE``.
    seed : seeds the initial weights.

    ``params``/``grads`` are the network's (``"0.W"``, ...), views into
    ``theta``/``dtheta``. Shapes: codes (B, G) -> logits (B, G, N).
    """

    def __init__(self, n_positions=49, n_codes=64, hidden=(512,), *, activation="relu",
                 init=None, dtype="float32", backend="numpy", seed=0):
        parameter_shapes(n_positions, n_codes, hidden)   # every size checked, before allocating
        for name, value, choices in [("activation", activation, ACTIVATIONS),
                                     ("init", init, (None, *INITS)),
                                     ("dtype", dtype, MODEL_DTYPES)]:
            one_of(name, value, choices)
        self.n_positions, self.n_codes = int(n_positions), int(n_codes)
        hidden = sizes("hidden", hidden)
        init = default_init(activation) if init is None else init
        self.config = dict(n_positions=self.n_positions, n_codes=self.n_codes, hidden=hidden,
                           activation=activation, init=init, dtype=np.dtype(dtype).name)
        self.xp = xp = get_xp(backend)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(seed)
        width = [self.n_positions * self.n_codes, *hidden, self.n_positions * self.n_codes]
        layers = []
        for i, mask in enumerate(masks(self.n_positions, self.n_codes, hidden)):
            layers.append(MaskedDense(width[i], width[i + 1], mask, rng=rng, init=init,
                                      dtype=self.dtype, xp=xp))
            layers.append(ACTIVATIONS[activation]())
        self.net = Sequential(layers[:-1])
        self.theta, self.dtheta = flatten_parameters(self.net.layers, xp)

    @property
    def params(self):
        return self.net.params

    @property
    def grads(self):
        return self.net.grads

    def check_codes(self, codes):
        """``codes`` as a (B, G) integer array in [0, N), or a one-line ConfigError."""
        codes = self.xp.asarray(codes)
        if codes.ndim >= 2:
            codes = codes.reshape(codes.shape[0], -1)
        if (codes.ndim != 2 or codes.shape[1] != self.n_positions
                or not np.issubdtype(codes.dtype, np.integer)):
            raise ConfigError(f"codes must be integers of shape (batch, {self.n_positions}); got "
                              f"dtype {codes.dtype} and shape {codes.shape}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise ConfigError(f"codes must lie in [0, {self.n_codes}); got {int(codes.min())} "
                              f"to {int(codes.max())}")
        return codes

    def onehot(self, codes):
        """codes (B, G) as the network's input (B, G N), position-major."""
        B, P = codes.shape
        out = self.xp.zeros((B, P, self.n_codes), dtype=self.dtype)
        self.xp.put_along_axis(out, codes[..., None], 1, axis=-1)
        return out.reshape(B, P * self.n_codes)

    def logits(self, codes):
        """The logits eta of p(c_t | c_<t) for every position: (B, G) -> (B, G, N)."""
        codes = self.check_codes(codes)
        out = self.net.forward(self.onehot(codes))
        return out.reshape(codes.shape[0], self.n_positions, self.n_codes)

    def forward(self, codes):
        """The prior's loss: -log p(codes) in nats per example (the batch mean, a 0-d array)."""
        self.codes = codes = self.check_codes(codes)
        self.out = self.logits(codes)
        return categorical_nll(self.out, codes).mean()

    def backward(self):
        """Fill ``grads`` with d loss / d parameter: the cross-entropy's (softmax - onehot) / B
        back through the masked layers. Derivation: ``derivations.md#masked-autoregressive-prior``."""
        dlogits = categorical_nll_backward(1.0 / self.codes.shape[0], self.out, self.codes)
        self.net.backward(dlogits.reshape(self.codes.shape[0], -1), need_dx=False)

    def log_prob(self, codes):
        """log p(codes) per example: (B, G) -> (B,)."""
        codes = self.check_codes(codes)
        return -categorical_nll(self.logits(codes), codes)

    def sample(self, n, rng):
        """``n`` code grids drawn from the prior, position by position: (n, G) integers.

        G passes: pass t draws c_t from softmax(eta_t) given the codes drawn
        so far (inverse CDF with one uniform from ``rng`` per draw); later
        positions' inputs do not reach position t's logits, so their value
        (0 until drawn) does not matter.
        """
        n = positive_int("n", n)
        codes = np.zeros((n, self.n_positions), dtype=np.int64)
        for p in range(self.n_positions):
            logp = log_softmax(to_numpy(self.logits(codes)[:, p]).astype(np.float64))
            cdf = np.cumsum(np.exp(logp), axis=1)
            u = rng.random((n, 1)) * cdf[:, -1:]
            codes[:, p] = np.minimum((cdf < u).sum(axis=1), self.n_codes - 1)
        return codes

    def __repr__(self):
        c = self.config
        return (f"MADE({c['n_positions']} positions x {c['n_codes']} codes, hidden "
                f"{'-'.join(map(str, c['hidden']))}, {c['activation']}, {c['dtype']})")
