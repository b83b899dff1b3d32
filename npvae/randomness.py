"""Randomness: every random number of a run, from its one seed.

Every generator is derived from the run's ``seed`` (``derive_seed``:
``np.random.SeedSequence(seed, spawn_key=(stream, ...))``), one independent
stream per use (``STREAMS``): the initial weights, the validation split, the
shuffle, the reparameterization noise, the dynamic binarization, the
evaluation noise, the one binarization of the test set, the figures, a VQ-VAE's
dead-code restarts (one generator per restart, ``npvae.vqtrain``) and its learned
prior (``npvae.prior``). The global RNG is never used.

The shuffle, noise and binarization generators are derived afresh for every
epoch (``epoch_generators``), so an epoch's random numbers depend on (seed,
epoch) alone. A checkpoint taken in the middle of an epoch stores their states
(``saved_states``) and the step reached; resuming brings fresh generators of
that epoch back there (``resume_generators``): NumPy's take the stored states,
others (CuPy's cannot be serialised) replay the steps' draws, which ends in
the same states. That is why 5 + 5 epochs give exactly the numbers of 10,
bit for bit, even when the first run stopped mid-epoch.
"""

import numpy as np

from .backend import default_rng
from .errors import CheckpointError

# One independent random stream per use; see the module docstring.
STREAMS = {"init": 0, "split": 1, "shuffle": 2, "noise": 3, "binarize": 4, "eval": 5,
           "test_binarize": 6, "figures": 7, "restart": 8, "prior": 9}


def derive_seed(seed, stream, *index):
    """An integer seed for ``stream`` (and e.g. the epoch ``index``) derived from ``seed``."""
    ss = np.random.SeedSequence(seed, spawn_key=(STREAMS[stream], *index))
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def stream(seed, name):
    """A NumPy generator of stream ``name`` of ``seed`` (for the streams drawn on the host)."""
    return np.random.default_rng(derive_seed(seed, name))


def epoch_generators(seed, epoch, xp=np, binarize=False):
    """The generators of one epoch: ``(shuffle, noise, binarize)``, from (seed, epoch) alone.

    ``shuffle`` is NumPy's (the order lives on the host); ``noise`` and
    ``binarize`` are the backend ``xp``'s; ``binarize`` is None unless asked for.
    """
    shuffle = np.random.default_rng(derive_seed(seed, "shuffle", epoch))
    noise = default_rng(derive_seed(seed, "noise", epoch), xp)
    return shuffle, noise, (default_rng(derive_seed(seed, "binarize", epoch), xp)
                            if binarize else None)


def saved_states(shuffle_epoch_start, noise, binarize, xp):
    """What a mid-epoch checkpoint stores of the epoch's generators (JSON-able).

    The shuffle's state at the epoch's start (its order is drawn at once),
    and the noise and binarization states where NumPy's (None otherwise:
    ``resume_generators`` replays those).
    """
    numpy = xp is np
    return {"shuffle_epoch_start": shuffle_epoch_start,
            "noise": noise.bit_generator.state if numpy else None,
            "binarize": binarize.bit_generator.state if numpy and binarize is not None else None}


def resume_generators(seed, epoch, xp, binarize, stored, draws, dtype, where="checkpoint"):
    """The generators of ``epoch``, brought to where a checkpoint left them.

    ``stored``: the checkpoint's ``saved_states``. ``draws``: the shapes that
    the steps already taken drew (in ``dtype``), in order, as
    ``(binarize_shape, noise_shape)`` pairs, e.g. ``((B, D), (B, Z))``; they
    are replayed (``replay``) when the stored states cannot be set
    (``restore_states``). A malformed state is a ``CheckpointError`` naming
    ``where``.
    """
    shuffle, noise, binarizer = epoch_generators(seed, epoch, xp, binarize)
    try:
        shuffle.bit_generator.state = stored["shuffle_epoch_start"]
        if not restore_states(noise, binarizer, stored, xp):
            replay(noise, binarizer, draws, dtype)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{where}: bad generator state ({err!r})") from err
    return shuffle, noise, binarizer


def restore_states(noise, binarize, stored, xp):
    """Give NumPy generators their stored states; False (nothing set) where that cannot be."""
    pairs = [(noise, stored.get("noise")), (binarize, stored.get("binarize"))]
    if xp is not np or any(rng is not None and state is None for rng, state in pairs):
        return False
    for rng, state in pairs:
        if rng is not None:
            rng.bit_generator.state = state
    return True


def step_draws(steps, n, batch_size, x_dim, latent, k=None):
    """What the first ``steps`` steps of an epoch over ``n`` examples draw, in order:
    ``(binarize_shape, noise_shape)`` a step, ``((B, x_dim), (B, latent))``, or
    ``(k, B, latent)`` noise for a k-sample objective (``k`` not None)."""
    for step in range(steps):
        b = min(batch_size, n - step * batch_size)
        yield (b, x_dim), ((b, latent) if k is None else (k, b, latent))


def replay(noise, binarize, draws, dtype):
    """Draw again, in order, what the steps ``draws`` describes drew (see ``resume_generators``)."""
    for binarize_shape, noise_shape in draws:
        if binarize is not None:
            binarize.random(binarize_shape, dtype=dtype)
        noise.standard_normal(noise_shape, dtype=dtype)
