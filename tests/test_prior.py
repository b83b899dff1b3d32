"""The learned prior of a VQ-VAE run (``npvae.prior``) and the VQ-VAE's figures (``npvae.vqplots``).

The MADE's gradients are checked in ``test_made``; here:

- the prior learns: on codes with structure its NLL falls far below the
  uniform G log K, toward the data's entropy; a backward of the wrong sign
  makes it rise instead; a prior with every weight 0 scores exactly
  log2 K bits per code;
- a trained prior is still autoregressive (changing a code moves no logit at
  or before it), and its samples follow the structure it learned;
- a saved prior loads back bit for bit; every bad prior file is refused in
  one line, and a failed write leaves the previous prior whole;
- the codes of a data set are ``encode``'s, whatever the batch size;
- every figure is written, and the codes in context change the chosen position;
- the command line: ``npvae train --preset vqvae`` ends with the prior and
  every figure; ``sample`` and ``plot`` draw from the prior, and without
  one say how to train it; ``train-prior`` replaces it, and a failed one
  keeps the old; a resumed run retrains it; bad flag values and runs that
  are not VQ-VAEs are one-line errors.
"""

import io
import json
import math
from contextlib import redirect_stdout

import numpy as np
import pytest

from npvae import cli, prior as prior_module, vqplots
from npvae.checkpoint import model_from_checkpoint
from npvae.data import binarize_dynamic
from npvae.errors import CheckpointError, ConfigError
from npvae.made import MADE, log_softmax
from npvae.prior import (bits_per_code, dataset_codes, fingerprint, load_prior, mean_nll,
                         open_prior, save_prior, train_prior)
from npvae.randomness import derive_seed
from npvae.vqvae import VQVAE
from tests.helpers import copy_run, error_line, write_tiny_mnist

G, K = 6, 5   # positions and codes of the structured data


def structured_codes(n, seed):
    """Grids whose first code is uniform and each next code the previous one + 1 (mod K):
    entropy log K nats per grid, against the uniform G log K."""
    first = np.random.default_rng(seed).integers(0, K, (n, 1))
    return (first + np.arange(G)) % K


@pytest.fixture(scope="module")
def trained():
    """A prior trained on the structured codes: ``(prior, metrics)``."""
    return train_prior(structured_codes(400, 0), K, test_codes=structured_codes(100, 1),
                       hidden=(16,), epochs=15, lr=1e-2, batch_size=40, seed=0, log=lambda _: None)


# ---------------------------------------------------------------- it learns


def test_the_prior_learns_the_structure(trained):
    prior, metrics = trained
    uniform = G * math.log(K)
    assert metrics[0]["train_nll"] < uniform + 0.5        # it starts near uniform
    assert metrics[-1]["test_nll"] < 0.25 * uniform       # and ends far below it
    assert metrics[-1]["test_nll"] > math.log(K) - 1e-6   # never below the data's entropy
    assert [m["train_nll"] for m in metrics] == sorted(m["train_nll"] for m in metrics)[::-1]
    assert metrics[-1]["test_nll"] == pytest.approx(mean_nll(prior, structured_codes(100, 1)))


def test_a_backward_of_the_wrong_sign_does_not_learn(monkeypatch):
    backward = MADE.backward

    def ascent(self):
        backward(self)
        self.dtheta *= -1

    monkeypatch.setattr(MADE, "backward", ascent)
    _, metrics = train_prior(structured_codes(400, 0), K, hidden=(16,), epochs=3, lr=1e-2,
                             batch_size=40, log=lambda _: None)
    assert metrics[-1]["train_nll"] > G * math.log(K)


def test_a_prior_of_zero_weights_scores_log2_k_bits_per_code():
    prior = MADE(G, K, (8,))
    prior.theta[...] = 0
    nats = mean_nll(prior, structured_codes(7, 2))
    assert nats == pytest.approx(G * math.log(K), rel=1e-6)
    assert bits_per_code(nats, G) == pytest.approx(math.log2(K), rel=1e-6)


def test_training_is_seeded_and_logs_a_line_an_epoch():
    lines = []
    runs = [train_prior(structured_codes(60, 3), K, hidden=(8,), epochs=2, batch_size=16, seed=s,
                        log=lines.append) for s in (4, 4, 5)]
    np.testing.assert_array_equal(runs[0][0].theta, runs[1][0].theta)
    assert not np.array_equal(runs[0][0].theta, runs[2][0].theta)
    assert len(lines) == 6 and lines[0].startswith("prior epoch 1/2  train nll ")
    assert "bits/code" in lines[0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size=0 must be a positive integer"),
    (dict(epochs=0), "epochs=0 must be a positive integer"),
    (dict(batch_size=61), "batch_size=61 must be between 1 and the 60"),
    (dict(hidden=(3,)), "at least n_positions - 1 = 5 units"),
    (dict(lr=-1.0), "lr=-1.0 must be positive"),
])
def test_bad_training_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        train_prior(structured_codes(60, 3), K, **{"epochs": 1, "batch_size": 10, **kwargs})


def test_codes_outside_the_codebook_are_refused():
    with pytest.raises(ConfigError, match=r"codes must lie in \[0, 4\)"):
        train_prior(structured_codes(60, 3), 4, epochs=1, batch_size=10)


# ---------------------------------------------------------------- masks and sampling


def test_a_trained_prior_is_still_autoregressive(trained):
    prior, _ = trained
    codes = np.random.default_rng(3).integers(0, K, (8, G))
    base = prior.logits(codes)
    for q in range(G):
        changed = codes.copy()
        changed[:, q] = (changed[:, q] + 1) % K
        moved = np.abs(prior.logits(changed) - base).max(axis=(0, 2))
        assert not moved[:q + 1].any(), q           # positions up to q: unchanged
        if q < G - 1:
            assert moved[q + 1] > 0, q               # the next one sees it


def test_samples_follow_the_learned_structure(trained):
    """Each sampled code is the previous one + 1 as often as the prior's own conditionals
    p(c_t | c_<t), at the sampled codes before it, say it should be (within 4 standard
    errors), and that is most of the time."""
    prior, _ = trained
    codes = prior.sample(2000, np.random.default_rng(0))
    nxt = (codes[:, :-1] + 1) % K
    p = np.exp(log_softmax(prior.logits(codes).astype(np.float64)))[:, 1:]
    expected = np.take_along_axis(p, nxt[..., None], axis=-1).mean()
    observed = (codes[:, 1:] == nxt).mean()
    assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / nxt.size)
    assert expected > 0.8
    assert set(np.unique(codes[:, 0])) == set(range(K))   # the first code is any of them


# ---------------------------------------------------------------- the file


def state_for(model=None):
    return {"epochs": 1, "steps": 3, "metrics": [{"epoch": 1, "train_nll": 1.5}],
            "settings": {"hidden": [16]},
            "vqvae": {"grid": [2, 2], "n_codes": K,
                      "fingerprint": None if model is None else fingerprint(model)}}


def test_save_and_load_round_trip_bit_for_bit(trained, tmp_path):
    prior, _ = trained
    path = save_prior(tmp_path / "prior.npz", prior, state_for())
    loaded, state = load_prior(path)
    assert loaded.config == prior.config and state == state_for()
    for name, p in prior.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)
        assert loaded.params[name].dtype == p.dtype
    np.testing.assert_array_equal(loaded.sample(20, np.random.default_rng(1)),
                                  prior.sample(20, np.random.default_rng(1)))


def rewrite(path, change):
    """Rewrite the prior file ``path`` with ``change(arrays, meta)`` applied to its entries."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays.pop("meta").item())
    change(arrays, meta)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def set_meta(key, value):
    def change(arrays, meta):
        meta[key] = value
    return change


def set_config(key, value):
    def change(arrays, meta):
        meta["model"][key] = value
    return change


def set_array(name, value):
    def change(arrays, meta):
        arrays[name] = value(arrays.get(name))
    return change


def drop(name):
    def change(arrays, meta):
        del arrays[name]
    return change


def pickled_meta(arrays, meta):
    arrays["param/0.b"] = np.array([object()], dtype=object)


BAD_FILES = [
    (set_meta("format", "npvae-checkpoint"), "format is 'npvae-checkpoint', not 'npvae-prior'"),
    (set_meta("version", 2), "prior file version 2; this npvae reads version 1"),
    (set_meta("state", None), "lacks its 'model' or 'state' object"),
    (set_config("hidden", [3]), "at least n_positions - 1 = 5 units"),
    (set_config("hidden", [10**9]), "more than the limit"),
    (set_config("dtype", "float16"), "dtype 'float16' is not float32 or float64"),
    (set_config("activation", "gelu"), "activation='gelu' is unknown"),
    (set_config("bogus", 1), "the prior's config has the fields"),
    (drop("param/2.b"), "do not match the prior's config"),
    (set_array("optim/m_sum.theta", lambda _: np.zeros(3)), "do not match the prior's config"),
    (set_array("param/0.W", lambda w: w[:, :-1]), "'param/0.W' is float64[30, 15]"),
    (set_array("param/0.b", lambda b: b.astype(np.float32)), "'param/0.b' is float32[16]"),
    (set_array("param/2.b", lambda b: b * np.nan), "hold NaN or infinite values"),
    (pickled_meta, "object array (pickled Python objects)"),
]


@pytest.mark.parametrize("change, message", BAD_FILES)
def test_every_bad_prior_file_is_refused_in_one_line(trained, tmp_path, change, message):
    prior, _ = trained
    prior64 = MADE(G, K, (16,), dtype="float64")
    prior64.theta[...] = prior.theta
    path = save_prior(tmp_path / "prior.npz", prior64, state_for())
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=None) as err:
        load_prior(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"", "not an npvae prior file"),
    (b"not a zip at all", "not an npvae prior file"),
    (b"\x93NUMPY\x01\x00", "not an npvae prior file"),
])
def test_files_that_are_not_priors_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "prior.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_prior(path)


def test_a_truncated_prior_is_refused_in_one_line(trained, tmp_path):
    path = save_prior(tmp_path / "prior.npz", trained[0], state_for())
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            load_prior(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_failed_write_leaves_the_previous_prior_whole(trained, tmp_path, monkeypatch):
    path = save_prior(tmp_path / "prior.npz", trained[0], state_for())
    before = path.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left on device"):
        save_prior(path, MADE(G, K, (16,), seed=9), state_for())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["prior.npz"]


# ---------------------------------------------------------------- a VQ-VAE's codes and prior


def tiny_vqvae(seed=0):
    """A VQ-VAE of 8 x 8 images: a 2 x 2 grid of 6 codes."""
    return VQVAE(64, (3, 4), embedding_dim=3, n_codes=6, dtype="float64", seed=seed)


def images(n, seed):
    return np.random.default_rng(seed).random((n, 64))


def test_the_codes_of_a_data_set_are_encodes_in_any_batches():
    model, x = tiny_vqvae(), images(23, 0)
    whole = model.encode(x).reshape(23, -1)
    for batch_size in (1, 5, 23, 100):
        codes = dataset_codes(model, x, batch_size=batch_size)
        assert codes.dtype == np.int64
        np.testing.assert_array_equal(codes, whole)


def test_open_prior_refuses_a_missing_mismatched_or_stale_prior(tmp_path):
    model = tiny_vqvae()
    with pytest.raises(ConfigError, match="has no prior.npz .* train it with: npvae train-prior"):
        open_prior(tmp_path, model)
    for made, message in [(MADE(4, 7, (3,)), "a prior of 4 positions x 7 codes, but the run's "
                           "VQ-VAE has a 2x2 grid of 6 codes"),
                          (MADE(9, 6, (8,)), "a prior of 9 positions x 6 codes")]:
        save_prior(tmp_path / "prior.npz", made, state_for(model))
        with pytest.raises(CheckpointError, match=message):
            open_prior(tmp_path, model)
    made = MADE(4, 6, (3,))
    save_prior(tmp_path / "prior.npz", made, state_for(model))
    assert open_prior(tmp_path, model)[0].config == made.config
    model.params["decoder.0.W"][0, 0, 0, 0] += 1e-3     # the VQ-VAE trained further
    with pytest.raises(CheckpointError, match="another VQ-VAE than the run's .* npvae "
                       "train-prior"):
        open_prior(tmp_path, model)


def test_every_vq_figure_is_written(tmp_path):
    model = tiny_vqvae()
    x = images(12, 1)
    metrics = [{"epoch": 1, "train_recon": 9.0, "test_recon": 8.5, "train_perplexity": 3.2}]
    paths = vqplots.save_vq_figures(model, tmp_path, x, np.random.default_rng(0), metrics)
    assert [p.name for p in paths] == ["reconstructions.png", "curves.png",
                                       "codebook_usage.png", "codes_in_context.png"]
    made = train_prior(dataset_codes(model, x), 6, hidden=(3,), epochs=1, batch_size=4,
                       log=lambda _: None)[0]
    save_prior(tmp_path / "prior.npz", made, state_for(model))
    paths = vqplots.save_vq_figures(model, tmp_path, x, np.random.default_rng(0), metrics)
    assert [p.name for p in paths] == list(vqplots.VQ_FIGURES)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model.params["decoder.0.W"][0, 0, 0, 0] += 1e-3     # the prior is now another VQ-VAE's
    with pytest.raises(CheckpointError, match="another VQ-VAE than the run's"):
        vqplots.save_vq_figures(model, tmp_path, x, np.random.default_rng(0), metrics)


def test_a_dynamically_binarized_run_gets_its_prior_from_one_binarization(tmp_path,
                                                                          monkeypatch):
    """The training images of such a run are grey; its encoder saw Bernoulli draws of them,
    so the prior learns the codes of one draw, from the prior's own stream of the seed."""
    model, x = tiny_vqvae(), images(30, 3)
    seen = []
    monkeypatch.setattr(prior_module, "train_prior",
                        lambda codes, K, **kw: seen.append(codes) or (MADE(4, K, (3,)), [
                            {"steps": 1, "test_nll": 1.0}]))
    for binarize in ("none", "dynamic", "dynamic"):
        prior_module.fit_run_prior(model, tmp_path, x, x[:5], binarize=binarize, seed=7,
                                   log=lambda _: None)
    draw = binarize_dynamic(x, np.random.default_rng(derive_seed(7, "prior", 2)))
    np.testing.assert_array_equal(seen[0], dataset_codes(model, x))
    np.testing.assert_array_equal(seen[1], dataset_codes(model, draw))
    np.testing.assert_array_equal(seen[2], seen[1])
    assert not np.array_equal(seen[1], seen[0])


def test_the_inkiest_position_is_where_the_ink_is():
    model = tiny_vqvae()
    image = np.zeros((8, 8))
    image[5, 1] = image[4, 0] = 1.0              # the bottom-left 4 x 4 patch: row 2, col 1
    image[0, 7] = 0.9
    assert vqplots.inkiest_position(model, image.reshape(-1)) == (1, 0)


def test_the_codes_in_context_change_one_position_to_every_code():
    model, x = tiny_vqvae(), images(1, 2)
    own, grids = vqplots.codes_in_context(model, x, (1, 0))
    np.testing.assert_array_equal(own, model.encode(x)[0])
    assert grids.shape == (6, 2, 2)
    np.testing.assert_array_equal(grids[:, 1, 0], np.arange(6))
    others = np.ones((2, 2), dtype=bool)
    others[1, 0] = False
    assert (grids[:, others] == own[others]).all()


def test_sampled_images_are_the_decoded_sampled_codes():
    model = tiny_vqvae()
    made = MADE(4, 6, (3,), seed=2)
    codes, x = prior_module.sample_images(model, made, 7, np.random.default_rng(3))
    np.testing.assert_array_equal(codes.reshape(7, -1), made.sample(7, np.random.default_rng(3)))
    np.testing.assert_array_equal(x, model.decode(codes))


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: '0' is not a positive integer"),
    (["--hidden", "4x4"], "argument --hidden: '4x4' is not a comma-separated list"),
    (["--lr", "-1"], "argument --lr: '-1' is not a positive finite number"),
    (["--batch-size", "0"], "argument --batch-size: '0' is not a positive integer"),
    (["--seed", "-1"], "argument --seed: '-1' is not a non-negative integer"),
    (["--threads", "0"], "--threads"),
    (["--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
])
def test_bad_train_prior_flags_are_one_line_errors(args, message, tmp_path, capsys):
    assert cli.main(["train-prior", str(tmp_path), *args]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "prior.npz").exists()


def test_train_prior_on_a_run_that_is_not_a_vqvae(trained_run, capsys):
    assert cli.main(["train-prior", str(trained_run)]) == 2
    assert "is not a VQ-VAE run (VAE); a learned prior over codes is for VQ-VAE runs" in \
        error_line(capsys)
    assert not (trained_run / "prior.npz").exists()


def test_train_prior_on_no_run(tmp_path, capsys):
    assert cli.main(["train-prior", str(tmp_path / "nothing")]) == 2
    assert "no such run folder or checkpoint file" in error_line(capsys)


# ---------------------------------------------------------------- the commands on a tiny VQ run

VQ_FLAGS = ["--preset", "vqvae", "--hidden", "3,4", "--embedding-dim", "3", "--n-codes", "6",
            "--batch-size", "10", "--no-progress"]


@pytest.fixture(scope="module")
def vq_data(tmp_path_factory):
    """48 training and 16 test images of 8 x 8 pixels: a 2 x 2 grid of codes."""
    return write_tiny_mnist(tmp_path_factory.mktemp("vq_data"), side=8)


@pytest.fixture(scope="module")
def vq_run(vq_data, tmp_path_factory):
    """A two-epoch tiny VQ-VAE run from the command line, its prior trained at the end:
    ``(run_dir, stdout)``."""
    run_dir = tmp_path_factory.mktemp("vq_run") / "run"
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["train", "--data-dir", str(vq_data), "--run-dir", str(run_dir),
                         "--epochs", "2", *VQ_FLAGS]) == 0
    return run_dir, out.getvalue()


def test_train_of_a_vq_run_ends_with_its_prior_and_every_figure(vq_run):
    run_dir, out = vq_run
    assert "codes: 48 training and 16 test grids of 2x2 positions, 6 codes" in out
    assert "prior epoch 10/10  train nll " in out
    model, _ = model_from_checkpoint(run_dir)
    made, state = open_prior(run_dir, model)        # the prior of this VQ-VAE
    assert made.config["hidden"] == [512] and state["settings"]["epochs"] == 10
    for name in vqplots.VQ_FIGURES:
        assert (run_dir / name).is_file(), name


def test_sample_and_plot_draw_from_the_prior(vq_run, vq_data, tmp_path, capsys):
    run_dir = copy_run(vq_run[0], tmp_path)
    out = tmp_path / "s.png"
    assert cli.main(["sample", str(run_dir), "--n", "9", "--out", str(out), "--seed", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"9 samples written to {out} (code grids drawn from the prior" in capsys.readouterr().out
    (run_dir / "samples.png").unlink()
    assert cli.main(["plot", str(run_dir), "--data-dir", str(vq_data)]) == 0
    printed = capsys.readouterr().out
    assert "samples.png" in printed and "codes_in_context.png" in printed
    assert (run_dir / "samples.png").is_file()


def test_train_prior_replaces_the_prior_and_a_failure_keeps_it(vq_run, tmp_path, capsys,
                                                                  monkeypatch):
    run_dir = copy_run(vq_run[0], tmp_path)
    assert cli.main(["train-prior", str(run_dir), "--epochs", "2", "--hidden", "8", "--seed",
                     "1", "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "prior: MADE(4 positions x 6 codes, hidden 8, relu, float32)" in out
    assert "prior epoch 2/2  train nll " in out and f"prior written to {run_dir}/prior.npz" in out
    assert load_prior(run_dir / "prior.npz")[0].config["hidden"] == [8]
    before = (run_dir / "prior.npz").read_bytes()
    monkeypatch.setattr(MADE, "forward", lambda self, codes: np.float32("nan"))
    assert cli.main(["train-prior", str(run_dir), "--epochs", "1", "--no-progress"]) == 2
    assert "the prior's loss is nan at epoch 1" in error_line(capsys)
    assert (run_dir / "prior.npz").read_bytes() == before
    assert cli.main(["train-prior", str(run_dir), "--hidden", "2"]) == 2
    assert "each masked layer needs at least n_positions - 1 = 3 units" in error_line(capsys)
    assert (run_dir / "prior.npz").read_bytes() == before


def test_without_a_prior_sample_says_how_to_train_it_and_plot_draws_the_rest(vq_run, tmp_path,
                                                                             capsys):
    run_dir = copy_run(vq_run[0], tmp_path)
    (run_dir / "prior.npz").unlink()
    (run_dir / "samples.png").unlink()
    assert cli.main(["sample", str(run_dir)]) == 2
    assert f"has no prior.npz (the learned prior that samples need); train it with: npvae " \
           f"train-prior {run_dir}" in error_line(capsys)
    assert not (run_dir / "samples_seed0.png").exists()
    assert cli.main(["sample", str(run_dir), "--out", str(run_dir / "prior.npz")]) == 2
    assert "prior.npz is a run folder's own file; a picture never replaces it" in \
        error_line(capsys)
    assert not (run_dir / "prior.npz").exists()
    assert cli.main(["plot", str(run_dir)]) == 0
    assert f"no samples.png: it needs the run's learned prior; train it with: npvae " \
           f"train-prior {run_dir}" in capsys.readouterr().out
    assert not (run_dir / "samples.png").exists() and (run_dir / "codebook_usage.png").is_file()


def test_a_resumed_vq_run_retrains_its_prior(vq_run, vq_data, tmp_path, capsys):
    run_dir = copy_run(vq_run[0], tmp_path)
    assert cli.main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 0
    model, _ = model_from_checkpoint(run_dir)
    open_prior(run_dir, model)                      # the new VQ-VAE's (its fingerprint)
    assert cli.main(["sample", str(run_dir)]) == 0


def test_train_prior_has_help(capsys):
    assert cli.main(["train-prior", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: npvae train-prior" in out and "--threads N" in out and "(default 512)" in out
    assert cli.main(["--help"]) == 0
    assert "train-prior" in capsys.readouterr().out
