"""Vector quantization (van den Oord, Vinyals and Kavukcuoglu, 2017): the VQ-VAE's bottleneck.

Each of the encoder's F-dimensional output vectors z_e is replaced by the
nearest of N learned code vectors, the rows of the codebook E (N, F):

    c     = argmin_v |z_e - E_v|^2         the code of each position
    z_q   = E[c]                           what the decoder sees

The argmin is piecewise constant, so z_q has no useful derivative with
respect to z_e. The **straight-through estimator** pretends the quantizer is
the identity on the way back: the decoder's gradient dz_q is handed to the
encoder unchanged, dz_e = dz_q. Two losses train what the decoder's gradient
cannot reach, with sg[.] a stop-gradient (a constant on the way back):

    codebook   = |sg[z_e] - E[c]|^2           pulls each used code to its vectors
    commitment = lambda |z_e - sg[E[c]]|^2    pulls the encoder to its codes

with lambda the commitment weight (the paper's beta; ``beta`` in the code).
Reductions follow npvae's: both are **summed** over the positions and the F
dimensions of an example (shape (B,)), and the model takes the batch mean.
The codebook is learned by the codebook loss's gradient (``update="gradient"``,
the codebook is a parameter beside its gradient) or by exponential moving
averages of the vectors each code is given (``update="ema"``, the paper's
appendix; the codebook is then a buffer, not a parameter, and the codebook
loss is only reported). Codes no vector chose can be restarted at encoder
outputs drawn by a seeded Generator (``restart_dead_codes``).

Layout: z_e is (B, F, *grid), channels (the F dimensions) on axis 1 as npvae's
convolutions give them; (B, F) is a grid of one position. Codes are (B, *grid).

Derivation: ``tutorials/derivations.md``, section "Vector quantization".
"""

from collections import namedtuple

import numpy as np

from .backend import to_numpy, xp_of
from .checks import number, positive_int
from .errors import ConfigError

UPDATES = ("gradient", "ema")

VQTerms = namedtuple("VQTerms", ["codebook", "commitment"])
VQTerms.__doc__ = ("The two losses of a batch, one value per example (B,): the codebook loss "
                   "|sg[z_e] - E[c]|^2 and the commitment loss lambda |z_e - sg[E[c]]|^2, each "
                   "summed over positions and dimensions.")


def squared_distances(rows, codebook):
    """d_itv = |z_it - E_v|^2 for every row and code: (B G, F), (N, F) -> (B G, N).

    Expanded as |z_it|^2 - 2 z_it . E_v + |E_v|^2, so the B G N F work is one
    matrix product (z E^T) instead of a (B G, N, F) array of differences. The
    expansion can round a distance of 0 to a tiny negative number, hence the
    clip; the argmin is unaffected (|z_it|^2 is the same for every v) and the
    losses never use these values (they are computed from z_e - E[c]).
    """
    xp = xp_of(rows)
    d = xp.matmul(rows, codebook.T)
    d *= -2.0
    d += (rows * rows).sum(axis=1)[:, None]
    d += (codebook * codebook).sum(axis=1)[None, :]
    return xp.maximum(d, 0, out=d)


def perplexity(counts):
    """exp(entropy) of the code usage: exp(-sum_v f_v log f_v), f = counts / sum(counts).

    N when every code is used equally, 1 when a single code takes every
    position; codes never used add 0 (f log f -> 0). ``counts`` (N,).
    """
    counts = np.asarray(to_numpy(counts), dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def dead_codes(counts):
    """Indices of the codes no position chose: where ``counts`` (N,) is 0."""
    return np.flatnonzero(np.asarray(to_numpy(counts)) == 0)


class VectorQuantizer:
    """Nearest-code quantization with the straight-through gradient and the two VQ losses.

    Parameters
    ----------
    n_codes : N, the number of code vectors.
    dim : F, each code's (and each encoder vector's) dimension.
    beta : lambda, the commitment weight (the paper's beta; 0.25 in the paper
        and Keras's example).
    update : ``gradient`` (the codebook is a parameter trained by the
        codebook loss) or ``ema`` (moving averages; the codebook is a buffer).
    decay : gamma of the moving averages (``ema`` only), in [0, 1).
    epsilon : delta, the Laplace smoothing of the moving counts (``ema`` only).
    rng : a numpy Generator for the initial codebook, U(-0.05, 0.05) (Keras's
        default uniform initializer, as its VQ-VAE example uses).

    Shapes: z_e (B, F, *grid) -> z_q (B, F, *grid), codes (B, *grid);
    codebook E (N, F) in ``params["codebook"]`` (``gradient``) or
    ``buffers["codebook"]`` (``ema``, with ``ema_count`` (N,) and
    ``ema_sum`` (N, F)). ``counts`` (N,) accumulates how often each code was
    chosen since ``reset_usage``.

    Forward, with rows z (B G, F) the B * positions vectors and onehot A (B G, N)
    their codes: z_q = A E; codebook_i = codebook loss of example i,
    commitment_i = lambda times the same sum of squares.

    Backward (``derivations.md#vector-quantization``), from dz_q (B, F, *grid)
    and dterms = d L / d (each example's codebook and commitment terms),
    (B,) or a scalar such as 1/B:
        dz_e      = dz_q + 2 lambda dterms (z_e - z_q)       straight through + commitment
        dcodebook = A^T (2 dterms (z_q - z_e))       (N, F)  codebook loss only
    The decoder's gradient never reaches the codebook, and the codebook
    loss never reaches the encoder: those are the two stop-gradients.
    """

    def __init__(self, n_codes=64, dim=16, *, beta=0.25, update="gradient", decay=0.99,
                 epsilon=1e-5, rng, dtype=np.float32, xp=np):
        self.n_codes, self.dim = positive_int("n_codes", n_codes), positive_int("dim", dim)
        self.beta = number("beta", beta)
        if not isinstance(update, str) or update not in UPDATES:
            raise ConfigError(f"update={update!r} is unknown; choose one of {', '.join(UPDATES)}")
        self.update = update
        self.decay = number("decay", decay)
        if self.decay >= 1:
            raise ConfigError(f"decay={decay!r} must be in [0, 1)")
        self.epsilon = number("epsilon", epsilon, positive=True)
        self.xp, self.dtype = xp, np.dtype(dtype)
        codebook = xp.asarray(rng.uniform(-0.05, 0.05, (self.n_codes, self.dim)), dtype=dtype)
        self.params, self.grads, self.buffers = {}, {}, {}
        if update == "gradient":
            self.params["codebook"] = codebook
            self.grads["codebook"] = xp.zeros_like(codebook)
        else:
            # A count of 1 per code to start, not 0: a code unused at the first update then
            # keeps its place (sum / count = e), where a zero count smoothed to ~epsilon
            # would throw it to 1 / epsilon times its position.
            self.buffers.update(codebook=codebook, ema_count=xp.ones(self.n_codes, dtype=dtype),
                                ema_sum=codebook.copy())
        self.counts = xp.zeros(self.n_codes, dtype=np.int64)

    @property
    def codebook(self):
        """The code vectors E (N, F), a parameter or a buffer by ``update``."""
        return self.params["codebook"] if self.update == "gradient" else self.buffers["codebook"]

    def to_rows(self, z_e):
        """z_e (B, F, *grid) as rows (B * positions, F), each row one position's vector."""
        shape = getattr(z_e, "shape", None)
        if shape is None or len(shape) < 2 or shape[1] != self.dim:
            raise ConfigError(f"the quantizer needs z_e of shape (batch, {self.dim}, ...); got "
                              f"shape {shape}")
        return self.xp.moveaxis(z_e, 1, -1).reshape(-1, self.dim)

    def from_rows(self, rows, shape):
        """The inverse of ``to_rows``: rows (B G, F) back to ``shape`` (B, F, *grid)."""
        B, D, *grid = shape
        return self.xp.moveaxis(rows.reshape(B, *grid, D), -1, 1)

    def nearest(self, z_e):
        """The code of every position, argmin_v |z_e - E_v|^2: (B, F, *grid) -> (B, *grid)."""
        d = squared_distances(self.to_rows(z_e), self.codebook)
        return d.argmin(axis=1).reshape(z_e.shape[:1] + z_e.shape[2:])

    def lookup(self, codes):
        """z_q for given codes: (B, *grid) integers in [0, N) -> (B, F, *grid)."""
        codes = self.xp.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer) or codes.ndim < 1:
            raise ConfigError(f"codes must be an integer array (batch, ...); got dtype "
                              f"{codes.dtype} and shape {codes.shape}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise ConfigError(f"codes must lie in [0, {self.n_codes}); got "
                              f"{int(codes.min())} to {int(codes.max())}")
        rows = self.codebook[codes.reshape(-1)]
        return self.from_rows(rows, (codes.shape[0], self.dim, *codes.shape[1:]))

    def forward(self, z_e, codes=None):
        """``(z_q, codes, VQTerms)`` for z_e (B, F, *grid); keeps what ``backward`` needs.

        ``codes`` (B, *grid) holds the codes fixed instead of choosing the
        nearest (the gradient checks; decoding a prior's samples). Chosen
        codes are added to ``counts``.
        """
        xp = self.xp
        if codes is None:
            codes = self.nearest(z_e)
        elif getattr(codes, "shape", None) != z_e.shape[:1] + z_e.shape[2:]:
            raise ConfigError(f"codes must have shape {z_e.shape[:1] + z_e.shape[2:]}; got "
                              f"shape {getattr(codes, 'shape', None)}")
        self.z_e, self.codes = z_e, codes
        self.z_q = self.lookup(codes)
        diff = z_e - self.z_q
        sq = (diff * diff).reshape(z_e.shape[0], -1).sum(axis=1)
        self.counts += xp.bincount(codes.reshape(-1), minlength=self.n_codes)
        return self.z_q, codes, VQTerms(sq, self.beta * sq)

    def onehot(self, codes):
        """onehot A (B G, N): row (i, t) is 1 at its code c_it (codes flattened)."""
        flat = codes.reshape(-1)
        out = self.xp.zeros((flat.size, self.n_codes), dtype=self.z_e.dtype)
        out[self.xp.arange(flat.size), flat] = 1
        return out

    def backward(self, dz_q, dterms):
        """dz_e (B, F, *grid) from dz_q (like z_q) and dterms ((B,) or a scalar).

        Fills ``grads["codebook"]`` (``gradient`` update) with the codebook
        loss's gradient, A^T (2 dterms (z_q - z_e)). The formulas and
        their stop-gradients: ``derivations.md#vector-quantization``.
        """
        xp = self.xp
        B = self.z_e.shape[0]
        w = 2.0 * xp.broadcast_to(xp.asarray(dterms, dtype=self.z_e.dtype), (B,))
        w = w.reshape((B,) + (1,) * (self.z_e.ndim - 1))
        diff = self.z_e - self.z_q                       # z_e - E[c]
        if self.update == "gradient":
            dz_q_codebook = self.to_rows(-w * diff)      # d codebook / d z_q = 2 (z_q - z_e)
            self.grads["codebook"][...] = self.onehot(self.codes).T @ dz_q_codebook
        return dz_q + (self.beta * w) * diff

    def ema_update(self):
        """The moving-average codebook update from the last forward (``ema`` only).

        With n_v the number of rows given code v and m_v the sum of those rows,
        and nbar_v, mbar_v their moving averages (the derivation's bars):
            nbar_v <- gamma nbar_v + (1 - gamma) n_v    ema_count (N,)
            mbar_v <- gamma mbar_v + (1 - gamma) m_v    ema_sum (N, F)
            E_v     = mbar_v / ((nbar_v + delta) / (nbar + N delta) nbar)
                                                        nbar = sum_v nbar_v
        with delta = ``epsilon``, the last line with the counts Laplace-smoothed (Sonnet's
        VectorQuantizerEMA), so a count near 0 never divides by 0; the
        smoothed counts still sum to n. Derivation:
        ``derivations.md#vector-quantization``.
        """
        if self.update != "ema":
            raise ConfigError("ema_update needs a quantizer built with update='ema'")
        rows, onehot = self.to_rows(self.z_e), self.onehot(self.codes)
        g, buf = self.decay, self.buffers
        buf["ema_count"] *= g
        buf["ema_count"] += (1 - g) * onehot.sum(axis=0)
        buf["ema_sum"] *= g
        buf["ema_sum"] += (1 - g) * (onehot.T @ rows)
        n = buf["ema_count"].sum()
        smoothed = (buf["ema_count"] + self.epsilon) / (n + self.n_codes * self.epsilon) * n
        buf["codebook"][...] = buf["ema_sum"] / smoothed[:, None]

    def reset_usage(self):
        """The code counts since the last reset (N,), as a host array; starts counting again."""
        counts = to_numpy(self.counts).copy()
        self.counts[...] = 0
        return counts

    def restart_dead_codes(self, counts, z_e, rng):
        """Move every code with a count of 0 onto an encoder vector; return their indices.

        The vectors are rows of z_e (B, F, *grid) drawn by ``rng`` (a numpy
        Generator) without replacement where there are enough rows, so a dead
        code starts where the encoder puts data and will be chosen. Under
        ``ema`` its moving sum and count restart too (mbar_v = E_v, nbar_v = 1).
        """
        dead = dead_codes(counts)
        if dead.size:
            rows = self.to_rows(z_e)
            pick = rng.choice(rows.shape[0], size=dead.size, replace=rows.shape[0] < dead.size)
            self.codebook[dead] = rows[pick]
            if self.update == "ema":
                self.buffers["ema_sum"][dead] = rows[pick]
                self.buffers["ema_count"][dead] = 1
        return dead

    def __repr__(self):
        return (f"VectorQuantizer({self.n_codes} codes x {self.dim}, beta={self.beta}, "
                f"update={self.update!r})")
