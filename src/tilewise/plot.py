"""Pictures: window layouts, blend weights, seam maps, kept training windows, segmentations.

Every function draws with matplotlib (an optional extra: ``pip install 'tilewise[plot]'``),
returns the :class:`matplotlib.figure.Figure` and, given ``path=``, saves it. Figures are built
on the Agg canvas without pyplot, so nothing pops up and no global figure state is touched; pass
``ax=`` to draw into an Axes of your own figure instead.

Arrays are laid out ``(N, C, *spatial)`` (numpy, torch, or lazy zarr/h5py arrays: only the slice
shown is read). A picture is a 2-D slice of the tiled axes: the axes listed in ``axis`` are held
at ``index`` and the other two are shown, rows down and columns across::

    tiling (Z, Y, X), axis=0, index=118:       tiling (T, Z, Y, X), axis=(0, 1), index=(3, 40):

         X ->                                       X ->
       Y +-----------+                            Y +-----------+
       | |  z = 118  |                            | | t=3, z=40 |
       v +-----------+                            v +-----------+

A 2-D tiling is shown whole (leave ``axis`` and ``index`` out); by default the leading axes are
held at their middle. Windows are drawn as dotted outlines, as in Fig. 2A of the qlty paper, and
the seams where neighbouring windows hand over as solid purple lines.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tilewise import blend as _blend
from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError, message
from tilewise._geometry import Tiling, as_axis_ints
from tilewise._weights import WeightPlan

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tilewise.blend import Blend

__all__ = ["kept", "layout", "overlay", "seam_positions", "seams", "weights"]

PathLike = str | os.PathLike[str]

WINDOW_STYLE: dict[str, Any] = {"edgecolor": "black", "linestyle": (0, (1, 2)), "linewidth": 1.0}
CORE_STYLE: dict[str, Any] = {"linestyle": (0, (4, 2)), "linewidth": 1.1}
SEAM_COLOUR = "#9400d3"  # purple, as the seam in the paper's Fig. 2A
HIGHLIGHT_COLOUR = "#ff7f0e"
KEPT_COLOUR = "#1f5fff"
CORE_COLOUR = "#1f77b4"
# annotated classes: green and red as in the paper's Fig. 2A, then more distinct colours
CLASS_COLOURS = ("#22c322", "#e41a1c", "#377eb8", "#ff7f00", "#984ea3", "#a65628", "#f781bf")
DPI = 150


# -- matplotlib, figures ---------------------------------------------------------------------------
def _require_matplotlib(what: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"tilewise.plot.{what} needs the optional package 'matplotlib', which is not "
            "installed. Fix: pip install 'tilewise[plot]'."
        ) from e


def _figure(
    ax: Any, what: str, *, panels: int = 1, size: tuple[float, float] = (6.4, 5.6)
) -> tuple[Figure, list[Axes]]:
    """A new Agg figure with ``panels`` Axes side by side, or the caller's Axes."""
    _require_matplotlib(what)
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    given = list(np.ravel(ax)) if isinstance(ax, Sequence | np.ndarray) else [ax]
    if len(given) != panels or not all(isinstance(a, Axes) for a in given):
        kind = "one matplotlib Axes" if panels == 1 else f"a sequence of {panels} matplotlib Axes"
        raise ParameterTypeError(
            message(
                "ax",
                expected=kind,
                received=repr(ax),
                fix="pass ax=None for a new figure"
                + ("" if panels == 1 else f", or e.g. ax=fig.subplots(1, {panels})"),
            )
        )
    return _root(given[0]), given


def _root(ax: Axes) -> Figure:
    """The figure an Axes belongs to (the top one when it sits in a subfigure)."""
    from matplotlib.figure import Figure

    parent = ax.figure
    return parent if isinstance(parent, Figure) else parent.figure


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=DPI)
    return fig


def _plane_size(shape: tuple[int, ...]) -> tuple[float, float]:
    """A figure size that fits a plane of ``shape`` (rows, cols) with room for a colorbar."""
    if len(shape) < 2:
        return (7.0, 4.8)
    rows, cols = shape
    width = 6.4
    height = min(9.0, max(3.2, width * rows / cols * 0.85 + 1.0))
    return (width, height)


# -- arrays ----------------------------------------------------------------------------------------
def _shape(x: Any, what: str) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        try:
            shape = np.shape(x)
        except (TypeError, ValueError):
            shape = None
    if shape is None:
        raise ParameterTypeError(
            message(
                what,
                expected="an array (numpy, torch, zarr or h5py)",
                received=f"{type(x).__name__}",
                fix=f"pass {what} as an array laid out (N, C, *spatial)",
            )
        )
    return tuple(int(s) for s in shape)


def _numpy(x: Any) -> np.ndarray:
    """A numpy copy of an array or tensor (float tensors as float64, bfloat16 included)."""
    if hasattr(x, "detach"):  # torch, without importing it
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.double()
        return np.asarray(t.numpy())
    return np.asarray(x)


@dataclass(frozen=True)
class _Plane:
    """The slice a picture shows: tiled ``shape``, held axes at ``index``, ``shown`` axes."""

    shape: tuple[int, ...]
    fixed: tuple[int, ...]
    index: tuple[int, ...]
    shown: tuple[int, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape of the picture: (rows, cols), or (length,) for a 1-D array."""
        return tuple(self.shape[a] for a in self.shown)

    def key(self) -> tuple[int | slice, ...]:
        """Index into the spatial axes that gives the picture."""
        k: list[int | slice] = [slice(None)] * len(self.shape)
        for a, i in zip(self.fixed, self.index, strict=True):
            k[a] = i
        return tuple(k)

    def describe(self) -> str:
        """E.g. ``"axis 0 = 118"``; empty when the whole array is shown."""
        return ", ".join(f"axis {a} = {i}" for a, i in zip(self.fixed, self.index, strict=True))

    def label(self, k: int) -> str:
        return f"axis {self.shown[k]} (voxels)"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    items = list(value) if isinstance(value, Sequence | np.ndarray) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ParameterTypeError(
                message(
                    what,
                    expected="an int or a sequence of ints",
                    received=repr(value),
                    fix=f"pass {what} as whole numbers, e.g. {what}=0",
                )
            )
    return tuple(int(v) for v in items)


def _plane(shape: tuple[int, ...], axis: Any, index: Any) -> _Plane:
    """Resolve ``axis``/``index`` against a tiled ``shape``: hold all but two axes."""
    ndim = len(shape)
    need = max(0, ndim - 2)
    if axis is None:
        fixed: tuple[int, ...] = tuple(range(need))
    else:
        fixed = _ints(axis, "axis")
        if len(fixed) != need or any(not -ndim <= a < ndim for a in fixed):
            hint = (
                "leave axis (and index) out: a 2-D or 1-D array is shown whole"
                if need == 0
                else f"pass {need} distinct tiled axes in 0..{ndim - 1}, e.g. axis="
                + (str(0) if need == 1 else str(tuple(range(need))))
            )
            raise ParameterError(
                message(
                    "axis",
                    expected=f"{need} tiled ax{'i' if need == 1 else 'e'}s to hold fixed "
                    f"(the other two of the {ndim} tiled axes {shape} are shown)",
                    received=repr(axis),
                    fix=hint,
                )
            )
        fixed = tuple(a % ndim for a in fixed)
        if len(set(fixed)) != len(fixed):
            raise ParameterError(
                message(
                    "axis",
                    expected="distinct axes",
                    received=repr(axis),
                    fix=f"pass {need} different tiled axes",
                )
            )
    if index is None:
        idx = tuple(shape[a] // 2 for a in fixed)
    else:
        idx = _ints(index, "index")
        if len(idx) != len(fixed):
            raise ParameterError(
                message(
                    "index",
                    expected=f"{len(fixed)} position(s), one per held axis {fixed}"
                    if fixed
                    else "no index: a 2-D or 1-D array is shown whole",
                    received=repr(index),
                    fix="leave index out" if not fixed else "give one position per held axis",
                )
            )
        for a, i in zip(fixed, idx, strict=True):
            if not -shape[a] <= i < shape[a]:
                raise ParameterError(
                    message(
                        "index",
                        expected=f"a position in [0, {shape[a]}) on axis {a}",
                        received=str(i),
                        fix=f"pass index between 0 and {shape[a] - 1} (default: the middle)",
                    )
                )
        idx = tuple(i % shape[a] for a, i in zip(fixed, idx, strict=True))
    shown = tuple(a for a in range(ndim) if a not in fixed)
    return _Plane(shape, fixed, idx, shown)


def _spatial_from(x: Any, what: str, tiling: Tiling | None) -> tuple[int, ...]:
    """The tiled shape: the tiling's, else the array's (``(N, C, *spatial)`` or a 2-D slice)."""
    if tiling is not None:
        return tiling.shape
    shape = _shape(x, what)
    if len(shape) <= 2:
        return shape
    return shape[2:]


def _slice(
    x: Any, plane: _Plane, what: str, *, sample: int, channel: int | None = 0, labels: bool = False
) -> np.ndarray:
    """The picture's slice of ``x``: ``x`` may be the full array or the slice already.

    Images are ``(N, C, *spatial)`` (``channel`` is taken; ``None`` keeps every channel on
    axis 0); labels are ``(N, *spatial)`` or ``(N, C_l, *spatial)`` (channels kept on axis 0).
    """
    shape = _shape(x, what)
    nd = len(plane.shape)
    if shape == plane.dims:  # the slice itself
        return _numpy(x)[None] if labels else _numpy(x)
    key = plane.key()
    if len(shape) == nd + 2 and shape[2:] == plane.shape:
        _check_range(sample, shape[0], "sample", f"{what} holds {shape[0]} arrays (axis N)")
        if labels or channel is None:
            return _numpy(x[(sample, slice(None), *key)])
        _check_range(channel, shape[1], "channel", f"{what} has {shape[1]} channels (axis C)")
        return _numpy(x[(sample, channel, *key)])
    if labels and len(shape) == nd + 1 and shape[1:] == plane.shape:
        _check_range(sample, shape[0], "sample", f"{what} holds {shape[0]} arrays (axis N)")
        return _numpy(x[(sample, *key)])[None]
    dims = ", ".join(map(str, plane.shape))
    full = f"(N, C_l, {dims}), (N, {dims})" if labels else f"(N, C, {dims})"
    raise ShapeMismatchError(
        message(
            what,
            expected=f"shape {full} or the shown slice {plane.dims}",
            received=f"shape {shape}",
            fix="pass the whole array laid out (N, C, *spatial) (add axes with x[None, None]), "
            "or its slice; all arrays must match the tiling",
        )
    )


def _check_range(value: int, size: int, what: str, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterTypeError(
            message(what, expected="an int", received=repr(value), fix=f"pass {what}=0")
        )
    if not 0 <= value < size:
        raise ParameterError(
            message(
                what,
                expected=f"a value in [0, {size}): {why}",
                received=str(value),
                fix=f"pass {what} between 0 and {size - 1}",
            )
        )


def _grey_limits(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


# -- windows on a plane ----------------------------------------------------------------------------
def _check_tiling(tiling: Any) -> Tiling:
    if not isinstance(tiling, Tiling):
        raise ParameterTypeError(
            message(
                "tiling",
                expected="a tw.Tiling",
                received=f"{type(tiling).__name__}",
                fix="build one with tw.Tiling(shape, window=..., step=...)",
            )
        )
    return tiling


def _check_blend(blend: Any) -> Blend:
    if not isinstance(blend, _blend.Blend):
        raise ParameterTypeError(
            message(
                "blend",
                expected="a tw.blend recipe",
                received=f"{type(blend).__name__}",
                fix="pass e.g. tw.blend.border(10, weight=0.0) or tw.blend.gaussian()",
            )
        )
    return blend


def _crossing(tiling: Tiling, plane: _Plane) -> list[np.ndarray]:
    """Per tiled axis, the grid indices of windows that cross the plane."""
    out = []
    for a, (starts, w) in enumerate(zip(tiling.axis_starts, tiling.window, strict=True)):
        if a in plane.fixed:
            i = plane.index[plane.fixed.index(a)]
            out.append(np.flatnonzero((starts <= i) & (i < starts + w)))
        else:
            out.append(np.arange(len(starts)))
    return out


def _crossing_flat(tiling: Tiling, plane: _Plane) -> np.ndarray:
    grids = np.meshgrid(*_crossing(tiling, plane), indexing="ij")
    flat = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), tiling.counts)
    return np.asarray(flat, dtype=np.int64).reshape(-1)


def _cells(tiling: Tiling, plane: _Plane, flat: np.ndarray) -> np.ndarray:
    """Grid cells on the shown axes (``(m, len(shown))``) of the windows ``flat`` that cross."""
    if len(flat) == 0:
        return np.zeros((0, len(plane.shown)), dtype=np.int64)
    grid = np.stack(np.unravel_index(flat, tiling.counts), axis=1)
    crossing = _crossing(tiling, plane)
    ok = np.ones(len(flat), dtype=bool)
    for a in plane.fixed:
        ok &= np.isin(grid[:, a], crossing[a])
    return np.unique(grid[ok][:, list(plane.shown)], axis=0)


def _all_cells(tiling: Tiling, plane: _Plane) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(tiling.counts[a]) for a in plane.shown], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


def _draw_boxes(
    ax: Axes,
    tiling: Tiling,
    plane: _Plane,
    cells: np.ndarray,
    *,
    inset: Sequence[int] | None = None,
    facecolor: Any = "none",
    halo: bool = False,
    **style: Any,
) -> None:
    """Outline windows (grid ``cells`` on the shown axes); ``inset`` draws their cores instead.

    Unfilled 2-D outlines are drawn as merged line segments, so edges that several windows share
    are drawn once and dotted lines keep an even pattern. ``halo`` puts a faint white stroke
    under the lines so that they show on any image.
    """
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Rectangle

    if len(cells) == 0:
        return
    starts = [tiling.axis_starts[a] for a in plane.shown]
    win = [tiling.window[a] for a in plane.shown]
    ins = [0] * len(plane.shown) if inset is None else [inset[a] for a in plane.shown]
    boxes = [
        (
            [int(s[c]) + b - 0.5 for s, c, b in zip(starts, cell, ins, strict=True)],
            [int(s[c]) + w - b - 0.5 for s, c, w, b in zip(starts, cell, win, ins, strict=True)],
            int(cell[0]),
        )
        for cell in cells
    ]
    effects = _halo(style.get("linewidth", 1.0)) if halo else None
    if len(plane.shown) == 1:  # 1-D: one bar per window, window k on row k
        rects = [Rectangle((lo[0], k - 0.35), hi[0] - lo[0], 0.7) for lo, hi, k in boxes]
        coll: Any = PatchCollection(rects, facecolor=facecolor, **style)
    elif facecolor != "none":
        rects = [Rectangle((lo[1], lo[0]), hi[1] - lo[1], hi[0] - lo[0]) for lo, hi, _ in boxes]
        coll = PatchCollection(rects, facecolor=facecolor, **style)
    else:
        style = {("color" if k == "edgecolor" else k): v for k, v in style.items()}
        coll = LineCollection(_merged_edges(boxes), **style)
    if effects is not None:
        coll.set_path_effects(effects)
    ax.add_collection(coll)


def _halo(linewidth: float) -> list[Any]:
    from matplotlib import patheffects

    return [
        patheffects.withStroke(linewidth=linewidth + 1.8, foreground="white", alpha=0.75),
        patheffects.Normal(),
    ]


def _merged_edges(
    boxes: list[tuple[list[float], list[float], int]],
) -> list[list[tuple[float, float]]]:
    """The outline segments of 2-D boxes ``(lo, hi)`` (rows, cols), overlaps merged."""
    spans: dict[tuple[int, float], list[tuple[float, float]]] = {}
    for lo, hi, _ in boxes:
        for row in (lo[0], hi[0]):  # horizontal edges: (0, row) -> column spans
            spans.setdefault((0, row), []).append((lo[1], hi[1]))
        for col in (lo[1], hi[1]):  # vertical edges: (1, col) -> row spans
            spans.setdefault((1, col), []).append((lo[0], hi[0]))
    segments: list[list[tuple[float, float]]] = []
    for (kind, at), parts in spans.items():
        parts.sort()
        a0, b0 = parts[0]
        merged = []
        for a1, b1 in parts[1:]:
            if a1 <= b0:
                b0 = max(b0, b1)
            else:
                merged.append((a0, b0))
                a0, b0 = a1, b1
        merged.append((a0, b0))
        for a1, b1 in merged:  # points are (x, y) = (col, row)
            segments.append([(a1, at), (b1, at)] if kind == 0 else [(at, a1), (at, b1)])
    return segments


def _limits(ax: Axes, tiling: Tiling | None, plane: _Plane) -> None:
    """Show the whole plane, and windows that reach outside it (virtual padding).

    When windows reach outside the array, the array's own outline is drawn (grey) and a small
    margin keeps the outermost window edges off the frame.
    """
    lo = [-0.5] * len(plane.shown)
    hi = [n - 0.5 for n in plane.dims]
    if tiling is not None:
        for k, a in enumerate(plane.shown):
            starts = tiling.axis_starts[a]
            lo[k] = min(lo[k], float(starts.min()) - 0.5)
            hi[k] = max(hi[k], float(starts.max() + tiling.window[a]) - 0.5)
    outside = any(a < -0.5 or b > n - 0.5 for a, b, n in zip(lo, hi, plane.dims, strict=True))
    if outside:
        pad = [0.02 * (b - a) for a, b in zip(lo, hi, strict=True)]
        lo = [a - p for a, p in zip(lo, pad, strict=True)]
        hi = [b + p for b, p in zip(hi, pad, strict=True)]
    if len(plane.shown) == 1:
        ax.set_xlim(lo[0], hi[0])
        if outside:
            for edge in (-0.5, plane.dims[0] - 0.5):
                ax.axvline(edge, color="0.5", linewidth=1.0)
        return
    if outside:
        from matplotlib.patches import Rectangle

        rows, cols = plane.dims
        frame = Rectangle((-0.5, -0.5), cols, rows, fill=False, edgecolor="0.5", linewidth=1.0)
        ax.add_patch(frame)
    ax.set_xlim(lo[1], hi[1])
    ax.set_ylim(hi[0], lo[0])  # row 0 at the top, as an image
    ax.set_aspect("equal")
    ax.set_ylabel(plane.label(0))
    ax.set_xlabel(plane.label(1))


def _grey(ax: Axes, img: np.ndarray) -> None:
    lo, hi = _grey_limits(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")


def _label_mask(lab: np.ndarray, ignore: Any) -> np.ndarray:
    """Annotated voxels: not ``ignore`` (None: -1 for integer labels, NaN for float labels),
    and never NaN."""
    floating = np.issubdtype(lab.dtype, np.floating)
    if ignore is None:
        ignore = np.nan if floating else -1
    nan = isinstance(ignore, float) and np.isnan(ignore)
    mask: np.ndarray = ~np.isnan(lab) if nan else lab != ignore
    return mask & ~np.isnan(lab) if floating and not nan else mask


def _draw_labels(ax: Axes, lab: np.ndarray, ignore: Any) -> list[Any]:
    """Annotated voxels of a label slice ``(C_l, rows, cols)``, one colour per class.

    Each row's runs of one class become one rectangle in data coordinates, so voxels are drawn
    edge to edge at any zoom and never vanish when the picture is smaller than the slice.
    Returns legend handles.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    row0 = 0
    if lab.ndim == 2:  # 1-D pictures: labels on one row above the windows
        lab, row0 = lab[:, None, :], -1
    mask = _label_mask(lab, ignore)
    if lab.shape[0] > 1:  # several label channels: one colour for "labelled"
        classes: list[tuple[str, np.ndarray]] = [("labelled", np.asarray(mask.any(axis=0)))]
    else:
        values = lab[0][mask[0]]
        classes = []
        for v in np.unique(values):
            shown = int(v) if float(v).is_integer() else float(v)
            classes.append((f"class {shown}", mask[0] & (lab[0] == v)))
    handles = []
    for k, (name, m) in enumerate(classes):
        colour = CLASS_COLOURS[k % len(CLASS_COLOURS)]
        rects = []
        for r in np.flatnonzero(m.any(axis=1)):
            line = np.concatenate(([False], m[r], [False]))
            edges = np.flatnonzero(np.diff(line.astype(np.int8)))
            for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
                rects.append(Rectangle((c0 - 0.5, row0 + r - 0.5), c1 - c0, 1.0))
        coll = PatchCollection(
            rects, facecolor=colour, edgecolor=colour, linewidth=0.4, alpha=0.9, zorder=3
        )
        ax.add_collection(coll)
        handles.append(Patch(facecolor=colour, label=name))
    return handles


def _line_handle(label: str, **style: Any) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, **style)


def _as_border(border: Any, tiling: Tiling) -> tuple[int, ...] | None:
    if border is None:
        return None
    b = as_axis_ints(border, tiling.ndim, "border", minimum=0)
    for a, (w, bb) in enumerate(zip(tiling.window, b, strict=True)):
        if 2 * bb >= w:
            raise ParameterError(
                message(
                    "border",
                    expected=f"less than half the window ({(w - 1) // 2} at most on axis {a})",
                    received=f"border {bb} with window {w}",
                    fix="use a narrower border: the window core must keep some voxels",
                )
            )
    return b


# -- seams -----------------------------------------------------------------------------------------
def _as_blend(blend_border: Any) -> Blend:
    if blend_border is None:
        return _blend.uniform()
    if isinstance(blend_border, _blend.Blend):
        return blend_border
    return _blend.border(blend_border, weight=0.0)


def seam_positions(tiling: Tiling, blend: Blend) -> tuple[np.ndarray, ...]:
    """Where neighbouring windows hand over, per tiled axis, in voxel-edge coordinates.

    Between windows ``k`` and ``k + 1`` on an axis the seam is the point ``t`` of their overlap
    where the weight window ``k + 1`` carries before ``t`` equals the weight window ``k`` carries
    after it (normalised weights, as stitched). For a symmetric blend that is the middle of the
    overlap; for ``border(b, weight=0)`` with abutting cores it is the edge where the cores meet.
    ``t`` is a voxel boundary: ``t = 10`` lies between voxels 9 and 10.

    Parameters
    ----------
    tiling
        The plan.
    blend
        A separable blend recipe, as given to stitching.

    Returns
    -------
    tuple of numpy.ndarray
        One float64 array per tiled axis with ``counts[axis] - 1`` seam positions.

    Raises
    ------
    CoverageError
        The blend leaves voxels without weight (stitching would refuse it too).
    ParameterError
        A non-separable (N-D custom) blend.

    Examples
    --------
    >>> import tilewise as tw
    >>> t = tw.Tiling((236,), window=128, step=108)
    >>> seam_positions(t, tw.blend.border(10, weight=0.0))[0].tolist()
    [118.0]
    >>> seam_positions(tw.Tiling((30,), window=10, step=8), tw.blend.uniform())[0].tolist()
    [9.0, 17.0, 23.0]
    """
    tiling, blend = _check_tiling(tiling), _check_blend(blend)
    if not blend.separable:
        raise ParameterError(
            message(
                "blend",
                expected="a separable blend (1-D profiles) to place seams",
                received=repr(blend),
                fix="pass blend_border as an int, a separable tw.blend, or None",
            )
        )
    plan = WeightPlan(tiling, blend)
    out = []
    for a, axp in enumerate(plan.axes):
        seams: list[float] = []
        w = axp.window
        for k in range(axp.n - 1):
            s0, s1 = int(axp.starts[k]), int(axp.starts[k + 1])
            p0 = plan.profiles[a][int(axp.sig[k])]
            p1 = plan.profiles[a][int(axp.sig[k + 1])]
            lo, hi = s1, s0 + w  # the overlap [lo, hi)
            if hi <= lo:
                seams.append(float(lo))
                continue
            after = p1[: hi - s1]  # window k+1 over the overlap
            before = p0[s1 - s0 :]  # window k over the overlap
            left = np.concatenate(([0.0], np.cumsum(after)))
            right = np.concatenate((np.cumsum(before[::-1])[::-1], [0.0]))
            f = left - right  # non-decreasing in t
            j0 = int(np.argmax(f >= 0))
            if f[j0] == 0:  # a flat zero run: take its middle
                j1 = int(len(f) - 1 - np.argmax(f[::-1] <= 0))
                t = (j0 + j1) / 2
            elif j0 == 0:
                t = 0.0
            else:
                t = (j0 - 1) + float(-f[j0 - 1] / (f[j0] - f[j0 - 1]))
            seams.append(lo + t)
        out.append(np.array(seams, dtype=np.float64))
    return tuple(out)


def _draw_seams(ax: Axes, tiling: Tiling, plane: _Plane, blend: Blend) -> None:
    pos = seam_positions(tiling, blend)
    rows, cols = plane.shown
    for t in pos[rows]:
        ax.axhline(t - 0.5, color=SEAM_COLOUR, linewidth=1.6, zorder=4)
    for t in pos[cols]:
        ax.axvline(t - 0.5, color=SEAM_COLOUR, linewidth=1.6, zorder=4)


# -- layout ----------------------------------------------------------------------------------------
def layout(
    tiling: Tiling,
    *,
    axis: int | Sequence[int] | None = None,
    index: int | Sequence[int] | None = None,
    image: Any = None,
    windows: Any = None,
    border: int | Sequence[int] | None = None,
    sample: int = 0,
    ax: Axes | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Draw the windows of a tiling over a slice of the array.

    Every window that crosses the slice is outlined with a dotted line (as the paper's Fig. 2A).

    Parameters
    ----------
    tiling
        The plan to draw.
    axis, index
        The tiled axes held fixed and where: a 3-D tiling shows the plane ``axis = index``
        (default: axis 0 at its middle, or through the middle of the first highlighted
        window); a 4-D tiling holds two axes; a 2-D tiling is shown whole. A 1-D tiling is
        drawn as one bar per window.
    image
        Optional background: ``(N, C, *spatial)`` (channel 0 of ``sample`` is shown) or the
        slice itself. numpy, torch, zarr or h5py; only the slice is read.
    windows
        Flat window indices to highlight (solid orange outlines).
    border
        Also outline the cores (the window less ``border`` voxels on every side) of the
        highlighted windows, or of every window when none is highlighted.
    sample
        Which of the ``N`` arrays of ``image`` to show.
    ax
        Draw into this Axes instead of a new figure.
    path
        Save the figure here (the format follows the suffix).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ParameterError
        A bad ``axis``, ``index``, ``border``, ``sample`` or window index.
    ShapeMismatchError
        ``image`` does not match the tiling.
    ImportError
        matplotlib is not installed (``pip install 'tilewise[plot]'``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import tilewise as tw
    >>> from tilewise import plot
    >>> t = tw.Tiling((236, 720, 510), window=64, step=32)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot.layout(t, windows=[0, 100], border=4, path=pathlib.Path(d) / "layout.png")
    ...     (pathlib.Path(d) / "layout.png").stat().st_size > 10_000
    True
    >>> print(fig.axes[0].get_title())
    2310 windows, counts (7, 22, 15); window (64, 64, 64), step (32, 32, 32)
    slice axis 0 = 31: 330 windows cross it; 2 of 2 highlighted
    """
    tiling = _check_tiling(tiling)
    highlight = None if windows is None else _window_indices(windows, len(tiling), "windows")
    if index is None and highlight is not None and len(highlight):
        first = tiling[int(highlight[0])]
        held = _plane(tiling.shape, axis, None).fixed
        index = tuple(_middle(first.start[a], first.stop[a], tiling.shape[a]) for a in held) or None
    plane = _plane(tiling.shape, axis, index)
    b = _as_border(border, tiling)
    fig, (axes,) = _figure(ax, "layout", size=_plane_size(plane.dims))
    crossing = _crossing_flat(tiling, plane)
    one_d = len(plane.shown) == 1
    if image is not None:
        img = _slice(image, plane, "image", sample=sample)
        if one_d:
            twin = axes.twinx()
            twin.plot(np.arange(len(img)), img, color="0.5", linewidth=1.0)
            twin.set_ylabel("image")
        else:
            _grey(axes, img)
    all_cells = _all_cells(tiling, plane)
    _draw_boxes(axes, tiling, plane, all_cells, halo=image is not None, **WINDOW_STYLE)
    handles = [_line_handle("window", color="black", linestyle=(0, (1, 2)))]
    hl_cells = _cells(tiling, plane, highlight) if highlight is not None else None
    if hl_cells is not None:
        _draw_boxes(axes, tiling, plane, hl_cells, edgecolor=HIGHLIGHT_COLOUR, linewidth=1.8)
        handles.append(_line_handle("highlighted", color=HIGHLIGHT_COLOUR, linewidth=1.8))
    if b is not None:
        colour = HIGHLIGHT_COLOUR if hl_cells is not None else CORE_COLOUR
        cores = all_cells if hl_cells is None else hl_cells
        _draw_boxes(axes, tiling, plane, cores, inset=b, edgecolor=colour, **CORE_STYLE)
        handles.append(_line_handle(f"core (border {_short(b)})", color=colour, **CORE_STYLE))
    _limits(axes, tiling, plane)
    if one_d:
        _window_rows(axes, len(all_cells), plane)
    lines = [
        f"{len(tiling)} windows, counts {tiling.counts}; window {tiling.window}, step {tiling.step}"
    ]
    where = plane.describe()
    n = len(crossing)
    lines.append(
        (f"slice {where}: " if where else "")
        + f"{n} window{'s' if n != 1 else ''} cross{'es' if n == 1 else ''}"
        + (" it" if where else " the array")
    )
    if highlight is not None:
        n_in = len(np.intersect1d(highlight, crossing))
        lines[-1] += f"; {n_in} of {len(highlight)} highlighted"
    axes.set_title("\n".join(lines), fontsize="medium")
    _legend_below(axes, handles)
    return _finish(fig, path)


def _middle(start: int, stop: int, size: int) -> int:
    """The middle voxel of ``[start, stop)`` that lies inside the array."""
    return min(max((max(start, 0) + min(stop, size) - 1) // 2, 0), size - 1)


def _short(border: tuple[int, ...]) -> str:
    return str(border[0]) if len(set(border)) == 1 else str(border)


def _window_rows(ax: Axes, n: int, plane: _Plane) -> None:
    """Axis set-up for 1-D pictures: window k on row k, from the top."""
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(n - 0.5, -0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("window")
    ax.set_xlabel(plane.label(0))


def _legend_below(ax: Axes, handles: list[Any]) -> None:
    """A legend in one row under the x axis label, clear of the tick labels."""
    if not handles:
        return
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties
    from matplotlib.transforms import offset_copy

    rc = mpl.rcParams
    tick = FontProperties(size=rc["xtick.labelsize"]).get_size_in_points()
    label = FontProperties(size=rc["axes.labelsize"]).get_size_in_points()
    below = rc["xtick.major.size"] + rc["xtick.major.pad"] + tick + rc["axes.labelpad"]
    below += label + 4.0  # points from the axes' bottom edge to under the x label
    anchor = offset_copy(ax.transAxes, fig=_root(ax), y=-below, units="points")
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        bbox_transform=anchor,
        borderaxespad=0.0,
        ncol=min(5, len(handles)),
        fontsize="small",
        frameon=False,
    )


def _window_indices(windows: Any, n: int, what: str) -> np.ndarray:
    arr = _numpy(windows).reshape(-1) if not isinstance(windows, int | np.integer) else None
    if arr is None:
        arr = np.array([int(windows)])
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise ParameterTypeError(
            message(
                what,
                expected="flat window indices (ints)",
                received=f"an array of dtype {arr.dtype}",
                fix="pass e.g. np.flatnonzero(mask) for a boolean mask",
            )
        )
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ParameterError(
            message(
                what,
                expected=f"window indices in [0, {n})",
                received=f"{bad[:5].tolist()}" + (" ..." if bad.size > 5 else ""),
                fix=f"this tiling has {n} windows",
            )
        )
    return np.unique(arr)


# -- weights ---------------------------------------------------------------------------------------
def weights(
    tiling: Tiling,
    blend: Blend,
    *,
    window: int | None = None,
    profiles: bool = False,
    axis: int | Sequence[int] | None = None,
    index: int | Sequence[int] | None = None,
    ax: Sequence[Axes] | np.ndarray | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Draw one window's normalised blend weights next to their sum over all windows.

    The weights are those stitching uses: the blend's profiles made edge-aware and divided by
    the sum over the overlapping windows, so the right-hand panel is 1 at every voxel.

    Parameters
    ----------
    tiling, blend
        The plan and the blend recipe (e.g. ``tw.blend.border(10, weight=0.0)``).
    window
        Flat index of the window to show; default the middle window of the grid.
    profiles
        ``False`` (default): 2-D slices of the weights (the plane ``axis = index``, default
        through the middle of the window). ``True``: 1-D profiles along each tiled axis, with
        the other windows' profiles faint on the left and the per-axis sums on the right
        (the N-D sum is their product). A 1-D tiling always shows profiles.
    axis, index
        The slice, as in :func:`layout`.
    ax
        Two Axes to draw into (window, sum), e.g. ``fig.subplots(1, 2)``.
    path
        Save the figure here.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` holds the window's weights, ``fig.axes[1]`` their sum.

    Raises
    ------
    ParameterError
        A bad window, axis or index, or a window that does not cross the slice.
    CoverageError
        The blend leaves voxels without weight (e.g. a zero-weight border too wide for the step).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import tilewise as tw
    >>> from tilewise import plot
    >>> t = tw.Tiling((100, 120), window=32, step=24)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot.weights(t, tw.blend.hann(), path=pathlib.Path(d) / "weights.png")
    >>> total = fig.axes[1].images[0].get_array()
    >>> bool(np.allclose(total, 1.0, rtol=0, atol=1e-12))
    True
    """
    tiling = _check_tiling(tiling)
    plan = WeightPlan(tiling, _check_blend(blend))
    chosen = (
        tiling.flat_index(tuple(c // 2 for c in tiling.counts))
        if window is None
        else tiling[window].index
    )
    if profiles or tiling.ndim == 1:
        if axis is not None or index is not None:
            raise ParameterError(
                message(
                    "axis/index",
                    expected="no slice for 1-D profiles",
                    received=f"axis={axis!r}, index={index!r}",
                    fix="leave axis and index out, or pass profiles=False for a 2-D slice",
                )
            )
        return _weight_profiles(tiling, plan, chosen, ax, path)
    return _weight_slice(tiling, plan, chosen, axis, index, ax, path)


def _weight_slice(
    tiling: Tiling,
    plan: WeightPlan,
    chosen: int,
    axis: Any,
    index: Any,
    ax: Any,
    path: PathLike | None,
) -> Figure:
    win = tiling[chosen]
    if index is None:
        probe = _plane(tiling.shape, axis, None)
        centre = tuple(_middle(win.start[a], win.stop[a], tiling.shape[a]) for a in probe.fixed)
        plane = _plane(tiling.shape, axis, centre if centre else None)
    else:
        plane = _plane(tiling.shape, axis, index)
    for a, i in zip(plane.fixed, plane.index, strict=True):
        if not win.start[a] <= i < win.stop[a]:
            raise ParameterError(
                message(
                    "index",
                    expected=f"a slice through window {chosen} "
                    f"(axis {a}: {max(win.start[a], 0)}..{min(win.stop[a], tiling.shape[a]) - 1})",
                    received=f"axis {a} = {i}",
                    fix="leave index out to cut through the window's middle",
                )
            )
    rows, cols = plane.shown
    total = np.zeros(plane.dims, dtype=np.float64)
    own: np.ndarray | None = None
    for flat in _crossing_flat(tiling, plane):
        w2, (r0, c0) = _window_weight_on_plane(tiling, plan, plane, int(flat))
        rs = slice(max(r0, 0), min(r0 + w2.shape[0], plane.dims[0]))
        cs = slice(max(c0, 0), min(c0 + w2.shape[1], plane.dims[1]))
        total[rs, cs] += w2[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
        if int(flat) == chosen:
            own = w2
    if own is None:  # pragma: no cover - the chosen window crosses the plane by construction
        raise ParameterError(
            message(
                "window",
                expected="a window crossing the slice",
                received=str(chosen),
                fix="pick another index",
            )
        )
    fig, (left, right) = _figure(
        ax, "weights", panels=2, size=(11.0, max(3.6, _plane_size(plane.dims)[1] * 0.75))
    )
    extent = (
        win.start[cols] - 0.5,
        win.stop[cols] - 0.5,
        win.stop[rows] - 0.5,
        win.start[rows] - 0.5,
    )
    im = left.imshow(
        own, cmap="viridis", vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest"
    )
    left.set_title(
        f"window {chosen} (grid {win.grid}), normalised weights"
        + (f"\n{plane.describe()}" if plane.describe() else ""),
        fontsize="medium",
    )
    left.set_xlabel(plane.label(1))
    left.set_ylabel(plane.label(0))
    fig.colorbar(im, ax=left, shrink=0.8, label="weight")
    im2 = right.imshow(total, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    _draw_boxes(right, tiling, plane, _all_cells(tiling, plane), **WINDOW_STYLE)
    _draw_boxes(
        right,
        tiling,
        plane,
        _cells(tiling, plane, np.array([chosen])),
        edgecolor="white",
        linewidth=1.5,
    )
    _limits(right, tiling, plane)
    right.set_xlim(-0.5, plane.dims[1] - 0.5)
    right.set_ylim(plane.dims[0] - 0.5, -0.5)
    dev = float(np.abs(total - 1.0).max())
    right.set_title(
        f"sum over all {len(tiling)} windows: {_verdict(dev)}\n"
        f"min {total.min():.15g}, max {total.max():.15g} (max |sum - 1| = {dev:.1e})",
        fontsize="medium",
    )
    fig.colorbar(im2, ax=right, shrink=0.8, label="sum of weights")
    return _finish(fig, path)


def _verdict(deviation: float) -> str:
    return "1 everywhere" if deviation <= 1e-12 else "NOT 1 everywhere"


def _window_weight_on_plane(
    tiling: Tiling, plan: WeightPlan, plane: _Plane, flat: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """A window's normalised weight on the plane, and its start on the shown axes."""
    grid = tiling.grid_index(flat)
    sigs = tuple(int(p.sig[g]) for p, g in zip(plan.axes, grid, strict=True))
    starts = [int(p.starts[g]) for p, g in zip(plan.axes, grid, strict=True)]
    rows, cols = plane.shown
    if plan.blend.separable:
        scale = 1.0
        for a, i in zip(plane.fixed, plane.index, strict=True):
            scale *= float(plan.profiles[a][sigs[a]][i - starts[a]])
        w2 = scale * np.multiply.outer(
            plan.profiles[rows][sigs[rows]], plan.profiles[cols][sigs[cols]]
        )
    else:
        full = plan.weight(sigs)
        key: list[int | slice] = [slice(None)] * tiling.ndim
        for a, i in zip(plane.fixed, plane.index, strict=True):
            key[a] = i - starts[a]
        w2 = np.asarray(full[tuple(key)])
    return w2, (starts[rows], starts[cols])


def _weight_profiles(
    tiling: Tiling, plan: WeightPlan, chosen: int, ax: Any, path: PathLike | None
) -> Figure:
    if not plan.blend.separable:
        raise ParameterError(
            message(
                "profiles",
                expected="a separable blend for 1-D profiles",
                received=repr(plan.blend),
                fix="pass profiles=False to draw a 2-D slice of an N-D custom blend",
            )
        )
    fig, (left, right) = _figure(ax, "weights", panels=2, size=(11.0, 4.2))
    grid = tiling.grid_index(chosen)
    worst = 0.0
    for a, axp in enumerate(plan.axes):
        colour = f"C{a}"
        total = np.zeros(axp.size, dtype=np.float64)
        for k in range(axp.n):
            s = int(axp.starts[k])
            p = plan.profiles[a][int(axp.sig[k])]
            lo, hi = max(0, -s), min(axp.window, axp.size - s)
            x = np.arange(s + lo, s + hi)
            total[s + lo : s + hi] += p[lo:hi]
            mine = k == grid[a]
            left.plot(
                x,
                p[lo:hi],
                color=colour,
                linewidth=2.0 if mine else 0.8,
                alpha=1.0 if mine else 0.35,
                label=f"axis {a}: window {k} of {axp.n}" if mine else None,
            )
        worst = max(worst, float(np.abs(total - 1.0).max()))
        right.plot(np.arange(axp.size), total, color=colour, label=f"axis {a}")
    left.set_title(f"window {chosen} (grid {grid}): normalised weight profiles", fontsize="medium")
    left.set_xlabel("voxel along the axis")
    left.set_ylabel("weight")
    left.set_ylim(-0.03, 1.08)
    left.legend(fontsize="small", loc="lower center")
    right.set_ylim(-0.03, 1.08)
    right.set_xlabel("voxel along the axis")
    right.set_ylabel("sum of weights")
    right.set_title(
        f"sum over the windows along each axis: {_verdict(worst)}\n(max |sum - 1| = {worst:.1e})",
        fontsize="medium",
    )
    right.legend(fontsize="small", loc="lower center")
    return _finish(fig, path)


# -- seams -----------------------------------------------------------------------------------------
def seams(
    tiled: Any,
    whole: Any,
    *,
    axis: int | Sequence[int] | None = None,
    index: int | Sequence[int] | None = None,
    tiling: Tiling | None = None,
    border: int | Sequence[int] | None = None,
    sample: int = 0,
    ax: Axes | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Map ``|tiled - whole|`` on a slice, in a log colour scale, to find seams.

    ``tiled`` is a tiled-and-stitched result and ``whole`` the same computation run on the
    whole array; where they differ the tiling shows. The largest difference over every channel
    is shown at each voxel; the title gives the maximum over the whole array (in-memory inputs)
    and over the slice. Exact zeros are drawn at the bottom of the colour scale.

    Parameters
    ----------
    tiled, whole
        Arrays of one shape, ``(N, C, *spatial)`` or the 2-D slice to show.
    axis, index
        The slice, as in :func:`layout`.
    tiling
        Overlay its window outlines (dotted).
    border
        With ``tiling``, also outline the window cores (dashed).
    sample
        Which of the ``N`` arrays to show.
    ax, path
        Draw into this Axes; save the figure here.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeMismatchError
        ``tiled`` and ``whole`` differ in shape, or do not match ``tiling``.
    ParameterError
        A bad ``axis``, ``index`` or ``sample``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import torch
    >>> import tilewise as tw
    >>> from tilewise import plot
    >>> x = torch.rand(1, 1, 40, 48, 48, dtype=torch.float64)
    >>> t = tw.Tiling(x.shape[2:], window=24, step=20)
    >>> net = torch.nn.Conv3d(1, 1, 5, padding=2, dtype=torch.float64)
    >>> with torch.no_grad():
    ...     whole = net(x)
    ...     tiled = tw.stitch(net(tw.extract(x, t)), t, blend=tw.blend.uniform())
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot.seams(tiled, whole, tiling=t, path=pathlib.Path(d) / "seams.png")
    >>> fig.axes[0].get_title().startswith("max |tiled - whole| = ")
    True
    >>> fig.axes[0].get_title().splitlines()[1].startswith("on axis 0 = 20: ")
    True
    """
    t_shape, w_shape = _shape(tiled, "tiled"), _shape(whole, "whole")
    if t_shape != w_shape:
        raise ShapeMismatchError(
            message(
                "tiled/whole",
                expected="two arrays of one shape",
                received=f"tiled {t_shape}, whole {w_shape}",
                fix="compare outputs of the same model on the same input",
            )
        )
    if tiling is not None:
        tiling = _check_tiling(tiling)
    spatial = _spatial_from(tiled, "tiled", tiling)
    plane = _plane(spatial, axis, index)
    if border is not None and tiling is None:
        raise ParameterError(
            message(
                "border",
                expected="a tiling to draw cores of",
                received=f"border={border!r} without tiling",
                fix="pass tiling= as well, or leave border out",
            )
        )
    b = _as_border(border, tiling) if tiling is not None else None
    a = _slice(tiled, plane, "tiled", sample=sample, channel=None)
    c = _slice(whole, plane, "whole", sample=sample, channel=None)
    diff = np.abs(a.astype(np.float64) - c.astype(np.float64))
    if diff.ndim > len(plane.shown):  # channels first: the worst channel at each voxel
        diff = np.max(diff, axis=0) if diff.shape[0] else diff[0]
    nan = int(np.isnan(diff).sum())
    overall = _overall_max(tiled, whole)
    here = float(np.nanmax(diff)) if diff.size and nan < diff.size else float("nan")
    fig, (axes,) = _figure(ax, "seams", size=_plane_size(plane.dims))
    from matplotlib.colors import LogNorm

    positive = diff[np.isfinite(diff) & (diff > 0)]
    if positive.size:
        vmax, vmin = float(positive.max()), float(positive.min())
        vmin = min(vmin, vmax / 10)  # a colour scale of at least one decade
    else:
        vmin, vmax = 1e-12, 1e-11
    shown = np.where(np.isnan(diff), np.nan, np.clip(diff, vmin, None))
    norm = LogNorm(vmin=vmin, vmax=vmax)
    handles = []
    if tiling is not None:
        handles.append(_line_handle("window", color="black", linestyle=(0, (1, 2))))
        if b is not None:
            handles.append(
                _line_handle(f"core (border {_short(b)})", color=CORE_COLOUR, **CORE_STYLE)
            )
    if len(plane.shown) == 1:
        axes.plot(np.arange(len(shown)), shown, color="black", linewidth=1.0)
        axes.set_yscale("log")
        axes.set_xlabel(plane.label(0))
        axes.set_ylabel("|tiled - whole|")
        if tiling is not None:
            for s0 in tiling.axis_starts[0]:
                for e in (s0, s0 + tiling.window[0]):
                    axes.axvline(e - 0.5, color="black", linestyle=(0, (1, 2)), linewidth=0.8)
                for e in (s0 + b[0], s0 + tiling.window[0] - b[0]) if b is not None else ():
                    axes.axvline(e - 0.5, color=CORE_COLOUR, **CORE_STYLE)
        _limits(axes, tiling, plane)
    else:
        import matplotlib as mpl

        cmap = mpl.colormaps["magma"].with_extremes(bad="#00ffff")
        im = axes.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
        label = "|tiled - whole| (log scale; exact zeros at the bottom)"
        fig.colorbar(im, ax=axes, shrink=0.85, label=label)
        if tiling is not None:
            cells = _all_cells(tiling, plane)
            _draw_boxes(axes, tiling, plane, cells, halo=True, **WINDOW_STYLE)
            if b is not None:
                _draw_boxes(
                    axes,
                    tiling,
                    plane,
                    cells,
                    inset=b,
                    edgecolor=CORE_COLOUR,
                    halo=True,
                    **CORE_STYLE,
                )
        _limits(axes, tiling, plane)
    _legend_below(axes, handles)
    where = plane.describe()
    if overall is None:  # lazy inputs: only the slice was read
        title = f"max |tiled - whole| on {where or 'the shown array'}: {here:.3g}"
    else:
        title = f"max |tiled - whole| = {overall:.3g}"
        if where:
            title += f"\non {where}: {here:.3g}"
        elif here != overall:
            title += f"\nshown (sample {sample}): {here:.3g}"
    if nan:
        title += f", {nan} NaN (cyan)"
    axes.set_title(title, fontsize="medium")
    return _finish(fig, path)


def _overall_max(tiled: Any, whole: Any) -> float | None:
    """Max |tiled - whole| over everything, for in-memory inputs (lazy arrays: None)."""
    in_memory = all(isinstance(x, np.ndarray) or hasattr(x, "detach") for x in (tiled, whole))
    if not in_memory or isinstance(tiled, np.memmap) or isinstance(whole, np.memmap):
        return None
    a, c = _numpy(tiled), _numpy(whole)
    if a.size == 0:
        return 0.0
    d = np.abs(a.astype(np.float64) - c.astype(np.float64))
    return float(np.nanmax(d)) if not np.all(np.isnan(d)) else float("nan")


# -- kept ------------------------------------------------------------------------------------------
def kept(
    cleaned_or_indices: Any,
    tiling: Tiling,
    *,
    labels: Any = None,
    axis: int | Sequence[int] | None = None,
    index: int | Sequence[int] | None = None,
    sample: int = 0,
    ignore: Any = None,
    border: int | Sequence[int] | None = None,
    ax: Axes | None = None,
    path: PathLike | None = None,
) -> Figure:
    """Show which training windows :func:`tilewise.clean` kept, over the annotated voxels.

    Windows crossing the slice are outlined: kept ones solid blue (with their cores dashed when
    cleaning used a border), dropped ones faint grey. A window counts as kept on the slice when
    any window at that position of the grid crossing the slice was kept.

    Parameters
    ----------
    cleaned_or_indices
        A :class:`tilewise.CleanResult`, or kept flat indices ``n * len(tiling) + i`` (as
        ``CleanResult.indices``; plain window indices when ``N = 1``).
    tiling
        The plan cleaning used.
    labels
        Optional label array ``(N, *spatial)``, ``(N, C_l, *spatial)`` or the slice; annotated
        voxels (not ``ignore``) are drawn one colour per class (green, red, ...).
    axis, index
        The slice, as in :func:`layout`.
    sample
        Which of the ``N`` arrays to show.
    ignore
        The "not annotated" label value (default: -1 for integer labels, NaN for float ones).
    border
        Outline the cores of kept windows with this border (default: the border cleaning
        used, from a CleanResult).
    ax, path
        Draw into this Axes; save the figure here.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeMismatchError
        The clean result was made with another tiling, or ``labels`` does not match.
    ParameterError
        Bad indices, ``axis``, ``index`` or ``sample``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import tilewise as tw
    >>> from tilewise import plot
    >>> img = np.zeros((1, 1, 64, 64), np.float32)
    >>> lab = np.full((1, 64, 64), -1); lab[0, 10:14, 10:30] = 0; lab[0, 50, 40:44] = 1
    >>> t = tw.Tiling((64, 64), window=16, step=8)
    >>> r = tw.clean(img, lab, t, border=2)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot.kept(r, t, labels=lab, path=pathlib.Path(d) / "kept.png")
    >>> fig.axes[0].get_title()
    'kept 12 of 49 windows crossing the array (border 2)'
    """
    from tilewise._sampling import CleanResult

    tiling = _check_tiling(tiling)
    cores = _as_border(border, tiling)
    if isinstance(cleaned_or_indices, CleanResult):
        rep = cleaned_or_indices.report
        if (
            rep.window != tiling.window
            or rep.step != tiling.step
            or (tuple(rep.image_shape[2:]) != tiling.shape)
        ):
            raise ShapeMismatchError(
                message(
                    "tiling",
                    expected="the tiling the clean result was made with (shape "
                    f"{tuple(rep.image_shape[2:])}, window {rep.window}, step {rep.step})",
                    received=repr(tiling),
                    fix="pass the same tw.Tiling that was given to tw.clean",
                )
            )
        indices = np.asarray(cleaned_or_indices.indices, dtype=np.int64)
        if cores is None and any(rep.border):
            cores = rep.border
        n_images = rep.image_shape[0]
    else:
        indices = _window_indices(cleaned_or_indices, np.iinfo(np.int64).max, "indices")
        n_images = None
    per = len(tiling)
    if n_images is not None:
        _check_range(sample, n_images, "sample", f"the clean result covers {n_images} arrays")
    mine = indices[indices // per == sample] % per
    plane = _plane(tiling.shape, axis, index)
    fig, (axes,) = _figure(ax, "kept", size=_plane_size(plane.dims))
    label_handles = []
    if labels is not None:
        lab = _slice(labels, plane, "labels", sample=sample, labels=True)
        label_handles = _draw_labels(axes, lab, ignore)
    crossing = _crossing_flat(tiling, plane)
    kept_cells = _cells(tiling, plane, mine)
    all_cells = _all_cells(tiling, plane)
    shown_counts = tuple(tiling.counts[a] for a in plane.shown)
    is_kept = np.isin(
        np.ravel_multi_index(tuple(all_cells.T), shown_counts),
        np.ravel_multi_index(tuple(kept_cells.T), shown_counts),
    )
    dropped: dict[str, Any] = {"edgecolor": "0.55", "linestyle": (0, (1, 2)), "linewidth": 0.7}
    _draw_boxes(axes, tiling, plane, all_cells[~is_kept], **dropped)
    fill = (0.12, 0.37, 1.0, 0.06)
    _draw_boxes(
        axes, tiling, plane, kept_cells, edgecolor=KEPT_COLOUR, linewidth=1.6, facecolor=fill
    )
    handles = [
        _line_handle("kept", color=KEPT_COLOUR, linewidth=1.6),
        _line_handle("dropped", color="0.55", linestyle=(0, (1, 2))),
    ]
    if cores is not None:
        _draw_boxes(
            axes, tiling, plane, kept_cells, inset=cores, edgecolor=KEPT_COLOUR, **CORE_STYLE
        )
        handles.append(_line_handle("kept core", color=KEPT_COLOUR, **CORE_STYLE))
    _limits(axes, tiling, plane)
    if len(plane.shown) == 1:
        _window_rows(axes, len(all_cells), plane)
        if labels is not None:
            axes.set_ylim(len(all_cells) - 0.5, -1.6)  # labels on row -1
    n_cross = int(np.isin(mine, crossing).sum())
    where = plane.describe()
    title = f"kept {n_cross} of {len(crossing)} windows crossing " + (where or "the array")
    notes = [f"{len(mine)} of {per} kept in all"] if where else []
    if cores is not None:
        notes.append(f"border {_short(cores)}")
    if notes:
        title += ("\n" if where else " ") + f"({'; '.join(notes)})"
    axes.set_title(title, fontsize="medium")
    _legend_below(axes, [*handles, *label_handles])
    return _finish(fig, path)


# -- overlay ---------------------------------------------------------------------------------------
def overlay(
    image: Any,
    probabilities: Any,
    *,
    labels: Any = None,
    tiling: Tiling | None = None,
    blend_border: int | Sequence[int] | Blend | None = None,
    axis: int | Sequence[int] | None = None,
    index: int | Sequence[int] | None = None,
    channel: int = 1,
    sample: int = 0,
    ignore: Any = None,
    ax: Axes | None = None,
    path: PathLike | None = None,
) -> Figure:
    """The paper's Fig. 2A: a segmentation over the data, with windows and seams.

    A grey slice of ``image`` carries a heat map of one class's probability (more opaque where
    the probability is higher), the annotated voxels (green, red, ... per class), the windows
    as black dotted outlines and, as solid purple lines, the seams where neighbouring windows
    hand over (see :func:`seam_positions`).

    Parameters
    ----------
    image
        ``(N, C, *spatial)`` (channel 0 is shown) or the 2-D slice.
    probabilities
        ``(N, C_out, *spatial)`` class probabilities in [0, 1], or the 2-D slice of one class.
    labels
        Optional annotations ``(N, *spatial)``, ``(N, C_l, *spatial)`` or the slice; voxels not
        equal to ``ignore`` are drawn.
    tiling
        Draw its windows and seams.
    blend_border
        The blend used to stitch, to place the seams: an int (or one per axis) for
        ``tw.blend.border(b, weight=0.0)``, a ``tw.blend`` recipe, or ``None`` for a uniform
        blend (the seams lie in the middle of each overlap; with a zero-weight border whose
        cores abut, on the edges where the cores meet).
    axis, index
        The slice, as in :func:`layout`.
    channel
        The class of ``probabilities`` to show (default 1: the foreground of two classes).
    sample
        Which of the ``N`` arrays to show.
    ignore
        The "not annotated" label value (default: -1 for integer labels, NaN for float ones).
    ax, path
        Draw into this Axes; save the figure here.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeMismatchError
        The arrays do not match each other or ``tiling``.
    ParameterError
        A bad ``axis``, ``index``, ``channel`` or ``sample``, a 1-D array, or a blend border
        the tiling cannot stitch with.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> import tilewise as tw
    >>> from tilewise import plot
    >>> rng = np.random.default_rng(0)
    >>> img = rng.random((1, 1, 20, 118, 118)).astype(np.float32)
    >>> prob = np.concatenate([1 - img, img], axis=1)
    >>> lab = np.full((1, 20, 118, 118), -1)
    >>> lab[0, 10, 20:30, 20:30] = 0; lab[0, 10, 80, 60:90] = 1
    >>> t = tw.Tiling((20, 118, 118), window=(20, 64, 64), step=(20, 54, 54))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     fig = plot.overlay(img, prob, labels=lab, tiling=t, blend_border=5,
    ...                        path=pathlib.Path(d) / "overlay.png")
    >>> fig.axes[0].get_title()
    'class 1 probability, axis 0 = 10'
    >>> plot.seam_positions(t, tw.blend.border(5, weight=0.0))
    (array([], dtype=float64), array([59.]), array([59.]))
    """
    if tiling is not None:
        tiling = _check_tiling(tiling)
    spatial = _spatial_from(image, "image", tiling)
    if len(spatial) < 2:
        raise ParameterError(
            message(
                "image",
                expected="an image or volume with 2 to 4 tiled axes (overlay draws a 2-D slice)",
                received=f"tiled shape {spatial}",
                fix="use plot.layout or plot.seams for 1-D data",
            )
        )
    plane = _plane(spatial, axis, index)
    img = _slice(image, plane, "image", sample=sample)
    prob = _slice(probabilities, plane, "probabilities", sample=sample, channel=channel)
    blend = _as_blend(blend_border) if tiling is not None else None
    fig, (axes,) = _figure(ax, "overlay", size=_plane_size(plane.dims))
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _grey(axes, img)
    cmap = mpl.colormaps["turbo"]
    p = np.clip(np.nan_to_num(prob.astype(np.float64), nan=0.0), 0.0, 1.0)
    rgba = cmap(p)
    rgba[..., 3] = 0.75 * p
    axes.imshow(rgba, interpolation="nearest")
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    fig.colorbar(mappable, ax=axes, shrink=0.85, label=f"probability of class {channel}")
    handles = []
    if labels is not None:
        lab = _slice(labels, plane, "labels", sample=sample, labels=True)
        handles = _draw_labels(axes, lab, ignore)
    if tiling is not None and blend is not None:
        cells = _all_cells(tiling, plane)
        _draw_boxes(axes, tiling, plane, cells, halo=True, zorder=3.5, **WINDOW_STYLE)
        _draw_seams(axes, tiling, plane, blend)
        handles += [
            _line_handle("window", color="black", linestyle=(0, (1, 2))),
            _line_handle("seam", color=SEAM_COLOUR, linewidth=1.6),
        ]
    _limits(axes, tiling, plane)
    where = plane.describe()
    axes.set_title(
        f"class {channel} probability" + (f", {where}" if where else ""), fontsize="medium"
    )
    _legend_below(axes, handles)
    return _finish(fig, path)
