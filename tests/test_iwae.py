"""Training on k samples: the k-sample ELBO (its KL in closed form, "elbo", or sampled,
"elbo-sampled") and the importance-weighted bound ("iwae") of npvae.iwae.

End-to-end central differences in float64 for k = 1, 2, 5, several
architectures and both likelihoods; wrong backwards (weights not normalised,
the direct logvar term or the prior's term forgotten, the closed-form KL's
gradient given to the sampled KL) are caught; k = 1 reduces to the one-sample
ELBO (exactly for "elbo", in expectation for "iwae") and "elbo-sampled" is
"iwae" bit for bit there; the bound is at least the average ELBO on the same
samples; and torch's autograd agrees when torch is installed.
"""

import numpy as np
import pytest

import npvae.iwae as iwae_module
from npvae import VAE
from npvae.errors import ConfigError
from npvae.evaluate import evaluate_elbo, iw_log_weights, logmeanexp
from npvae.gradcheck import DEFAULT_TOL, biases_off_zero, check_model, format_results
from npvae.iwae import KSampleObjective, importance_weights
from tests.torch_or_skip import import_torch


def make_model(x_dim=7, hidden=(6,), latent=3, activation="tanh", likelihood="bernoulli",
               seed=1, **kwargs):
    """A float64 VAE with small random biases (no unit at a kink)."""
    model = VAE(x_dim, hidden, latent, activation=activation, likelihood=likelihood,
                dtype="float64", seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 100)
    biases_off_zero(model, rng)
    return model


def batch(model, B, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((B, model.x_dim)), rng.standard_normal((k, B, model.latent))


ARCHITECTURES = [((6,), 3, "tanh"), ((8, 5), 2, "softplus"), ((7, 6), 4, "leaky_relu")]


@pytest.mark.parametrize("objective", ["elbo", "elbo-sampled", "iwae"])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("hidden,latent,activation", ARCHITECTURES)
def test_iwae_gradients_end_to_end(objective, k, likelihood, hidden, latent, activation):
    model = make_model(9, hidden, latent, activation, likelihood, sigma=0.7)
    x, eps = batch(model, 4, k, seed=k)
    results = check_model(model, x, eps, objective=KSampleObjective(model, k, objective))
    assert all(r.ok for r in results), format_results(results)


@pytest.mark.parametrize("objective", ["elbo", "elbo-sampled"])
def test_elbo_objective_gradients_with_beta(objective):
    model = make_model()
    x, eps = batch(model, 3, 3)
    results = check_model(model, x, eps, beta=0.3, objective=KSampleObjective(model, 3, objective))
    assert all(r.ok for r in results), format_results(results)


# ------------------------------------------------------------------ wrong backwards are caught


def unnormalised_weights(log_w, axis=0):
    """exp(log w): the weights without the softmax's normalisation."""
    return np.exp(log_w)


def weights_without_max(log_w, axis=0):
    """softmax with the sample axis confused with the batch axis."""
    e = np.exp(log_w)
    return e / e.sum(axis=1 - axis, keepdims=True)


class NoDirectLogvar(KSampleObjective):
    """Forgets log q's direct -1/2 per latent (only the path through z is kept).

    backward subtracts 1/2 sum_i c_i = 1/(2B) from dlogvar (the weights sum to 1);
    a reparameterization backward that adds 1/(2B) to the first sample cancels it.
    """

    def backward(self):
        original = iwae_module.reparameterize_backward

        def cancelled(dz, logvar, eps):
            dmu, dlogvar = original(dz, logvar, eps)
            extra = np.zeros_like(dlogvar)
            extra[0] = 0.5 / dlogvar.shape[1]
            return dmu, dlogvar + extra

        iwae_module.reparameterize_backward = cancelled
        try:
            super().backward()
        finally:
            iwae_module.reparameterize_backward = original


class NoPriorTerm(KSampleObjective):
    """Forgets the prior's d(-log p(z))/dz = z."""

    def backward(self):
        z = self.lw.z
        self.lw = self.lw._replace(z=np.zeros_like(z))
        try:
            super().backward()
        finally:
            self.lw = self.lw._replace(z=z)


@pytest.mark.parametrize("bug", ["unnormalised", "wrong axis", "no direct logvar", "no prior"])
def test_checker_catches_wrong_iwae_backward(bug, monkeypatch):
    model = make_model(8, (6,), 3, "tanh")
    x, eps = batch(model, 4, 5)
    cls = {"no direct logvar": NoDirectLogvar, "no prior": NoPriorTerm}.get(bug, KSampleObjective)
    if bug == "unnormalised":
        monkeypatch.setattr(iwae_module, "importance_weights", unnormalised_weights)
    if bug == "wrong axis":
        monkeypatch.setattr(iwae_module, "importance_weights", weights_without_max)
    results = {r.name: r for r in check_model(model, x, eps, objective=cls(model, 5, "iwae"))}
    failed = {name for name, r in results.items() if not r.ok}
    encoder = {name for name in results if name.startswith("encoder.")}
    if bug in ("unnormalised", "wrong axis"):
        assert failed == set(results), format_results(results.values())  # every gradient
    else:  # the error enters at mu or logvar: every encoder gradient, no decoder one
        assert failed == encoder, format_results(results.values())
    assert max(r.rel_error for r in results.values()) > 1e3 * DEFAULT_TOL


class ClosedFormKLBackward(KSampleObjective):
    """The sampled-KL forward with the closed-form KL's backward: the display that
    derivations.md once gave for "elbo" (c = 1/(kB) with the gradient of -log w)
    mixed the two. The decoder's gradients agree; the encoder's do not."""

    def backward(self):
        self.objective = "elbo"
        try:
            super().backward()
        finally:
            self.objective = "elbo-sampled"


@pytest.mark.parametrize("bug", ["closed-form KL backward", "no prior", "no direct logvar"])
def test_checker_catches_wrong_sampled_kl_backward(bug):
    model = make_model(8, (6,), 3, "tanh")
    x, eps = batch(model, 4, 3)
    cls = {"closed-form KL backward": ClosedFormKLBackward, "no prior": NoPriorTerm,
           "no direct logvar": NoDirectLogvar}[bug]
    results = {r.name: r for r in check_model(model, x, eps, objective=cls(model, 3, "elbo-sampled"))}
    failed = {name for name, r in results.items() if not r.ok}
    assert failed == {name for name in results if name.startswith("encoder.")}, \
        format_results(results.values())
    assert max(r.rel_error for r in results.values()) > 1e3 * DEFAULT_TOL


# ------------------------------------------------------------------ k = 1 and the ELBO


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_k1_sampled_kl_elbo_is_iwae_bit_for_bit(dtype):
    """"elbo-sampled" with k = 1 is "iwae" with k = 1: the same loss terms and the same
    gradients, to the last bit (the paper's VAE and IWAE rows at k = 1 are one computation);
    at k = 5 they differ."""
    model = VAE(8, (6, 5), 3, activation="tanh", dtype=dtype, seed=4)
    for k, same in ((1, True), (5, False)):
        x, eps = batch(model, 6, k, seed=2)
        x, eps = x.astype(dtype), eps.astype(dtype)
        got = {}
        for objective in ("iwae", "elbo-sampled"):
            loss = KSampleObjective(model, k, objective)
            got[objective] = (tuple(float(t) for t in loss.forward(x, eps=eps)), None)
            loss.backward()
            got[objective] = (got[objective][0], model.dtheta.copy())
        (terms_iw, grad_iw), (terms_s, grad_s) = got["iwae"], got["elbo-sampled"]
        assert (terms_iw == terms_s and np.array_equal(grad_iw, grad_s)) == same, (k, terms_iw, terms_s)
    assert terms_iw[1:] == terms_s[1:]          # the same recon and sampled KL at k = 5 too
    assert terms_iw[0] < terms_s[0]             # -L_5 below the average of the 5 ELBO terms


def test_k1_elbo_objective_is_the_vae_loss():
    """"elbo" with k = 1: VAE.forward's terms and VAE.backward's gradients, for the same eps."""
    model = make_model(8, (6, 5), 3, "softplus")
    x, eps = batch(model, 5, 1)
    terms = model.forward(x, eps=eps[0], beta=0.7)
    model.backward()
    expected = {name: g.copy() for name, g in model.grads.items()}
    objective = KSampleObjective(model, 1, "elbo")
    got = objective.forward(x, eps=eps, beta=0.7)
    objective.backward()
    for a, b in zip(terms, got):
        assert abs(float(a) - float(b)) <= 1e-12 * abs(float(a))
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_k1_iwae_is_the_sampled_kl_elbo():
    """"iwae" with k = 1 is -ELBO with the KL sampled at the same z, to rounding, and
    differs from the analytic-KL ELBO (the same only in expectation)."""
    model = make_model(8, (6,), 3, "tanh")
    x, _ = batch(model, 6, 1)
    terms = KSampleObjective(model, 1, "iwae").forward(x, rng=np.random.default_rng(5))
    sampled = evaluate_elbo(model, x, batch_size=6, rng=np.random.default_rng(5), kl="sampled")
    analytic = evaluate_elbo(model, x, batch_size=6, rng=np.random.default_rng(5))
    assert abs(float(terms.loss) - sampled["loss"]) < 1e-12 * sampled["loss"]
    assert abs(float(terms.kl) - sampled["kl"]) < 1e-12
    assert abs(float(terms.loss) - analytic["loss"]) > 1e-3  # not equal sample by sample


def flat_gradient(model, objective, x, eps):
    objective.forward(x, eps=eps)
    objective.backward()
    return model.dtheta.copy()


def test_k1_iwae_gradient_equals_the_elbo_gradient_in_expectation():
    """Over many noise draws, the mean difference between the k = 1 IWAE gradient and
    the analytic-KL ELBO gradient is zero within its standard error, while one draw's
    difference is not zero: equal in expectation, not per sample.

    Each group is one batch of 200 copies of the two examples with their own noise,
    so its gradient is the mean of 200 draws' gradients; 50 groups give the
    standard error.
    """
    model = make_model(6, (5,), 2, "tanh", seed=3)
    x = np.tile(np.random.default_rng(7).random((2, 6)), (200, 1))
    iw, elbo = KSampleObjective(model, 1, "iwae"), KSampleObjective(model, 1, "elbo")
    rng = np.random.default_rng(8)
    diffs = []
    for _ in range(50):
        eps = rng.standard_normal((1, len(x), 2))
        diffs.append(flat_gradient(model, iw, x, eps) - flat_gradient(model, elbo, x, eps))
    diffs = np.array(diffs)
    mean, se = diffs.mean(axis=0), diffs.std(axis=0, ddof=1) / np.sqrt(len(diffs))
    moving = se > 0
    z = np.abs(mean[moving]) / se[moving]
    # about 150 entries, t with 49 degrees of freedom: max |t| > 5 has p ~ 1e-3
    assert z.max() < 5, z.max()
    one = (flat_gradient(model, iw, x[:2], eps[:, :2]) - flat_gradient(model, elbo, x[:2], eps[:, :2]))
    assert np.abs(one).max() > 1e-3
    # the test can fail: a bias of a tenth of one draw's standard deviation
    # (sqrt(200) group standard deviations) is seen
    biased = diffs + 0.1 * np.sqrt(200) * diffs.std(axis=0, ddof=1)
    assert (np.abs(biased.mean(axis=0)[moving]) / se[moving]).min() > 5


def test_iwae_bound_is_at_least_the_elbo_average():
    """log mean_i w_i >= mean_i log w_i for the same samples, example by example; the
    objective's loss is -L_k, its recon + kl the sampled-KL ELBO average."""
    model = make_model(8, (6,), 3, "tanh")
    x, eps = batch(model, 6, 5)
    terms = KSampleObjective(model, 5, "iwae").forward(x, eps=eps)
    log_w = iw_log_weights(model, x, 5, np.random.default_rng(1))
    assert np.all(logmeanexp(log_w, axis=0) >= log_w.mean(axis=0))
    assert float(terms.loss) <= float(terms.recon + terms.kl)
    assert float(terms.recon + terms.kl) - float(terms.loss) > 1e-3  # strictly, here


def test_importance_weights_are_a_softmax():
    log_w = np.array([[-1000.0, 3.0], [-1000.0 + np.log(3.0), 3.0]])
    w = importance_weights(log_w)
    np.testing.assert_allclose(w, [[0.25, 0.5], [0.75, 0.5]], rtol=1e-12)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)


def test_the_k_samples_are_one_decoder_batch(monkeypatch):
    """The decoder runs once, on k B rows, sample-major, not in a loop over samples."""
    model = make_model(8, (6,), 3, "tanh")
    x, eps = batch(model, 4, 5)
    calls = []
    forward = model.decoder.forward
    monkeypatch.setattr(model.decoder, "forward", lambda z: calls.append(z.copy()) or forward(z))
    KSampleObjective(model, 5, "iwae").forward(x, eps=eps)
    assert [c.shape for c in calls] == [(20, 3)]
    mu, logvar = model.encode(x)
    np.testing.assert_allclose(calls[0][4 * 2 + 1], mu[1] + np.exp(logvar[1] / 2) * eps[2, 1])


def test_bad_arguments_are_one_line_errors():
    model = make_model()
    x, eps = batch(model, 3, 2)
    with pytest.raises(ConfigError, match="objective='iw' is unknown"):
        KSampleObjective(model, 2, "iw")
    with pytest.raises(ConfigError, match="k=0"):
        KSampleObjective(model, 0, "iwae")
    with pytest.raises(ConfigError, match=r"eps must have shape \(3, 3, 3\)"):
        KSampleObjective(model, 3, "iwae").forward(x, eps=eps)
    with pytest.raises(ConfigError, match="beta must be 1"):
        KSampleObjective(model, 2, "iwae").forward(x, eps=eps, beta=0.5)
    with pytest.raises(ConfigError, match="needs eps or a random Generator"):
        KSampleObjective(model, 2, "elbo").forward(x)
    with pytest.raises(ConfigError, match="not conditional"):
        KSampleObjective(model, 2, "elbo").forward(x, np.zeros(3, int), eps=eps)


def test_a_k_beyond_the_memory_limit_is_refused_before_anything_is_drawn(capsys):
    """k B decoder rows above MAX_DECODER_ROWS: one line, from the objective, the config and
    the command line alike, before any noise is drawn (no swapping, no OOM kill)."""
    from npvae.cli import main
    from npvae.config import TrainConfig
    from npvae.iwae import MAX_DECODER_ROWS

    model = make_model()
    x, _ = batch(model, 3, 2)
    k = MAX_DECODER_ROWS // 3 + 1
    with pytest.raises(ConfigError, match="decoder rows a step, more than the 262,144 allowed"):
        KSampleObjective(model, k, "iwae").forward(x, rng=None)
    KSampleObjective(model, MAX_DECODER_ROWS // 3, "iwae")   # the limit itself is allowed
    with pytest.raises(ConfigError, match="lower k or the batch size"):
        TrainConfig(objective="iwae", k=2**11 + 1, batch_size=128).validate()
    assert main(["train", "--k", "1000000", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than the 262,144 allowed" in err, err


# ------------------------------------------------------------------ against autograd


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("objective", ["elbo", "elbo-sampled", "iwae"])
def test_matches_torch_autograd(likelihood, objective):
    torch = import_torch()  # an error, not a skip, where CI requires PyTorch
    import math

    model = make_model(9, (7, 5), 3, "tanh", likelihood, sigma=0.8)
    x, eps = batch(model, 4, 5)
    obj = KSampleObjective(model, 5, objective)
    terms = obj.forward(x, eps=eps)
    obj.backward()

    P = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    tx, te = torch.tensor(x), torch.tensor(eps)

    def mlp(prefix, h, n_layers):
        for i in range(n_layers):
            h = h @ P[f"{prefix}.{2 * i}.W"] + P[f"{prefix}.{2 * i}.b"]
            if i < n_layers - 1:
                h = torch.tanh(h)
        return h

    h = mlp("encoder", tx, 3)
    mu, logvar = h[:, :3], h[:, 3:]
    z = mu + torch.exp(logvar / 2) * te                                   # (k, B, Z)
    out = mlp("decoder", z, 3)                                            # (k, B, D)
    if likelihood == "bernoulli":
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            out, tx.expand_as(out), reduction="none").sum(-1)
    else:
        log_px = torch.distributions.Normal(out, 0.8).log_prob(tx).sum(-1)
    q = torch.distributions.Normal(mu, torch.exp(logvar / 2))
    log_w = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    if objective == "iwae":
        loss = -(torch.logsumexp(log_w, 0) - math.log(5)).mean()
    elif objective == "elbo-sampled":     # Burda et al.'s VAE: T.sum(log_ws) / num_samples
        loss = -log_w.mean(0).mean()
    else:
        kl = 0.5 * (torch.exp(logvar) + mu**2 - 1 - logvar).sum(-1)
        loss = (-log_px.mean(0) + kl).mean()
    loss.backward()
    assert abs(loss.item() - float(terms.loss)) < 1e-10 * abs(loss.item())
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, P[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("preset,flags,objective", [("burda-iwae", [], "iwae"),
                                                     ("burda-vae", ["--objective", "elbo-sampled"],
                                                      "elbo-sampled")])
def test_gradcheck_command_checks_the_runs_objective(capsys, preset, flags, objective):
    from npvae.cli import main

    assert main(["gradcheck", "--preset", preset, "--k", "2", "--x-dim", "12", *flags]) == 0
    out = capsys.readouterr().out
    assert f"objective {objective}, k=2" in out and "all ok" in out


def test_sampled_kl_objective_takes_a_kl_weight_and_is_a_training_choice():
    """beta and warm-up weigh the sampled KL as they weigh the closed form; the config
    accepts the name and refuses a misspelling with the list of choices."""
    from npvae.config import TrainConfig

    TrainConfig.from_preset("burda-vae", objective="elbo-sampled", beta=0.5, warmup_epochs=2).validate()
    with pytest.raises(ConfigError, match="choose one of elbo, elbo-sampled, iwae"):
        TrainConfig.from_preset("burda-vae", objective="elbo_sampled").validate()


@pytest.mark.parametrize("objective", ["elbo", "elbo-sampled", "iwae"])
def test_k_sample_gradients_through_the_conv_architecture(objective):
    """The k samples go through a convolutional decoder as one (k B)-image batch as well:
    every gradient of a shrunk conv preset against central differences, k = 2."""
    from npvae.gradcheck import check_architecture, shrink_architecture
    from npvae.presets import get_preset

    config = shrink_architecture({"x_dim": 784, **get_preset("conv")["model"]}, 20)
    model, results = check_architecture(config, objective=objective, k=2, batch=2)
    assert model.config["architecture"] == "conv"
    assert all(r.ok for r in results), format_results(results)
