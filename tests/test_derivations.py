"""Cross-references between the code and ``tutorials/derivations.md``, both ways.

- every backward in ``npvae/`` (a ``backward`` method, a ``*_backward``
  function, ``Adam.step``) names, in its own docstring or its class's, a
  ``derivations.md#anchor`` that is a heading of derivations.md;
- every ``derivations.md#anchor`` and ``section "..."`` cited anywhere in
  ``npvae/`` or ``tutorials/`` resolves;
- every "Implemented in:" of derivations.md names a file and an attribute that
  import; every "Checked by:" names a test file and a test function that exist.

The helpers are unit-tested on fake inputs at the bottom, so these checks are
known to fail when a reference breaks.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "npvae"
DERIVATIONS = REPO / "tutorials" / "derivations.md"

ANCHOR_RE = re.compile(r"derivations\.md#([A-Za-z0-9_-]+)")
SECTION_RE = re.compile(r"derivations\.md``?,\s+sections?\s+((?:\"[^\"]+\"(?:,\s*|\s+and\s+)?)+)")
BACKTICKED_RE = re.compile(r"`([^`]+)`")


# ------------------------------------------------------------------ helpers


def github_anchor(heading):
    """The anchor GitHub gives a heading: lowercase, punctuation removed, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown):
    """``{anchor: heading text}`` for every heading outside code fences (duplicates get -1, -2)."""
    found, seen, fenced = {}, {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match and not fenced:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found[anchor if count == 0 else f"{anchor}-{count}"] = match.group(2)
    return found


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
ANCHORS = headings(MARKDOWN)
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
