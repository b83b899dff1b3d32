"""Optimizers that update parameters in place: Adam (and AdamW), SGD.

An optimizer holds two dicts with the same keys, ``params`` and ``grads``
(arrays of any shape), and its state per key. It never needs to know what a
layer is. Pass a model's named dicts (``vae.params``, ``vae.grads``) to read
it tensor by tensor, or its flat buffers (``{"theta": vae.theta}``,
``{"theta": vae.dtheta}``) to update everything in one vectorised pass; the
two give the same numbers, since every rule here is elementwise.

Derivation: ``tutorials/derivations.md``, section "Adam".
"""

import numpy as np

from . import parallel
from .backend import xp_of
from .errors import ConfigError

BLOCK = 65536
"""Elements per block of Adam's update on the CPU: its five float32 arrays of
this length (1.3 MB) stay in cache through the update's ten passes."""


def _check_pairs(params, grads):
    if params.keys() != grads.keys():
        raise ConfigError(f"params and grads must have the same keys; got {sorted(params)} "
                          f"and {sorted(grads)}")
    for k in params:
        if params[k].shape != grads[k].shape:
            raise ConfigError(f"params[{k!r}] has shape {params[k].shape} but grads[{k!r}] "
                              f"has shape {grads[k].shape}")


def adam_reference_step(theta, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """One step of Adam as Kingma and Ba (2015) write it in Algorithm 1: ``(theta, m, v)``.

    The textbook form, line by line, on plain arrays and without touching its
    inputs; ``t`` counts from 1 and ``m``, ``v`` start at 0. It is the oracle
    that ``Adam`` is tested against and the form tutorial 6 shows; ``Adam``
    is this update with its constants folded and its passes blocked.
    Derivation: ``derivations.md#adam``.
    """
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return theta - lr * m_hat / (v_hat**0.5 + eps), m, v


class Adam:
    """Adam (Kingma and Ba, 2015, Algorithm 1), with optional AdamW decay.

    This class is ``adam_reference_step`` (Algorithm 1 as written) made fast:
    the same update with its constants folded and its passes blocked, as
    follows.

    For each parameter theta with gradient g, at step t = 1, 2, ...:

        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        theta = theta - lr m_hat / (sqrt(v_hat) + eps)

    The code keeps the two moments without their constant factors, as the
    decaying sums ``m_sum = m / (1 - beta1)`` and ``v_sum = v / (1 - beta2)``:

        m_sum = beta1 m_sum + g
        v_sum = beta2 v_sum + g^2
        theta = theta - step_t m_sum / (sqrt(v_sum) + eps_t)

    with the constants and bias corrections folded into two scalars a step,
        step_t = lr (1 - beta1) / (1 - beta1^t) sqrt((1 - beta2^t) / (1 - beta2))
        eps_t  = eps sqrt((1 - beta2^t) / (1 - beta2)).
    This is Algorithm 1 exactly in real arithmetic, with two fewer passes
    over the arrays a step (ten) (derivation: ``derivations.md#adam``).
    ``weight_decay`` > 0 first shrinks theta by (1 - lr weight_decay), the
    decoupled decay of AdamW (Loshchilov and Hutter, 2019).

    Subnormals: where a gradient is exactly zero (a dead ReLU unit), the sums
    decay geometrically into float32's subnormal range, which CPUs process
    many times slower. Every ``flush_every`` steps, entries smaller in
    magnitude than the dtype's smallest normal number are set to zero. Their
    effect on the update is below float32's rounding, and zero stays zero
    while the gradient is zero.
    """

    def __init__(self, params, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, flush_every=50):
        _check_pairs(params, grads)
        if not lr > 0:
            raise ConfigError(f"lr={lr!r} must be positive")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"betas={betas!r} must lie in [0, 1)")
        self.params, self.grads = params, grads
        self.lr, self.beta1, self.beta2 = lr, betas[0], betas[1]
        self.eps, self.weight_decay, self.flush_every = eps, weight_decay, flush_every
        self.t = 0
        self.m_sum = {k: xp_of(p).zeros_like(p) for k, p in params.items()}
        self.v_sum = {k: xp_of(p).zeros_like(p) for k, p in params.items()}
        self._tmp = {}  # per key, scratch for one block per thread (``_scratch``)

    def step(self):
        """One update of every parameter from its gradient, in place.

        Derivation: ``derivations.md#adam``.
        """
        self.t += 1
        b1, b2, t = self.beta1, self.beta2, self.t
        # lr m_hat / (sqrt(v_hat) + eps) == step m_sum / (sqrt(v_sum) + eps_t):
        scale = ((1 - b2**t) / (1 - b2)) ** 0.5
        step = self.lr * (1 - b1) / (1 - b1**t) * scale
        eps_t = self.eps * scale
        flush = self.flush_every and t % self.flush_every == 0
        for k, theta in self.params.items():
            arrays = [a.reshape(-1) for a in (theta, self.grads[k], self.m_sum[k], self.v_sum[k])]
            # On the CPU, in blocks that stay in cache through all the passes
            # below (about 1.7x faster on a 650k-parameter model than whole arrays).
            # The blocks are shared out across npvae's threads (npvae.parallel),
            # each part with its own scratch.
            block = _block(theta)
            parts = parallel.split(-(-theta.size // block), parallel.pass_parts())
            scratch = self._scratch(k, len(parts))
            first_block = {first: p for p, (first, _) in enumerate(parts)}

            def update(first, last):  # blocks first .. last - 1
                tmp = scratch[first_block[first]]
                for start in range(first * block, min(last * block, theta.size), block):
                    views = [a[start:start + block] for a in arrays]
                    self._update(*views, tmp[:views[0].size], step, eps_t, flush)
            parallel.run(update, parts)

    def _scratch(self, k, parts):
        """(parts, block) scratch for key k: one block of the update per thread (the whole
        tensor off the CPU)."""
        p = self.params[k]
        if k not in self._tmp or len(self._tmp[k]) < parts:
            self._tmp[k] = xp_of(p).empty((parts, _block(p)), dtype=p.dtype)
        return self._tmp[k]

    def _update(self, theta, g, m_sum, v_sum, tmp, step, eps_t, flush):
        """The update of one block of 1-D views, in place; ``tmp`` is scratch."""
        xp = xp_of(theta)
        if self.weight_decay:
            theta *= 1 - self.lr * self.weight_decay
        m_sum *= self.beta1                  # m_sum = b1 m_sum + g
        m_sum += g
        v_sum *= self.beta2                  # v_sum = b2 v_sum + g^2
        xp.multiply(g, g, out=tmp)
        v_sum += tmp
        xp.sqrt(v_sum, out=tmp)              # theta -= step m_sum / (sqrt(v_sum) + eps_t)
        tmp += eps_t
        xp.divide(m_sum, tmp, out=tmp)
        tmp *= step
        theta -= tmp
        if flush:
            flush_subnormals(m_sum)
            flush_subnormals(v_sum)

    def state_dict(self):
        """Step count and moment sums, as arrays keyed ``m_sum.<name>``, ``v_sum.<name>``."""
        return {"t": self.t, **{f"m_sum.{k}": a for k, a in self.m_sum.items()},
                **{f"v_sum.{k}": a for k, a in self.v_sum.items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.params:
            self.m_sum[k][...] = state[f"m_sum.{k}"]
            self.v_sum[k][...] = state[f"v_sum.{k}"]


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum, as PyTorch's.

        velocity = momentum * velocity + g
        theta    = theta - lr * velocity

    With ``momentum=0`` this is plain gradient descent. ``weight_decay`` adds
    weight_decay * theta to g (L2 regularisation).
    """

    def __init__(self, params, grads, lr=1e-2, momentum=0.0, weight_decay=0.0):
        _check_pairs(params, grads)
        if not lr > 0:
            raise ConfigError(f"lr={lr!r} must be positive")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum={momentum!r} must lie in [0, 1)")
        self.params, self.grads = params, grads
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.t = 0
        self.velocity = {k: xp_of(p).zeros_like(p) for k, p in params.items()}

    def step(self):
        """One update of every parameter from its gradient, in place.

        Derivation: ``derivations.md#adam`` (its part on SGD with momentum).
        """
        self.t += 1
        for k, theta in self.params.items():
            g, velocity = self.grads[k], self.velocity[k]
            velocity *= self.momentum
            velocity += g
            if self.weight_decay:
                velocity += self.weight_decay * theta
            theta -= self.lr * velocity

    def state_dict(self):
        return {"t": self.t, **{f"velocity.{k}": u for k, u in self.velocity.items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.params:
            self.velocity[k][...] = state[f"velocity.{k}"]


def _block(p):
    """Elements per block of Adam's update of ``p``: BLOCK on the CPU, all elsewhere."""
    return min(p.size, BLOCK) if xp_of(p) is np else p.size


def flush_subnormals(a):
    """Set the entries of ``a`` that are subnormal (|a| < tiny) to zero, in place."""
    xp = xp_of(a)
    a[xp.abs(a) < xp.finfo(a.dtype).tiny] = 0


def global_norm(grads):
    """sqrt(sum of every squared gradient entry), as a 0-d array."""
    arrays = list(grads.values())
    xp = xp_of(arrays[0])
    return xp.sqrt(sum(xp.vdot(g.ravel(), g.ravel()) for g in arrays))


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place so their global norm is at most ``max_norm``.

    Returns the norm before clipping. The scale min(1, max_norm / norm) is
    computed on the arrays' own device: no host round-trip.
    Derivation: ``derivations.md#adam`` (its part on clipping).
    """
    if not max_norm > 0:
        raise ConfigError(f"max_norm={max_norm!r} must be positive")
    norm = global_norm(grads)
    scale = xp_of(norm).minimum(1.0, max_norm / (norm + 1e-12))
    for g in grads.values():
        g *= scale.astype(g.dtype)
    return norm
