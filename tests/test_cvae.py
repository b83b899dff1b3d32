"""The conditional VAE (npvae.cvae): gradients through the label concatenation, the
labels' effect, checkpoints, training runs, ``sample --digit`` and its figures."""

import numpy as np
import pytest

import npvae.cvae as cvae_module
from npvae import VAE
from npvae.checkpoint import model_from_checkpoint, save_checkpoint
from npvae.cli import main
from npvae.config import TrainConfig
from npvae.cvae import CVAE, LabelledMLP, model_from_config
from npvae.errors import ConfigError, DataError
from npvae.gradcheck import biases_off_zero, check_layer, check_model, format_results
from npvae.iwae import KSampleObjective
from npvae.train import resume, train
from tests.helpers import tiny_config


def make_cvae(x_dim=7, hidden=(6,), latent=3, activation="tanh", likelihood="bernoulli",
              n_classes=4, seed=1):
    model = CVAE(x_dim, hidden, latent, n_classes=n_classes, activation=activation,
                 likelihood=likelihood, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed + 100)
    biases_off_zero(model, rng)
    return model


@pytest.mark.parametrize("objective,k", [(None, 1), ("elbo", 3), ("iwae", 1), ("iwae", 4)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("hidden,activation", [((6,), "tanh"), ((7, 5), "softplus")])
def test_cvae_gradients_end_to_end(objective, k, likelihood, hidden, activation):
    model = make_cvae(8, hidden, 3, activation, likelihood)
    rng = np.random.default_rng(k)
    x, y = rng.random((5, 8)), rng.integers(0, 4, 5)
    if objective is None:
        results = check_model(model, x, rng.standard_normal((5, 3)), y=y)
    else:
        results = check_model(model, x, rng.standard_normal((k, 5, 3)), y=y,
                              objective=KSampleObjective(model, k, objective))
    assert all(r.ok for r in results), format_results(results)


@pytest.mark.parametrize("rows", [3, 6])  # the batch's rows, and two samples of them
def test_labelled_mlp_gradients(rows):
    rng = np.random.default_rng(0)
    layer = LabelledMLP([4, 5, 2], "tanh", n_classes=3, rng=rng, dtype=np.float64)
    layer.onehot = np.eye(3)[[2, 0, 2]]
    for dense in layer.layers[::2]:
        dense.params["b"] += rng.normal(0, 0.1, dense.params["b"].shape)
    results = check_layer(layer, rng.standard_normal((rows, 4)), rng)
    assert all(r.ok for r in results), format_results(results)
    out = layer.forward(np.zeros((rows, 4)))  # only the labels move the output
    np.testing.assert_array_equal(out[0], out[2])  # both label 2
    assert not np.allclose(out[0], out[1])         # labels 2 and 0
    if rows == 6:  # the second sample of each example reuses its label
        np.testing.assert_array_equal(out[:3], out[3:])


def test_checker_catches_wrong_columns_for_dz(monkeypatch):
    """dz taken from the label columns' end of the decoder's input gradient (the last
    Z columns instead of the first Z): every encoder gradient fails, no decoder one."""
    def backward_last_columns(self, dout, need_dx=True):
        dx = super(LabelledMLP, self).backward(dout, need_dx)
        return None if dx is None else dx[:, -(dx.shape[1] - self.n_classes):]

    monkeypatch.setattr(LabelledMLP, "backward", backward_last_columns)
    model = make_cvae(8, (6,), 3, n_classes=4)
    rng = np.random.default_rng(3)
    results = check_model(model, rng.random((4, 8)), rng.standard_normal((4, 3)),
                          y=np.array([0, 1, 3, 3]))
    failed = {r.name for r in results if not r.ok}
    assert failed == {k for k in model.params if k.startswith("encoder.")}, format_results(results)


def test_labels_change_the_output_and_the_prior_is_unchanged():
    model = make_cvae()
    z = np.random.default_rng(0).standard_normal((2, 3))
    a, b = model.decode(z, np.array([0, 0])), model.decode(z, np.array([1, 1]))
    assert np.abs(a - b).max() > 1e-3
    x = np.random.default_rng(1).random((2, 7))
    t1 = model.forward(x, np.array([0, 1]), eps=z)
    t2 = model.forward(x, np.array([1, 0]), eps=z)
    assert float(t1.loss) != float(t2.loss)
    assert model.encoder.layers[0].params["W"].shape == (7 + 4, 6)
    assert model.decoder.layers[0].params["W"].shape == (3 + 4, 6)


def test_bad_labels_are_one_line_errors():
    model = make_cvae()
    x = np.random.default_rng(1).random((2, 7))
    with pytest.raises(ConfigError, match="needs the labels y"):
        model.forward(x, eps=np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"must lie in \[0, 4\)"):
        model.forward(x, np.array([0, 4]), eps=np.zeros((2, 3)))
    with pytest.raises(DataError, match="must be integers"):
        model.forward(x, np.array([0.0, 1.0]), eps=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="2 examples but y 3 labels"):
        model.forward(x, np.array([0, 1, 2]), eps=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="not conditional"):
        VAE(7, (6,), 3).forward(x.astype(np.float32), np.array([0, 1]), eps=np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="at least 2"):
        CVAE(7, (6,), 3, n_classes=1)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_fewer_labels_than_examples_are_refused_not_tiled(objective):
    """2 labels for 4 examples name the mismatch, in the k-sample objectives as in the model,
    instead of being repeated over the batch."""
    model = make_cvae()
    x = np.random.default_rng(1).random((4, 7))
    with pytest.raises(ConfigError, match="4 examples but y 2 labels"):
        KSampleObjective(model, 2, objective).forward(x, np.array([1, 2]),
                                                      eps=np.zeros((2, 4, 3)))
    with pytest.raises(ConfigError, match="4 examples but y 2 labels"):
        cvae_module.set_condition(model, np.array([1, 2]), 4)


def test_size_check_knows_the_label_rows_and_conv_is_refused():
    """parameter_shapes (the checkpoint loader's check) equals the built CVAE's shapes."""
    from npvae.vae import parameter_shapes

    model = make_cvae(hidden=(6, 5))
    assert parameter_shapes(model.config) == {k: p.shape for k, p in model.params.items()}
    with pytest.raises(ConfigError, match="mlp architecture"):
        CVAE(784, (4, 4), 3, n_classes=10, architecture="conv")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_fast_importance_weights_equal_the_plain_ones_with_labels(likelihood):
    """The bound's fast form feeds each example's label to its k samples, as the plain one."""
    from npvae.evaluate import iw_bound, iw_log_weights

    model = make_cvae(hidden=(6, 5), likelihood=likelihood)
    rng = np.random.default_rng(3)
    x, y = rng.random((9, 7)), rng.integers(0, 4, 9)
    plain = iw_log_weights(model, x, 6, np.random.default_rng(0), plain=True, y=y)
    fast = iw_log_weights(model, x, 6, np.random.default_rng(0), y=y)
    np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=0)
    bounds = [iw_bound(model, x, 11, np.random.default_rng(0), batch_size=4, chunk=c, plain=p, y=y)
              for c, p in ((None, True), (3, False))]
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-10)
    other = iw_log_weights(model, x, 6, np.random.default_rng(0), y=(y + 1) % 4)
    assert np.abs(other - plain).max() > 1e-6   # the labels matter


def test_plain_vae_is_built_as_before():
    """model_from_config without n_classes is the VAE, weight for weight, loss for loss."""
    config = dict(x_dim=7, hidden=(6,), latent=3, activation="tanh", seed=4)
    a, b = VAE(**config), model_from_config(**config)
    assert type(b) is VAE and "n_classes" not in b.config
    assert np.array_equal(a.theta, b.theta)
    x = np.random.default_rng(0).random((3, 7)).astype(np.float32)
    eps = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    assert a.forward(x, eps=eps) == b.forward(x, eps=eps)


def test_conditional_checkpoint_round_trip(tmp_path):
    model = CVAE(7, (6,), 3, n_classes=4, seed=2)
    save_checkpoint(tmp_path / "c.npz", model, None, {})
    loaded, checkpoint = model_from_checkpoint(tmp_path / "c.npz")
    assert isinstance(loaded, CVAE) and checkpoint.model_config["n_classes"] == 4
    z = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    y = np.array([3, 0, 1])
    assert np.array_equal(loaded.decode(z, y), model.decode(z, y))


def cvae_config(**changes):
    """A tiny conditional run on the shipped MNIST's first 96 training digits."""
    return tiny_config(None, preset="cvae", **{**dict(hidden=(16,), n_train=96, n_test=40,
                                                      batch_size=32, epochs=2, figures=True),
                                               **changes})


def test_conditional_run_resumes_exactly_and_draws_digits(tmp_path, capsys):
    """A conditional run with labels batched alongside x: 1 + 1 epochs equal 2, bit for
    bit; sample --digit draws from it, and a run that is not conditional refuses."""
    whole = train(cvae_config(figures=False), tmp_path / "whole", log=lambda *_: None)
    train(cvae_config(epochs=1), tmp_path / "split", log=lambda *_: None)
    split = resume(tmp_path / "split", epochs=2, log=lambda *_: None)
    assert np.array_equal(whole.model.theta, split.model.theta)
    assert whole.metrics[-1]["test_loss"] == split.metrics[-1]["test_loss"]
    for name in ("digits.png", "analogies.png", "samples.png", "reconstructions.png"):
        assert (tmp_path / "split" / name).is_file(), name
    out = tmp_path / "seven.png"
    assert main(["sample", str(tmp_path / "split"), "--digit", "7", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["sample", str(tmp_path / "split"), "--digit", "10"]) == 2
    assert "--digit=10 must be one of 0 to 9" in capsys.readouterr().err
    plain = train(cvae_config(conditional=False, figures=False, epochs=1), tmp_path / "plain",
                  log=lambda *_: None)
    assert main(["sample", str(plain.run_dir), "--digit", "7"]) == 2
    assert "--digit needs a conditional run" in capsys.readouterr().err


def test_conditional_run_evaluates_plots_and_explores_with_its_labels(tmp_path, capsys):
    """evaluate bounds log p(x | y) with the test labels (the same numbers as the API
    with y); plot redraws the digit grid; explore decodes the --digit asked for."""
    from npvae.runs import run_test_data
    from npvae.evaluate import evaluate_elbo, iw_bound

    run = train(cvae_config(figures=False, epochs=1), tmp_path / "run", log=lambda *_: None)
    capsys.readouterr()
    assert main(["evaluate", str(run.run_dir), "--iw-samples", "7", "--no-progress"]) == 0
    out = capsys.readouterr().out
    model, checkpoint = model_from_checkpoint(run.run_dir)
    x, y = run_test_data(checkpoint, None)
    rng = np.random.default_rng(0)
    terms = evaluate_elbo(model, x, batch_size=1000, rng=rng, y=y)
    bound = iw_bound(model, x, 7, rng, batch_size=100, y=y)
    assert f"test ELBO: {-(terms['recon'] + terms['kl']):.4f}" in out
    assert f"log p(x) >= {bound:.4f}" in out
    assert main(["plot", str(run.run_dir)]) == 0
    assert (run.run_dir / "digits.png").is_file() and (run.run_dir / "analogies.png").is_file()
    still = tmp_path / "explore.png"
    assert main(["explore", str(run.run_dir), "--digit", "3", "--out", str(still)]) == 0
    assert still.is_file()


def test_k_sample_training_runs_and_resumes_exactly(tmp_path):
    """--objective iwae --k 3 through the trainer: 1 + 1 epochs equal 2, bit for bit."""
    config = dict(conditional=False, objective="iwae", k=3, lr_schedule="iwae-short",
                  figures=False)
    whole = train(cvae_config(**config), tmp_path / "whole", log=lambda *_: None)
    train(cvae_config(**{**config, "epochs": 1}), tmp_path / "split", log=lambda *_: None)
    split = resume(tmp_path / "split", epochs=2, log=lambda *_: None)
    assert np.array_equal(whole.model.theta, split.model.theta)
    assert whole.optimizer.lr == pytest.approx(1e-3 * 10 ** (-1 / 7))


def test_training_config_rules():
    with pytest.raises(ConfigError, match="needs beta=1"):
        TrainConfig(objective="iwae", beta=0.5).validate()
    with pytest.raises(ConfigError, match="objective='x' is unknown"):
        TrainConfig(objective="x").validate()
    with pytest.raises(ConfigError, match="lr_schedule='fast' is unknown"):
        TrainConfig(lr_schedule="fast").validate()
    paper = TrainConfig(lr_schedule="iwae")
    stages = [paper.lr_at(e) for e in range(3280)]
    assert [stages.count(r) for r in sorted(set(stages), reverse=True)] == [3**i for i in range(8)]
    assert stages[-1] == pytest.approx(1e-3 * 10 ** (-1))
    short = TrainConfig(lr_schedule="iwae-short")
    assert [short.lr_at(e) for e in range(8)] == sorted(set(stages), reverse=True)
