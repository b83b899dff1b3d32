"""Tests for npvae.train: exact resume, divergence, run folders, reproducibility.

Most runs use a tiny synthetic MNIST-format data set (4 x 4 images) written
to IDX files, so a whole run takes milliseconds; one short run uses the real
MNIST shipped with npvae.
"""

import numpy as np
import pytest

from npvae import randomness
from npvae import train as training
from npvae.backend import to_numpy
from npvae.checkpoint import load_checkpoint
from npvae.config import TrainConfig
from npvae.errors import ConfigError, DivergenceError
from npvae.randomness import STREAMS, derive_seed, replay
from npvae.runs import read_metrics
from npvae.train import Interrupted, resume, train
from tests.helpers import tiny_config
from tests.strict_xp import StrictArray


# A tiny, fast run: 48 examples, batches of 10 (5 steps per epoch).
config = tiny_config


# Settings that exercise every random stream and option of the loop.
FULL = dict(preset="iwae", hidden=(8, 6), latent=3, validation=8, warmup_epochs=1.5, clip=5.0,
            beta=0.5)


def quiet(*_):
    pass


def assert_same_run(a, b):
    """Bit-for-bit equal weights, optimizer state and metrics (times aside)."""
    assert np.array_equal(a.model.theta, b.model.theta)
    assert a.optimizer.t == b.optimizer.t
    assert np.array_equal(a.optimizer.m_sum["theta"], b.optimizer.m_sum["theta"])
    assert np.array_equal(a.optimizer.v_sum["theta"], b.optimizer.v_sum["theta"])
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "examples_per_s")}
             for row in a.metrics]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "examples_per_s")}
                     for row in b.metrics]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """Uninterrupted 10-epoch runs, plain and FULL."""
    root = tmp_path_factory.mktemp("reference")
    return {"plain": train(config(tiny, epochs=10), root / "plain", log=quiet),
            "full": train(config(tiny, epochs=10, **FULL), root / "full", log=quiet)}


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("kind", ["plain", "full"])
def test_five_plus_five_epochs_equal_ten(tiny, tmp_path, reference, kind):
    extra = FULL if kind == "full" else {}
    first = train(config(tiny, epochs=5, **extra), tmp_path / "run", log=quiet)
    assert first.completed and len(first.metrics) == 5
    second = resume(tmp_path / "run", epochs=10, progress=False, figures=False, log=quiet)
    assert second.completed
    assert_same_run(second, reference[kind])
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    assert rows[-1]["test_loss"] == reference[kind].metrics[-1]["test_loss"]


@pytest.mark.parametrize("kind", ["plain", "full"])
@pytest.mark.parametrize("stop", [3, 5, 13])  # mid-epoch, an epoch's end, mid-epoch later
def test_stop_mid_epoch_and_resume_equals_uninterrupted(tiny, tmp_path, reference, kind, stop):
    extra = FULL if kind == "full" else {}
    first = train(config(tiny, epochs=10, max_steps=stop, **extra), tmp_path / "run", log=quiet)
    assert not first.completed
    state = load_checkpoint(tmp_path / "run" / "checkpoint.npz").state
    assert state["global_step"] == stop
    second = resume(tmp_path / "run", progress=False, figures=False, log=quiet)
    assert_same_run(second, reference[kind])


@pytest.mark.parametrize("at, step", [(10, 2), (12, 4)])  # mid-epoch; an epoch's last step
def test_ctrl_c_saves_the_position_and_resume_is_exact(tiny, tmp_path, reference, at, step):
    def on_step(step):
        if step.global_step == at:
            raise KeyboardInterrupt  # what the SIGINT handler does, at a step's end

    with pytest.raises(Interrupted) as info:
        train(config(tiny, epochs=10, **FULL), tmp_path / "run", log=quiet, on_step=on_step)
    assert (info.value.epoch, info.value.step) == (3, step)  # 40 examples: 4 steps an epoch
    state = load_checkpoint(tmp_path / "run" / "checkpoint.npz").state
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, step, at)
    assert state["partial"]["n"] == 10 * step and state["rng"]["noise"] is not None
    assert len(state["metrics"]) == 2
    assert_same_run(resume(tmp_path / "run", progress=False, figures=False, log=quiet),
                    reference["full"])


def test_resume_by_replaying_the_draws_is_exact(tiny, tmp_path, reference, monkeypatch):
    """The path for backends whose generators cannot be saved (CuPy) gives the same numbers."""
    train(config(tiny, epochs=10, max_steps=7, **FULL), tmp_path / "run", log=quiet)
    calls = []

    def counted_replay(noise, binarize, draws, dtype):
        draws = list(draws)
        calls.append(len(draws))
        replay(noise, binarize, draws, dtype)

    monkeypatch.setattr(randomness, "restore_states", lambda *args: False)  # as for CuPy
    monkeypatch.setattr(randomness, "replay", counted_replay)
    assert_same_run(resume(tmp_path / "run", progress=False, figures=False, log=quiet),
                    reference["full"])
    assert calls == [3]  # 7 steps: epoch 2, step 3 (4 steps an epoch)


def test_resume_refuses_fewer_epochs_and_missing_runs(tiny, tmp_path):
    train(config(tiny, epochs=3), tmp_path / "run", log=quiet)
    with pytest.raises(ConfigError, match="epochs=2 is fewer than the 3 epochs"):
        resume(tmp_path / "run", epochs=2, log=quiet)
    lines = []
    result = resume(tmp_path / "run", log=lines.append)
    assert result.completed and "nothing to do" in lines[-1]
    train(config(tiny, epochs=3, max_steps=12), tmp_path / "mid", log=quiet)  # epoch 3, step 2
    with pytest.raises(ConfigError, match="epochs=2 is fewer than the 3 epochs .* already begun"):
        resume(tmp_path / "mid", epochs=2, log=quiet)
    with pytest.raises(ConfigError, match="no such run folder"):
        resume(tmp_path / "absent", log=quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint.npz"):
        resume(tmp_path / "empty", log=quiet)


def test_a_device_backend_trains_and_resumes_to_the_same_numbers(tiny, tmp_path, reference,
                                                                  strict_backend):
    """On a CuPy-like backend (whose generators draw NumPy's numbers here) the trainer
    touches the data only through ``xp``, and stop + resume replays the draws exactly."""
    first = train(config(tiny, epochs=10, max_steps=7, backend=strict_backend.name, **FULL),
                  tmp_path / "run", log=quiet)
    assert isinstance(first.model.theta, StrictArray)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.npz").state
    assert state["rng"]["noise"] is None  # not saveable: replayed on resume
    second = resume(tmp_path / "run", progress=False, figures=False, log=quiet)
    ref = reference["full"]
    assert np.array_equal(to_numpy(second.model.theta), ref.model.theta)
    assert np.array_equal(to_numpy(second.optimizer.v_sum["theta"]), ref.optimizer.v_sum["theta"])
    assert [r["test_loss"] for r in second.metrics] == [r["test_loss"] for r in ref.metrics]


def test_resume_refuses_a_checkpoint_without_a_training_position(tiny, tmp_path):
    from npvae import VAE
    from npvae.checkpoint import save_checkpoint
    from npvae.errors import CheckpointError

    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoint.npz", VAE(16, (8,), 2), None, {"epoch": 1})
    with pytest.raises(CheckpointError, match="not a training checkpoint .missing or malformed: "
                                              "step_in_epoch, global_step, metrics"):
        resume(tmp_path / "run", log=quiet)


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_numbers_other_seed_others(tiny, tmp_path, reference):
    again = train(config(tiny, epochs=10), tmp_path / "again", log=quiet)
    assert_same_run(again, reference["plain"])
    other = train(config(tiny, epochs=2, seed=1), tmp_path / "other", log=quiet)
    assert other.metrics[0]["train_loss"] != reference["plain"].metrics[0]["train_loss"]


def test_streams_are_independent_of_each_other():
    seeds = {derive_seed(0, s) for s in STREAMS}
    assert len(seeds) == len(STREAMS)
    assert derive_seed(0, "noise", 1) != derive_seed(0, "noise", 2)


def test_training_lowers_the_loss_and_writes_the_run_folder(tiny, reference, tmp_path):
    rows = reference["plain"].metrics
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    run = reference["plain"].run_dir
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "checkpoint.npz"}
    assert "val_loss" in reference["full"].metrics[0]
    # warm-up: beta rises 0 -> 0.5 over 1.5 epochs of 4 steps; the row shows the last step's
    assert [r["beta"] for r in reference["full"].metrics[:3]] == [0.5 * 3 / 6, 0.5, 0.5]


# ---------------------------------------------------------------- divergence


def test_huge_learning_rate_stops_with_a_clear_error(tiny, tmp_path):
    with pytest.raises(DivergenceError) as info:
        train(config(tiny, lr=1e4), tmp_path / "run", log=quiet)
    message = str(info.value)
    for part in ("epoch 1, step", "--lr", "--clip", "no checkpoint had been written"):
        assert part in message
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path,
                                                                      monkeypatch):
    """With --clip the trainer checks the gradient norm as well as the loss terms."""
    calls = {"n": 0}
    real_clip = training.clip_grad_norm

    def norm_goes_infinite_at_step_8(grads, max_norm):
        calls["n"] += 1
        return real_clip(grads, max_norm) * (np.inf if calls["n"] == 8 else 1)

    monkeypatch.setattr(training, "clip_grad_norm", norm_goes_infinite_at_step_8)
    path = tmp_path / "run" / "checkpoint.npz"
    with pytest.raises(DivergenceError) as info:
        train(config(tiny, clip=1e6), tmp_path / "run", log=quiet)
    message = str(info.value)
    assert "epoch 2, step 3 of 5 (global step 8): the gradient norm is inf" in message
    assert f"last good checkpoint {path} (global step 5) is kept" in message
    assert load_checkpoint(path).state["global_step"] == 5
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 1


def test_a_gradient_that_is_not_finite_stops_training_at_the_next_loss(tiny, tmp_path,
                                                                        monkeypatch):
    """Without --clip no norm is taken: the NaN reaches the parameters, and the
    next step's loss reports it; the last good checkpoint is kept."""
    calls = {"n": 0}
    real_step = training.Adam.step

    def nan_gradient_at_step_8(self):
        calls["n"] += 1
        if calls["n"] == 8:
            self.grads["theta"][0] = np.nan
        real_step(self)

    monkeypatch.setattr(training.Adam, "step", nan_gradient_at_step_8)
    path = tmp_path / "run" / "checkpoint.npz"
    with pytest.raises(DivergenceError) as info:
        train(config(tiny), tmp_path / "run", log=quiet)
    assert "epoch 2, step 4 of 5 (global step 9): the recon is nan" in str(info.value)
    assert load_checkpoint(path).state["global_step"] == 5


# ---------------------------------------------------------------- run folders and settings


def test_an_existing_run_folder_is_never_overwritten(tiny, tmp_path):
    train(config(tiny, epochs=1), tmp_path / "run", log=quiet)
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        train(config(tiny, epochs=1, seed=3), tmp_path / "run", log=quiet)
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    (tmp_path / "run" / "notes.txt").write_text("mine")
    train(config(tiny, epochs=1, seed=3), tmp_path / "run", overwrite=True, log=quiet)
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() != before
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_default_run_folder_takes_the_next_free_name(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = []
    first = train(config(tiny, epochs=1), log=lines.append)
    second = train(config(tiny, epochs=1), log=lines.append)
    assert str(first.run_dir) == "runs/pytorch-example"
    assert str(second.run_dir) == "runs/pytorch-example-2"
    assert "run folder: runs/pytorch-example-2 (runs/pytorch-example is taken)" in lines


@pytest.mark.parametrize("overrides, match", [
    (dict(epochs=0), "epochs=0"),
    (dict(batch_size=-1), "batch_size=-1"),
    (dict(batch_size=49), "batch_size=49 is larger than the 48 training examples"),
    (dict(lr=0.0), "lr=0.0"),
    (dict(lr=float("nan")), "lr=nan"),
    (dict(latent=0), "latent=0"),
    (dict(hidden=(8, 0)), "hidden="),
    (dict(backend="tpu"), "backend='tpu' is unknown"),
    (dict(likelihood="poisson"), "likelihood='poisson' is unknown"),
    (dict(binarize="sometimes"), "binarize='sometimes' is unknown"),
    (dict(dtype="float16"), "dtype='float16' is unknown"),
    (dict(clip=-1.0), "clip=-1.0"),
    (dict(validation=48), "validation=48 must be smaller"),
    (dict(seed=-2), "seed=-2"),
])
def test_bad_settings_are_one_line_config_errors(tiny, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        train(config(tiny, **overrides), tmp_path / "run", log=quiet)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="preset='vq' is unknown; choose one of "
                                          "pytorch-example, mlp-mse, iwae"):
        TrainConfig.from_preset("vq")


def test_presets_match_their_references():
    pt = TrainConfig.from_preset("pytorch-example")
    assert (pt.hidden, pt.latent, pt.activation, pt.likelihood, pt.init, pt.lr, pt.batch_size,
            pt.epochs, pt.binarize) == ((400,), 20, "relu", "bernoulli", "pytorch", 1e-3, 128,
                                        10, "none")
    mse = TrainConfig.from_preset("mlp-mse")
    assert (mse.hidden, mse.likelihood, mse.batch_size) == ((128, 64), "gaussian", 32)
    assert mse.sigma ** 2 == pytest.approx(0.5)
    iwae = TrainConfig.from_preset("iwae")
    assert (iwae.hidden, iwae.latent, iwae.activation, iwae.binarize, iwae.batch_size) == \
        ((200, 200), 50, "tanh", "dynamic", 20)


# ---------------------------------------------------------------- real MNIST


def test_a_short_run_on_real_mnist(tmp_path):
    """The default preset on the shipped MNIST, stopped after 30 steps."""
    result = train(TrainConfig.from_preset(max_steps=30, figures=False, progress=False),
                   tmp_path / "run", log=quiet)
    assert not result.completed
    state = result.state
    assert state["global_step"] == 30 and state["data"]["x_dim"] == 784
    mean_loss = state["partial"]["loss"] / state["partial"]["n"]
    assert 150 < mean_loss < 550  # from about 543 nats at the start
    terms = result.model.forward(np.zeros((2, 784), np.float32), eps=np.zeros((2, 20), np.float32))
    assert np.isfinite(terms.loss)


def test_n_train_and_n_test_take_the_first_examples():
    from npvae.data import prepare_data

    data = prepare_data(TrainConfig(n_train=300, n_test=50).validate())
    assert data.summary()["n_train"] == 300 and data.summary()["n_test"] == 50
    with pytest.raises(ConfigError, match="n_test=20000 is more than the 10000"):
        prepare_data(TrainConfig(n_test=20000).validate())
    with pytest.raises(ConfigError, match="n_train=0"):
        TrainConfig(n_train=0).validate()


# ---------------------------------------------------------------- the step and the plain loop


def test_fit_takes_exactly_the_steps_of_train(tiny, reference):
    """The plain loop a learner reads and the full run agree bit for bit (no warm-up,
    binarization or validation): same shuffles, same noise, same step."""
    from npvae import VAE
    from npvae.data import prepare_data
    from npvae.optim import Adam
    from npvae.train import fit

    cfg = config(tiny, epochs=10).validate()
    data = prepare_data(cfg)
    model = VAE(**cfg.model_kwargs(data.x_train.shape[1]))
    optimizer = Adam({"theta": model.theta}, {"theta": model.dtheta}, lr=cfg.lr)
    lines = []
    history = fit(model, optimizer, data.x_train, epochs=10, batch_size=cfg.batch_size,
                  seed=cfg.seed, log=lines.append)
    assert np.array_equal(model.theta, reference["plain"].model.theta)
    assert np.array_equal(optimizer.v_sum["theta"], reference["plain"].optimizer.v_sum["theta"])
    assert history == pytest.approx([r["train_loss"] for r in reference["plain"].metrics],
                                    rel=1e-12)
    assert len(lines) == 10 and lines[-1].startswith("epoch 10/10  train loss")


def test_on_step_sees_every_batch_in_order(tiny, tmp_path, reference):
    """The hook a benchmark uses to watch the batches: every step, its minibatch and terms."""
    seen = []
    result = train(config(tiny, epochs=2), tmp_path / "run", log=quiet,
                   on_step=lambda step: seen.append(step))
    assert [(s.epoch, s.step, s.global_step) for s in seen] == \
        [(e, k, 5 * e + k) for e in range(2) for k in range(1, 6)]
    assert [len(s.x) for s in seen[:5]] == [10, 10, 10, 10, 8]
    assert sum(len(s.x) * float(s.terms.loss) for s in seen[:5]) / 48 == \
        pytest.approx(result.metrics[0]["train_loss"], rel=1e-12)
    # the first epoch's batches are x_train in the order of its shuffle
    from npvae.randomness import derive_seed
    from npvae.data import prepare_data
    x_train = prepare_data(config(tiny).validate()).x_train
    order = np.random.default_rng(derive_seed(0, "shuffle", 0)).permutation(48)
    assert np.array_equal(np.concatenate([s.x for s in seen[:5]]), x_train[order])


def test_train_step_is_forward_backward_clip_step():
    """One step by hand and by train_step: the same parameters, and the norm when clipping."""
    from npvae import VAE
    from npvae.optim import Adam, clip_grad_norm
    from npvae.train import train_step

    rng = np.random.default_rng(0)
    x, eps = rng.random((5, 9)), rng.standard_normal((5, 2))
    models = [VAE(9, (6,), 2, dtype="float64", seed=1) for _ in range(2)]
    optimizers = [Adam({"theta": m.theta}, {"theta": m.dtheta}) for m in models]
    models[0].forward(x, eps=eps, beta=0.5)
    models[0].backward()
    norm = clip_grad_norm({"theta": models[0].dtheta}, 0.1)
    optimizers[0].step()
    terms = train_step(models[1], optimizers[1], x, eps=eps, beta=0.5, clip=0.1)
    assert np.array_equal(models[0].theta, models[1].theta)
    assert float(terms.grad_norm) == float(norm) > 0.1
    assert train_step(models[1], optimizers[1], x, eps=eps).grad_norm is None
