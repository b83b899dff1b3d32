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
