"""The VQ-VAE in the trainer: preset ``vqvae``, ``npvae.vqtrain``, its config and checkpoints.

- the preset trains from the command line, prints and writes its terms and code usage, and
  every command that reads a run (evaluate, gradcheck RUN) reads it;
- ``train_step`` makes the EMA update after the optimizer's step, ``fit`` takes the steps
  ``train`` takes, dead-code restarts follow their schedule and their seeded generator;
- stopped with --max-steps in the middle of an epoch and resumed, a run equals one never
  stopped, bit for bit (gradient and EMA codebooks, restarts across the stop);
- checkpoints keep the EMA buffers and the usage counts, and a wrong one is a one-line error;
- ``npvae gradcheck --preset vqvae`` is all ok, and a planted wrong backward fails it;
- bad values of the new settings, and VQ settings on other models, are one-line errors;
- the figures of a VQ run, and the plain VAE's step left as it was.
"""

import json
import re
import zipfile

import numpy as np
import pytest

from npvae import cli
from npvae.checkpoint import load_checkpoint, model_from_checkpoint
from npvae.config import TrainConfig
from npvae.cvae import model_from_config
from npvae.data import prepare_data
from npvae.errors import CheckpointError, ConfigError
from npvae.evaluate import evaluate_vq
from npvae.optim import Adam
from npvae.train import fit, train, train_step
from npvae.vqtrain import after_step, restart_due, restart_generator
from npvae.vqvae import VQVAE, buffer_shapes, parameter_shapes
from tests.helpers import error_line, write_tiny_mnist

# A small VQ-VAE on 8 x 8 images: convolutions of 3 and 4 channels to a 2 x 2 grid of
# 3-dimensional vectors, 6 codes; batches of 10 (5 steps an epoch on 48 images).
VQ_FLAGS = ["--preset", "vqvae", "--hidden", "3,4", "--embedding-dim", "3", "--n-codes", "6",
            "--batch-size", "10", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("vq_data"), side=8)


def vq_args(data, run_dir, *more, epochs=2):
    return ["train", "--data-dir", str(data), "--run-dir", str(run_dir), "--epochs", str(epochs),
            *VQ_FLAGS, *more]


def vq_config(data, **overrides):
    values = dict(hidden=(3, 4), embedding_dim=3, n_codes=6, batch_size=10, epochs=2,
                  data_dir=str(data), figures=False, progress=False)
    return TrainConfig.from_preset("vqvae", **{**values, **overrides})


@pytest.fixture(scope="module")
def vq_run(data, tmp_path_factory):
    """Two epochs of the preset from the command line, restarts every 3 steps."""
    run_dir = tmp_path_factory.mktemp("vq_run") / "run"
    assert cli.main(vq_args(data, run_dir, "--restart-every", "3")) == 0
    return run_dir


# ---------------------------------------------------------------- the preset from the CLI


def test_the_preset_has_the_keras_sizes_and_the_papers_defaults():
    config = TrainConfig.from_preset("vqvae").validate()
    model = model_from_config(**config.model_kwargs(784))
    assert isinstance(model, VQVAE)
    assert model.config["embedding_dim"] == 16 and model.config["n_codes"] == 64
    assert model.config["beta"] == 0.25 and model.config["update"] == "gradient"
    assert model.encoder.forward(np.zeros((2, 784), np.float32)).shape == (2, 16, 7, 7)
    assert config.restart_every == 100 and config.binarize == "none"
    assert config.likelihood == "bernoulli" and config.architecture == "vqvae"


def test_the_preset_trains_and_reports_its_terms_and_code_usage(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(vq_args(data, run_dir)) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    number = r"-?\d+\.\d+"
    split = (rf"loss {number} \(recon {number}, codebook {number}, commitment {number}; "
             rf"perplexity {number}, \d+ dead codes\)")
    assert re.fullmatch(rf"epoch 2/2  train {split}  test {split}  {number} s, \d+ examples/s",
                        lines[1]), lines[1]
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in ("loss", "recon", "codebook", "commitment", "perplexity", "dead_codes"):
        assert f"train_{term}" in header and f"test_{term}" in header
    assert "train_kl" not in header and "beta" not in header
    rows = model_from_checkpoint(run_dir)[1].state["metrics"]
    for split_name in ("train", "test"):
        row = rows[-1]
        assert 1 <= row[f"{split_name}_perplexity"] <= 6
        assert 0 <= row[f"{split_name}_dead_codes"] <= 5
        assert row[f"{split_name}_loss"] == pytest.approx(
            row[f"{split_name}_recon"] + row[f"{split_name}_codebook"]
            + row[f"{split_name}_commitment"], rel=1e-6)


def test_the_reconstruction_improves_over_training(data, tmp_path):
    result = train(vq_config(data, epochs=6), tmp_path / "run", log=lambda line: None)
    recon = [row["train_recon"] for row in result.metrics]
    assert recon[-1] < recon[0]


def test_every_command_reads_a_vq_run(vq_run, data, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(vq_run), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"test loss: [\d.]+ nats/example \(recon [\d.]+, codebook [\d.]+, "
                     r"commitment [\d.]+\)", out), out
    assert re.search(r"code usage: perplexity [\d.]+ of 6 codes; \d dead codes", out), out
    model, checkpoint = model_from_checkpoint(vq_run)
    x = prepare_data(TrainConfig.from_checkpoint(checkpoint).validate()).x_test
    terms = evaluate_vq(model, x, batch_size=16)
    assert f"test loss: {terms['loss']:.4f}" in out
    assert f"perplexity {terms['perplexity']:.2f}" in out
    assert cli.main(["gradcheck", str(vq_run)]) == 0
    assert "all ok" in capsys.readouterr().out


def test_evaluate_refuses_the_importance_weighted_bound(vq_run, data, capsys):
    assert cli.main(["evaluate", str(vq_run), "--data-dir", str(data), "--iw-samples", "5"]) == 2
    line = error_line(capsys)
    assert "no importance-weighted bound" in line and "samples no z" in line


def test_evaluate_vq_is_the_forward_pass_and_leaves_the_usage_counts(vq_run, data):
    model, checkpoint = model_from_checkpoint(vq_run)
    x = prepare_data(TrainConfig.from_checkpoint(checkpoint).validate()).x_test
    before = model.quantizer.counts.copy()
    by_5, whole = evaluate_vq(model, x, batch_size=5), evaluate_vq(model, x, batch_size=len(x))
    np.testing.assert_array_equal(model.quantizer.counts, before)
    terms = model.forward(x)
    for name in ("loss", "recon", "codebook", "commitment"):
        assert by_5[name] == pytest.approx(float(getattr(terms, name)), rel=1e-5)
        assert whole[name] == pytest.approx(float(getattr(terms, name)), rel=1e-6)
    counts = np.bincount(model.codes.reshape(-1), minlength=6)
    p = counts[counts > 0] / counts.sum()
    assert whole["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert whole["dead_codes"] == by_5["dead_codes"] == int((counts == 0).sum())


# ---------------------------------------------------------------- the step, fit, restarts


def small_model(update="gradient", seed=0):
    return VQVAE(64, (3, 4), embedding_dim=3, n_codes=6, update=update, seed=seed)


def test_train_step_updates_the_ema_codebook_after_the_optimizer_step():
    x = np.random.default_rng(0).random((10, 64)).astype(np.float32)
    a, b = small_model("ema"), small_model("ema")
    opt_a = Adam({"theta": a.theta}, {"theta": a.dtheta})
    opt_b = Adam({"theta": b.theta}, {"theta": b.dtheta})
    terms = train_step(a, opt_a, x)
    assert type(terms).__name__ == "VQStepTerms" and terms.grad_norm is None
    b.forward(x)
    b.backward()
    opt_b.step()
    b.quantizer.ema_update()
    np.testing.assert_array_equal(a.theta, b.theta)
    for name, buffer in b.buffers.items():
        np.testing.assert_array_equal(a.buffers[name], buffer)
    assert not np.array_equal(a.quantizer.codebook, small_model("ema").quantizer.codebook)


def test_restarts_follow_their_schedule_and_their_seeded_generator():
    assert [s for s in range(1, 10) if restart_due(3, s)] == [3, 6, 9]
    assert not any(restart_due(every, 5) for every in (0, None))
    x = np.random.default_rng(1).random((10, 64)).astype(np.float32)
    moved = []
    for _ in range(2):
        model = small_model()
        model.forward(x)
        assert after_step(model, seed=4, restart_every=3, global_step=2) is None
        model.quantizer.counts[...] = [5, 0, 3, 0, 0, 1]
        dead = after_step(model, seed=4, restart_every=3, global_step=3)
        np.testing.assert_array_equal(dead, [1, 3, 4])
        rows = np.moveaxis(model.z_e, 1, -1).reshape(-1, 3)
        assert all((rows == model.quantizer.codebook[c]).all(axis=1).any() for c in dead)
        assert model.quantizer.counts.sum() == 0       # counted afresh after a restart
        moved.append(model.quantizer.codebook.copy())
    np.testing.assert_array_equal(*moved)
    assert restart_generator(4, 3).random() != restart_generator(4, 6).random()


def test_fit_takes_the_steps_train_takes(data, tmp_path):
    config = vq_config(data, epochs=2, restart_every=3).validate()
    result = train(config, tmp_path / "run", log=lambda line: None)
    x = prepare_data(config).x_train
    model = model_from_config(**config.model_kwargs(x.shape[1]))
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=config.lr,
                     eps=config.adam_eps)
    fit(model, optimizer, x, epochs=2, batch_size=10, seed=config.seed, restart_every=3,
        log=lambda line: None)
    np.testing.assert_array_equal(model.theta, result.model.theta)
    with pytest.raises(ConfigError, match="only a VQ-VAE has codes to restart"):
        vae = model_from_config(**TrainConfig().validate().model_kwargs(64))
        fit(vae, Adam({"theta": vae.theta}, {"theta": vae.dtheta}), x, restart_every=3)


# ---------------------------------------------------------------- resume, bit for bit


def arrays(run_dir):
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def numbers(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "examples_per_s")}
            for row in rows]


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_a_run_stopped_mid_epoch_and_resumed_equals_one_never_stopped(update, data, tmp_path,
                                                                      capsys):
    """Stopped at step 8 (epoch 2, step 3), restarts every 3 steps (the counts since the
    restart at step 6 cross the stop), resumed: every array of the checkpoint equal."""
    more = ["--codebook-update", update, "--restart-every", "3", "--epochs", "3"]
    stopped, straight, no_restarts = tmp_path / "stopped", tmp_path / "straight", tmp_path / "no"
    assert cli.main(vq_args(data, stopped, *more, "--max-steps", "8")) == 0
    assert "paused" in capsys.readouterr().out
    state = load_checkpoint(stopped / "checkpoint.npz").state
    assert state["step_in_epoch"] == 3 and len(state["partial"]["usage"]) == 6
    assert cli.main(["train", "--resume", str(stopped), "--no-progress", "--no-figures"]) == 0
    assert cli.main(vq_args(data, straight, *more)) == 0
    a, b = arrays(stopped), arrays(straight)
    assert set(a) == set(b) and "buffer/quantizer.counts" in a
    assert ("buffer/quantizer.ema_sum" in a) == (update == "ema")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rows = [load_checkpoint(r / "checkpoint.npz").state["metrics"] for r in (stopped, straight)]
    assert numbers(rows[0]) == numbers(rows[1])
    # (the restarts matter: without them the run ends elsewhere)
    assert cli.main(vq_args(data, no_restarts, *more[:2], "--restart-every", "0",
                            "--epochs", "3")) == 0
    assert not np.array_equal(arrays(no_restarts)["param/decoder.0.W"], a["param/decoder.0.W"])


# ---------------------------------------------------------------- checkpoints


def test_checkpoints_hold_the_buffers_the_config_implies(vq_run, tmp_path):
    for update in ("gradient", "ema"):
        model = small_model(update)
        assert parameter_shapes(model.config) == {k: v.shape for k, v in model.params.items()}
        assert buffer_shapes(model.config) == {k: (v.shape, v.dtype)
                                               for k, v in model.buffers.items()}
    model, checkpoint = model_from_checkpoint(vq_run)
    assert set(checkpoint.buffers) == {"quantizer.counts"}
    np.testing.assert_array_equal(model.quantizer.counts, checkpoint.buffers["quantizer.counts"])


def rewrite(source, target, change):
    """A copy of checkpoint ``source`` with ``change(entries)`` applied to its {name: bytes}."""
    with zipfile.ZipFile(source) as z:
        entries = {info.filename: z.read(info) for info in z.infolist()}
    change(entries)
    with zipfile.ZipFile(target, "w") as z:
        for name, raw in entries.items():
            z.writestr(name, raw)
    return target


def npy(array):
    import io

    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@pytest.mark.parametrize("change, message", [
    (lambda e: e.pop("buffer/quantizer.counts.npy"), "buffers do not match the model config"),
    (lambda e: e.update({"buffer/quantizer.counts.npy": npy(np.zeros(6, np.float32))}),
     "buffer 'quantizer.counts' is float32[6]; the model config needs int64[6]"),
    (lambda e: e.update({"buffer/quantizer.counts.npy": npy(-np.ones(6, np.int64))}),
     "buffer 'quantizer.counts' holds NaN, infinite or negative values"),
    (lambda e: e.update({"buffer/quantizer.ema_sum.npy": npy(np.zeros((6, 3), np.float32))}),
     "unexpected ['quantizer.ema_sum']"),
    (lambda e: e.update({"buffer/x.npy": npy(np.zeros(1))}), "unexpected ['x']"),
])
def test_a_wrong_checkpoint_is_a_one_line_error(change, message, vq_run, tmp_path, capsys):
    bad = rewrite(vq_run / "checkpoint.npz", tmp_path / "checkpoint.npz", change)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(bad)
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("usage", [None, [1, 2, 3], [1, 2, 3, 4, 5, -6], [0.5] * 6])
def test_a_mid_epoch_checkpoint_without_its_code_usage_is_refused(usage, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(vq_args(data, run_dir, "--max-steps", "2")) == 0
    meta = load_checkpoint(run_dir / "checkpoint.npz").state

    def change(entries):
        with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as z:
            info = json.loads(z["meta"].item())
        info["state"]["partial"]["usage"] = usage
        entries["meta.npy"] = npy(np.array(json.dumps(info)))

    assert len(meta["partial"]["usage"]) == 6
    rewrite(run_dir / "checkpoint.npz", tmp_path / "checkpoint.npz", change)
    (tmp_path / "checkpoint.npz").replace(run_dir / "checkpoint.npz")
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    assert "not a training checkpoint (missing or malformed: partial)" in error_line(capsys)


def test_a_vae_checkpoint_with_a_buffer_is_refused(trained_run, tmp_path):
    bad = rewrite(trained_run / "checkpoint.npz", tmp_path / "checkpoint.npz",
                  lambda e: e.update({"buffer/quantizer.counts.npy": npy(np.zeros(6, np.int64))}))
    with pytest.raises(CheckpointError, match=re.escape("unexpected ['quantizer.counts']")):
        load_checkpoint(bad)


def test_an_ema_checkpoint_with_nan_moving_sums_is_refused(data, tmp_path):
    result = train(vq_config(data, epochs=1, codebook_update="ema"), tmp_path / "run",
                   log=lambda line: None)
    with np.load(result.run_dir / "checkpoint.npz") as z:
        sums = z["buffer/quantizer.ema_sum"].copy()
    sums[0, 0] = np.nan
    bad = rewrite(result.run_dir / "checkpoint.npz", tmp_path / "checkpoint.npz",
                  lambda e: e.update({"buffer/quantizer.ema_sum.npy": npy(sums)}))
    with pytest.raises(CheckpointError, match="'quantizer.ema_sum' holds NaN"):
        load_checkpoint(bad)
    model, _ = model_from_checkpoint(result.run_dir)
    assert model.config["update"] == "ema" and model.config["decay"] == 0.99


# ---------------------------------------------------------------- gradcheck


def test_gradcheck_of_the_preset_is_all_ok(capsys):
    assert cli.main(["gradcheck", "--preset", "vqvae"]) == 0
    out = capsys.readouterr().out
    assert "VQVAE(" in out and "quantizer.codebook" in out and "all ok" in out
    assert "embedding_dim 16 -> 4, n_codes 64 -> 8" in out


@pytest.mark.parametrize("bug", ["no commitment", "codebook sign"])
def test_gradcheck_of_the_preset_fails_on_a_planted_wrong_backward(bug, monkeypatch, capsys):
    from npvae import vq

    right = vq.VectorQuantizer.backward

    def wrong(self, dz_q, dterms):
        dz_e = right(self, dz_q, dterms)
        if bug == "no commitment":
            return dz_q                                     # straight through, nothing more
        self.grads["codebook"][...] *= -1
        return dz_e

    monkeypatch.setattr(vq.VectorQuantizer, "backward", wrong)
    assert cli.main(["gradcheck", "--preset", "vqvae"]) == 1
    out = capsys.readouterr().out
    failed = [line.split()[0] for line in out.splitlines() if line.endswith("FAIL")]
    assert failed == (["quantizer.codebook"] if bug == "codebook sign"
                      else ["encoder.1.W", "encoder.1.b", "encoder.3.W", "encoder.3.b",
                            "encoder.5.W", "encoder.5.b"]), out


@pytest.mark.parametrize("args, message", [
    (["--latent", "3"], "latent=3 does not apply to a VQ-VAE"),
    (["--k", "5"], "a VQ-VAE is checked on its own loss"),
])
def test_gradcheck_refuses_what_a_vq_vae_has_not(args, message, capsys):
    assert cli.main(["gradcheck", "--preset", "vqvae", *args]) == 2
    assert message in error_line(capsys)


# ---------------------------------------------------------------- bad values: one line each


@pytest.mark.parametrize("args, message", [
    (["--n-codes", "0"], "argument --n-codes: '0' is not a positive integer"),
    (["--embedding-dim", "-2"], "argument --embedding-dim: '-2' is not a positive integer"),
    (["--commitment", "-1"], "argument --commitment: '-1' is not a non-negative finite number"),
    (["--codebook-update", "sgd"], "argument --codebook-update: 'sgd' is not one of gradient, ema"),
    (["--ema-decay", "1"], "argument --ema-decay: '1' is not a number in [0, 1)"),
    (["--restart-every", "-1"], "argument --restart-every: '-1' is not a non-negative integer"),
    (["--prior-epochs", "-1"], "argument --prior-epochs: '-1' is not a non-negative integer"),
    (["--prior-epochs", "two"], "argument --prior-epochs: 'two' is not a non-negative integer"),
    (["--ema-decay", "0.9"], "ema_decay=0.9 applies to codebook_update='ema' only"),
    (["--latent", "8"], "latent=8 does not apply to a VQ-VAE"),
    (["--beta", "0.25"], "beta=0.25 does not apply to a VQ-VAE: it has no KL to weigh; its "
                         "commitment weight is commitment"),
    (["--warmup-epochs", "1"], "warmup_epochs=1.0 does not apply to a VQ-VAE"),
    (["--objective", "iwae"], "objective='iwae' does not apply to a VQ-VAE"),
    (["--k", "5"], "k=5 does not apply to a VQ-VAE"),
    (["--conditional"], "conditional=True does not apply to a VQ-VAE"),
    (["--sigma", "0.5"], "sigma=0.5 does not apply to a VQ-VAE"),
    (["--likelihood", "gaussian"], "likelihood='gaussian' is unknown; choose one of bernoulli"),
    (["--hidden", "3,4,5,6"], "the VQ-VAE needs square images whose side divides by 2^4"),
])
def test_bad_vq_settings_are_one_line_errors(args, message, data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(vq_args(data, run_dir, *args)) == 2
    assert message in error_line(capsys)
    assert not run_dir.exists()


@pytest.mark.parametrize("preset", ["pytorch-example", "conv", "burda2-iwae"])
@pytest.mark.parametrize("args, name", [(["--n-codes", "8"], "n_codes=8"),
                                        (["--restart-every", "5"], "restart_every=5"),
                                        (["--prior-epochs", "0"], "prior_epochs=0"),
                                        (["--codebook-update", "ema"], "codebook_update='ema'")])
def test_vq_settings_on_other_models_are_one_line_errors(preset, args, name, data, tmp_path,
                                                         capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--preset", preset, "--data-dir", str(data), "--run-dir",
                     str(run_dir), *args]) == 2
    assert f"{name} is a VQ-VAE setting (preset vqvae)" in error_line(capsys)
    assert not run_dir.exists()


def test_the_prior_epochs_are_the_priors_default_and_zero_trains_no_prior(data, tmp_path):
    from npvae.prior import DEFAULTS

    assert vq_config(data).validate().prior_epochs == DEFAULTS["epochs"]
    run_dir = tmp_path / "run"
    assert cli.main(vq_args(data, run_dir, "--prior-epochs", "0")) == 0
    assert (run_dir / "checkpoint.npz").is_file() and not (run_dir / "prior.npz").exists()
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "3", "--prior-epochs",
                     "1"]) == 0     # a resume may ask for it
    assert (run_dir / "prior.npz").is_file()


def test_a_resumed_vq_run_keeps_its_vq_settings(vq_run, tmp_path, capsys):
    assert cli.main(["train", "--resume", str(vq_run), "--n-codes", "8"]) == 2
    assert "--n-codes cannot be changed when resuming" in error_line(capsys)


# ---------------------------------------------------------------- figures


def test_a_vq_run_draws_its_figures_without_a_warning(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = [a for a in vq_args(data, run_dir, epochs=1) if a != "--no-figures"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "figures written to" in out
    assert (run_dir / "reconstructions.png").is_file() and (run_dir / "curves.png").is_file()
    assert (run_dir / "figures" / "reconstructions_epoch001.png").is_file()
    info = json.loads((run_dir / "config.json").read_text())
    assert info["model"]["n_codes"] == 6 and info["train"]["restart_every"] == 100


# ---------------------------------------------------------------- a CuPy-like backend


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_a_vq_run_on_a_cupy_like_backend_equals_numpys(update, data, tmp_path, strict_backend):
    """Through the stand-in GPU module (``tests/strict_xp.py``: no implicit conversion to NumPy,
    generators whose state cannot be saved), stopped and resumed: NumPy's run, bit for bit."""
    from npvae.backend import to_numpy
    from npvae.train import resume

    settings = dict(epochs=2, restart_every=3, codebook_update=update, binarize="dynamic")
    reference = train(vq_config(data, **settings), tmp_path / "numpy", log=lambda line: None)
    first = train(vq_config(data, **settings, backend=strict_backend.name, max_steps=7),
                  tmp_path / "strict", log=lambda line: None)
    assert not first.completed
    second = resume(tmp_path / "strict", log=lambda line: None)
    np.testing.assert_array_equal(to_numpy(second.model.theta), reference.model.theta)
    for name, buffer in reference.model.buffers.items():
        np.testing.assert_array_equal(to_numpy(second.model.buffers[name]), buffer)
    assert numbers(second.metrics) == numbers(reference.metrics)


# ---------------------------------------------------------------- commands for Gaussian latents


def test_explore_and_export_refuse_a_vq_run_in_one_line(vq_run, tmp_path, capsys):
    pytest.importorskip("safetensors")
    assert cli.main(["explore", str(vq_run), "--out", str(tmp_path / "e.png")]) == 2
    assert "a VQ-VAE's codes are discrete" in error_line(capsys)
    assert cli.main(["export", str(vq_run), str(tmp_path / "x.safetensors")]) == 2
    assert "writes the layouts of the Gaussian VAEs only" in error_line(capsys)
    assert not any(tmp_path.iterdir())
