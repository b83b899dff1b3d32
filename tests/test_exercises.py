"""The exercises' grader: untouched stubs are "not implemented yet", stubs filled
with npvae's own implementation pass, each usual wrong answer planted in a copy
is named by its own message, and the learner's files are never written.

Filled and broken copies are written to ``tmp_path``: the stub with the
``raise NotImplementedError`` line of each function replaced by a body.
"""

import ast
import re
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from npvae import exercises
from npvae.exercises import EXERCISES, OK, TODO, WRONG, grade, layer_exercise, main
from npvae.layers import Dense
from tests.test_derivations import ANCHOR_RE, ANCHORS

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "tutorials" / "exercises"

# npvae's conditional layer holding the learner's W and onehot: the start of two solutions.
LABELLED_LAYER = """
        from npvae.cvae import LabelledMLP
        layer = LabelledMLP([W.shape[0] - onehot.shape[1], W.shape[1]], n_classes=onehot.shape[1],
                            rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["0.W"][...], layer.onehot = W, onehot"""

# npvae's own implementation, as the body of each stub function.
SOLUTIONS = {
    "dense_forward": """
        from npvae.layers import Dense
        layer = Dense(*W.shape, rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...], layer.params["b"][...] = W, b
        return layer.forward(x)""",
    "dense_backward": """
        from npvae.layers import Dense
        layer = Dense(*W.shape, rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...] = W
        layer.forward(x)
        dx = layer.backward(dout)
        return dx, layer.grads["W"], layer.grads["b"]""",
    **{f"{name}_backward": f"""
        from npvae.activations import ACTIVATIONS
        layer = ACTIVATIONS["{name}"]()
        layer.{keeps} = {keeps}
        return layer.backward(dout)""" for name, keeps in [("relu", "out"), ("tanh", "out"),
                                                          ("sigmoid", "out"), ("softplus", "x")]},
    "leaky_relu_backward": """
        from npvae.activations import LeakyReLU
        layer = LeakyReLU(alpha)
        layer.forward(x)
        return layer.backward(dout)""",
    "bernoulli_nll": """
        from npvae import losses
        return losses.bernoulli_nll(logits, x)""",
    "bernoulli_nll_backward": """
        from npvae import losses
        return losses.bernoulli_nll_backward(dout, logits, x)""",
    "gaussian_nll_backward": """
        from npvae import losses
        return losses.gaussian_nll_backward(dout, mean, x, sigma)""",
    "gaussian_kl": """
        from npvae import losses
        return losses.gaussian_kl(mu, logvar)""",
    "gaussian_kl_backward": """
        from npvae import losses
        return losses.gaussian_kl_backward(dout, mu, logvar)""",
    "reparameterize": """
        from npvae import reparam
        return reparam.reparameterize(mu, logvar, eps)[0]""",
    "reparameterize_backward": """
        from npvae import reparam
        return reparam.reparameterize_backward(dz, logvar, eps)""",
    "adam_step": """
        from npvae.optim import adam_reference_step
        return adam_reference_step(theta, g, m, v, t, lr, beta1, beta2, eps)""",
    "vae_backward": """
        handed, encoder_backward = [], model.encoder.backward
        model.encoder.backward = lambda dh, need_dx=True: handed.append(dh) or encoder_backward(dh, need_dx)
        model.backward()
        del model.encoder.backward
        return np.split(handed[0], 2, axis=1)""",
    "logmeanexp": """
        from npvae import evaluate
        return evaluate.logmeanexp(a, axis)""",
    "log_weights": """
        from npvae.losses import log_normal, log_standard_normal
        return log_px_z + log_standard_normal(z) - log_normal(z, mu, logvar)""",
    "iw_bound": """
        from npvae import evaluate
        return evaluate.logmeanexp(log_w, axis=0).mean()""",
    "conv_forward": """
        from npvae.conv import Conv2D
        layer = Conv2D(W.shape[1], W.shape[0], W.shape[2], stride, padding,
                       rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...], layer.params["b"][...] = W, b
        return layer.forward(x)""",
    "conv_backward": """
        from npvae.conv import Conv2D
        layer = Conv2D(W.shape[1], W.shape[0], W.shape[2], stride, padding,
                       rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...] = W
        layer.forward(x)
        dx = layer.backward(dout)
        return dx, layer.grads["W"], layer.grads["b"]""",
    "conv_transpose_forward": """
        from npvae.conv import ConvTranspose2D
        layer = ConvTranspose2D(W.shape[0], W.shape[1], W.shape[2], stride, padding, output_padding,
                                rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...], layer.params["b"][...] = W, b
        return layer.forward(x)""",
    "conv_transpose_backward": """
        from npvae.conv import ConvTranspose2D
        layer = ConvTranspose2D(W.shape[0], W.shape[1], W.shape[2], stride, padding, 1,
                                rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...] = W
        layer.forward(x)
        dx = layer.backward(dout)
        return dx, layer.grads["W"], layer.grads["b"]""",
    "importance_weights": """
        from npvae import iwae
        return iwae.importance_weights(log_w)""",
    "iwae_backward": """
        model, handed = objective.model, []
        decoder_backward, encoder_backward = model.decoder.backward, model.encoder.backward
        model.decoder.backward = lambda dout, need_dx=True: (handed.append(dout)
                                                             or decoder_backward(dout, need_dx))
        model.encoder.backward = lambda dh, need_dx=True: handed.append(dh) or encoder_backward(dh, need_dx)
        objective.weights = importance_weights(objective.lw.log_w)
        objective.backward()
        del model.decoder.backward, model.encoder.backward
        return (handed[0].reshape(objective.lw.out.shape), *np.split(handed[1], 2, axis=1))""",
    "onehot": """
        from npvae.cvae import CVAE
        model = CVAE(x_dim=1, hidden=(1,), latent=1, n_classes=n_classes, dtype="float64", seed=0)
        model.condition(y)
        return model.encoder.onehot""",
    "labelled_forward": LABELLED_LAYER + """
        layer.params["0.b"][...] = b
        return layer.forward(x)""",
    "labelled_backward": LABELLED_LAYER + """
        layer.forward(x)
        dx = layer.backward(dout)
        return dx, layer.grads["0.W"], layer.grads["0.b"]""",
}

# The VAE backward as a learner writes it, from the pieces; {dout} and {paths} are the places
# where the usual mistakes go.
VAE_BY_HAND = """
    dout = {dout}
    dz = model.decoder.backward(model.nll_backward(dout, model.out, model.x))
    dmu_recon, dlogvar_recon = reparameterize_backward(dz, model.logvar, model.eps)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(model.beta_now * dout, model.mu, model.logvar)
    dmu, dlogvar = {paths}
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dmu, dlogvar"""


def vae_by_hand(dout="1.0 / model.x.shape[0]", paths="dmu_recon + dmu_kl, dlogvar_recon + dlogvar_kl"):
    return VAE_BY_HAND.format(dout=dout, paths=paths)


# The IWAE backward as a learner writes it; each {slot} is a place for a usual mistake.
IWAE_BY_HAND = """
    model, lw, x = objective.model, objective.lw, objective.x
    k, B, D = lw.out.shape
    c = {weights} / {batch}
    dout = model.nll_backward(c, lw.out, x)
    dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(lw.z.shape) + {prior}
    dmu, dlogvar = reparameterize_backward(dz, objective.logvar, objective.eps)
    dmu, dlogvar = dmu.sum(axis=0), dlogvar.sum(axis=0) + {direct}
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dout, dmu, dlogvar"""


def iwae_by_hand(weights="importance_weights(lw.log_w)", batch="B", prior="c[..., None] * lw.z",
                 direct="-0.5 * c.sum(axis=0)[:, None]"):
    return IWAE_BY_HAND.format(weights=weights, batch=batch, prior=prior, direct=direct)


def labelled_by_hand(dx="du[:, :x.shape[1]]", dW="u.T @ dout"):
    """The conditional exercise as a learner writes it, the labels tiled over the k samples of
    each example; ``dx`` and ``dW`` are the places for the usual mistakes."""
    labelled = "np.concatenate([x, np.tile(onehot, (len(x) // len(onehot), 1))], axis=1)"
    return {"onehot": "return np.eye(n_classes)[y]",
            "labelled_forward": f"return {labelled} @ W + b",
            "labelled_backward": f"""
        u = {labelled}
        du = dout @ W.T
        return {dx}, {dW}, dout.sum(axis=0)"""}


def fill(stub_text, bodies):
    """The stub's text with the ``raise NotImplementedError`` of each function in ``bodies`` replaced."""
    lines = stub_text.splitlines()
    for node in ast.parse(stub_text).body:
        if isinstance(node, ast.FunctionDef) and node.name in bodies:
            (raise_line,) = [n.lineno for n in ast.walk(node) if isinstance(n, ast.Raise)]
            body = textwrap.indent(textwrap.dedent(bodies[node.name]).strip("\n"), "    ")
            lines[raise_line - 1] = body
    return "\n".join(lines) + "\n"


def write_exercise(tmp_path, name, **wrong):
    """A copy of exercise ``name``'s stub, filled with npvae's solution except for ``wrong`` bodies."""
    ex = EXERCISES[name]
    path = tmp_path / ex.file
    bodies = {f: SOLUTIONS[f] for f in ex.functions}
    path.write_text(fill((STUBS / ex.file).read_text(encoding="utf-8"), {**bodies, **wrong}), encoding="utf-8")
    return path


def lines_of(name, path):
    return {line.tensor: line for line in grade(EXERCISES[name], path)}


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ stubs, solutions


def test_every_exercise_has_its_stub_and_nothing_else_is_there():
    assert sorted(ex.file for ex in EXERCISES.values()) == sorted(
        p.name for p in STUBS.glob("*.py")), "a stub without an exercise, or an exercise without a stub"
    tutorial = [int(ex.file[:2]) for ex in EXERCISES.values()]
    assert tutorial == sorted(tutorial), \
        "EXERCISES follows the order of the tutorials"
    assert len(EXERCISES) >= 13


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_cites_its_derivation_and_raises_not_implemented(name):
    ex = EXERCISES[name]
    text = (STUBS / ex.file).read_text(encoding="utf-8")
    cited = ANCHOR_RE.findall(text)
    assert ex.anchor in cited and all(a in ANCHORS for a in cited), cited
    tree = ast.parse(text)
    defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(ex.functions) <= set(defined)
    for fname in ex.functions:
        assert ast.get_docstring(defined[fname]) and "Shapes" in ast.get_docstring(defined[fname])
        raises = [n for n in ast.walk(defined[fname]) if isinstance(n, ast.Raise)]
        assert len(raises) == 1 and ast.unparse(raises[0].exc).startswith("NotImplementedError")


def test_untouched_stubs_are_not_implemented_yet_and_left_byte_identical(capsys):
    before = digest(STUBS)
    assert main(["check", "--dir", str(STUBS)]) == 1
    out = capsys.readouterr().out
    assert digest(STUBS) == before, "the grader changed or added a file in tutorials/exercises"
    for name, ex in EXERCISES.items():
        lines = grade(ex, STUBS / ex.file)
        assert lines and all(line.status == TODO for line in lines), (name, [str(x) for x in lines])
        assert f"{name} (" in out
    assert f"{len(EXERCISES)} exercises: 0 ok, 0 wrong, 0 partly done, {len(EXERCISES)} not implemented yet" in out
    assert WRONG not in out and " ok " not in out


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_filled_with_npvae_passes(tmp_path, name):
    path = write_exercise(tmp_path, name)
    before = path.read_bytes()
    lines = grade(EXERCISES[name], path)
    assert lines and all(line.status == OK for line in lines), "\n".join(map(str, lines))
    assert path.read_bytes() == before


def test_all_filled_stubs_pass_on_the_command_line(tmp_path, capsys):
    for name in EXERCISES:
        write_exercise(tmp_path, name)
    before = digest(tmp_path)
    assert main(["check", "--dir", str(tmp_path)]) == 0
    assert f"{len(EXERCISES)} exercises: {len(EXERCISES)} ok" in capsys.readouterr().out
    assert digest(tmp_path) == before


@pytest.mark.parametrize("name,bodies", [("vae_backward", {"vae_backward": vae_by_hand()}),
                                         ("iwae", {"iwae_backward": iwae_by_hand()}),
                                         ("conditional", labelled_by_hand())])
def test_a_learners_own_version_passes(tmp_path, name, bodies):
    path = write_exercise(tmp_path, name, **bodies)
    lines = grade(EXERCISES[name], path)
    assert all(line.status == OK for line in lines), "\n".join(map(str, lines))


# ------------------------------------------------------------------ the usual wrong answers

# (exercise, wrong bodies, tensor, words its line must hold)
PLANTED = {
    "sign flip": ("dense", {"dense_backward": """
        return dout @ W.T, -(x.T @ dout), dout.sum(axis=0)"""}, "dW", "sign flipped"),
    "factor of 2": ("gaussian_kl", {"gaussian_kl_backward": """
        return dout[:, None] * mu, dout[:, None] * np.expm1(logvar)"""}, "dlogvar", "factor of 2 too many"),
    "factor of 1/2": ("gaussian_nll", {"gaussian_nll_backward": """
        return 0.5 * (mean - x) * dout[:, None] / sigma**2"""}, "dmean", "factor of 1/2"),
    "transpose": ("dense", {"dense_backward": """
        return dout @ W.T, dout.T @ x, dout.sum(axis=0)"""}, "dW", "transpose of the right answer"),
    "missing 1/B": ("vae_backward", {"vae_backward": vae_by_hand(dout="1.0")}, "dmu",
                    "1/B of the batch mean is missing"),
    "sum over the wrong axis (db)": ("dense", {"dense_backward": """
        return dout @ W.T, x.T @ dout, dout.sum(axis=1)"""}, "db", "axis 1 (the outputs) instead of axis 0"),
    "sum over the wrong axis (nll)": ("bernoulli_nll", {"bernoulli_nll": """
        return (np.maximum(logits, 0) - x * logits + np.log1p(np.exp(-np.abs(logits)))).sum(axis=0)"""},
        "nll", "axis 0 (the batch) instead of over the pixels"),
    "variance for the standard deviation (z)": ("reparameterize", {"reparameterize": """
        return mu + np.exp(logvar) * eps"""}, "z", "variance exp(logvar) where the standard deviation"),
    "variance for the standard deviation (statistics)": ("reparameterize", {"reparameterize": """
        return mu + np.exp(logvar) * eps"""}, "z (mean and variance)", "sample variance of z is exp(2 logvar)"),
    "only the KL path": ("vae_backward", {"vae_backward": vae_by_hand(paths="dmu_kl, dlogvar_kl")},
                         "dlogvar", "only the KL path"),
    "only the reconstruction path": ("vae_backward",
                                     {"vae_backward": vae_by_hand(paths="dmu_recon, dlogvar_recon")},
                                     "dmu", "only the reconstruction path"),
    "Adam without bias correction": ("adam", {"adam_step": """
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        return theta - lr * m / (np.sqrt(v) + eps), m, v"""}, "theta (the update)", "without bias correction"),
    "ReLU without its mask": ("relu", {"relu_backward": "return dout"}, "dx", "mask [x > 0] is missing"),
    "naive Bernoulli NLL": ("bernoulli_nll", {"bernoulli_nll": """
        p = 1 / (1 + np.exp(-logits))
        return (-x * np.log(p) - (1 - x) * np.log(1 - p)).sum(axis=-1)"""}, "nll (logits +/-1e4)", "not stable"),
    "softplus(l) - x l cancelling": ("bernoulli_nll", {"bernoulli_nll": """
        return (np.logaddexp(0, logits) - x * logits).sum(axis=-1)"""}, "nll (l = 40, x = 1)",
        "loses every digit of a confident right answer"),
    "variance in the reparameterization's backward": ("reparameterize", {"reparameterize_backward": """
        return dz, dz * eps * np.exp(logvar)"""}, "dlogvar", "gradient of the variance-scaled sample"),
    "KL backward without its -1": ("gaussian_kl", {"gaussian_kl_backward": """
        return dout[:, None] * mu, dout[:, None] * 0.5 * np.exp(logvar)"""}, "dlogvar", "lacks the -1"),
    "log-sum-exp for log-mean-exp": ("iw_bound", {"logmeanexp": """
        m = a.max(axis=axis, keepdims=True)
        return np.squeeze(m, axis) + np.log(np.exp(a - m).sum(axis=axis))"""}, "logmeanexp", "is log-sum-exp"),
    "float32 arithmetic": ("gaussian_kl", {"gaussian_kl": """
        mu, logvar = mu.astype(np.float32), logvar.astype(np.float32)
        return 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(axis=-1)"""}, "kl", "keep float64"),
    "a flipped kernel in the convolution's dx": ("conv", {"conv_backward": """
        from npvae.conv import Conv2D
        layer = Conv2D(W.shape[1], W.shape[0], W.shape[2], stride, padding,
                       rng=np.random.default_rng(0), dtype=W.dtype)
        layer.params["W"][...] = W[:, :, ::-1, ::-1]
        layer.forward(x)
        dx = layer.backward(dout)
        layer.params["W"][...] = W
        layer.forward(x)
        layer.backward(dout)
        return dx, layer.grads["W"], layer.grads["b"]"""}, "dx", "kernel flipped"),
    "softmax over the examples": ("iwae", {"importance_weights": """
        e = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)"""}, "importance_weights",
        "softmax over the B examples (axis 1)"),
    "unnormalised importance weights": ("iwae", {"importance_weights": """
        return np.exp(log_w - log_w.max(axis=0))"""}, "importance_weights", "without dividing by its sum"),
    "softmax that overflows": ("iwae", {"importance_weights": """
        e = np.exp(log_w)
        return e / e.sum(axis=0)"""}, "importance_weights (+/-1000)", "not stable for log weights of +/-1000"),
    "uniform weights in the IWAE backward": ("iwae", {"iwae_backward": iwae_by_hand(
        weights="np.full(lw.log_w.shape, 1 / k)")}, "dmu", "k-sample ELBO's gradient, not IWAE's"),
    "the closed-form KL's ELBO for IWAE": ("iwae", {"iwae_backward": """
        from npvae.losses import gaussian_kl_backward
        model, lw, x = objective.model, objective.lw, objective.x
        k, B, D = lw.out.shape
        dout = model.nll_backward(1 / (k * B), lw.out, x)
        dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(lw.z.shape)
        dmu, dlogvar = reparameterize_backward(dz, objective.logvar, objective.eps)
        dmu_kl, dlogvar_kl = gaussian_kl_backward(1 / B, objective.mu, objective.logvar)
        dmu, dlogvar = dmu.sum(axis=0) + dmu_kl, dlogvar.sum(axis=0) + dlogvar_kl
        model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
        return dout, dmu, dlogvar"""}, "dlogvar", 'KL in closed form (objective "elbo"'),
    "missing 1/B in the IWAE backward": ("iwae", {"iwae_backward": iwae_by_hand(batch="1")}, "dout",
                                         "each sample's weight is wt / B"),
    "missing direct -1/2 of log q": ("iwae", {"iwae_backward": iwae_by_hand(direct="0")}, "dlogvar",
                                     "lacks log q's direct term"),
    "missing prior term": ("iwae", {"iwae_backward": iwae_by_hand(prior="0")}, "dmu",
                           "lacks the prior's term"),
    "one-hot on the wrong axis": ("conditional", {"onehot": "return np.eye(n_classes)[y].T"}, "onehot",
                                  "classes on axis 0"),
    "labels repeated example-major": ("conditional", {"labelled_forward": """
        return np.concatenate([x, np.repeat(onehot, len(x) // len(onehot), axis=0)], axis=1) @ W + b"""},
        "out", "np.repeat, example-major"),
    "label columns kept in dx": ("conditional", labelled_by_hand(dx="du"), "dx", "returns the label columns too"),
    "the first C columns dropped": ("conditional", labelled_by_hand(dx="du[:, onehot.shape[1]:]"), "dx",
                                    "drops the first C = 5 columns"),
    "label rows of W without gradient": ("conditional", labelled_by_hand(
        dW="np.concatenate([x.T @ dout, np.zeros((onehot.shape[1], dout.shape[1]))])"), "dW",
        "label rows of W no gradient"),
    "a mistake without a name": ("tanh", {"tanh_backward": "return dout * (1 - out**3)"}, "dx",
                                 "relative error"),
}


@pytest.mark.parametrize("mistake", list(PLANTED))
def test_planted_mistake_is_named(tmp_path, mistake):
    name, wrong, tensor, words = PLANTED[mistake]
    path = write_exercise(tmp_path, name, **wrong)
    before = path.read_bytes()
    lines = lines_of(name, path)
    assert lines[tensor].status == WRONG and words in lines[tensor].detail, str(lines[tensor])
    assert path.read_bytes() == before


def test_each_planted_mistake_has_its_own_message(tmp_path):
    messages = {}
    for mistake, (name, wrong, tensor, _) in PLANTED.items():
        folder = tmp_path / mistake.replace(" ", "_").replace("/", "_")
        folder.mkdir()
        messages[mistake] = lines_of(name, write_exercise(folder, name, **wrong))[tensor].detail
    assert len(set(messages.values())) == len(messages), messages


def test_only_the_wrong_tensor_is_flagged(tmp_path):
    lines = lines_of("dense", write_exercise(tmp_path, "dense", **PLANTED["sign flip"][1]))
    assert {t: line.status for t, line in lines.items()} == {"out": OK, "dx": OK, "dW": WRONG, "db": OK}


def test_a_wrong_return_or_an_exception_is_a_line_not_a_crash(tmp_path):
    path = write_exercise(tmp_path, "gaussian_kl", gaussian_kl_backward="return mu")
    assert "must return (dmu, dlogvar)" in lines_of("gaussian_kl", path)["dmu"].detail
    path = write_exercise(tmp_path, "dense", dense_backward="return dout @ W, x.T @ dout, dout.sum(0)")
    assert "raised ValueError" in lines_of("dense", path)["dx"].detail
    (tmp_path / "broken.py").write_text("def relu_backward(dout, out)\n    return dout\n")
    (line,) = grade(EXERCISES["relu"], tmp_path / "broken.py")
    assert line.status == WRONG and "SyntaxError" in line.detail


def test_partly_done_exercise_is_not_ok(tmp_path, capsys):
    ex = EXERCISES["gaussian_kl"]
    path = tmp_path / ex.file
    path.write_text(fill((STUBS / ex.file).read_text(), {"gaussian_kl": SOLUTIONS["gaussian_kl"]}))
    assert main(["check", "gaussian_kl", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "gaussian_kl" in out and "partly done" in out and "not implemented yet" in out


# ------------------------------------------------------------------ the hook for new layers


def test_a_new_layer_is_one_entry(tmp_path, monkeypatch):
    """A layer with npvae's interface (a convolution, later) needs one layer_exercise entry."""
    class Scale(Dense):
        """out = x W + b for a square W: a stand-in for a layer not yet in the catalogue."""

    entry = layer_exercise("scale", "99_scale.py", lambda rng: Scale(3, 3, rng=rng, init="pytorch",
                                                                     dtype=np.float64),
                           (exercises.B, 3), "dense-layer", "a new layer", solution=(Dense.backward,))
    monkeypatch.setitem(EXERCISES, "scale", entry)
    right = "def scale_forward(x, W, b):\n    return x @ W + b\n\n" \
            "def scale_backward(dout, x, W):\n    return dout @ W.T, x.T @ dout, dout.sum(axis=0)\n"
    (tmp_path / "99_scale.py").write_text(right)
    assert main(["check", "scale", "--dir", str(tmp_path)]) == 0
    (tmp_path / "99_scale.py").write_text(right.replace("x.T @ dout", "dout.T @ x"))
    lines = {line.tensor: line for line in grade(entry, tmp_path / "99_scale.py")}
    assert lines["dW"].status == WRONG and "transpose" in lines["dW"].detail
    assert lines["dx"].status == lines["db"].status == OK


def test_conv_layers_get_exercises_once_they_exist():
    if not (REPO / "npvae" / "conv.py").is_file():
        pytest.skip("npvae/conv.py does not exist yet")
    assert any(name.startswith("conv") for name in EXERCISES), (
        "npvae/conv.py exists: add its exercises, one layer_exercise(...) entry each in "
        "npvae/exercises.py and a stub in tutorials/exercises/")


# ------------------------------------------------------------------ the command line


def test_list_and_show_solution(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out and EXERCISES[name].file in out for name in EXERCISES)
    assert main(["check", "vae_backward", "--show-solution"]) == 0
    out = capsys.readouterr().out
    assert "def backward(self):" in out and "gaussian_kl_backward" in out
    assert main(["check", "iwae", "conditional", "--show-solution"]) == 0
    out = capsys.readouterr().out
    assert all(f"# npvae/{where}" in out for where in [
        "iwae.py: importance_weights", "iwae.py: KSampleObjective.backward", "cvae.py: CVAE.condition",
        "cvae.py: LabelledMLP"])
    assert main(["check", "dense", "--dir", str(STUBS)]) == 1
    assert "def backward" not in capsys.readouterr().out, "the solution is shown only when asked"


@pytest.mark.parametrize("argv", [["check", "no_such_exercise"], ["check", "--show-solution"],
                                  ["check", "--file", "no/such/file.py"], ["check", "--dir", "no/such/dir"],
                                  ["frobnicate"], ["check", "--dir", "a", "--file", "b"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2


def test_file_is_recognised_by_its_functions(tmp_path, capsys):
    path = write_exercise(tmp_path, "tanh")
    renamed = path.rename(tmp_path / "my_attempt.py")
    assert main(["check", "--file", str(renamed)]) == 0
    assert "tanh (" in capsys.readouterr().out


def test_npvae_command_and_python_m(tmp_path):
    from npvae.cli import main as npvae_main

    assert npvae_main(["exercises", "list"]) == 0
    write_exercise(tmp_path, "sigmoid")
    proc = subprocess.run([sys.executable, "-m", "npvae.exercises", "check", "sigmoid", "--dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "sigmoid (" in proc.stdout and " ok " in proc.stdout, proc.stderr


def test_each_tutorial_points_to_its_exercises():
    own = []  # exercises named by the tutorial of their number; a later one may name them again
    for path in sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py")):
        for names in re.findall(r"^#     npvae exercises check ([a-z_ ]+)$", path.read_text(encoding="utf-8"),
                                re.MULTILINE):
            found = names.split()
            assert set(found) <= set(EXERCISES), (path.name, found)
            # its own, or those of an earlier tutorial it builds on (13's conv VAE: 12's layers)
            assert all(EXERCISES[n].file[:2] <= path.name[:2] for n in found), (path.name, found)
            own += [n for n in found if EXERCISES[n].file[:2] == path.name[:2]]
    assert sorted(own) == sorted(EXERCISES), "every exercise is pointed to by its tutorial"
