"""An interactive latent-space explorer: move a point z through latent space, watch decode(z).

``npvae explore RUN`` opens a matplotlib window of a trained model:

- left, the encoder means mu(x) of test digits, coloured by label, drawn on a
  plane through latent space; click or drag on it and z moves to that point
  of the plane;
- right, decode(z), the decoder's mean at the current z (probabilities, or
  Gaussian means shown clipped to [0, 1]);
- below (latent size > 2), one slider per most active dimension: the
  dimensions with the largest KL per dimension on the test digits
  (``npvae.evaluate.kl_per_dim``), the ones the decoder reads. A slider sets
  its coordinate of z; the marker on the plane shows z's projection.

The plane is the one ``latents.png`` shows (``npvae.plots.latent_plane``,
named in both titles): for a 2-d latent, the latent space itself (z_1, z_2);
for more dimensions, the plane of the digit classes' average codes. A point
(a, b) of it is z = centre + a v_1 + b v_2. ``npvae explore`` encodes the
same test digits as ``latents.png`` (all of the run's, unless ``--n``), and
latent dimensions are numbered from 1 (z_1, ...) on every figure and in
``npvae evaluate``.

A conditional model (``npvae.cvae``) encodes each test digit with its label
and decodes z as the chosen ``digit`` (``--digit``, default 0): the plane
then holds styles, and the image writes the current style as that digit.

In a notebook, ``LatentExplorer(...).widget()`` shows the same thing inline
with ipywidgets sliders (the plane's a and b, and the active dimensions),
redrawing the figure on every change.

Every callback is a plain method (``move_to``, ``set_dimension``, and the
mouse handlers behind them), so that the explorer can be driven without a
screen; ``tests/test_explore.py`` does so on the Agg canvas.
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.widgets import Slider

from .backend import to_numpy
from .cvae import check_digit, is_conditional
from .errors import ConfigError
from .evaluate import encode_means, kl_per_dim
from .plots import _image_side, latent_plane

N_DIGITS = None
"""Test digits whose latent means are drawn (and that choose the plane and the active
dimensions): None, all of the run's, as in ``latents.png``."""

N_SLIDERS = 5
"""Sliders for the most active dimensions, at most (latent size > 2)."""

NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}
"""matplotlib backends that draw to files only."""


class LatentExplorer:
    """The explorer of ``model`` over test digits ``x`` (N, D) with labels ``y`` (N,) or None.

    ``figure``: a matplotlib Figure to draw in (``pyplot.figure()`` for a
    window); None draws on a new Agg figure (headless). ``n_sliders``: sliders
    for the dimensions of largest KL (latent size > 2 only).

    State: ``z`` (Z,) float64, the current latent point; ``image()`` is
    decode(z) as a (side, side) array. A conditional model needs ``y`` and
    decodes as ``digit`` (default 0); a model that is not conditional
    refuses a ``digit``.
    """

    def __init__(self, model, x, y=None, *, figure=None, n_sliders=N_SLIDERS, digit=None):
        if model.latent < 2:
            raise ConfigError(f"explore needs a latent space of 2 or more dimensions; this model has "
                              f"latent={model.latent}")
        conditional = is_conditional(model)
        check_digit(model, digit, "digit")
        self.model = model
        self.digit = (digit or 0) if conditional else None
        self.side = _image_side(model.x_dim)
        labels = y if conditional else None   # a conditional encoder reads each digit's label
        self.mu = encode_means(model, x, y=labels).astype(np.float64)
        self.y = None if y is None else np.asarray(to_numpy(y)).reshape(-1)
        self.kl = kl_per_dim(model, x, y=labels)
        self.plane = latent_plane(self.mu, self.y)
        self.centre, self.basis = self.plane.centre, self.plane.basis
        self.coords = self.plane.project(self.mu)  # (N, 2): the means on the plane
        self.dims = ([] if model.latent == 2 else
                     [int(u) for u in np.argsort(self.kl)[::-1][:min(n_sliders, model.latent)]])
        self.z = self.centre.copy()
        self._dragging = False
        self._syncing = False
        self._draw(figure)

    # ---------------------------------------------------------------- the maths

    def plane_point(self, a, b):
        """z (Z,) of the point (a, b) of the plane: centre + a v_1 + b v_2."""
        return self.centre + a * self.basis[0] + b * self.basis[1]

    def projection(self):
        """(a, b): the current z projected onto the plane."""
        return tuple((self.z - self.centre) @ self.basis.T)

    def decode(self, z):
        """decode(z) for one point z (Z,): host (side, side), the decoder mean."""
        z = self.model.xp.asarray(np.asarray(z, dtype=np.float64)[None], dtype=self.model.dtype)
        out = (self.model.decode(z) if self.digit is None
               else self.model.decode(z, np.array([self.digit])))
        return to_numpy(out).reshape(self.side, self.side)

    def image(self):
        """decode(z) at the current z: host (side, side)."""
        return self.decode(self.z)

    # ---------------------------------------------------------------- callbacks

    def move_to(self, a, b):
        """Move z to the point (a, b) of the plane; update the marker, the sliders and the image."""
        self.z = self.plane_point(a, b)
        self._update()

    def set_dimension(self, u, value):
        """Set coordinate ``u`` of z to ``value``; update the marker and the image."""
        if self._syncing:  # the slider moved because move_to set it: z is already right
            return
        self.z = self.z.copy()
        self.z[u] = value
        self._update()

    def on_press(self, event):
        if event.inaxes is self.ax_plane and event.button == 1 and event.xdata is not None:
            self._dragging = True
            self.move_to(event.xdata, event.ydata)

    def on_motion(self, event):
        if self._dragging and event.inaxes is self.ax_plane and event.xdata is not None:
            self.move_to(event.xdata, event.ydata)

    def on_release(self, event):
        self._dragging = False

    # ---------------------------------------------------------------- drawing

    def _draw(self, figure):
        if figure is None:
            figure = Figure(figsize=(10, 5.5 + 0.35 * len(self.dims)))
            FigureCanvasAgg(figure)
        self.figure = fig = figure
        bottom = 0.1 + 0.05 * len(self.dims)  # room for the sliders
        self.ax_plane = fig.add_axes([0.07, bottom + 0.02, 0.45, 0.84 - bottom])
        self.ax_image = fig.add_axes([0.6, bottom + 0.02, 0.36, 0.84 - bottom])
        colour = {} if self.y is None else dict(c=self.y, cmap="tab10", norm=BoundaryNorm(np.arange(-0.5, 10.5), 10))
        points = self.ax_plane.scatter(self.coords[:, 0], self.coords[:, 1], s=4, alpha=0.6, **colour)
        if self.y is not None:
            fig.colorbar(points, ax=self.ax_plane, ticks=range(10), label="label", fraction=0.05, pad=0.02)
        a, b = ("", "") if self.model.latent == 2 else ("a: ", "b: ")
        self.ax_plane.set(xlabel=a + self.plane.labels[0], ylabel=b + self.plane.labels[1])
        self.ax_plane.set_title(f"Encoder means of {len(self.mu)} test digits (click or drag)\n"
                                f"on {self.plane.name}, as in latents.png", fontsize=9)
        # The limits cover the means and 3 prior standard deviations around the centre
        # (on an orthonormal plane the prior's projection is N(0, I) as well).
        reach = max(3.0, float(np.abs(self.coords).max()) * 1.05)
        self.ax_plane.set(xlim=(-reach, reach), ylim=(-reach, reach))
        (self.marker,) = self.ax_plane.plot(*self.projection(), "k+", ms=16, mew=2)
        self.picture = self.ax_image.imshow(np.clip(self.image(), 0, 1), cmap="gray", vmin=0, vmax=1)
        self.ax_image.set_xticks([])
        self.ax_image.set_yticks([])
        self.ax_image.set_title("decode(z): the decoder mean at z" if self.digit is None else
                                f"decode(z, y = {self.digit}): the decoder mean at z", fontsize=10)
        self.sliders = {}
        for i, u in enumerate(self.dims):
            ax = fig.add_axes([0.25, 0.04 + 0.05 * (len(self.dims) - 1 - i), 0.5, 0.03])
            low = min(-3.0, self.mu[:, u].min() - 0.5)
            high = max(3.0, self.mu[:, u].max() + 0.5)
            slider = Slider(ax, f"$z_{{{u + 1}}}$ (KL {self.kl[u]:.2f})", low, high, valinit=self.z[u])
            slider.on_changed(lambda value, u=u: self.set_dimension(u, value))
            self.sliders[u] = slider
        canvas = fig.canvas
        self._connections = [canvas.mpl_connect("button_press_event", self.on_press),
                             canvas.mpl_connect("motion_notify_event", self.on_motion),
                             canvas.mpl_connect("button_release_event", self.on_release)]

    def _update(self):
        self.marker.set_data(*([c] for c in self.projection()))
        self.picture.set_data(np.clip(self.image(), 0, 1))
        self._syncing = True
        try:
            for u, slider in self.sliders.items():
                slider.set_val(self.z[u])
        finally:
            self._syncing = False
        self.figure.canvas.draw_idle()

    def show(self):
        """Open the window (pyplot's ``show``) and block until it is closed."""
        import matplotlib.pyplot as plt

        plt.show()

    def png(self):
        """The figure as PNG bytes (the Agg renderer)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()

    # ---------------------------------------------------------------- notebooks

    def widget(self):
        """The explorer inline in a notebook: ipywidgets sliders above the figure, redrawn on change.

        Sliders: a and b, the point of the plane, and one per active dimension.
        Needs ipywidgets (Colab and JupyterLab have it; ``pip install ipywidgets``).
        """
        try:
            import ipywidgets
        except ImportError as err:
            raise ConfigError("the inline explorer needs ipywidgets (pip install ipywidgets); "
                              "or use `npvae explore RUN` for a window") from err
        a_range = self.coords[:, 0].min() - 0.5, self.coords[:, 0].max() + 0.5
        b_range = self.coords[:, 1].min() - 0.5, self.coords[:, 1].max() + 0.5
        a0, b0 = self.projection()
        plane = {name: ipywidgets.FloatSlider(value=v, min=lo, max=hi, step=(hi - lo) / 200,
                                              description=name, continuous_update=True)
                 for name, v, (lo, hi) in (("a", a0, a_range), ("b", b0, b_range))}
        dims = {u: ipywidgets.FloatSlider(value=self.z[u], min=s.valmin, max=s.valmax,
                                          step=(s.valmax - s.valmin) / 200, description=f"z_{u + 1}")
                for u, s in self.sliders.items()}
        picture = ipywidgets.Image(value=self.png(), format="png")
        busy = []

        def redraw():
            picture.value = self.png()
            busy.append(True)  # the dimension sliders follow z without moving it again
            try:
                for u, w in dims.items():
                    w.value = float(self.z[u])
            finally:
                busy.pop()

        def on_plane(change):
            self.move_to(plane["a"].value, plane["b"].value)
            redraw()

        def on_dim(change, u):
            if not busy:
                self.set_dimension(u, change["new"])
                redraw()

        for w in plane.values():
            w.observe(on_plane, names="value")
        for u, w in dims.items():
            w.observe(lambda change, u=u: on_dim(change, u), names="value")
        return ipywidgets.VBox([ipywidgets.HBox(list(plane.values())), *dims.values(), picture])


# -------------------------------------------------------------------- command line


def open_explorer(model, x, y, *, n_sliders=N_SLIDERS, digit=None, out=None):
    """``npvae explore`` (parsed by ``npvae.cli``): write the explorer to ``out`` as a PNG and
    return the line saying so, or open its window and block until it is closed (None)."""
    from pathlib import Path

    if out:
        explorer = LatentExplorer(model, x, y, n_sliders=n_sliders, digit=digit)
        Path(out).write_bytes(explorer.png())
        return f"explorer written to {out}"
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    if backend.lower() in NON_INTERACTIVE or "inline" in backend:
        raise ConfigError(f"matplotlib's backend {backend!r} cannot open a window (no screen?); use "
                          "--out FILE for a still, MPLBACKEND=TkAgg for a window, or "
                          "LatentExplorer(...).widget() in a notebook")
    explorer = LatentExplorer(model, x, y, figure=plt.figure(figsize=(10, 6)), n_sliders=n_sliders,
                              digit=digit)
    explorer.show()
    return None
