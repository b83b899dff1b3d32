"""A conv VAE's training step over its batch in fixed chunks of examples, the chunks at once.

The loss is a mean over the batch, so its gradient is a weighted sum of the
chunks' own mean gradients (``derivations.md#the-whole-elbo``): for chunks
c of n_c examples out of B,

    loss = sum_c (n_c / B) loss_c,      dtheta = sum_c (n_c / B) dtheta_c.

Each chunk's backward takes 1/B per example, not 1/n_c
(``VAE.backward(batch=B)``), so it gives (n_c / B) dtheta_c itself and
the chunks' gradients are simply added: one pass over the parameters.

``step_in_chunks`` runs each chunk's forward and backward through a
*replica* of the model, a second set of the same layers that shares the
model's parameter arrays but keeps its own gradients and its own
activations, and adds the chunks' gradients up into the model's ``dtheta``
in chunk order (``parallel.add_in_order``, in blocks across the threads).
With several threads (``npvae.parallel``) the chunks run at once: with as
many threads as chunks each runs whole on its thread, no hand-overs inside
it; with more threads each chunk splits its products and passes across its
share of them. The noise is the same draw as the unsplit step's, cut by
rows.

Why only the conv architecture: its step is many large elementwise passes
(im2col, col2im, ReLU) between products, 34 hand-overs to the thread pool
a step, which a chunk whole on its thread does without. On 2 CPUs
(``python benchmarks/chunked_step.py``, ``results/chunked_step.json``) the
conv preset's step took 0.95x the time of the whole batch's at 2 threads
and 0.94x at one (a chunk's arrays fit the caches better); the MLP's step,
small products and few passes, took 0.98x and 1.15x in chunks, so it keeps
the whole batch (the chunks are fixed by the batch, not by the threads, so
they would cost their 15% at one thread too).

The chunks are fixed by the batch (``CHUNK`` examples each, the last one
shorter), not by the threads, so the results are the same bits with any
number of threads. Against the unsplit step they differ within float32
rounding: the weight gradients are summed chunk by chunk
(``tests/test_chunked.py`` compares the two in float64 and float32).
"""

import numpy as np

from . import parallel
from .vae import VAE, LossTerms

CHUNK = 64   # examples per chunk


def splits(model, batch, objective=None):
    """Whether a step of ``model`` on ``batch`` examples runs in chunks: a plain ``VAE`` of the
    conv architecture on NumPy, its own ELBO as the loss, more than ``CHUNK`` examples."""
    return (type(model) is VAE and model.config["architecture"] == "conv"
            and model.xp is np and objective is None and batch > CHUNK)


def replicas(model, n):
    """``n`` replicas of ``model``: the same layers, sharing the model's parameter arrays
    (each layer's ``params`` is the model's own dict), each with its own gradients.
    Kept on the model and made again if its parameters were replaced."""
    kept = getattr(model, "_replicas", [])
    if not kept or kept[0].theta is not model.theta:
        kept = []
    while len(kept) < n:
        replica = VAE(**model.config)
        for mine, theirs in zip(replica.encoder.layers + replica.decoder.layers,
                                model.encoder.layers + model.decoder.layers):
            mine.params = theirs.params
        replica.theta = model.theta
        kept.append(replica)
    model._replicas = kept
    return kept[:n]


def step_in_chunks(model, x, *, eps=None, rng=None, beta=None, check=True):
    """The loss terms of batch ``x`` (B, D), as ``model.forward``, with ``model.dtheta``
    filled as ``model.backward`` fills it: chunk by chunk (module docstring).

    ``eps`` (B, Z) or a ``Generator`` ``rng`` gives the noise, drawn as the
    unsplit step draws it; ``beta`` and ``check`` as in ``VAE.forward``.
    """
    x = model.check_input(x, values=check)
    B = x.shape[0]
    eps = model.noise(B, eps, rng)     # the whole batch's, as VAE.forward checks or draws it
    beta = model.beta if beta is None else beta
    starts = list(range(0, B, CHUNK))
    parts, terms = replicas(model, len(starts)), [None] * len(starts)

    def chunks(first, last):  # chunks first .. last - 1, each through its replica
        for c in range(first, last):
            rows = slice(starts[c], starts[c] + CHUNK)
            terms[c] = parts[c].forward(x[rows], eps=eps[rows], beta=beta, check=False)
            parts[c].backward(batch=B)   # its share of the batch's gradient: 1/B per example
    parallel.run(chunks, parallel.split(len(starts)))
    parallel.add_in_order([part.dtheta for part in parts], model.dtheta)
    weights = [parts[c].x.shape[0] / B for c in range(len(starts))]
    return LossTerms(*(sum(w * t[i] for w, t in zip(weights, terms)) for i in range(3)))

