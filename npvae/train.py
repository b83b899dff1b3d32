"""Training: one step, a plain loop, and the run that wraps them.

Read this file from the top. A training step on a minibatch ``x`` (B, D) is
four lines (``train_step``)::

    terms = model.forward(x, rng=rng, beta=beta)   # loss, recon, kl (nats per example)
    model.backward()                               # fills model.grads (views into dtheta)
    clip_grad_norm(optimizer.grads, clip)          # optional
    optimizer.step()                               # Adam on the flat buffer theta

and an epoch is that step on every minibatch of a fresh shuffle (``fit``).

Everything else is bookkeeping around that loop, in ``Run`` below: the run
folder (``npvae.runs``), checkpoints every epoch, exact resume, a progress
bar, figures, stopping cleanly on a NaN (divergence), on ``max_steps`` or on
Ctrl-C. ``train(config, run_dir)`` starts a run from a ``TrainConfig``
(``npvae.config``) and ``resume(run_dir)`` continues one, so that 5 + 5
epochs give exactly the numbers of 10 epochs, bit for bit, even when the
first run was stopped in the middle of an epoch.

A VQ-VAE (``npvae.vqvae``) takes the same step, without noise or KL, and its
codebook's moving-average update after the optimizer's (EMA updates only);
the run adds its dead-code restarts and code usage (``npvae.vqtrain``).

Randomness. Each epoch draws its shuffle, reparameterization noise and
dynamic binarization from generators derived from (seed, epoch) alone; a
checkpoint taken mid-epoch stores their states. ``npvae.randomness`` says how.

Host and device. The data is moved to the backend once. Inside an epoch the
run reads nothing back but the per-step loss terms (and, with ``clip``, the
gradient norm), in groups (every step on NumPy, where reading is free; every
``FLUSH_EVERY_DEVICE`` steps otherwise), to check that they are finite, sum
them and show them in the progress bar. Without ``clip`` the gradient norm is
not taken (it would be a pass over every gradient, for nothing): a gradient
that is not finite makes the parameters and so the next step's loss NaN,
which stops training there.

Interrupts. Ctrl-C (SIGINT) during training is deferred to the end of the
current step; the run then saves a checkpoint of that position and raises
``Interrupted`` (``npvae.progress``, which also draws the progress bar).
"""

import itertools
import math
import os
import time
from collections import namedtuple
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import progress
from .backend import default_rng, to_numpy
from .chunked import splits, step_in_chunks
from .checkpoint import CHECKPOINT_NAME, restore_model, restore_optimizer, save_checkpoint
from .config import TrainConfig
from .cvae import check_labels, model_from_config
from .data import batches, binarize_dynamic, prepare_data
from .errors import CheckpointError, ConfigError, DivergenceError
from .evaluate import evaluate_elbo, evaluate_vq
from .hvae import k_sample_objective
from .iwae import check_step
from .optim import Adam, clip_grad_norm
from .progress import Interrupted
from .randomness import (derive_seed, epoch_generators, resume_generators, saved_states,
                         step_draws, stream)
from .runs import (ELBO_TERMS, check_state, claim_existing_run, claim_run_dir, format_row,
                   metrics_row, new_state, new_sums, open_checkpoint, repair_metrics, write_config,
                   write_metrics)
from .vae import VAE
from .vqtrain import TERMS as VQ_TERMS, VQRun, after_step as vq_after_step
from .vqvae import is_vq

StepTerms = namedtuple("StepTerms", ["loss", "recon", "kl", "grad_norm"])
StepTerms.__doc__ = ("A step's loss and its two terms (nats per example, 0-d arrays) and the "
                     "gradient's global norm before clipping (None without clipping).")
VQStepTerms = namedtuple("VQStepTerms", ["loss", "recon", "codebook", "commitment", "grad_norm"])
VQStepTerms.__doc__ = "A VQ-VAE's step: its loss, three terms (``VQLossTerms``) and gradient norm."


# ---------------------------------------------------------------- the step and the loop


def train_step(model, optimizer, x, *, rng=None, eps=None, beta=None, clip=None, check=True,
               y=None, objective=None):
    """One step of gradient descent on the minibatch ``x`` (B, D): a ``StepTerms``.

    Forward (the loss terms, with noise ``eps`` (B, Z) or drawn from ``rng``),
    backward (every gradient), optional clipping of the gradient's global norm
    to ``clip``, and one optimizer step. ``beta`` overrides the model's KL
    weight for this step (warm-up); ``check=False`` skips the scan of ``x``
    for NaN and out-of-range pixels, for data checked once beforehand.
    ``y``: the labels (B,) of a conditional model. ``objective``: a loss in
    place of the model's own, e.g. ``npvae.iwae.KSampleObjective`` (k samples
    per example; ``eps`` then has shape (k, B, Z)).

    A VQ-VAE (``npvae.vqvae``) draws no noise and has no KL (``rng``, ``eps``
    and ``beta`` are unused); after the optimizer's step its codebook takes
    its moving-average update (``update_codebook``, EMA updates only). It
    returns a ``VQStepTerms``.
    """
    loss = model if objective is None else objective
    labels = {} if y is None else {"y": y}  # models without labels need not take y
    vq = is_vq(getattr(model, "config", None))  # a hand-made model (tutorial 11) has none
    noise = {} if vq else dict(rng=rng, eps=eps, beta=beta)
    if splits(model, x.shape[0], objective):     # a conv VAE: chunks of examples at once
        terms = step_in_chunks(model, x, check=check, **noise)
    else:
        terms = loss.forward(x, check=check, **noise, **labels)
        loss.backward()
    grad_norm = clip_grad_norm(optimizer.grads, clip) if clip else None
    optimizer.step()
    if vq:
        model.update_codebook()
        return VQStepTerms(*terms, grad_norm)
    return StepTerms(terms.loss, terms.recon, terms.kl, grad_norm)


def fit(model, optimizer, x, *, epochs=1, batch_size=128, seed=0, beta=None, clip=None,
        log=print, restart_every=0):
    """The plain training loop: ``epochs`` passes over ``x`` (N, D) in shuffled minibatches.

    Each epoch shuffles with its own generator and draws the noise from
    another (``epoch_generators``), so ``fit`` takes exactly the steps that
    ``train`` takes for the same seed, model and optimizer (without warm-up,
    binarization or validation, which ``train`` adds). A VQ-VAE's dead codes
    are restarted every ``restart_every`` steps as ``train`` does
    (``npvae.vqtrain.after_step``; 0: never). Returns the mean training loss
    of each epoch (nats per example).
    """
    x = model.check_input(x)  # once: the steps skip the check
    if restart_every and not is_vq(model.config):
        raise ConfigError(f"restart_every={restart_every!r}: only a VQ-VAE has codes to restart")
    history, step = [], 0
    for epoch in range(epochs):
        shuffle, noise, _ = epoch_generators(seed, epoch, model.xp)
        total = 0.0
        for index in batches(len(x), batch_size, shuffle):
            terms = train_step(model, optimizer, x[index], rng=noise, beta=beta, clip=clip,
                               check=False)
            step += 1
            if restart_every:
                vq_after_step(model, seed, restart_every, step)
            total += float(terms.loss) * len(index)
        history.append(total / len(x))
        log(f"epoch {epoch + 1}/{epochs}  train loss {history[-1]:.4f}")
    return history


# ---------------------------------------------------------------- the run around the loop


FLUSH_EVERY_DEVICE = 20

Step = namedtuple("Step", ["epoch", "step", "global_step", "x", "terms"])
Step.__doc__ = ("What ``on_step`` receives after every step: the epoch (from 0), the step in "
                "it (from 1), the global step, the minibatch and its ``StepTerms``.")


@dataclass
class TrainResult:
    """What a call to ``train`` or ``resume`` ended with."""

    run_dir: Path
    model: VAE
    optimizer: Adam
    metrics: list
    state: dict
    completed: bool            # every epoch done (False: stopped at max_steps)


def train(config=None, run_dir=None, *, overwrite=False, log=print, on_step=None):
    """Train a VAE as ``config`` (a ``TrainConfig``; default: the default preset) says.

    ``run_dir``: the run folder (see ``npvae.runs.claim_run_dir``). ``log``
    receives each line of output. ``on_step(step)`` is called with a ``Step``
    after every completed step (benchmarks watch the batches with it; raising
    ``KeyboardInterrupt`` in it acts as Ctrl-C). Returns a ``TrainResult``;
    raises ``DivergenceError`` when a loss term or the gradient turns NaN or
    infinite, ``Interrupted`` after Ctrl-C.
    """
    config = (config or TrainConfig()).validate()
    data = prepare_data(config)
    # The model before the folder: one too large for memory fails here and leaves no folder.
    model = model_from_config(**config.model_kwargs(data.x_train.shape[1]))
    check_before_claiming(config, data, model)
    optimizer = _adam(model, config)
    run_dir, note, lock = claim_run_dir(run_dir, config.preset, overwrite)
    with lock:
        log(f"run folder: {run_dir}{note}")
        write_config(run_dir, config, model, data)
        log(f"model: {model!r}, {model.theta.size} parameters; {len(data.x_train)} training "
            f"examples, batch {config.batch_size}, {config.epochs} epochs, Adam lr "
            f"{config.lr:g}" + ("" if config.k_sample_objective() is None
                               else f", objective {config.objective} with k={config.k}"))
        return Run(config, run_dir, data, model, optimizer, new_state(config, data), log,
                   on_step).run()


def check_before_claiming(config, data, model):
    """What a run would refuse later, refused before it claims a folder: a conditional run's
    labels (``cvae.check_labels``), and the k-sample step's real size (``iwae.check_step``)."""
    if config.conditional:
        for name, y in (("training", data.y_train), ("test", data.y_test),
                        ("validation", data.y_val)):
            if y is not None:
                check_labels(y, model.n_classes, f"the {name} labels")
    if not config.is_vq():   # (a VQ-VAE takes no k samples)
        check_step(model, config.k, config.batch_size)


def _adam(model, config):
    """Adam over the model's flat parameters, with the run's learning rate and epsilon."""
    return Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr,
                eps=config.adam_eps)


def resume(run_dir, *, max_steps=None, log=print, on_step=None, **changes):
    """Continue the run in ``run_dir`` from its ``checkpoint.npz``.

    Everything that shapes the numbers (model, optimizer, seeds, data
    preprocessing) comes from the checkpoint; ``changes`` may set the
    settings in ``npvae.config.RESUMABLE`` (``epochs`` may raise the total
    number of epochs). ``max_steps`` applies to this call only. The result
    equals that of one uninterrupted run.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"resume={str(run_dir)!r}: not a run folder (resume takes the folder)")
    seen = _identity(path) if path.is_file() else None
    checkpoint, _ = open_checkpoint(run_dir)
    state = check_state(path, checkpoint.state)
    config = TrainConfig.from_checkpoint(checkpoint).with_changes(**changes)
    config.max_steps = max_steps
    config.validate()
    if state["epoch"] == config.epochs and state["step_in_epoch"] == 0:
        log(f"nothing to do: {run_dir} is finished ({state['epoch']} of {config.epochs} epochs "
            f"trained); pass --epochs N (more than {state['epoch']}) to train further")
        model = model_from_config(**config.model_kwargs(checkpoint.model_config["x_dim"]))
        restore_model(checkpoint, model)
        return TrainResult(run_dir, model, None, state["metrics"], state, completed=True)
    started = state["epoch"] + (1 if state["step_in_epoch"] else 0)
    if config.epochs < started:
        done = "begun" if state["step_in_epoch"] else "trained"
        raise ConfigError(f"epochs={config.epochs} is fewer than the {started} epochs "
                          f"{run_dir} has already {done}")
    data = prepare_data(config)
    if data.summary() != state.get("data"):
        raise CheckpointError(f"{path}: the data differs from the run's: {data.summary()} now, "
                              f"{state.get('data')} then")
    model = model_from_config(**config.model_kwargs(data.x_train.shape[1]))
    restore_model(checkpoint, model)  # (refuses a checkpoint whose model differs from its config)
    optimizer = _adam(model, config)
    restore_optimizer(checkpoint, optimizer)
    state["train_config"] = asdict(config)
    with claim_existing_run(run_dir):
        if _identity(path) != seen:  # rewritten by another process before the claim
            raise ConfigError(f"{path} changed while resuming it; try again")
        repair_metrics(run_dir, state["metrics"])
        write_config(run_dir, config, model, data)
        log(f"resuming {run_dir} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']} "
            f"(global step {state['global_step']}) of {config.epochs} epochs")
        return Run(config, run_dir, data, model, optimizer, state, log, on_step).run()


def _identity(path):
    """What changes when an atomic write replaces ``path``."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def divergence(config, path, saved_at, where, term, value):
    """The ``DivergenceError`` of a loss ``term`` that turned ``value`` (NaN or infinite) at
    ``where``: what was kept of the checkpoint at ``path`` (``saved_at``: (epoch, global step)
    of the one on disk, or None), and what to try."""
    if saved_at is not None:
        kept = f"the last good checkpoint {path} (global step {saved_at[1]}) is kept untouched"
    else:
        kept = "no checkpoint had been written yet"
    clip = f"a smaller --clip (now {config.clip})" if config.clip else "--clip (e.g. --clip 10)"
    return DivergenceError(f"training diverged at {where}: the {term} is {value}; {kept}; try a "
                           f"lower --lr (now {config.lr:g}) or {clip}")


def _on_device(xp, array):
    """``array`` on the model's device, or None."""
    return None if array is None else xp.asarray(array)


class Run:
    """``fit``'s loop with a run's bookkeeping around it.

    Each step is ``train_step``; around it the run adds the KL warm-up, dynamic
    binarization, the position reached (``state``: epoch, step, global step,
    partial sums, generator states), checks that every loss term is finite,
    a progress bar, the end-of-epoch evaluation, metrics row, checkpoint and
    figures, and the three ways to stop early: divergence (a ``DivergenceError``
    naming the step and term, keeping the last good checkpoint), ``max_steps``
    and Ctrl-C (a checkpoint of the exact position, so ``resume`` continues
    bit for bit).
    """

    def __init__(self, config, run_dir, data, model, optimizer, state, log, on_step):
        self.config, self.run_dir, self.data = config, Path(run_dir), data
        self.model, self.optimizer, self.state = model, optimizer, state
        self.log, self.on_step = log, on_step
        self.xp = model.xp
        self.n = len(data.x_train)
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self.warmup_steps = config.warmup_epochs * self.steps_per_epoch
        self.flush_every = 1 if self.xp is np else FLUSH_EVERY_DEVICE
        self.stop_requested = False
        kind = config.k_sample_objective()
        self.objective = None if kind is None else k_sample_objective(model, kind[1], kind[0])
        self.vq = VQRun(model, config) if config.is_vq() else None   # npvae.vqtrain
        # (epoch, global_step) of the checkpoint on disk, if any: divergence keeps it.
        self.saved_at = ((state["epoch"], state["global_step"])
                         if (self.run_dir / CHECKPOINT_NAME).is_file() else None)

    def run(self):
        # (A finished run never gets here: ``resume`` says so and returns first.)
        cfg, state, xp = self.config, self.state, self.xp
        self.x_train = xp.asarray(self.data.x_train)
        self.x_test = xp.asarray(self.data.x_test)
        # Labels travel with the images (same shuffle) for a conditional model only.
        labels = (self.data.y_train, self.data.y_test, self.data.y_val) if cfg.conditional else ()
        self.y_train, self.y_test, self.y_val = (_on_device(xp, y) for y in labels or (None,) * 3)
        self.x_val = _on_device(xp, self.data.x_val)
        # NaN and inf are caught by flush(), which names the step and the term.
        with progress.deferred_interrupts(self), \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(state["epoch"], cfg.epochs):
                if not self.run_epoch(epoch):
                    return self.result(completed=False)
        if self.vq is not None and cfg.prior_epochs:   # a VQ-VAE's learned prior (npvae.prior)
            self.vq.fit_prior(self.run_dir, self.data, cfg, self.log)
        self.final_figures()
        return self.result(completed=True)

    def run_epoch(self, epoch):
        """Train one epoch (or its rest); False if stopped at ``max_steps``."""
        cfg, state, xp = self.config, self.state, self.xp
        first, shuffle, noise, binarize = self.epoch_start(epoch)
        sums = dict(state["partial"]) if first else new_sums(VQ_TERMS if self.vq else ELBO_TERMS)
        if self.vq is not None:
            self.vq.start_epoch(sums)
        shuffle_start = shuffle.bit_generator.state
        steps = itertools.islice(batches(self.n, cfg.batch_size, shuffle), first, None)
        pending, started, stop, reached = [], time.perf_counter(), None, first
        bar = (progress.bar(f"epoch {epoch + 1}/{cfg.epochs}", self.steps_per_epoch,
                            initial=first, unit="batch", leave=False) if cfg.progress else None)
        self.optimizer.lr = cfg.lr_at(epoch)
        try:
            for reached, index in enumerate(steps, start=first + 1):
                rows = xp.asarray(index)
                x = self.x_train[rows]
                y = None if self.y_train is None else self.y_train[rows]
                if binarize is not None:
                    x = binarize_dynamic(x, binarize)
                # check=False: prepare_data checked every pixel once already.
                terms = train_step(self.model, self.optimizer, x, rng=noise, check=False,
                                   beta=self.beta_at(state["global_step"]), clip=cfg.clip,
                                   y=y, objective=self.objective)
                state["global_step"] += 1
                if self.vq is not None:  # code usage; dead-code restarts on their schedule
                    self.vq.after_step(state["global_step"])
                pending.append((len(x), epoch, reached, state["global_step"], terms))
                if len(pending) >= self.flush_every:
                    self.flush(pending, sums, bar)
                self.call_hook(Step(epoch, reached, state["global_step"], x, terms))
                stop = self.stop_reason(reached)
                if stop:
                    break
            self.flush(pending, sums, bar)
        finally:
            if bar is not None:
                bar.close()
        sums["seconds"] += time.perf_counter() - started
        if stop == "interrupted" or reached < self.steps_per_epoch:
            # Stopped inside the epoch: save the exact position.
            if self.vq is not None:
                self.vq.save_usage(sums)
            state.update(epoch=epoch, step_in_epoch=reached, partial=dict(sums),
                         rng=saved_states(shuffle_start, noise, binarize, xp))
            self.save()
        else:
            self.end_epoch(epoch, sums)
            stop = "interrupted" if self.stop_requested else (
                "max_steps" if self.past_max_steps() and epoch + 1 < cfg.epochs else None)
            if stop and self.saved_at != (state["epoch"], state["global_step"]):
                self.save()
        if stop == "interrupted":
            raise Interrupted(self.run_dir, epoch + 1, reached)
        if stop == "max_steps":
            where = (f"epoch {epoch + 1}, step {reached}" if reached < self.steps_per_epoch
                     else f"end of epoch {epoch + 1}")
            self.log(f"stopped at max_steps={cfg.max_steps} ({where}); checkpoint saved")
            return False
        return True

    # -- the pieces of the loop

    def beta_at(self, global_step):
        """KL weight of the step after ``global_step`` completed ones (linear warm-up)."""
        if self.warmup_steps <= 0:
            return self.config.beta
        return self.config.beta * min(1.0, global_step / self.warmup_steps)

    def past_max_steps(self):
        return self.config.max_steps is not None and \
            self.state["global_step"] >= self.config.max_steps

    def stop_reason(self, reached):
        """Why the loop stops after step ``reached`` of the epoch: a reason, or None."""
        if self.stop_requested:
            return "interrupted"
        if self.past_max_steps() and reached < self.steps_per_epoch:
            return "max_steps"  # (at an epoch's last step, the epoch ends first)
        return None

    def call_hook(self, step):
        if self.on_step is not None:
            try:
                self.on_step(step)
            except KeyboardInterrupt:
                self.stop_requested = True

    def epoch_start(self, epoch):
        """``(first, shuffle, noise, binarize)``: the step the epoch starts from (the
        checkpoint's, when resuming inside it; else 0) and its generators, brought there."""
        seed, binarize = self.config.seed, self.config.binarize == "dynamic"
        first = self.state["step_in_epoch"] if self.state["epoch"] == epoch else 0
        if not first:
            return (0, *epoch_generators(seed, epoch, self.xp, binarize))
        k = None if self.objective is None else self.config.k
        width = getattr(self.model, "noise_dim", None)   # hvae: every layer's; VQ-VAE: 0
        draws = step_draws(first, self.n, self.config.batch_size, self.model.x_dim,
                           self.model.latent if width is None else width, k)
        return (first, *resume_generators(seed, epoch, self.xp, binarize,
                                          self.state.get("rng") or {}, draws, self.model.dtype,
                                          self.run_dir / CHECKPOINT_NAME))

    def flush(self, pending, sums, bar):
        """Read the pending steps' numbers, check them, add them to ``sums``."""
        if not pending:
            return
        xp = self.xp
        # The terms (recon, kl or codebook, commitment), the loss, the gradient norm if taken.
        names = [*pending[0][-1]._fields[1:-1], "loss", "grad_norm"]
        host = to_numpy(xp.stack([xp.stack([getattr(terms, name) for name in names
                                            if getattr(terms, name) is not None])
                                  for *_, terms in pending])).astype(np.float64)
        for (b, epoch, step, global_step, _), row in zip(pending, host):
            for name, value in zip(names, row):
                if not math.isfinite(value):
                    self.diverged(epoch, step, global_step, name.replace("grad_norm",
                                                                         "gradient norm"), value)
            sums["n"] += b
            for name, value in zip(names[:-1], row):
                sums[name] += b * float(value)
        if bar is not None:
            bar.update(len(pending))
            bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", refresh=False)
        pending.clear()

    def diverged(self, epoch, step, global_step, term, value):
        where = (f"epoch {epoch + 1}, step {step} of {self.steps_per_epoch} (global step "
                 f"{global_step})")
        raise divergence(self.config, self.run_dir / CHECKPOINT_NAME, self.saved_at, where, term,
                         value)

    def save(self):
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.model, self.optimizer, self.state)
        self.saved_at = (self.state["epoch"], self.state["global_step"])

    def end_epoch(self, epoch, sums):
        cfg, state = self.config, self.state
        test = self.evaluate(self.x_test, self.y_test)
        val = None if self.x_val is None else self.evaluate(self.x_val, self.y_val)
        for name, values in (("test", test), ("validation", val)):
            for term, value in (values or {}).items():
                if not math.isfinite(value):
                    self.diverged(epoch, self.steps_per_epoch, state["global_step"],
                                  f"{name} {term}", value)
        row = metrics_row(epoch, state["global_step"], self.beta_at(state["global_step"] - 1),
                          sums, test, val, None if self.vq is None else self.vq.train_usage())
        state["metrics"].append(row)
        state.update(epoch=epoch + 1, step_in_epoch=0, partial=None, rng=None)
        # The checkpoint first: it is the truth a resume repairs metrics.csv from.
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            self.save()
        write_metrics(self.run_dir / "metrics.csv", state["metrics"])
        self.log(format_row(row, cfg.epochs))
        self.epoch_figures(epoch)

    def evaluate(self, x, y):
        """A data set's terms at an epoch's end: the ELBO's (beta 1, seeded noise), a VQ-VAE's."""
        if self.vq is not None:
            return evaluate_vq(self.model, x, self.config.eval_batch_size)
        rng = default_rng(derive_seed(self.config.seed, "eval"), self.xp)
        return evaluate_elbo(self.model, x, self.config.eval_batch_size, rng, beta=1.0, y=y)

    # -- figures (npvae.plots is imported lazily: training works without it)

    def figures(self, what, draw):
        """``draw(plots)``, unless figures are off; a figure must never cost the run."""
        if not self.config.figures:
            return None
        try:
            from . import plots
        except ImportError as err:
            if not getattr(self, "_warned_plots", False):
                self.log(f"figures skipped: npvae.plots is not available ({err})")
                self._warned_plots = True
            return None
        try:
            return draw(plots)
        except Exception as err:
            self.log(f"warning: {what} failed: {err!r}")
            return None

    def epoch_figures(self, epoch):
        self.figures("epoch figures", lambda plots: plots.save_epoch_figures(
            self.model, self.run_dir, epoch, self.data.x_test, self.data.y_test,
            stream(self.config.seed, "figures")))

    def final_figures(self):
        paths = self.figures("figures", lambda plots: plots.save_all_figures(
            self.model, self.run_dir, self.data.x_test, self.data.y_test, self.state["metrics"],
            stream(self.config.seed, "figures")))
        if paths:
            from .plots import written

            self.log(written(paths, self.run_dir))

    def result(self, completed):
        return TrainResult(self.run_dir, self.model, self.optimizer, self.state["metrics"],
                           self.state, completed)
