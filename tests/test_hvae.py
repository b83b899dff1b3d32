"""Two (and more) stochastic layers: npvae.hvae, checked three ways.

Central differences in float64 over random shapes (hypothesis), L = 2 and 3
layers, both objectives, k = 1 to 4; planted bugs in the backward (the
gradient into h_1 through q(h_2 | h_1) or through p(h_1 | h_2) dropped, the
sign of log q's direct term flipped) are caught; PyTorch's autograd agrees on
every value and gradient (the torch extra); and the forward maths: the
samples are mu + sigma eps layer by layer, the bound is at least the ELBO
average, and k = 1 "iwae" is the sampled-KL ELBO.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvae.hvae as hvae_module
from npvae.errors import ConfigError
from npvae.evaluate import logmeanexp
from npvae.gradcheck import DEFAULT_TOL, biases_off_zero, check_model, format_results
from npvae.hvae import HKSampleObjective, HVAE, k_sample_objective
from npvae.iwae import KSampleObjective
from npvae.vae import VAE
from tests.torch_or_skip import import_torch


def make_model(x_dim=7, hidden=((6, 5), (5,)), latent=(4, 3), likelihood="bernoulli", seed=1,
               **kwargs):
    """A float64 HVAE with small random biases (no unit at a symmetric point)."""
    model = HVAE(x_dim, hidden, latent, likelihood=likelihood, dtype="float64", seed=seed,
                 **kwargs)
    rng = np.random.default_rng(seed + 100)
    biases_off_zero(model, rng)
    return model


def batch(model, B, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((B, model.x_dim)), rng.standard_normal((k, B, model.noise_dim))


def assert_all_ok(results):
    assert all(r.ok for r in results), format_results(results)


# ------------------------------------------------------------------ finite differences


@settings(max_examples=12, deadline=None)
@given(x_dim=st.integers(2, 8), h1=st.integers(1, 6), h2=st.integers(1, 5),
       z1=st.integers(1, 4), z2=st.integers(1, 3), B=st.integers(1, 4), k=st.integers(1, 4),
       objective=st.sampled_from(["elbo", "iwae"]),
       likelihood=st.sampled_from(["bernoulli", "gaussian"]), seed=st.integers(0, 10**6))
def test_two_layer_gradients_over_shapes(x_dim, h1, h2, z1, z2, B, k, objective, likelihood,
                                         seed):
    model = make_model(x_dim, ((h1,), (h2,)), (z1, z2), likelihood, seed=seed % 1000, sigma=0.8)
    x, eps = batch(model, B, k, seed)
    assert_all_ok(check_model(model, x, eps, objective=HKSampleObjective(model, k, objective)))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_three_layer_gradients(objective):
    model = make_model(8, ((6,), (5, 4), (4,)), (4, 3, 2), decoder_hidden=((5,), (3,), (4, 4)))
    x, eps = batch(model, 3, 3)
    assert_all_ok(check_model(model, x, eps, objective=HKSampleObjective(model, 3, objective)))


def test_own_loss_and_beta_gradients():
    """The model's own loss (one sample, eps (B, noise_dim)) and the k-sample ELBO with a
    KL weight, beta = 0.3, which weighs every sampled KL term (and log q's direct one)."""
    model = make_model(activation="softplus")
    x, eps = batch(model, 3, 2)
    assert_all_ok(check_model(model, x, eps[0], beta=0.3))
    assert_all_ok(check_model(model, x, eps, beta=0.3,
                              objective=HKSampleObjective(model, 2, "elbo")))


# ------------------------------------------------------------------ planted bugs are caught


def failed_names(model, objective, x, eps):
    results = check_model(model, x, eps, objective=objective)
    assert max(r.rel_error for r in results) > 1e3 * DEFAULT_TOL, format_results(results)
    return {r.name for r in results if not r.ok}


def test_checker_catches_the_missing_path_through_q_h2(monkeypatch):
    """q(h_2 | h_1)'s input gradient dropped: h_1 loses what h_2 sends down, so every
    q_h1 gradient fails, and nothing in the generative networks."""
    model = make_model()
    x, eps = batch(model, 4, 3)
    net = model.nets["q_h2"]
    backward = net.backward
    monkeypatch.setattr(net, "backward", lambda dout, need_dx=True: 0 * backward(dout, need_dx))
    failed = failed_names(model, HKSampleObjective(model, 3, "iwae"), x, eps)
    assert failed == {n for n in model.params if n.startswith("q_h1.")}


def test_checker_catches_the_missing_path_through_p_h1(monkeypatch):
    """log p(h_1 | h_2)'s gradient with respect to h_1 dropped (its mean and variance keep
    theirs): q(h_1 | x)'s gradients fail, the others (above h_1 or generative) do not."""
    model = make_model()
    x, eps = batch(model, 4, 3)
    original = hvae_module.log_normal_backward

    def no_dh(dout, z, mu, logvar):
        dz, dmu, dlogvar = original(dout, z, mu, logvar)
        return 0 * dz, dmu, dlogvar

    monkeypatch.setattr(hvae_module, "log_normal_backward", no_dh)
    failed = failed_names(model, HKSampleObjective(model, 3, "elbo"), x, eps)
    assert failed == {n for n in model.params if n.startswith("q_h1.")}


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_checker_catches_the_wrong_sign_on_log_q(objective, monkeypatch):
    """+ck/2 for log q's direct term instead of -ck/2: the q networks fail."""
    model = make_model()
    x, eps = batch(model, 4, 3)
    original = hvae_module.q_sample_backward

    def flipped(dh, logvar, eps, ck):
        dmu, dlogvar = original(dh, logvar, eps, ck)
        return dmu, dlogvar + ck

    monkeypatch.setattr(hvae_module, "q_sample_backward", flipped)
    failed = failed_names(model, HKSampleObjective(model, 3, objective), x, eps)
    assert failed == {n for n in model.params if n.startswith("q_")}


# ------------------------------------------------------------------ forward maths


def test_samples_are_reparameterized_layer_by_layer():
    """h_1 = mu_1(x) + sigma_1 eps_1; h_2 = mu_2(h_1) + sigma_2 eps_2, for each sample;
    and log q(h | x) is the sum of the two Gaussian densities at those points."""
    model = make_model()
    x, eps = batch(model, 3, 2)
    lw, cache = model._forward(x, eps)
    Z1, Z2 = model.latents
    q1 = model.nets["q_h1"].forward(x)
    h1 = q1[:, :Z1] + np.exp(q1[:, Z1:] / 2) * eps[..., :Z1]                      # (k, B, Z1)
    q2 = model.nets["q_h2"].forward(h1.reshape(-1, Z1))
    h2 = q2[:, :Z2] + np.exp(q2[:, Z2:] / 2) * eps[..., Z1:].reshape(-1, Z2)
    np.testing.assert_allclose(cache["hs"][0], h1.reshape(-1, Z1), rtol=1e-12)
    np.testing.assert_allclose(cache["hs"][1], h2, rtol=1e-12)

    def log_density(h, mean, logvar):
        return (-0.5 * (np.log(2 * np.pi) + logvar) - (h - mean) ** 2 / (2 * np.exp(logvar))).sum(-1)

    log_q = (log_density(h1, q1[:, :Z1], q1[:, Z1:]).reshape(-1)
             + log_density(h2, q2[:, :Z2], q2[:, Z2:]))
    np.testing.assert_allclose(lw.log_qh.reshape(-1), log_q, rtol=1e-12)


def test_sampler_moments():
    """The layer-1 samples of one example have mean mu_1 and variance exp(logvar_1): a
    sampler scaling by exp(logvar) (every gradient check passes it) is caught."""
    model = make_model()
    x = np.random.default_rng(3).random((1, model.x_dim))
    eps = np.random.default_rng(4).standard_normal((20000, 1, model.noise_dim))
    _, cache = model._forward(x, eps)
    mu, logvar = model.encode_layers(x)[0]
    h1 = cache["hs"][0]
    se = np.sqrt(np.exp(logvar[0]) / len(h1))
    assert np.all(np.abs(h1.mean(axis=0) - mu[0]) < 5 * se)
    np.testing.assert_allclose(h1.var(axis=0), np.exp(logvar[0]), rtol=0.05)


def test_bound_is_at_least_the_elbo_average_and_k1_iwae_is_the_sampled_elbo():
    model = make_model()
    x, eps = batch(model, 5, 4)
    terms = HKSampleObjective(model, 4, "iwae").forward(x, eps=eps)
    log_w = model.log_weights(x, eps).log_w
    assert np.all(logmeanexp(log_w, axis=0) >= log_w.mean(axis=0))
    assert float(terms.loss) < float(terms.recon + terms.kl)
    one = HKSampleObjective(model, 1, "iwae").forward(x, eps=eps[:1])
    elbo = HKSampleObjective(model, 1, "elbo").forward(x, eps=eps[:1])
    assert abs(float(one.loss) - float(elbo.loss)) <= 1e-12 * abs(float(elbo.loss))


def test_k_sample_objective_picks_the_models_own():
    assert isinstance(k_sample_objective(make_model(), 2, "iwae"), HKSampleObjective)
    assert isinstance(k_sample_objective(VAE(4, (3,), 2), 2, "iwae"), KSampleObjective)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ConfigError, match="two or more stochastic layers"):
        HVAE(7, ((6,),), (4,))
    with pytest.raises(ConfigError, match="must hold 2 lists of hidden sizes"):
        HVAE(7, (6, 5), (4, 3))
    with pytest.raises(ConfigError, match="activation='nope' is unknown"):
        HVAE(7, ((6,), (5,)), (4, 3), activation="nope")
    with pytest.raises(ConfigError, match="built of MLPs"):
        HVAE(7, ((6,), (5,)), (4, 3), architecture="conv")
    model = make_model()
    x, eps = batch(model, 3, 2)
    with pytest.raises(ConfigError, match=r"eps must have shape \(3, 3, 7\)"):
        HKSampleObjective(model, 3, "iwae").forward(x, eps=eps)
    with pytest.raises(ConfigError, match="beta must be 1"):
        HKSampleObjective(model, 2, "iwae").forward(x, eps=eps, beta=0.5)
    with pytest.raises(ConfigError, match="not conditional"):
        HKSampleObjective(model, 2, "elbo").forward(x, np.zeros(3, int), eps=eps)


# ------------------------------------------------------------------ PyTorch autograd


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_matches_torch_autograd(likelihood, objective):
    """The loss, recon, kl and every gradient equal autograd's in float64, for the same
    parameters and noise, through both stochastic layers (k = 5, beta = 1)."""
    torch = import_torch()  # an error, not a skip, where CI requires PyTorch
    model = make_model(9, ((7, 6), (5,)), (4, 3), likelihood, sigma=0.8)
    x, eps = batch(model, 4, 5, seed=2)
    objective_np = HKSampleObjective(model, 5, objective)
    terms = objective_np.forward(x, eps=eps)
    objective_np.backward()

    P = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    tx, te = torch.tensor(x), torch.tensor(eps)
    Normal = torch.distributions.Normal

    def mlp(net, h):
        n = len([k for k in P if k.startswith(f"{net}.") and k.endswith(".W")])
        for i in range(n):
            h = h @ P[f"{net}.{2 * i}.W"] + P[f"{net}.{2 * i}.b"]
            if i < n - 1:
                h = torch.tanh(h)
        return h

    def gaussian(out, Z):
        mu, logvar = out[..., :Z], out[..., Z:]
        return mu, Normal(mu, torch.exp(logvar / 2))

    mu1, q1 = gaussian(mlp("q_h1", tx), 4)                       # (B, 4)
    h1 = mu1 + q1.scale * te[..., :4]                            # (k, B, 4)
    mu2, q2 = gaussian(mlp("q_h2", h1), 3)                       # (k, B, 3)
    h2 = mu2 + q2.scale * te[..., 4:]
    _, p1 = gaussian(mlp("p_h1", h2), 4)
    out = mlp("p_x", h1)
    if likelihood == "bernoulli":
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            out, tx.expand_as(out), reduction="none").sum(-1)
    else:
        log_px = Normal(out, 0.8).log_prob(tx).sum(-1)
    log_ph = Normal(0.0, 1.0).log_prob(h2).sum(-1) + p1.log_prob(h1).sum(-1)
    log_qh = q1.log_prob(h1).sum(-1) + q2.log_prob(h2).sum(-1)
    log_w = log_px + log_ph - log_qh                             # (k, B)
    if objective == "iwae":
        loss = -(torch.logsumexp(log_w, 0) - math.log(5)).mean()
    else:
        loss = -log_w.mean()
    loss.backward()
    np.testing.assert_allclose(float(terms.loss), loss.item(), rtol=1e-12)
    np.testing.assert_allclose(float(terms.recon), -log_px.mean().item(), rtol=1e-12)
    np.testing.assert_allclose(float(terms.kl), (log_qh - log_ph).mean().item(), rtol=1e-10)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, P[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


# ------------------------------------------------------------------ the evaluator and the CLI


def test_the_k1_bound_is_the_sampled_elbo_and_the_bound_rises_with_k():
    """The evaluator's bound for an HVAE: at k = 1 exactly -(recon + kl) of evaluate_elbo
    for the same noise; at k = 200 higher, per example on average."""
    from npvae.evaluate import evaluate_elbo, iw_bounds

    model = make_model(9, ((7,), (5,)), (4, 3))
    x = np.random.default_rng(5).random((30, 9))
    terms = evaluate_elbo(model, x, rng=np.random.default_rng(2))
    one = iw_bounds(model, x, 1, np.random.default_rng(2))
    assert one.mean() == pytest.approx(-(terms["recon"] + terms["kl"]), rel=1e-12)
    many = iw_bounds(model, x, 200, np.random.default_rng(3), chunk=7)
    assert many.mean() > one.mean()


def test_layer_activity_counts_each_layers_units():
    """A unit of h_2 whose mean ignores h_1 (its weights zeroed) is inactive; h_1's stay active."""
    from npvae.hvae import active_units_per_layer, layer_activity

    model = make_model(9, ((7,), (5,)), (4, 3))
    x = np.random.default_rng(5).random((200, 9))
    before = active_units_per_layer(model, x, threshold=1e-20)
    model.params["q_h2.2.W"][:, 0] = 0.0          # the mean of h_2's first unit: a constant
    activity = layer_activity(model, x)
    assert before == [4, 3] and activity[1][0] < 1e-20 and np.all(activity[1][1:] > 1e-6)
    assert active_units_per_layer(model, x, threshold=1e-20) == [4, 2]


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory, tiny):
    """``npvae train --preset burda2-iwae`` for one epoch on the tiny 4 x 4 data set."""
    from npvae import cli

    run_dir = tmp_path_factory.mktemp("hvae_cli") / "run"
    assert cli.main(["train", "--preset", "burda2-iwae", "--epochs", "1", "--data-dir", str(tiny),
                     "--no-progress", "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_the_preset_trains_and_every_command_reads_the_run(two_layer_run, tiny, capsys):
    from npvae import cli
    from npvae.checkpoint import model_from_checkpoint

    model, checkpoint = model_from_checkpoint(two_layer_run)
    assert isinstance(model, HVAE) and model.latents == (100, 50)
    assert checkpoint.state["train_config"]["objective"] == "iwae"
    capsys.readouterr()
    assert cli.main(["evaluate", str(two_layer_run), "--data-dir", str(tiny), "--iw-samples",
                     "50", "--limit", "16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "importance-weighted bound, k=50" in out and "standard error" in out
    assert re.search(r"active units per stochastic layer \(h1 at the bottom\): "
                     r"h1 \d+ of 100, h2 \d+ of 50", out), out
    assert cli.main(["sample", str(two_layer_run), "--n", "4"]) == 0
    assert cli.main(["plot", str(two_layer_run), "--data-dir", str(tiny)]) == 0
    assert (two_layer_run / "samples_seed0.png").is_file()


def test_a_two_layer_run_resumes_exactly(two_layer_run, tiny, tmp_path):
    """One epoch, then a second by --resume: the same weights as two epochs in one go."""
    import shutil

    from npvae import cli
    from npvae.checkpoint import model_from_checkpoint

    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    shutil.copytree(two_layer_run, resumed)
    common = ["--data-dir", str(tiny), "--no-progress", "--no-figures"]
    assert cli.main(["train", "--resume", str(resumed), "--epochs", "2", *common]) == 0
    assert cli.main(["train", "--preset", "burda2-iwae", "--epochs", "2", "--run-dir",
                     str(straight), *common]) == 0
    a, _ = model_from_checkpoint(resumed)
    b, _ = model_from_checkpoint(straight)
    np.testing.assert_array_equal(a.theta, b.theta)


@pytest.mark.parametrize("preset", ["burda2-vae", "burda2-iwae"])
def test_gradcheck_of_the_presets_is_all_ok(preset, capsys):
    from npvae import cli

    assert cli.main(["gradcheck", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert "HVAE(" in out and "all ok" in out


@pytest.mark.parametrize("flags,message", [
    (["--conditional"], "several is not conditional"),
    (["--latent", "20"], "hidden"),
    (["--k", "0"], "k"),
])
def test_bad_two_layer_settings_are_one_line_errors(flags, message, tmp_path, capsys):
    from npvae import cli

    run_dir = tmp_path / "run"
    assert cli.main(["train", "--preset", "burda2-iwae", "--run-dir", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not run_dir.exists()


# ------------------------------------------------------------------ hostile arguments


sizes_or_junk = st.one_of(st.lists(st.lists(st.integers(-1, 6), max_size=2), max_size=3),
                          st.lists(st.integers(-1, 6), max_size=3), st.none(), st.integers(),
                          st.text(max_size=3))


@settings(max_examples=150, deadline=None)
@given(x_dim=st.one_of(st.integers(1, 8), st.none(), st.text(max_size=2)),
       hidden=sizes_or_junk, latent=sizes_or_junk, decoder_hidden=sizes_or_junk,
       eps=st.one_of(st.none(), st.integers(0, 3)), beta=st.one_of(st.none(), st.floats(0, 2)))
def test_hostile_arguments_fail_only_with_clear_errors(x_dim, hidden, latent, decoder_hidden,
                                                       eps, beta):
    """Random sizes, nested or not, and noise of random shapes: a model and a step, or a
    one-line NpvaeError; never a NumPy or Python error from inside."""
    from npvae import NpvaeError

    try:
        model = HVAE(x_dim, hidden, latent, decoder_hidden=decoder_hidden, dtype="float64")
        x = np.random.default_rng(0).random((3, model.x_dim))
        noise = None if eps is None else np.zeros((eps, 3, model.noise_dim))
        objective = HKSampleObjective(model, 2, "elbo")
        objective.forward(x, eps=noise, rng=np.random.default_rng(1), beta=beta)
        objective.backward()
    except NpvaeError as err:
        assert str(err) and "\n" not in str(err)


def test_a_two_layer_run_exports_and_imports_unchanged(two_layer_run, tmp_path):
    """npvae export, then npvae import: the same HVAE, weight for weight. (No torch.nn module
    of a two-layer model is written in benchmarks/torch_models.py yet.)"""
    pytest.importorskip("safetensors")
    from npvae import cli
    from npvae.checkpoint import model_from_checkpoint

    path = tmp_path / "model.safetensors"
    assert cli.main(["export", str(two_layer_run), str(path)]) == 0
    assert cli.main(["import", str(path), "--run-dir", str(tmp_path / "back")]) == 0
    a, _ = model_from_checkpoint(two_layer_run)
    b, _ = model_from_checkpoint(tmp_path / "back")
    assert isinstance(b, HVAE) and b.config == a.config
    np.testing.assert_array_equal(a.theta, b.theta)
