"""The exercises' grader: untouched stubs are "not implemented yet", every shown solution passes
when pasted into its stub, each usual wrong answer is named by its own message, the learner's
code runs apart (a hang, a thread, exit() and os._exit end within the time limit and never pass),
and the learner's files are never written.

Planted mistakes are written to ``tmp_path``: the stub with each function's ``raise
NotImplementedError`` line replaced by a body (``fill``). The learners' files of
``tests/exercise_cases/`` are graded through the command line, in a subprocess.
"""

import ast
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npvae.cli import main
from npvae.exercises import EXERCISES, OK, TODO, WRONG, grade_file, layer_exercise
from npvae.exercises.judging import B, fill
from npvae.layers import Dense
from tests.helpers import ANCHOR_RE, derivation_anchors

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "tutorials" / "exercises"
CASES = Path(__file__).resolve().parent / "exercise_cases"
TIMEOUT = 3          # seconds, the --timeout of the hanging cases
SAFETY = 120         # seconds, a generous bound on a whole subprocess: a net, never a measurement


def check(*argv):
    """``npvae exercises check ARGV`` in a subprocess: (exit code, stdout + stderr)."""
    proc = subprocess.run([sys.executable, "-m", "npvae.exercises", "check", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=SAFETY)
    return proc.returncode, proc.stdout + proc.stderr


def write_exercise(folder, name, **wrong):
    """A copy of exercise ``name``'s stub, filled with its solution except for the ``wrong`` bodies."""
    ex = EXERCISES[name]
    path = folder / ex.file
    text = fill((STUBS / ex.file).read_text(encoding="utf-8"), {**ex.solution, **wrong})
    path.write_text(text, encoding="utf-8")
    return path


def lines_of(name, path):
    return {line.tensor: line for line in grade_file(EXERCISES[name], path).lines}


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ stubs and solutions


def test_every_exercise_has_its_stub_and_nothing_else_is_there():
    assert sorted(ex.file for ex in EXERCISES.values()) == sorted(
        p.name for p in STUBS.glob("*.py")), "a stub without an exercise, or an exercise without a stub"
    tutorial = [ex.tutorial for ex in EXERCISES.values()]
    assert tutorial == sorted(tutorial), "EXERCISES follows the order of the tutorials"
    assert len(EXERCISES) >= 13


@pytest.mark.parametrize("name", list(EXERCISES))
def test_stub_cites_its_derivation_numbers_itself_by_its_tutorial_and_raises(name):
    ex = EXERCISES[name]
    text = (STUBS / ex.file).read_text(encoding="utf-8")
    cited = ANCHOR_RE.findall(text)
    assert ex.anchor in cited and all(a in derivation_anchors() for a in cited), cited
    tree = ast.parse(text)
    first = ast.get_docstring(tree).splitlines()[0]
    assert re.match(rf"Tutorial {ex.file[:2]} exercise: ", first), first
    assert not re.search(r"Exercise \d", text), "one numbering scheme: the tutorial's number"
    defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(ex.functions) <= set(defined)
    for fname in ex.functions:
        assert ast.get_docstring(defined[fname]) and "Shapes" in ast.get_docstring(defined[fname])
        raises = [n for n in ast.walk(defined[fname]) if isinstance(n, ast.Raise)]
        assert len(raises) == 1 and ast.unparse(raises[0].exc).startswith("NotImplementedError")


def test_untouched_stubs_are_not_implemented_yet_and_left_byte_identical(capsys):
    before = digest(STUBS)
    assert main(["exercises", "check", "--dir", str(STUBS)]) == 1
    out = capsys.readouterr().out
    assert digest(STUBS) == before, "the grader changed or added a file in tutorials/exercises"
    for name, ex in EXERCISES.items():
        assert f"{name} ({_shown(STUBS / ex.file)}): {TODO}" in out
        for fname in ex.functions:
            assert re.search(rf"^  {fname} +{TODO}", out, re.MULTILINE), fname
    n = len(EXERCISES)
    assert f"{n} exercises: 0 ok, 0 wrong, 0 partly done, {n} not implemented yet" in out
    assert WRONG not in out and " ok " not in out


def _shown(path):
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def pasted(stub_text, shown):
    """The stub with each function printed by --show-solution pasted over its own definition."""
    given = {n.name: n for n in ast.parse(shown).body if isinstance(n, ast.FunctionDef)}
    shown_lines, lines = shown.splitlines(), stub_text.splitlines()
    stub = {n.name: n for n in ast.parse(stub_text).body if isinstance(n, ast.FunctionDef)}
    for name in sorted(given, key=lambda f: -stub[f].lineno):  # from the bottom, so lines stay put
        node = given[name]
        lines[stub[name].lineno - 1:stub[name].end_lineno] = shown_lines[node.lineno - 1:node.end_lineno]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_shown_solution_passes_when_pasted_into_the_stub(tmp_path, capsys, name):
    ex = EXERCISES[name]
    assert main(["exercises", "check", name, "--show-solution"]) == 0
    shown = capsys.readouterr().out
    assert {n.name for n in ast.parse(shown).body if isinstance(n, ast.FunctionDef)} == set(ex.functions)
    assert "NotImplementedError" not in shown
    path = tmp_path / ex.file
    path.write_text(pasted((STUBS / ex.file).read_text(encoding="utf-8"), shown), encoding="utf-8")
    graded = grade_file(ex, path)
    assert graded.status == OK and all(line.status == OK for line in graded.lines), \
        "\n".join(map(str, graded.lines))


def test_all_solutions_pass_on_the_command_line_and_files_are_only_read(tmp_path):
    for name in EXERCISES:
        write_exercise(tmp_path, name)
    before = digest(tmp_path)
    code, out = check("--dir", tmp_path)
    assert code == 0, out
    assert f"{len(EXERCISES)} exercises: {len(EXERCISES)} ok" in out
    assert digest(tmp_path) == before, "the grader wrote into the learner's folder"


# ------------------------------------------------------------------ the usual wrong answers

# The VAE backward as a learner writes it, from the pieces; {dout} and {paths} are the places
# where the usual mistakes go.
VAE_BY_HAND = """
    B = model.x.shape[0]
    dout = {dout}
    dz = model.decoder.backward(model.nll_backward(dout, model.out, model.x))
    dmu_recon, dlogvar_recon = reparameterize_backward(dz, model.logvar, model.eps)
    dmu_kl, dlogvar_kl = gaussian_kl_backward(model.beta_now * dout, model.mu, model.logvar)
    dmu, dlogvar = {paths}
    model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1), need_dx=False)
    return dmu, dlogvar"""


def vae_by_hand(dout="np.full(B, 1.0 / B)", paths="dmu_recon + dmu_kl, dlogvar_recon + dlogvar_kl"):
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
    """The conditional layer as a learner writes it, the labels tiled over the k samples of each
    example; ``dx`` and ``dW`` are the places for the usual mistakes."""
    labelled = "np.concatenate([x, np.tile(onehot, (len(x) // len(onehot), 1))], axis=1)"
    return {"labelled_backward": f"""
        u = {labelled}
        du = dout @ W.T
        return {dx}, {dW}, dout.sum(axis=0)"""}


@pytest.mark.parametrize("name,bodies", [("vae_backward", {"vae_backward": vae_by_hand()}),
                                         ("iwae", {"iwae_backward": iwae_by_hand()}),
                                         ("conditional", labelled_by_hand())])
def test_the_templates_of_the_planted_mistakes_pass_as_written(tmp_path, name, bodies):
    graded = grade_file(EXERCISES[name], write_exercise(tmp_path, name, **bodies))
    assert graded.status == OK, "\n".join(map(str, graded.lines))


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
    "missing 1/B": ("vae_backward", {"vae_backward": vae_by_hand(dout="np.ones(B)")}, "dmu",
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
    "ReLU without its mask": ("relu", {"relu_backward": "return dout.copy()"}, "dx", "mask [out > 0] is missing"),
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
        return 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(axis=-1)"""}, "kl", "is float32, not float64"),
    "a flipped kernel in the convolution's dx": ("conv", {"conv_backward": EXERCISES["conv"].solution[
        "conv_backward"].replace("W[:, :, i, j])  # windows", "W[:, :, 2 - i, 2 - j])  # windows")}, "dx",
        "kernel flipped"),
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
        dout = model.nll_backward(np.full((k, B), 1 / (k * B)), lw.out, x)
        dz = model.decoder.backward(dout.reshape(k * B, D)).reshape(lw.z.shape)
        dmu, dlogvar = reparameterize_backward(dz, objective.logvar, objective.eps)
        dmu_kl, dlogvar_kl = gaussian_kl_backward(np.full(B, 1 / B), objective.mu, objective.logvar)
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
    "variance in a q layer's dlogvar": ("hvae", {"q_sample_backward": """
        return dh.copy(), dh * eps * 0.5 * np.exp(logvar) - 0.5 * ckl[:, None]"""}, "dlogvar",
        "variance exp(logvar) where the standard deviation exp(logvar / 2) belongs"),
    "log q's direct term without its weight": ("hvae", {"q_sample_backward": """
        return dh.copy(), dh * eps * 0.5 * np.exp(logvar / 2) - 0.5"""}, "dlogvar", "without its weight ckl"),
    "the prior's term missing from dh2": ("hvae", {"h1_backward": EXERCISES["hvae"].solution["h1_backward"].replace(
        "dh2 = c * h2 + ", "dh2 = ")}, "dh2", "lacks the prior's term in dh2"),
    "a wrong dh2 blamed for dh1": ("hvae", {"h1_backward": EXERCISES["hvae"].solution["h1_backward"].replace(
        "dh2 = c * h2 + ", "dh2 = 1.5 * c * h2 + ")}, "dh1", "is wrong because dh2 is"),
    "a mistake without a name": ("tanh", {"tanh_backward": "return dout * (1 - out**3)"}, "dx",
                                 "relative error"),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Each planted mistake's lines, graded once: ``{mistake: {tensor: Line}}``."""
    found = {}
    for mistake, (name, wrong, _, _) in PLANTED.items():
        folder = tmp_path_factory.mktemp("planted")
        path = write_exercise(folder, name, **wrong)
        before = path.read_bytes()
        found[mistake] = lines_of(name, path)
        assert path.read_bytes() == before
    return found


@pytest.mark.parametrize("mistake", list(PLANTED))
def test_planted_mistake_is_named(planted, mistake):
    _, _, tensor, words = PLANTED[mistake]
    line = planted[mistake][tensor]
    assert line.status == WRONG and words in line.detail, str(line)


def test_each_planted_mistake_has_its_own_message(planted):
    messages = {m: planted[m][tensor].detail for m, (_, _, tensor, _) in PLANTED.items()}
    assert len(set(messages.values())) == len(messages), messages


def test_only_the_wrong_tensor_is_flagged(planted):
    assert {t: line.status for t, line in planted["sign flip"].items()} == {
        "out": OK, "dx": OK, "dW": WRONG, "db": OK}


# ------------------------------------------------------------------ learners' files, on the command line

# file in tests/exercise_cases/ -> (exercise, exit code, words the output holds, words it must not hold)
CASE = {
    # the learner's code runs apart: it ends within the time limit, and never passes by exiting
    "hang_loop.py": ("relu", 1, ["relu_backward did not return", f"time limit of {TIMEOUT} s", "WRONG"], []),
    "sleep.py": ("relu", 1, ["relu_backward did not return", "--timeout"], []),
    "stray_thread.py": ("relu", 0, ["relu (", ": ok"], [WRONG]),
    "exit_at_import.py": ("relu", 1, ["could not be loaded: called exit()", "exit_at_import.py line 12"], []),
    "exit_in_function.py": ("gaussian_kl", 1, ["adds logvar where it subtracts it",
                                               "gaussian_kl_backward called exit()", "never counts as a pass"], []),
    "os_exit.py": ("gaussian_kl", 1, ["adds logvar where it subtracts it", "ended while running gaussian_kl_backward",
                                      "exit code 0"], []),
    "beta_zero.py": ("vae_backward", 1, ["only the reconstruction path"], []),
    "memory_hog.py": ("relu", 1, ["raised MemoryError", "memory_hog.py line 7"], []),
    "prints_ok.py": ("relu", 1, ["relu (tests/exercise_cases/prints_ok.py): WRONG", "your code printed:",
                                 "  | relu (tutorials/exercises/02_relu.py): ok"], []),
    # what comes back: type, dtype, shape, finiteness, each named before any comparison
    "complex_result.py": ("gaussian_kl", 1, ["is complex (dtype complex128)"], []),
    "object_array.py": ("gaussian_kl", 1, ["is an array of dtype object (Python objects)"], ["Traceback"]),
    "unconvertible.py": ("gaussian_kl", 1, ["is a Lazy, which is no array: converting it raised RuntimeError"],
                         ["Traceback"]),
    "huge_array.py": ("gaussian_kl", 1, ["has shape (1000000, 1000000)", "expected (4,)"], ["Traceback"]),
    "float32_result.py": ("gaussian_kl", 1, ["is float32, not float64: right to about", "significant digits"], []),
    "nan_result.py": ("gaussian_nll", 1, ["contains NaN (1 of 24 entries, the first at [0, 0])"], []),
    "reparam_returns_eps.py": ("reparameterize", 1, ["returned a tuple of 2 values", "return z alone"], []),
    "name_error.py": ("dense", 1, ["raised NameError: name 'd_out' is not defined at name_error.py line 12"], []),
    "vae_encoder_raises.py": ("vae_backward", 1, ["vae_backward raised ValueError", "vae_encoder_raises.py line 15"],
                              ["all zeros", "fill model.grads"]),
    # inputs changed in place
    "inplace_relu.py": ("relu", 1, ["dout (an input)", "changed in place by relu_backward"], []),
    "inplace_adam.py": ("adam", 1, ["m (an input)", "v (an input)", "theta (an input)"], []),
    # silent passes and misleading messages, named
    "logmeanexp_ignores_axis.py": ("iw_bound", 1, ["ignores its axis argument"], []),
    "logsumexp_bound.py": ("iw_bound", 1, ["is log-sum-exp", "is log k = log 5 too large"], ["times the right"]),
    "adam_eps_in_sqrt.py": ("adam", 1, ["puts eps inside the square root"], ["keep float64"]),
    "kl_logvar_as_log_sigma.py": ("gaussian_kl", 1, ["kl                           WRONG                reads "
                                                     "logvar as log sigma", "dlogvar                      WRONG"
                                                     "                reads logvar as log sigma"], []),
    "reparam_sqrt_logvar.py": ("reparameterize", 1, ["takes sqrt(logvar) as the standard deviation"], []),
    "log_q_with_std.py": ("iw_bound", 1, ["log q by the standard deviation exp(logvar / 2) where the variance"],
                          []),
    "vae_swapped_halves.py": ("vae_backward", 1, ["encoder.0.W", "for [dlogvar | dmu]"], []),
    "conv_padding_kept.py": ("conv", 1, ["still has the padding: shape (4, 2, 7, 8)"], []),
    "conv_db_averaged.py": ("conv", 1, ["is averaged over the Ho x Wo = 3 x 3 output positions"], []),
    "relu_mask_ge.py": ("relu", 1, ["out >= 0 masks nothing"], []),
    # the mutation-test gaps: each of these fails if the grader is weakened that way
    "dense_weight_decay.py": ("dense", 1, ["dW                           WRONG", "relative error 1.0e-04"], []),
    "partly_wrong.py": ("gaussian_kl", 1, ["gaussian_kl (tests/exercise_cases/partly_wrong.py): WRONG"],
                        ["partly done"]),
    "vae_only_kl.py": ("vae_backward", 1, ["has only the KL path",
                                           "encoder.0.W                  WRONG                is wrong because "
                                           "dmu and dlogvar are"], []),
    "iwae_reads_npvae_weights.py": ("iwae", 1, ["has no attribute 'weights'"], []),
    "iwae_weights_over_examples.py": ("iwae", 1, ["dout                         WRONG                uses the "
                                                  "softmax over the B examples"], []),
    "onehot_max_plus_one.py": ("conditional", 1, ["has max(y) + 1 = 4 columns, not n_classes = 5"], []),
    # two stochastic layers: each path into h1, log q's sign, the variance, the 1/B
    "hvae_no_path_b.py": ("hvae", 1, ["dh1                          WRONG                lacks path B"],
                          ["dh2                          WRONG"]),
    "hvae_no_p_h1_term.py": ("hvae", 1, ["dh1                          WRONG                lacks path A"],
                             ["dh2                          WRONG"]),
    "hvae_log_q_sign.py": ("hvae", 1, ["dlogvar                      WRONG                adds log q's direct "
                                       "term where it subtracts it", "dh1                          WRONG       "
                                       "         adds log q(h2 | h1)'s direct term"], []),
    "hvae_std_for_var.py": ("hvae", 1, ["dh2                          WRONG                divides by the "
                                        "standard deviation exp(plogvar / 2)"], []),
    "hvae_missing_1_over_b.py": ("hvae", 1, ["dh1                          WRONG                lacks the 1/B of "
                                             "the batch mean on the second layer's terms (B = 4)"], []),
    # vector quantization and the masked layer (tutorial 17): the argmin's axis, the straight-through
    # path, the stop-gradients, the factor 2, repeated codes, the mask on dW; and a right answer
    "17_quantize_argmin_last_axis.py": ("quantize", 1, ["codes                        WRONG                is the "
                                                        "argmin over the wrong axis (over the grid's columns)"], []),
    "17_quantize_grad_to_codebook.py": ("quantize", 1, ["dz_e                         WRONG                is all "
                                                        "zeros: that is the true derivative",
                                                        "dcodebook                    WRONG                sends the "
                                                        "decoder's gradient to the codebook"], []),
    "17_vq_losses_no_stop_gradient.py": ("vq_losses", 1, ["dcodebook                    WRONG                adds "
                                                          "the commitment loss's gradient"],
                                         ["dz_e                         WRONG"]),
    "17_vq_losses_factor_2.py": ("vq_losses", 1, ["dz_e                         WRONG                lacks the 2 of "
                                                  "d|a|^2 / da = 2 a"], ["dcodebook                    WRONG"]),
    "17_vq_losses_fancy_index.py": ("vq_losses", 1, ["dcodebook                    WRONG                keeps one "
                                                     "row per code", "np.add.at"], []),
    "17_vq_losses_right.py": ("vq_losses", 0, ["vq_losses (tests/exercise_cases/17_vq_losses_right.py): ok"],
                              [WRONG]),
    "17_masked_dense_dw_unmasked.py": ("masked_dense", 1, ["dW                           WRONG                lacks "
                                                           "the mask on dW"], ["dx                           WRONG"]),
}


def test_every_case_file_is_graded_here():
    assert sorted(CASE) == sorted(p.name for p in CASES.glob("*.py"))


@pytest.mark.parametrize("case", list(CASE))
def test_a_learners_file_is_graded_on_the_command_line(case):
    if case == "memory_hog.py" and not sys.platform.startswith("linux"):
        pytest.skip("the memory limit is Linux's RLIMIT_AS")
    name, code, present, absent = CASE[case]
    before = (CASES / case).read_bytes()
    got, out = check(name, "--file", f"tests/exercise_cases/{case}", "--timeout", TIMEOUT)
    assert got == code, out
    assert all(words in out for words in present), out
    assert not any(words in out for words in absent), out
    assert "Traceback" not in out, out
    assert (CASES / case).read_bytes() == before


def test_an_exception_is_reported_once_with_its_line():
    _, out = check("dense", "--file", "tests/exercise_cases/name_error.py")
    assert out.count("NameError") == 1, out


def test_dir_grades_every_file_whatever_each_does_and_ends_with_the_summary(tmp_path):
    for stub in STUBS.glob("*.py"):
        shutil.copy(stub, tmp_path / stub.name)
    shutil.copy(CASES / "hang_loop.py", tmp_path / "02_relu.py")
    shutil.copy(CASES / "os_exit.py", tmp_path / "04_gaussian_kl.py")
    shutil.copy(CASES / "exit_at_import.py", tmp_path / "02_tanh.py")
    write_exercise(tmp_path, "dense")
    code, out = check("--dir", tmp_path, "--timeout", TIMEOUT)
    assert code == 1, out
    assert all(f"{name} (" in out for name in EXERCISES), out
    n = len(EXERCISES)
    assert out.rstrip().endswith(f"{n} exercises: 1 ok, 3 wrong, 0 partly done, {n - 4} not implemented yet"), out


# ------------------------------------------------------------------ the grader's own strictness


def _one_layer(name, make, wrong_backward, tmp_path):
    """Grade ``make``'s layer as a new exercise whose learner's backward is ``wrong_backward``."""
    entry = layer_exercise(name, f"99_{name}.py", make, (B, 3), "dense-layer", "a new layer",
                           {f"{name}_forward": "return x @ W + b",
                            f"{name}_backward": "return dout @ W.T, x.T @ dout, dout.sum(axis=0)"})
    path = tmp_path / f"99_{name}.py"
    path.write_text(f"def {name}_forward(x, W, b):\n    return x @ W + b\n\n"
                    f"def {name}_backward(dout, x, W):\n    {wrong_backward}\n")
    return entry, {line.tensor: line for line in grade_file(entry, path).lines}


def test_a_new_layer_is_one_entry(tmp_path):
    """A layer with npvae's interface needs one layer_exercise entry (and a stub)."""
    def make(rng):
        return Dense(3, 3, rng=rng, init="pytorch", dtype=np.float64)

    _, lines = _one_layer("scale", make, "return dout @ W.T, x.T @ dout, dout.sum(axis=0)", tmp_path)
    assert all(line.status == OK for line in lines.values()), lines
    _, lines = _one_layer("scale", make, "return dout @ W.T, dout.T @ x, dout.sum(axis=0)", tmp_path)
    assert lines["dW"].status == WRONG and "transpose" in lines["dW"].detail
    assert lines["dx"].status == lines["db"].status == OK


def test_a_small_wrong_gradient_is_caught_however_large_the_loss(tmp_path):
    """The noise floor is far below the gradients: a layer with tiny weights (1e-7) has a tiny dx,
    and a dx with its sign flipped is still wrong, though the loss is of order 1."""
    def make(rng):
        layer = Dense(3, 3, rng=rng, init="pytorch", dtype=np.float64)
        layer.params["W"] *= 1e-7
        return layer

    _, lines = _one_layer("tiny", make, "return -(dout @ W.T), x.T @ dout, dout.sum(axis=0)", tmp_path)
    assert lines["dx"].status == WRONG and "sign flipped" in lines["dx"].detail, lines["dx"]
    _, lines = _one_layer("tiny", make, "return dout @ W.T, x.T @ dout, dout.sum(axis=0)", tmp_path)
    assert lines["dx"].status == OK, lines["dx"]


# ------------------------------------------------------------------ the command line


def test_list_and_show_solution_only_when_asked(capsys):
    assert main(["exercises", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out and EXERCISES[name].file in out for name in EXERCISES)
    assert main(["exercises", "check", "dense", "--dir", str(STUBS)]) == 1
    assert "x.T @ dout" not in capsys.readouterr().out, "the solution is shown only when asked"


@pytest.mark.parametrize("argv", [["check", "no_such_exercise"], ["check", "--show-solution"],
                                  ["check", "--file", "no/such/file.py"], ["check", "--dir", "no/such/dir"],
                                  ["frobnicate"], ["check", "--dir", "a", "--file", "b"],
                                  ["check", "relu", "--timeout", "0"], ["check", "relu", "--timeout", "x"]])
def test_usage_errors_exit_2_with_one_line(argv, capsys):
    assert main(["exercises", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npvae: error: ") and len(err.strip().splitlines()) == 1, err


def test_file_is_recognised_by_its_functions(tmp_path, capsys):
    path = write_exercise(tmp_path, "tanh")
    renamed = path.rename(tmp_path / "my_attempt.py")
    assert main(["exercises", "check", "--file", str(renamed)]) == 0
    assert "tanh (" in capsys.readouterr().out


@pytest.mark.parametrize("name,shorter", [("leaky_relu", "relu"), ("masked_dense", "dense")])
def test_file_is_recognised_by_its_name_before_a_shorter_name_it_ends_with(tmp_path, capsys, name, shorter):
    path = write_exercise(tmp_path, name)
    assert main(["exercises", "check", "--file", str(path)]) == 0
    assert main(["exercises", "check", "--file", str(path.rename(tmp_path / f"my_{name}.py"))]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{name} (") == 2 and f"\n{shorter} (" not in out, out


def test_python_m_npvae_exercises_is_the_npvae_command(tmp_path):
    write_exercise(tmp_path, "sigmoid")
    code, out = check("sigmoid", "--dir", tmp_path)
    assert code == 0 and "sigmoid (" in out and " ok " in out, out


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


def test_the_hvae_graders_paths_add_up_to_npvaes_two_layer_backward():
    """The pieces the hvae grader builds its named mistakes from (path A, path B, dh2) are npvae's
    own: their sum is what HVAE.backward hands q(h1 | x), and dh2 what it hands q(h2 | h1)."""
    from npvae.exercises import hvae

    model, _, eps = hvae.hvae_case()
    given = hvae.learner_inputs(model, eps)
    dh1, dh2, dh1_x = hvae.handed(model)
    path_a, path_b, ref_dh2 = hvae.paths(given, np.full(B, 1.0 / B))
    np.testing.assert_allclose(dh1_x + path_a + path_b, dh1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref_dh2, dh2, rtol=1e-12, atol=1e-15)
    assert np.abs(path_a).min() > 0 and np.abs(path_b).max() > 1e-3 * np.abs(dh1).max()


def test_the_vq_graders_two_halves_add_up_to_npvaes_quantizer_backward():
    """The quantize exercise's backward (the decoder's path) plus the vq_losses exercise's (the two
    losses), as their shown solutions compute them, are npvae's whole quantizer backward."""
    from npvae.exercises import vq

    q, z_e = vq.quantizer_case()
    z_q, codes, _ = q.forward(z_e)
    dz_q = np.random.default_rng(0).standard_normal(z_e.shape)
    dz_e = q.backward(dz_q, 1.0 / B)
    namespace = {"np": np}
    exec(fill("def quantize_backward(dz_q, codes, codebook):\n    raise NotImplementedError\n\n"
              "def vq_losses_backward(z_e, z_q, codes, codebook, beta):\n    raise NotImplementedError\n",
              {**EXERCISES["quantize"].solution, **EXERCISES["vq_losses"].solution}), namespace)
    st_dz_e, st_dcodebook = namespace["quantize_backward"](dz_q, codes, q.codebook)
    loss_dz_e, loss_dcodebook = namespace["vq_losses_backward"](z_e, z_q, codes, q.codebook, vq.BETA)
    np.testing.assert_allclose(st_dz_e + loss_dz_e, dz_e, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(st_dcodebook + loss_dcodebook, q.grads["codebook"], rtol=1e-12, atol=1e-15)
    assert np.abs(loss_dcodebook).min() > 0 and np.abs(loss_dz_e).min() > 0
