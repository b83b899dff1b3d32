"""Cross-references between the code and ``tutorials/derivations.md``, both ways.

- every backward in ``npvae/`` (a ``backward`` method, a ``*_backward``
  function, ``Adam.step``) names, in its own docstring or its class's, a
  ``derivations.md#anchor`` that is a heading of derivations.md;
- every ``derivations.md#anchor`` and ``section "..."`` cited anywhere in
  ``npvae/`` or ``tutorials/`` resolves;
- every "Implemented in:" of derivations.md names a file and an attribute that
  import; every "Checked by:" names a test file and a test function that exist.

And the notation: no section gives a symbol of the conventions' table another
meaning (``notation_problems``), and a few claims of the text about
convolutions are checked on the layers themselves.

The helpers are unit-tested on fake inputs at the bottom, so these checks are
known to fail when a reference breaks.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.helpers import ANCHOR_RE, derivation_anchors, github_anchor, headings

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "npvae"
DERIVATIONS = REPO / "tutorials" / "derivations.md"

SECTION_RE = re.compile(r"derivations\.md``?,\s+sections?\s+((?:\"[^\"]+\"(?:,\s*|\s+and\s+)?)+)")
BACKTICKED_RE = re.compile(r"`([^`]+)`")


# ------------------------------------------------------------------ helpers


def sections(markdown):
    """``[(heading, body)]`` for each level-2 section: its text up to the next ``## ``."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2]))


def anchor_problems(docstrings, anchors):
    """What is wrong with the derivation anchors in ``docstrings`` (a list of str or None)."""
    cited = [a for doc in docstrings if doc for a in ANCHOR_RE.findall(doc)]
    if not cited:
        return ["names no derivations.md#anchor"]
    return [f"cites derivations.md#{a}, which is not a heading" for a in cited if a not in anchors]


def section_problems(text, anchors):
    """Names in ``section "..."`` references of ``text`` that are not headings."""
    names = [n for group in SECTION_RE.findall(text) for n in re.findall(r"\"([^\"]+)\"", group)]
    return [f'section "{n}" is not a heading' for n in names if github_anchor(n) not in anchors]


def backward_functions(package=PACKAGE):
    """``[(id, docstrings)]`` for every backward in the package's modules.

    ``docstrings`` holds the function's docstring and, for a method, its class's.
    """
    found = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.endswith("_backward"):
                found.append((f"{path.name}::{node.name}", [ast.get_docstring(node)]))
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if not isinstance(item, ast.FunctionDef):
                        continue
                    if item.name == "backward" or (node.name == "Adam" and item.name == "step"):
                        found.append((f"{path.name}::{node.name}.{item.name}",
                                      [ast.get_docstring(item), ast.get_docstring(node)]))
    return found


def reference_lines(markdown, label):
    """``[(section, [backticked tokens])]`` after ``label`` on each line holding it."""
    found = []
    for heading, body in sections(markdown):
        for line in body.splitlines():
            if label in line:
                part = line.split(label, 1)[1]
                for other in ("Implemented in:", "Checked by:"):
                    part = part.split(other)[0]
                found.append((heading, BACKTICKED_RE.findall(part)))
    return found


def implemented_targets(tokens):
    """``[(file, name)]`` from tokens like ``npvae/vae.py``, ``VAE.forward``, ``VAE.backward``."""
    targets, current = [], None
    for token in tokens:
        if token.endswith(".py"):
            current = token
        else:
            targets.append((current, token))
    return targets


def implemented_problem(file, name, repo=REPO):
    """None if ``file`` exists and ``name`` (dotted) is an attribute of its module; else why not."""
    if file is None or not file.startswith("npvae/"):
        return f"{name!r} does not follow an npvae/<file>.py"
    if not (repo / file).is_file():
        return f"{file} does not exist"
    module = importlib.import_module(file[:-3].replace("/", "."))
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            return f"{file} has no {name}"
        obj = getattr(obj, part)
    return None


def names_of_tests(path):
    """Names of the test functions in the file at ``path``: top-level and in classes."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def checked_problem(token, repo=REPO):
    """None if ``tests/<file>.py::<test>`` (or just the file) exists; else why not."""
    file, _, name = token.partition("::")
    if not (file.startswith("tests/") and file.endswith(".py")):
        return f"{token!r} is not tests/<file>.py::<test>"
    if not (repo / file).is_file():
        return f"{file} does not exist (yet)"
    if name and name not in names_of_tests(repo / file):
        return f"{file} has no test {name}"
    return None


# -------------------------------------------------------- the real checks

MARKDOWN = DERIVATIONS.read_text(encoding="utf-8")
ANCHORS = derivation_anchors()
BACKWARDS = backward_functions()
IMPLEMENTED = list({(file, name): heading
                    for heading, tokens in reference_lines(MARKDOWN, "Implemented in:")
                    for file, name in implemented_targets(tokens)}.items())
CHECKED = list({token: heading for heading, tokens in reference_lines(MARKDOWN, "Checked by:")
                for token in tokens}.items())
REQUIRED_HEADINGS = [
    "Conventions", "Dense layer", "Activations", "ReLU", "Leaky ReLU", "Tanh", "Sigmoid",
    "Softplus", "Bernoulli likelihood", "Gaussian likelihood", "Gaussian KL", "Reparameterization",
    "The whole ELBO", "Adam", "Importance-weighted bound", "Importance-weighted training",
    "Conditional VAE", "Finite-difference checks",
]


def test_required_sections_exist():
    missing = [h for h in REQUIRED_HEADINGS if github_anchor(h) not in ANCHORS]
    assert not missing, f"derivations.md lacks the headings {missing}"


def test_references_were_found():
    assert len(IMPLEMENTED) >= 20 and len(CHECKED) >= 15
    assert (("npvae/vae.py", "VAE.backward"), "The whole ELBO") in IMPLEMENTED
    cited = [n for p in PACKAGE.glob("*.py") for g in SECTION_RE.findall(p.read_text(encoding="utf-8"))
             for n in re.findall(r"\"([^\"]+)\"", g)]
    assert {"Bernoulli likelihood", "Gaussian KL", "Adam", "The whole ELBO"} <= set(cited)


def test_every_section_names_its_implementation_and_test():
    for heading, body in sections(MARKDOWN):
        assert "Implemented in:" in body, f"section {heading!r} has no 'Implemented in:' line"
        assert "Checked by:" in body, f"section {heading!r} has no 'Checked by:' line"


def test_backwards_were_found():
    names = {name for name, _ in BACKWARDS}
    for expected in ("layers.py::Dense.backward", "vae.py::VAE.backward", "optim.py::Adam.step",
                     "losses.py::gaussian_kl_backward", "reparam.py::reparameterize_backward"):
        assert expected in names


@pytest.mark.parametrize("name,docstrings", BACKWARDS, ids=[name for name, _ in BACKWARDS])
def test_backward_cites_an_existing_derivation(name, docstrings):
    problems = anchor_problems(docstrings, ANCHORS)
    assert not problems, f"{name}: {'; '.join(problems)}"


SOURCES = sorted(PACKAGE.glob("*.py")) + sorted((REPO / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[f"{p.parent.name}/{p.name}" for p in SOURCES])
def test_every_cited_anchor_and_section_resolves(path):
    text = path.read_text(encoding="utf-8")
    problems = [f"derivations.md#{a} is not a heading" for a in ANCHOR_RE.findall(text) if a not in ANCHORS]
    problems += section_problems(text, ANCHORS)
    assert not problems, f"{path.name}: {'; '.join(problems)}"


def test_markdown_links_inside_derivations_resolve():
    broken = [a for a in re.findall(r"\]\(#([^)]+)\)", MARKDOWN) if a not in ANCHORS]
    assert not broken, f"derivations.md links to missing anchors {broken}"


@pytest.mark.parametrize("target,heading", IMPLEMENTED,
                         ids=[f"{file}:{name}" for (file, name), _ in IMPLEMENTED])
def test_implemented_in_exists(target, heading):
    problem = implemented_problem(*target)
    assert problem is None, f"section {heading!r}: {problem}"


@pytest.mark.parametrize("token,heading", CHECKED, ids=[token for token, _ in CHECKED])
def test_checked_by_exists(token, heading):
    problem = checked_problem(token)
    assert problem is None, f"section {heading!r}: {problem}"


# ------------------------------------------- the checks can fail: unit tests


def test_github_anchor():
    assert github_anchor("The whole ELBO") == "the-whole-elbo"
    assert github_anchor("Finite-difference checks") == "finite-difference-checks"
    assert github_anchor("Leaky ReLU") == "leaky-relu"
    assert github_anchor("Importance-weighted bound") == "importance-weighted-bound"
    assert list(headings("# A\n```\n# not a heading\n```\n## A\n")) == ["a", "a-1"]


def test_anchor_check_catches_missing_and_absent_anchors():
    anchors = {"dense-layer": "Dense layer"}
    assert anchor_problems(["Derivation: ``derivations.md#dense-layer``."], anchors) == []
    assert anchor_problems([None, "class doc: derivations.md#dense-layer"], anchors) == []
    assert anchor_problems(["Derivation: ``derivations.md#no-such-section``."], anchors) == [
        "cites derivations.md#no-such-section, which is not a heading"]
    assert anchor_problems(["dW = x^T dout, no pointer"], anchors) == ["names no derivations.md#anchor"]
    assert anchor_problems([None, None], anchors) == ["names no derivations.md#anchor"]


def test_section_check_catches_a_missing_section():
    anchors = {"gaussian-kl": "Gaussian KL", "adam": "Adam"}
    text = 'Derivations: ``tutorials/derivations.md``, sections "Gaussian KL", "Nope" and "Adam".'
    assert section_problems(text, anchors) == ['section "Nope" is not a heading']


def test_backward_discovery_sees_undocumented_backwards(tmp_path):
    (tmp_path / "fake.py").write_text(
        'def thing_backward(dout):\n    """No pointer."""\n\n'
        'class Layer:\n    """Derivation: derivations.md#dense-layer."""\n'
        '    def backward(self, dout):\n        return dout\n\n'
        'class Adam:\n    def step(self):\n        pass\n', encoding="utf-8")
    found = dict(backward_functions(tmp_path))
    assert set(found) == {"fake.py::thing_backward", "fake.py::Layer.backward", "fake.py::Adam.step"}
    anchors = {"dense-layer": "Dense layer"}
    assert anchor_problems(found["fake.py::thing_backward"], anchors)
    assert not anchor_problems(found["fake.py::Layer.backward"], anchors)
    assert anchor_problems(found["fake.py::Adam.step"], anchors)


def test_reference_parsing_and_checks_catch_missing_targets(tmp_path):
    markdown = ("## One\ntext\n\nImplemented in: `npvae/vae.py` `VAE.backward`, `VAE.nope`. "
                "Checked by: `tests/test_x.py::test_a`, `tests/test_x.py::test_b`.\n")
    implemented = reference_lines(markdown, "Implemented in:")
    assert implemented == [("One", ["npvae/vae.py", "VAE.backward", "VAE.nope"])]
    targets = implemented_targets(implemented[0][1])
    assert [implemented_problem(f, n) for f, n in targets] == [None, "npvae/vae.py has no VAE.nope"]
    assert implemented_problem("npvae/no_such_file.py", "f") == "npvae/no_such_file.py does not exist"

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_a():\n    pass\n", encoding="utf-8")
    checked = reference_lines(markdown, "Checked by:")[0][1]
    assert [checked_problem(t, tmp_path) for t in checked] == [None, "tests/test_x.py has no test test_b"]
    assert checked_problem("tests/test_missing.py::test_a", tmp_path) == \
        "tests/test_missing.py does not exist (yet)"
    assert checked_problem("tests/test_x.py", tmp_path) is None


# ------------------------------------------- notation: one symbol, one meaning

MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.DOTALL)
SUBSCRIPT_RE = re.compile(r"_(\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|[A-Za-z0-9])")
BASE_RE = re.compile(r"(\\[A-Za-z]+\{[^{}]*\}|\\[A-Za-z]+|[A-Za-z])\s*$")
ACCENT_RE = re.compile(r"\\(?:bar|tilde|hat|overline)\s*(?:\{([^{}]*)\}|(\\?[A-Za-z]+))")
SYMBOL_RE = re.compile(r"^(\\[A-Za-z]+(?:\{[^{}]*\})?|[A-Za-z])(?:_(?:\{[^{}]*\}|\\?[A-Za-z0-9]+))?"
                       r"(?:\s*\\times\s*\1)?$")
TAKES_ANY_SUBSCRIPT = {r"\mathbb{E}", r"\nabla", r"\max", r"\min", r"\sum", r"\prod"}
"""Operators whose subscript names what they range over (E_{z ~ q}, nabla_{mu, s}), not an index."""


def conventions_table(markdown):
    """``{symbol: row}`` of the conventions' table of symbols: each row a dict with meaning,
    kind (size, index, quantity, function) and the phrases the text calls it by."""
    body = dict(sections(markdown))["Conventions"]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("$") and cells[0].endswith("$"):
            symbol = cells[0][1:-1]
            assert symbol not in rows, f"the conventions list {symbol} twice"
            rows[symbol] = dict(meaning=cells[1], kind=cells[2],
                                called=[p.strip() for p in cells[3].split(",") if p.strip()])
    return rows


def math_spans(text):
    """``[(start, latex)]`` of every $...$ and $$...$$ outside code spans and fences."""
    text = re.sub(r"```.*?```", lambda m: " " * len(m.group()), text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", lambda m: " " * len(m.group()), text)
    return [(m.start(), m.group(1) or m.group(2)) for m in MATH_RE.finditer(text)], text


def plain(latex):
    """``latex`` without \\text{...}/\\mathrm{...} words and accents (\\bar x -> x)."""
    latex = re.sub(r"\\(?:text|mathrm|operatorname)\{[^{}]*\}", " ", latex)
    return ACCENT_RE.sub(lambda m: m.group(1) or m.group(2), latex)


def main_symbol(latex):
    """The symbol a span names when it is one symbol (``K``, ``K \\times K``, ``C_\\text{in}``,
    ``\\tilde w_{il}``), else None."""
    latex = ACCENT_RE.sub(lambda m: m.group(1) or m.group(2), latex.strip())
    match = SYMBOL_RE.match(latex)
    return match.group(1) if match else None


def notation_problems(markdown):
    """Where derivations.md gives a symbol of its conventions' table another meaning:

    - a phrase the table calls a symbol by ("stride", "samples") next to a span
      that is another symbol ("stride $s$" where the stride is S);
    - a lowercase size, quantity or function of the table used as an index, in a
      subscript (``out_{n o y x}``, ``\\sum_{k=1}``), unless the table lists that
      subscripted form itself (``\\sigma_x``, ``e_y``);
    - a function of the table with a subscript the table does not list (``\\sigma_u``);
    - an index of the table defined as something else (``$l = h W + b$``);
    - a symbol the table allows in some sections only, used elsewhere.
    """
    table = conventions_table(markdown)
    called = {phrase: symbol for symbol, row in table.items() for phrase in row["called"]}
    listed_subscripts = {}
    for symbol in table:
        base, _, sub = symbol.partition("_")
        if sub:
            listed_subscripts.setdefault(base, set()).add(sub.strip("{}"))
    reserved = {s for s, row in table.items() if row["kind"] != "index" and re.fullmatch(r"[a-z]", s)}
    functions = {s for s, row in table.items() if row["kind"] == "function"}
    indices = {s for s, row in table.items() if row["kind"] == "index"}
    only_in = {s: set(re.findall(r"\[([^\]]+)\]\(#", row["meaning"]))
               for s, row in table.items() if "only" in row["meaning"]}
    problems = []
    for heading, body in sections(markdown):
        if heading == "Conventions":
            continue
        spans, text = math_spans(body)
        for start, latex in spans:
            where = f"{heading}: ${latex.strip()[:60]}$"
            symbol = main_symbol(latex)
            before = re.sub(r"\s+", " ", text[max(0, start - 40):start]).lower()
            after = re.sub(r"\s+", " ", text[start + len(latex) + 2:start + len(latex) + 42]).lower()
            for phrase in sorted(called, key=len, reverse=True):
                counted = table[called[phrase]]["kind"] == "size"     # "$k$ samples" counts them
                if before.endswith(f" {phrase} ") \
                        or (counted and re.match(rf" {re.escape(phrase)}\b", after)):
                    if symbol is not None and symbol != called[phrase]:
                        problems.append(f"{where} is called {phrase!r}, which is "
                                        f"${called[phrase]}$ in the conventions")
                    break
            stripped = plain(latex)
            for match in SUBSCRIPT_RE.finditer(stripped):
                base = BASE_RE.search(stripped[:match.start()])
                base = base.group(1) if base else None
                sub = match.group(1).strip("{}")
                if base in TAKES_ANY_SUBSCRIPT:
                    continue
                letters = set(re.findall(r"[a-z]", re.sub(r"\\[A-Za-z]+", " ", sub)))
                allowed = listed_subscripts.get(base, set())
                for letter in (letters & reserved) - allowed:
                    problems.append(f"{where}: ${letter}$ is an index in {base}_{{{sub}}}, but "
                                    f"the conventions reserve it for {table[letter]['meaning']}")
                if base in functions and sub not in allowed:
                    problems.append(f"{where}: ${base}_{{{sub}}}$, but ${base}$ is "
                                    f"{table[base]['meaning']}")
            for symbol in indices:
                if re.match(rf"\s*{symbol}\s*=\s*(?![0-9\s])", latex):
                    problems.append(f"{where}: the index ${symbol}$ ({table[symbol]['meaning']}) "
                                    "is given another value")
            for symbol, sections_allowed in only_in.items():
                if heading not in sections_allowed and re.search(re.escape(symbol) + r"(?![A-Za-z])", latex):
                    problems.append(f"{where} uses ${symbol}$, kept for {sorted(sections_allowed)}")
    return problems


def test_conventions_list_the_symbols():
    table = conventions_table(MARKDOWN)
    assert {"k", "K", "S", "P", "C", "Y", "x", "W", "s", r"\varepsilon", r"\sigma", "l", "i"} <= set(table)
    assert table["k"]["called"] == ["samples"] and table["K"]["kind"] == "size"


def test_no_symbol_of_the_conventions_takes_another_meaning():
    problems = notation_problems(MARKDOWN)
    assert not problems, "\n".join(problems)


def test_notation_check_catches_a_symbol_reused():
    """The clashes derivations.md once had, each in a section of its own, are all reported."""
    table = "\n".join(line for line in MARKDOWN.splitlines()
                      if line.startswith("|") or line.startswith("## Conventions"))
    cases = {
        "a $k \\times k$ kernel": "is called 'kernel'",
        "stride $s$ and": "is called 'stride'",
        "$\\mathrm{out}_{n o y x}$": "$x$ is an index",
        "$\\mathrm{kl}_i = \\sum_{k=1}^{Z} \\mathrm{kl}_{ik}$": "$k$ is an index",
        "$(z - \\mu)^2 / \\sigma_u^2 = \\epsilon^2$": "\\sigma_{u}",
        "with $l = h W + b$ the logits": "the index $l$",
        "for $l = 1, \\dots, k$": None,
    }
    for text, expected in cases.items():
        found = notation_problems(f"{table}\n\n## Section\n\n{text} here.\n")
        if expected is None:
            assert found == [], found
        else:
            assert any(expected in p for p in found), (text, found)
    assert any("kept for" in p for p in notation_problems(f"{table}\n\n## Section\n\n$\\epsilon$\n"))
    assert notation_problems(f"{table}\n\n## Section\n\n$K \\times K$ kernel, stride $S$, "
                             "$\\sigma_x$, $e_{y_i}$, $\\mathbb{E}_{z \\sim q}$, $z_{il}$\n") == []


# ------------------------------------------- the text's claims, checked


def test_output_padding_rows_hold_the_bias_only_where_no_patch_reaches():
    """Transposed convolution: the last max(0, op - P) output rows, and with S > K the rows
    between patches, hold the bias only; in the conv preset (P = 1, op = 1) none."""
    import numpy as np

    from npvae.conv import ConvTranspose2D

    rng = np.random.default_rng(0)
    for K, S, P, op, R in [(3, 2, 1, 1, 7), (3, 2, 0, 1, 7), (3, 3, 1, 2, 4), (3, 3, 0, 2, 4),
                           (2, 3, 0, 2, 3)]:
        layer = ConvTranspose2D(1, 1, K, S, P, op, rng=rng, dtype=np.float64)
        layer.params["W"][...] = 1.0
        layer.params["b"][...] = 0.0
        out = layer.forward(np.ones((1, 1, R, R)))[0, 0]
        bias_only = set(np.flatnonzero(np.all(out == 0, axis=1)))
        reached = {S * r + u for r in range(R) for u in range(K)}      # rows of the padded output
        expected = {g - P for g in range((R - 1) * S + K + op) if g not in reached
                    and P <= g < (R - 1) * S + K + op - P}
        assert bias_only == expected, (K, S, P, op, bias_only, expected)
        if S <= K:
            n = max(0, op - P)
            assert bias_only == set(range(out.shape[0] - n, out.shape[0])), (K, S, P, op)


def test_pixels_no_window_covers():
    """Convolution: the padded rows no window covers are the S - K between windows (S > K)
    and the last (R + 2P - K) mod S; K = 1, S = 2 on a 9 x 9 image leaves 56 of 81 pixels."""
    import numpy as np

    from npvae.conv import Conv2D

    rng = np.random.default_rng(0)
    for rows, K, S in [(9, 1, 2), (16, 3, 2), (15, 3, 2), (10, 2, 3), (11, 2, 3), (8, 3, 1)]:
        layer = Conv2D(1, 1, K, S, 0, rng=rng, dtype=np.float64)
        layer.params["W"][...] = 1.0
        out = layer.forward(np.ones((1, 1, rows, rows)))
        covered = layer.backward(np.ones_like(out))[0, 0] > 0      # dx: 0 where no window reads
        out_rows = (rows - K) // S + 1
        assert out.shape[2] == out_rows
        assert int((~covered.any(axis=1)).sum()) == (out_rows - 1) * max(0, S - K) + (rows - K) % S
        assert covered.all() == (S <= K and (rows - K) % S == 0)
        if (rows, K, S) == (9, 1, 2):
            assert int((~covered).sum()) == 56
