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

from .backend import xp_of
from .errors import ConfigError

BLOCK = 65536
"""Elements per block of Adam's update on the CPU: its five float32 arrays of
this length (1.3 MB) stay in cache through the update's twelve passes."""


def _check_pairs(params, grads):
    if params.keys() != grads.keys():
        raise ConfigError(f"params and grads must have the same keys; got {sorted(params)} "
                          f"and {sorted(grads)}")
    for k in params:
        if params[k].shape != grads[k].shape:
            raise ConfigError(f"params[{k!r}] has shape {params[k].shape} but grads[{k!r}] "
                              f"has shape {grads[k].shape}")


class Adam:
    """Adam (Kingma and Ba, 2015, Algorithm 1), with optional AdamW decay.

    For each parameter theta with gradient g, at step t = 1, 2, ...:

        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        theta = theta - lr m_hat / (sqrt(v_hat) + eps)

    computed in the equivalent order of the paper's section 2 (the bias
    corrections folded into one step size) to save passes over the arrays.
    ``weight_decay`` > 0 first shrinks theta by (1 - lr weight_decay), the
    decoupled decay of AdamW (Loshchilov and Hutter, 2019).

    Subnormals: where a gradient is exactly zero (a dead ReLU unit), m and v
    decay geometrically into float32's subnormal range, which CPUs process
    many times slower. Every ``flush_every`` steps, entries smaller in
    magnitude than the dtype's smallest normal number are set to zero. Their
    effect on the update is below float32's rounding (m_hat < 1e-38 against
    eps = 1e-8), and zero stays zero while the gradient is zero.
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
        self.m = {k: xp_of(p).zeros_like(p) for k, p in params.items()}
        self.v = {k: xp_of(p).zeros_like(p) for k, p in params.items()}
        # Scratch for one block of the update (the whole tensor off the CPU).
        self._tmp = {k: xp_of(p).empty(_block(p), dtype=p.dtype) for k, p in params.items()}

    def step(self):
        """One update of every parameter from its gradient, in place.

        Derivation: ``derivations.md#adam``.
        """
        self.t += 1
        b1, b2, t = self.beta1, self.beta2, self.t
        # lr m_hat / (sqrt(v_hat) + eps) == step m / (sqrt(v) + eps_hat):
        step = self.lr * (1 - b2**t) ** 0.5 / (1 - b1**t)
        eps_hat = self.eps * (1 - b2**t) ** 0.5
        flush = self.flush_every and t % self.flush_every == 0
        for k, theta in self.params.items():
            arrays = [a.reshape(-1) for a in (theta, self.grads[k], self.m[k], self.v[k])]
            # On the CPU, in blocks that stay in cache through all the passes
            # below (about 1.7x faster on a 650k-parameter model than whole arrays).
            block = _block(theta)
            for start in range(0, theta.size, block):
                views = [a[start:start + block] for a in arrays]
                self._update(*views, self._tmp[k][:views[0].size], step, eps_hat, flush)

    def _update(self, theta, g, m, v, tmp, step, eps_hat, flush):
        """Algorithm 1's update of one block of 1-D views, in place; ``tmp`` is scratch."""
        xp = xp_of(theta)
        b1, b2 = self.beta1, self.beta2
        if self.weight_decay:
            theta *= 1 - self.lr * self.weight_decay
        m *= b1                              # m = b1 m + (1 - b1) g
        xp.multiply(g, 1 - b1, out=tmp)
        m += tmp
        v *= b2                              # v = b2 v + (1 - b2) g^2
        xp.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v += tmp
        xp.sqrt(v, out=tmp)                  # theta -= step m / (sqrt(v) + eps_hat)
        tmp += eps_hat
        xp.divide(m, tmp, out=tmp)
        tmp *= step
        theta -= tmp
        if flush:
            flush_subnormals(m)
            flush_subnormals(v)

    def state_dict(self):
        """Step count and moment estimates, as arrays keyed ``m.<name>``, ``v.<name>``."""
        return {"t": self.t, **{f"m.{k}": m for k, m in self.m.items()},
                **{f"v.{k}": v for k, v in self.v.items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.params:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]


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
