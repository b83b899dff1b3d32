"""What training adds for a VQ-VAE (``npvae.vqvae``), beside ``npvae.train``'s loop.

A VQ-VAE's step is the VAE's (``train.train_step``: forward, backward, clip,
Adam), then the codebook's moving-average update under ``codebook_update
ema`` (``VQVAE.update_codebook``). Around the step, the run adds:

- **dead-code restarts** (``restart_due``, ``after_step``): every
  ``restart_every`` steps, the codes that no position chose since the last
  restart move onto vectors z_e of the batch just trained on
  (``VQVAE.restart_dead_codes``). The vectors are drawn by a generator
  derived from (seed, global step) alone (``restart_generator``), so a run
  resumed from a checkpoint restarts the same codes at the same vectors as
  one never stopped; the counts since the last restart are kept in the
  checkpoint with the model's other buffers (``VQVAE.buffers``).
- **code usage** of the epoch's training batches (``VQRun.usage``, N counts),
  kept in a mid-epoch checkpoint's partial sums, from which the epoch's
  perplexity and dead codes come (``usage_terms``).

The per-epoch metrics of a VQ run: train and test loss, recon, codebook,
commitment (nats per example), perplexity and dead codes
(``npvae.evaluate.evaluate_vq`` for the test set).
"""

import numpy as np

from .backend import to_numpy
from .randomness import derive_seed
from .vq import dead_codes, perplexity

TERMS = ("loss", "recon", "codebook", "commitment")
"""The loss terms a VQ-VAE's step reports (``VQLossTerms``), summed over an epoch's examples."""


def restart_generator(seed, global_step):
    """The NumPy generator that draws the vectors of the restart after ``global_step`` steps."""
    return np.random.default_rng(derive_seed(seed, "restart", global_step))


def restart_due(restart_every, global_step):
    """Whether dead codes are restarted after step ``global_step`` (from 1): every
    ``restart_every`` steps; never when it is 0 or None."""
    return bool(restart_every) and global_step % restart_every == 0


def after_step(model, seed, restart_every, global_step):
    """After step ``global_step`` of a VQ-VAE (its optimizer step and EMA update done):
    restart the dead codes when due. Returns the restarted codes' indices (maybe empty), or
    None when no restart was due. ``train.fit`` and ``VQRun`` both call it."""
    if not restart_due(restart_every, global_step):
        return None
    return model.restart_dead_codes(restart_generator(seed, global_step))[1]


def usage_terms(counts):
    """``{"perplexity": exp(entropy), "dead_codes": count}`` of code counts (N,) (``npvae.vq``)."""
    return {"perplexity": perplexity(counts), "dead_codes": int(dead_codes(counts).size)}


class VQRun:
    """A run's VQ bookkeeping: ``after_step`` on its schedule, and the epoch's code usage.

    ``usage`` (N,) on the model's device counts the codes of every training
    batch of the epoch; ``start_epoch(sums)`` takes it from a mid-epoch
    checkpoint's partial sums (their ``"usage"``, a list) or starts at 0, and
    ``save_usage(sums)`` writes it there before such a checkpoint.
    """

    def __init__(self, model, config):
        self.model, self.seed, self.restart_every = model, config.seed, config.restart_every
        self.usage = model.xp.zeros(model.config["n_codes"], dtype=np.int64)

    def start_epoch(self, sums):
        """Count this epoch's codes from where ``sums`` (partial sums, maybe resumed) left them."""
        saved = sums.pop("usage", None)
        self.usage[...] = 0 if saved is None else self.model.xp.asarray(saved, dtype=np.int64)

    def after_step(self, global_step):
        """Count the step's codes; restart the dead codes when due (``after_step``)."""
        codes = self.model.codes.reshape(-1)
        self.usage += self.model.xp.bincount(codes, minlength=self.usage.size)
        after_step(self.model, self.seed, self.restart_every, global_step)

    def save_usage(self, sums):
        """Put the epoch's usage so far into ``sums`` (JSON-able), for a mid-epoch checkpoint."""
        sums["usage"] = [int(c) for c in to_numpy(self.usage)]

    def train_usage(self):
        """The epoch's training perplexity and dead codes (``usage_terms``)."""
        return usage_terms(to_numpy(self.usage))

    def fit_prior(self, run_dir, data, config, log):
        """The learned prior over the trained VQ-VAE's codes, ``run_dir/prior.npz``: the run's
        ``prior_epochs``, ``npvae.prior``'s other defaults (``npvae train-prior RUN`` sets them)."""
        from .prior import fit_run_prior

        log(f"learned prior over the codes (the VQ-VAE is saved; to redo or change it: "
            f"npvae train-prior {run_dir})")
        fit_run_prior(self.model, run_dir, data.x_train, data.x_test, binarize=config.binarize,
                      seed=config.seed, epochs=config.prior_epochs,
                      show_progress=config.progress, log=log)
