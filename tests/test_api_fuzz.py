"""Random shapes, dtypes and values thrown at the public API: every failure
must be one of npvae's own clear exceptions (NpvaeError), never a NumPy
broadcast error or a TypeError from deep inside."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from npvae import VAE, NpvaeError

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 1000), st.floats(allow_nan=True),
    st.text(max_size=5), st.lists(st.integers(-3, 50), max_size=3),
    st.tuples(st.integers(-3, 50)),
)

dtypes = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_,
                          np.complex64, np.object_])


def calls_cleanly(f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except NpvaeError as err:
        assert str(err), "an error must say what is wrong"
        assert "\n" not in str(err), "one line"


@settings(max_examples=300)
@given(x_dim=st.one_of(st.integers(1, 20), anything), hidden=st.one_of(st.lists(st.integers(1, 8), max_size=2), anything),
       latent=st.one_of(st.integers(1, 4), anything),
       activation=st.one_of(st.sampled_from(["relu", "tanh"]), anything),
       likelihood=st.one_of(st.sampled_from(["bernoulli", "gaussian"]), anything),
       beta=st.one_of(st.floats(0, 2), anything), sigma=st.one_of(st.floats(0.1, 2), anything),
       dtype=st.one_of(st.sampled_from(["float32", "float64"]), anything))
def test_constructor_fails_only_with_clear_errors(x_dim, hidden, latent, activation, likelihood,
                                                  beta, sigma, dtype):
    calls_cleanly(VAE, x_dim, hidden, latent, activation=activation, likelihood=likelihood,
                  beta=beta, sigma=sigma, dtype=dtype)


model = VAE(6, (5,), 2, dtype="float64")


@settings(max_examples=300)
@given(x=st.one_of(arrays(dtypes, array_shapes(min_dims=0, max_dims=3, max_side=8)),
                   anything),
       eps=st.one_of(st.none(), arrays(np.float64, array_shapes(max_dims=3, max_side=4))),
       beta=st.one_of(st.none(), st.floats(0, 3)))
def test_forward_fails_only_with_clear_errors(x, eps, beta):
    def step():
        model.forward(x, eps=eps, rng=np.random.default_rng(0), beta=beta)
        model.backward()

    calls_cleanly(step)


@settings(max_examples=200)
@given(values=st.fixed_dictionaries({}, optional={
    "epochs": anything, "batch_size": anything, "lr": anything, "seed": anything,
    "latent": anything, "hidden": anything, "beta": anything, "warmup_epochs": anything,
    "activation": anything, "likelihood": anything, "binarize": anything, "dtype": anything,
    "backend": anything, "validation": anything, "clip": anything, "n_train": anything,
    "preset": anything, "sigma": anything, "max_steps": anything}))
def test_training_config_fails_only_with_clear_errors(values):
    from npvae.train import TrainConfig

    calls_cleanly(lambda: TrainConfig(**values).validate())


@settings(max_examples=200)
@given(data=st.binary(max_size=64), gz=st.booleans())
def test_random_bytes_as_idx_or_checkpoint_are_clear_errors(tmp_path_factory, data, gz):
    import gzip

    from npvae.checkpoint import load_checkpoint
    from npvae.data import read_idx

    folder = tmp_path_factory.mktemp("fuzz")
    idx = folder / "x.idx"
    idx.write_bytes(gzip.compress(data) if gz else data)
    calls_cleanly(read_idx, idx)
    checkpoint = folder / "checkpoint.npz"
    checkpoint.write_bytes(data)
    calls_cleanly(load_checkpoint, checkpoint)


@settings(max_examples=200)
@given(x=st.one_of(arrays(dtypes, array_shapes(min_dims=0, max_dims=3, max_side=6)), anything),
       likelihood=st.one_of(st.sampled_from(["bernoulli", "gaussian"]), anything),
       n=anything, batch_size=anything)
def test_data_functions_fail_only_with_clear_errors(x, likelihood, n, batch_size):
    from npvae import data

    rng = np.random.default_rng(0)
    calls_cleanly(data.check_pixels, x, likelihood)
    calls_cleanly(data.to_unit_interval, x)
    calls_cleanly(data.binarize_dynamic, x, rng)
    calls_cleanly(data.batches, n, batch_size, rng)
