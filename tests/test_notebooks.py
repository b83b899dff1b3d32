"""The committed notebooks are the tutorials' sources, and every tutorial runs in a real Jupyter kernel.

``tutorials/notebooks/NN_*.ipynb`` are generated from ``tutorials/NN_*.py`` by
``tutorials/make_notebooks.py``. The first test (no execution, about a second)
fails when a notebook's cells differ from its source: edit the .py file, then
regenerate with ``python tutorials/make_notebooks.py``. The second executes
every tutorial as a notebook in a fresh ``python3`` kernel in quick mode and
fails on any error: what a learner opening it in JupyterLab or Colab does.
Both need the ``notebooks`` extra (``pip install -e ".[notebooks]"``) and are
skipped cleanly without it.
"""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))


def make_notebooks():
    """tutorials/make_notebooks.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "tutorials" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tutorial_has_a_committed_notebook_with_its_cells():
    pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    make = make_notebooks()
    assert SOURCES, "no tutorials found"
    problems = [p for p in map(make.stale, SOURCES) if p]
    assert not problems, "\n".join(problems) + "\nregenerate with: python tutorials/make_notebooks.py"
    orphans = {p.stem for p in make.NOTEBOOKS.glob("*.ipynb")} - {s.stem for s in SOURCES}
    assert not orphans, f"notebooks without a .py source: {sorted(orphans)}"
    for source in SOURCES:  # executed, and openable by JupyterLab and Colab-style hosts
        notebook = nbformat.read(make.notebook_path(source), as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{source.stem}: not executed"
        assert not any(o.output_type == "error" for c in code for o in c.outputs), source.stem
        assert any("check passed" in o.get("text", "") for c in code for o in c.outputs), source.stem
        if "tutorial.show(" in source.read_text() or "tutorial.savefig(" in source.read_text():
            assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), \
                f"{source.stem}: its figures are not shown inline"


def test_a_changed_source_is_reported(tmp_path, monkeypatch):
    pytest.importorskip("jupytext")
    make = make_notebooks()
    source = tmp_path / SOURCES[0].name
    source.write_text(SOURCES[0].read_text() + "\n# %%\nprint('a cell the notebook lacks')\n")
    monkeypatch.setattr(make, "REPO", tmp_path)
    monkeypatch.setattr(make, "NOTEBOOKS", tmp_path / "notebooks")
    assert "is missing" in make.stale(source)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / make.notebook_path(SOURCES[0]).name).write_bytes(
        make_notebooks().notebook_path(SOURCES[0]).read_bytes())
    assert "cells differ" in make.stale(source)


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_tutorial_runs_as_a_notebook_in_a_jupyter_kernel(source):
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    make = make_notebooks()
    notebook = make.execute(make.notebook_from_source(source))  # raises on the first failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("check passed" in o.get("text", "") for o in outputs), f"{source.stem}: no 'check passed'"
    assert not any(o.output_type == "error" for o in outputs)


def test_a_failing_cell_fails_the_execution(tmp_path):
    pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    make = make_notebooks()
    source = tmp_path / "99_broken.py"
    source.write_text("# %%\nprint('check passed: not yet')\n\n# %%\nraise ValueError('a broken tutorial')\n")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="a broken tutorial"):
        make.execute(make.notebook_from_source(source))


def heading_anchors(markdown):
    """The anchors a code host gives the headings of ``markdown`` (GitHub's rule: lower case,
    punctuation dropped, spaces to hyphens, repeats numbered), plus explicit ``<a id>``/``{#id}``."""
    anchors, seen = set(), {}
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    for title in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    anchors.update(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", markdown))
    return anchors


def notebook_links(notebook):
    """Every (kind, target) of a markdown cell's links and images, code spans left out."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        prose = re.sub(r"(`+)[^`]*?\1", "code", cell.source)  # code spans are not links
        found += [("image" if bang else "link", target)
                  for bang, target in re.findall(r"(!?)\[[^\]]*\]\(([^)\s]+)\)", prose)]
    return found


def broken_links(notebook_file, notebook):
    """The links and images of ``notebook`` (at ``notebook_file``) that resolve to nothing."""
    broken = []
    for kind, target in notebook_links(notebook):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # an address on the web: not this repository's to check
        path, _, anchor = target.partition("#")
        resolved = (notebook_file.parent / path).resolve() if path else notebook_file
        if not resolved.exists():
            broken.append(f"{kind} {target}: no {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved.read_text()):
            broken.append(f"{kind} {target}: no heading #{anchor} in {resolved.name}")
    return broken


def test_every_link_and_image_of_every_notebook_resolves_from_its_folder():
    nbformat = pytest.importorskip("nbformat")
    make = make_notebooks()
    checked, broken = 0, []
    for source in SOURCES:
        path = make.notebook_path(source)
        notebook = nbformat.read(path, as_version=4)
        checked += len(notebook_links(notebook))
        broken += [f"{path.name}: {b}" for b in broken_links(path, notebook)]
    assert checked > 20, checked  # the 16 links to derivations.md and 8 images, at least
    assert not broken, "\n".join(broken)


def test_a_link_kept_relative_to_the_source_folder_is_reported(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    (tmp_path / "derivations.md").write_text("# Dense layer\n\ntext\n")
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "[ok](../derivations.md#dense-layer) [dead](derivations.md#dense-layer) "
        "[no anchor](../derivations.md#adam) ![img](figures/a.png) `[code](x.md)`")])
    broken = broken_links(tmp_path / "notebooks" / "n.ipynb", notebook)
    assert len(broken) == 3, broken
    assert any("dead" not in b and "derivations.md#dense-layer: no" in b for b in broken)
    assert any("no heading #adam" in b for b in broken) and any("figures/a.png" in b for b in broken)
