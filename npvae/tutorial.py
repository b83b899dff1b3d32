"""What every tutorial shares: its mode, where its runs and figures go, how a figure is shown.

A tutorial ``tutorials/NN_*.py`` is one source read three ways: run as a
script (``python tutorials/08_training_mnist.py``), opened as a notebook
(Jupytext, or the executed copy in ``tutorials/notebooks/``), and run by the
test suite in its quick mode. This module is the small amount of logic that
differs between them, so that no tutorial repeats it.

Modes, from the environment:

- ``NPVAE_QUICK=1`` (the test suite, and the committed notebooks): small
  samples and short training runs; runs and figures go to a temporary folder
  that ``Tutorial.finish()`` removes.
- ``NPVAE_FULL=1``: the full-length version of tutorials 8 to 11 and 13.
- neither: the default, shortened version.

Where figures go: a script or notebook run never rewrites the committed
figures in ``tutorials/figures/`` unless asked with ``NPVAE_SAVE_FIGURES=1``
(how those figures are made: ``NPVAE_SAVE_FIGURES=1 python tutorials/NN_*.py``).
Otherwise they go to ``tutorials/runs/figures/``, next to the run folders,
which git ignores.

How a figure is shown: in a Jupyter kernel (JupyterLab, Notebook, VS Code,
Colab) it is displayed inline below the cell; in a script the path it was
written to is printed. Scripts draw with matplotlib's Agg backend (they write
files and open no windows) unless ``MPLBACKEND`` says otherwise; a notebook's
backend is left as matplotlib and the kernel chose it.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

QUICK = os.environ.get("NPVAE_QUICK") == "1"
"""The quick mode: small samples and short runs (the test suite and the committed notebooks)."""

FULL = os.environ.get("NPVAE_FULL") == "1" and not QUICK
"""The full-length version of tutorials 8 to 11 and 13 (10 epochs on all of MNIST)."""

SAVE_FIGURES = os.environ.get("NPVAE_SAVE_FIGURES") == "1" and not QUICK
"""Write figures to the committed ``tutorials/figures/`` (never in quick mode)."""


def in_notebook():
    """True inside a Jupyter kernel (ipykernel, which Colab and VS Code also run), else False.

    The IPython terminal is not a notebook: its shell has no ``kernel``.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def tutorials_folder():
    """``tutorials/`` of the checkout npvae was imported from, else ``./npvae_tutorials``.

    The second case is an installed npvae without its repository (a notebook
    on Colab): runs and figures then go below the working directory.
    """
    checkout = Path(__file__).resolve().parents[1] / "tutorials"
    return checkout if checkout.is_dir() else Path.cwd() / "npvae_tutorials"


class Tutorial:
    """One tutorial's folders and figure display. ``name``: its file's stem, e.g. ``"08_training_mnist"``.

    Attributes: ``mode`` (``"quick"``, ``"full"`` or ``"default"``),
    ``notebook`` (running in a Jupyter kernel), ``runs`` and ``figures`` (the
    folders its run folders and figures go to, created here).
    """

    def __init__(self, name):
        self.name = name
        self.mode = "quick" if QUICK else "full" if FULL else "default"
        self.notebook = in_notebook()
        if not self.notebook and "MPLBACKEND" not in os.environ:
            import matplotlib

            matplotlib.use("Agg")  # a script writes its figures to files and opens no window
        self.root = tutorials_folder()
        self._temporary = Path(tempfile.mkdtemp(prefix=f"npvae_{name}_")) if QUICK else None
        if QUICK:
            self.runs = self.figures = self._temporary
        else:
            self.runs = self.root / "runs"
            self.figures = self.root / "figures" if SAVE_FIGURES else self.runs / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)

    def shown(self, path):
        """``path`` as a learner reads it: relative to the repository root where it lies below it."""
        path = Path(path)
        try:
            return path.relative_to(self.root.parent)
        except ValueError:
            return path

    def show(self, *paths):
        """Show saved PNG figures: inline in a notebook, else print where each was written."""
        for path in paths:
            if self.notebook:
                from IPython.display import Image, display

                display(Image(filename=str(path)))
            if not (self.notebook and QUICK):  # a quick run's temporary path means nothing to a reader
                print("saved", self.shown(path))

    def savefig(self, fig, filename, dpi=100):
        """Write the pyplot figure ``fig`` to ``figures/filename``, close it, show it; return the path."""
        import matplotlib.pyplot as plt

        path = self.figures / filename
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        self.show(path)
        return path

    def finish(self):
        """Remove the quick mode's temporary folder (runs and figures); nothing otherwise."""
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
