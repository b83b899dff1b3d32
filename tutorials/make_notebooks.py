"""Make tutorials/notebooks/NN_*.ipynb from the tutorials' .py sources, executed in quick mode.

The Jupytext "percent" files ``tutorials/NN_*.py`` are the one source of every
tutorial; the notebooks are generated from them and never edited by hand.
Each notebook is the tutorial's cells (the same sources, in the same order)
after one generated cell that sets npvae up on Colab and does nothing
elsewhere, with its relative links and images made relative to the
notebooks' folder, executed top to bottom in a real Jupyter kernel
(``python3``) with
``NPVAE_QUICK=1``, so that its outputs and figures can be read on a code host
without running anything.

Usage, from the repository root (needs ``pip install -e ".[notebooks]"``:
jupytext, nbclient, ipykernel)::

    python tutorials/make_notebooks.py            # every tutorial, executed
    python tutorials/make_notebooks.py 08 10      # only those whose names start so
    python tutorials/make_notebooks.py --check    # list notebooks whose cells differ from the sources

``--check`` exits 1 when a notebook is missing or its cells differ from its
source (``tests/test_notebooks.py`` runs the same comparison).
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parent
NOTEBOOKS = TUTORIALS / "notebooks"
REPO = TUTORIALS.parent
PYPROJECT = REPO / "pyproject.toml"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT_S = 600
GENERATED = "npvae-generated"
"""The tag of the cells this script adds before a tutorial's own (the Colab set-up)."""


def sources():
    """The tutorials' .py sources, in order."""
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def notebook_path(source):
    return NOTEBOOKS / f"{source.stem}.ipynb"


def _repository_url():
    """``[project.urls] Repository`` of pyproject.toml, or None when it names none."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return None
    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f).get("project", {}).get("urls", {}).get("Repository")


COLAB_UPLOAD = (
    "npvae is not installed in this Colab session, and it is not on PyPI: the project has no public "
    "address yet. Upload the repository as a zip (Files pane, on the left), then run "
    "!unzip -q npvae.zip -d /content && %pip install -e /content/npvae "
    "(the folder holding pyproject.toml) and run this notebook again.")
"""What the Colab cell says when pyproject.toml names no repository to install from."""


def colab_cells():
    """The generated first cells: a note and a cell that sets npvae up on Colab only.

    With ``[project.urls] Repository`` in pyproject.toml the cell installs
    npvae from it; without one (today) it stops with ``COLAB_UPLOAD``, the
    steps to install it from an uploaded copy. Elsewhere it does nothing.
    """
    import nbformat

    url = _repository_url()
    if url:
        install = f'    %pip install --quiet "npvae @ git+{url}"'
        says = "installs npvae from the project's repository"
    else:
        install = ("    try:\n        import npvae  # noqa: F401  (installed from an uploaded copy)\n"
                   f"    except ImportError:\n        raise RuntimeError({COLAB_UPLOAD!r}) from None")
        says = ("checks that npvae is installed and, if not, says how: the project has no public "
                "address yet, so upload the repository and install it from the upload")
    note = nbformat.v4.new_markdown_cell(
        "*Generated from the tutorial's `.py` source by `tutorials/make_notebooks.py` and executed in "
        f"quick mode (`NPVAE_QUICK=1`): edit the `.py` file, not this notebook. On Colab the next cell {says}; "
        "anywhere else it does nothing.*")
    code = nbformat.v4.new_code_cell("import sys\n\nif \"google.colab\" in sys.modules:  # Colab: npvae is not installed there\n"
                                     + install)
    for cell in (note, code):
        cell.metadata["tags"] = [GENERATED]
    return [note, code]


LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
"""A markdown link or image: ``[text](target)`` or ``![alt](target)``."""


def relinked(markdown):
    """``markdown`` with its relative links and images made relative to tutorials/notebooks/.

    The sources sit in ``tutorials/`` and link ``derivations.md#...`` and
    ``figures/...``; the notebooks sit one folder lower, so each relative
    target gains ``../``. Addresses (``http:``, ``mailto:``), absolute paths and
    in-page anchors (``#...``) are left as they are.
    """
    def fix(match):
        head, target, tail = match.groups()
        if re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target, re.I):
            return match.group(0)
        return f"{head}../{target}{tail}"
    spans = []  # code spans are set aside and left as written (a link's text may hold one)

    def aside(match):
        spans.append(match.group(0))
        return f"\0{len(spans) - 1}\0"
    changed = LINK.sub(fix, re.sub(r"(`+)[^`]*?\1", aside, markdown))
    return re.sub(r"\0(\d+)\0", lambda m: spans[int(m.group(1))], changed)


def own_cells(notebook):
    """(cell type, source) of every cell but the generated ones: what must equal the .py source."""
    return [(c.cell_type, c.source) for c in notebook.cells
            if GENERATED not in c.get("metadata", {}).get("tags", [])]


def notebook_from_source(source):
    """The unexecuted notebook of tutorial ``source``: generated cells, then the tutorial's."""
    import jupytext
    import nbformat

    notebook = jupytext.read(source)
    notebook.cells = colab_cells() + notebook.cells
    for cell in notebook.cells:
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "markdown":  # links and images that resolve from tutorials/notebooks/
            cell.source = relinked(cell.source)
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nbformat.validate(notebook)
    return notebook


def kernel_environment():
    """The environment the kernel runs in: quick mode; matplotlib's backend left to the kernel."""
    env = dict(os.environ, NPVAE_QUICK="1")
    env.pop("MPLBACKEND", None)  # CI sets Agg for scripts; a kernel chooses its inline backend itself
    env.pop("NPVAE_FULL", None)
    env.pop("NPVAE_SAVE_FIGURES", None)
    return env


def execute(notebook):
    """Run ``notebook`` in place in a fresh python3 kernel started in tutorials/notebooks/.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that fails.
    """
    from nbclient import NotebookClient

    NOTEBOOKS.mkdir(exist_ok=True)
    NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNELSPEC["name"], record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(env=kernel_environment())
    return notebook


def stale(source):
    """Why the committed notebook of ``source`` does not match it, or None when it does."""
    import nbformat

    path = notebook_path(source)
    if not path.is_file():
        return f"{path.relative_to(REPO)} is missing"
    if own_cells(nbformat.read(path, as_version=4)) != own_cells(notebook_from_source(source)):
        return f"{path.relative_to(REPO)}: its cells differ from {source.relative_to(REPO)}"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="tutorials whose file names start with these (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="compare the committed notebooks with the sources; write nothing")
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.names or any(s.name.startswith(n) for n in args.names)]
    if not chosen:
        parser.error(f"no tutorial starts with {' or '.join(args.names)}")
    if args.check:
        problems = [p for p in map(stale, chosen) if p]
        print("\n".join(problems) if problems else f"{len(chosen)} notebooks match their sources")
        return 1 if problems else 0
    import nbformat

    NOTEBOOKS.mkdir(exist_ok=True)
    for source in chosen:
        started = time.perf_counter()
        notebook = execute(notebook_from_source(source))
        nbformat.write(notebook, notebook_path(source))
        print(f"{notebook_path(source).relative_to(REPO)}: executed in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
