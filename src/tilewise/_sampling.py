"""Training windows from sparse labels: cleaning, random sampling, and a lazy torch Dataset.

Counting labelled voxels per window core uses a summed-area table, but only sampled where it is
needed. Every core boundary lies on a small per-axis lattice (window start + border, window stop -
border), so the label mask is first summed into the cells of that lattice, one slab at a time
(one read per slab for zarr/h5py labels), and the summed-area table is built over the cells::

    axis:    0    b        s+b       w-b     s+w-b      size
    edges:   |----|---------|---------|---------|---------|
    cells:     c0     c1        c2        c3        c4

A window's core is a box of whole cells, so its count is 2^d table look-ups, whatever its size,
and only the windows that are kept are ever read.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from tilewise._arrays import is_array_like, read_region, read_window, shape_of
from tilewise._errors import (
    ParameterError,
    ParameterTypeError,
    ShapeMismatchError,
    message,
)
from tilewise._extract import extract
from tilewise._geometry import Tiling, Window, as_axis_ints

__all__ = [
    "CleanReport",
    "CleanResult",
    "LabelSpec",
    "PatchDataset",
    "RandomWindows",
    "clean",
    "count_labeled",
]

SLAB_VOXELS = 1 << 24  # voxels read per slab when scanning labels (64 MiB of int32 at most)
MAX_FLOAT_CLASSES = 256  # float labels with more distinct values are one class ("labelled")


# -- labels ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSpec:
    """How labels are laid out and which value means "not labelled"."""

    channel_axis: bool
    ignore: float
    is_nan: bool
    floating: bool = False  # float labels: continuous targets unless few distinct values

    def labelled(self, lab: np.ndarray) -> np.ndarray:
        """Labelled values of a label block, element-wise: not ``ignore``, and never NaN."""
        if self.is_nan:
            return np.asarray(~np.isnan(lab))
        m: np.ndarray = lab != self.ignore
        return m & ~np.isnan(lab) if self.floating else m

    def mask(self, lab: np.ndarray) -> np.ndarray:
        """Labelled voxels of a label block (channels, if any, on axis 1: any channel counts)."""
        m = self.labelled(lab)
        return np.asarray(m.any(axis=1)) if self.channel_axis else m


def _label_spec(image_shape: tuple[int, ...], labels: Any, ignore: Any) -> LabelSpec:
    lshape = shape_of(labels, "labels")
    spatial = image_shape[2:]
    if len(lshape) == len(image_shape) - 1 and lshape[1:] == spatial:
        channel_axis = False
    elif len(lshape) == len(image_shape) and lshape[2:] == spatial:
        channel_axis = True
    else:
        raise ShapeMismatchError(
            message(
                "labels",
                expected=f"shape (N, {', '.join(map(str, spatial))}) or (N, C_l, "
                f"{', '.join(map(str, spatial))}) to match the image {image_shape}",
                received=f"shape {lshape}",
                fix="labels must cover the same voxels as the image, with the same N",
            )
        )
    if lshape[0] != image_shape[0]:
        raise ShapeMismatchError(
            message(
                "labels",
                expected=f"N = {image_shape[0]} images, as in the image",
                received=f"N = {lshape[0]}",
                fix="give one label volume per image",
            )
        )
    try:
        dtype = np.dtype(str(labels.dtype).replace("torch.", ""))
    except TypeError:
        raise ParameterTypeError(
            message(
                "labels",
                expected="integer or float labels",
                received=f"dtype {labels.dtype}",
                fix="convert labels to an integer type or float32",
            )
        ) from None
    if ignore is None:  # the default: -1 for integer labels, NaN for float labels
        ignore = math.nan if np.issubdtype(dtype, np.floating) else -1
    if isinstance(ignore, bool) or not isinstance(ignore, int | float | np.number):
        raise ParameterTypeError(
            message(
                "ignore",
                expected="None (default), an int (integer labels) or a float/NaN (float labels)",
                received=repr(ignore),
                fix="pass e.g. ignore=-1, or ignore=float('nan') for float targets",
            )
        )
    is_nan = isinstance(ignore, float | np.floating) and math.isnan(ignore)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if is_nan or float(ignore) != int(ignore):
            raise ParameterError(
                message(
                    "ignore",
                    expected=f"a whole number for {dtype} labels",
                    received=repr(ignore),
                    fix="integer labels mark unlabelled voxels with an integer, e.g. ignore=-1",
                )
            )
        info = np.iinfo(dtype) if dtype != np.bool_ else None
        if info is not None and not info.min <= int(ignore) <= info.max:
            raise ParameterError(
                message(
                    "ignore",
                    expected=f"a value {dtype} labels can hold ({info.min}..{info.max})",
                    received=repr(ignore),
                    fix=f"use e.g. ignore={info.max}, or store labels as a signed type",
                )
            )
    elif not np.issubdtype(dtype, np.floating):
        raise ParameterTypeError(
            message(
                "labels",
                expected="integer or float labels",
                received=f"dtype {dtype}",
                fix="convert labels to an integer type",
            )
        )
    return LabelSpec(channel_axis, float(ignore), is_nan, bool(np.issubdtype(dtype, np.floating)))


# -- counting --------------------------------------------------------------------------------------
def _edges(size: int, bounds: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate(([0, size], np.clip(bounds, 0, size)))).astype(np.int64)


@dataclass
class _CellCounts:
    """Labelled-voxel counts in the cells of the core lattice, per image."""

    edges: tuple[np.ndarray, ...]
    cells: np.ndarray  # (N, *cells per axis), int64
    classes: dict[float, int] = field(default_factory=dict)

    def table(self) -> np.ndarray:
        """Summed-area table over the cells, zero-padded at the front of every axis."""
        sat = self.cells
        for ax in range(1, sat.ndim):
            sat = np.cumsum(sat, axis=ax)
        pad = [(0, 0)] + [(1, 0)] * (sat.ndim - 1)
        return np.pad(sat, pad)


def _scan_labels(
    labels: Any, spec: LabelSpec, edges: tuple[np.ndarray, ...], count_classes: bool
) -> _CellCounts:
    lshape = shape_of(labels, "labels")
    n_img = lshape[0]
    spatial = lshape[2:] if spec.channel_axis else lshape[1:]
    channels = lshape[1] if spec.channel_axis else 1
    ncell = tuple(len(e) - 1 for e in edges)
    cells = np.zeros((n_img, *ncell), dtype=np.int64)
    classes: dict[float, int] = {}
    plane = math.prod(spatial[1:]) * channels
    slab = max(1, SLAB_VOXELS // max(plane, 1))
    lead: tuple[Any, ...] = (slice(None),) if spec.channel_axis else ()
    for n in range(n_img):
        for c0 in range(ncell[0]):
            z0, z1 = int(edges[0][c0]), int(edges[0][c0 + 1])
            for a in range(z0, z1, slab):
                b = min(a + slab, z1)
                lab = read_region(labels, (n, *lead, slice(a, b)))
                if spec.channel_axis and lab.shape[0] == 1:
                    lab = lab[0]
                counts, labelled = _count_slab(lab, spec, edges[1:], count_classes)
                cells[(n, c0)] += counts
                if count_classes and len(labelled):
                    vals, cnt = np.unique(labelled, return_counts=True)
                    for v, k in zip(vals.tolist(), cnt.tolist(), strict=True):
                        classes[float(v)] = classes.get(float(v), 0) + int(k)
                    if spec.floating and len(classes) > MAX_FLOAT_CLASSES:
                        classes, count_classes = {}, False  # continuous targets: one class
    return _CellCounts(edges, cells, classes)


def _count_slab(
    lab: np.ndarray, spec: LabelSpec, edges: tuple[np.ndarray, ...], values: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled voxels of a slab ``([C_l,] z, *rest)`` per cell of ``rest`` (summed over z),
    and the labelled values of all its channels (empty unless ``values``)."""
    ncell = tuple(len(e) - 1 for e in edges)
    sparse = _sparse_labels(lab, spec) if lab.ndim == len(edges) + 1 else None
    if sparse is not None:  # a few labelled voxels: bin their coordinates into cells
        pos, vals = sparse
        coords = np.unravel_index(pos, lab.shape)[1:]
        cell = tuple(
            np.searchsorted(e, c, side="right") - 1 for e, c in zip(edges, coords, strict=True)
        )
        flat = np.ravel_multi_index(cell, ncell) if cell else np.zeros(len(pos), np.int64)
        counts = np.bincount(flat, minlength=math.prod(ncell)).reshape(ncell)
        return counts, vals
    full = spec.labelled(lab)
    m = full
    if lab.ndim > len(edges) + 1:  # several label channels: a voxel counts if any is labelled
        m = np.asarray(m.any(axis=0))
    block = m.sum(axis=0, dtype=np.int64)
    for ax, e in enumerate(edges):
        block = np.add.reduceat(block, e[:-1], axis=ax, dtype=np.int64)
    return block, (lab[full] if values else np.empty(0, lab.dtype))


def _sparse_labels(lab: np.ndarray, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat positions and values of the labelled voxels of a slab, if they are few.

    Integer labels are compared with the ignore value eight bytes at a time (one machine word
    holds 8 int8 labels), so a sparse annotation costs a fraction of a pass over the slab;
    ``None`` when the slab is dense or the labels are not plain integers (count the mask).
    """
    dt = lab.dtype
    if spec.is_nan or dt.kind not in "iu" or dt.itemsize > 8 or not lab.flags.c_contiguous:
        return None
    flat = lab.reshape(-1)
    per = 8 // dt.itemsize
    usable = flat.size // per * per
    pattern = np.full(per, spec.ignore, dtype=dt).view(np.uint64)[0]
    words = flat[:usable].view(np.uint64)
    diff = np.flatnonzero(words != pattern)
    if len(diff) * 16 > len(words):
        return None
    pos = (diff[:, None] * per + np.arange(per)).reshape(-1)
    pos = np.concatenate((pos, np.arange(usable, flat.size)))
    vals = flat[pos]
    keep = vals != spec.ignore
    return pos[keep], vals[keep]


def _core_bounds(tiling: Tiling, border: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (s + b, s + w - b)
        for s, w, b in zip(tiling.axis_starts, tiling.window, border, strict=True)
    ]


def _core_cells(
    tiling: Tiling, border: tuple[int, ...], edges: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Every window's core as a box of lattice cells: first and end cell per axis (table
    positions), each ``(len(tiling), ndim)``, cores clipped to the array."""
    grids = np.meshgrid(*[np.arange(c) for c in tiling.counts], indexing="ij")
    lo, hi = [], []
    for e, (a, z), s, g in zip(
        edges, _core_bounds(tiling, border), tiling.shape, grids, strict=True
    ):
        first = np.searchsorted(e, np.clip(a, 0, s))
        end = np.maximum(np.searchsorted(e, np.clip(z, 0, s)), first)
        lo.append(first[g.reshape(-1)])
        hi.append(end[g.reshape(-1)])
    return np.stack(lo, axis=1), np.stack(hi, axis=1)


def count_labeled(
    labels: Any, tiling: Tiling, *, border: int | Sequence[int] = 0, ignore: Any = None
) -> np.ndarray:
    """Labelled voxels in every window's core, shape ``(N, len(tiling))``, int64.

    ``labels`` is laid out ``(N, *spatial)`` or ``(N, C_l, *spatial)`` (a voxel counts when any
    channel is labelled) and may be lazy (zarr, h5py, memmap): it is read one slab at a time.
    ``ignore`` is the "not labelled" value; the default ``None`` means -1 for integer labels and
    NaN for float labels (NaN never counts as a label).

    >>> import numpy as np, tilewise as tw
    >>> lab = np.full((1, 8, 8), -1); lab[0, 1, 1] = 1; lab[0, 6, 6] = 0
    >>> tw.count_labeled(lab, tw.Tiling((8, 8), window=4, step=2)).reshape(3, 3).tolist()
    [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    """
    lshape = shape_of(labels, "labels")
    fake_image = (lshape[0], 1, *tiling.shape)
    spec = _label_spec(fake_image, labels, ignore)
    b = as_axis_ints(border, tiling.ndim, "border", minimum=0)
    counts, _ = _window_counts(labels, spec, tiling, b, count_classes=False)
    return counts


def _window_counts(
    labels: Any, spec: LabelSpec, tiling: Tiling, border: tuple[int, ...], count_classes: bool
) -> tuple[np.ndarray, _CellCounts]:
    for ax, (w, b) in enumerate(zip(tiling.window, border, strict=True)):
        if 2 * b >= w:
            raise ParameterError(
                message(
                    "border",
                    expected=f"less than half the window ({(w - 1) // 2} at most on axis {ax})",
                    received=f"border {b} with window {w}",
                    fix="use a narrower border: the window core must keep some voxels",
                )
            )
    bounds = _core_bounds(tiling, border)
    edges = tuple(_edges(s, np.concatenate(bd)) for s, bd in zip(tiling.shape, bounds, strict=True))
    cc = _scan_labels(labels, spec, edges, count_classes)
    sat = cc.table()
    lo, hi = _core_cells(tiling, border, edges)
    total = np.zeros((sat.shape[0], len(tiling)), dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=tiling.ndim):
        idx: tuple[Any, ...] = tuple((hi if c else lo)[:, ax] for ax, c in enumerate(corner))
        sign = -1 if (tiling.ndim - sum(corner)) % 2 else 1
        total += sign * sat[(slice(None), *idx)]
    return total, cc


def _labeled_in_kept_cores(
    cc: _CellCounts, tiling: Tiling, border: tuple[int, ...], keep: np.ndarray
) -> int:
    """Labelled voxels inside the union of the kept windows' cores, summed over images.

    Cores are boxes of whole cells: each kept core adds +-1 at its 2^d corners of a difference
    array over the cells; prefix sums along every axis then give how many kept cores cover each
    cell.
    """
    lo, hi = _core_cells(tiling, border, cc.edges)
    ncell = cc.cells.shape[1:]
    per = len(tiling)
    images = keep // per
    total = 0
    for n in np.unique(images).tolist():
        wins = keep[images == n] % per
        cover = np.zeros(tuple(c + 1 for c in ncell), dtype=np.int64)
        for corner in itertools.product((0, 1), repeat=len(ncell)):
            idx = tuple((hi if c else lo)[wins, ax] for ax, c in enumerate(corner))
            np.add.at(cover, idx, -1 if sum(corner) % 2 else 1)
        for ax in range(cover.ndim):
            cover = np.cumsum(cover, axis=ax)
        inside = cover[tuple(slice(0, c) for c in ncell)] > 0
        total += int(cc.cells[n][inside].sum())
    return total


# -- clean -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanReport:
    """What cleaning kept, in the terms of the paper's Table 2.

    ``labeled`` counts labelled voxels (a voxel counts once however many label channels hold a
    label); ``labeled_in_cores`` those inside the union of the kept windows' cores;
    ``occurrences`` labelled voxels summed over the kept cores (a voxel once per core holding
    it). ``classes`` maps each label value to how often it occurs, over all label channels.
    Float labels with more than ``MAX_FLOAT_CLASSES`` (256) distinct values are continuous
    targets, one class: ``classes`` is then empty and the table shows a single class row.
    """

    image_shape: tuple[int, ...]
    window: tuple[int, ...]
    step: tuple[int, ...]
    border: tuple[int, ...]
    total: int
    kept: int
    labeled: int
    labeled_in_cores: int
    occurrences: int
    classes: Mapping[float, int]

    @property
    def duplication_rate(self) -> float:
        """Labelled-voxel occurrences in kept window cores per labelled voxel (paper: 7.47)."""
        return self.occurrences / self.labeled if self.labeled else 0.0

    @property
    def reduction(self) -> float:
        """How many times less data than keeping every window (paper: about 9)."""
        return self.total / self.kept if self.kept else math.inf

    def table(self) -> str:
        """The report as a small text table like the paper's Table 2."""
        channels = self.image_shape[1]
        rows = [("Full tensor shape", str(self.image_shape))]
        rows.append(("Labelled voxels", f"{self.labeled}"))
        for value, count in sorted(self.classes.items()):
            shown = int(value) if float(value).is_integer() else value
            rows.append((f"  class {shown}", f"{count}"))
        if not self.classes and self.labeled:  # continuous float targets
            rows.append(("  one class (continuous values)", f"{self.labeled}"))
        rows += [
            ("Window shape", str(self.window)),
            ("Step size", str(self.step)),
            ("Border size", str(self.border)),
            ("Total windows", str((self.total, channels, *self.window))),
            ("Kept windows", str((self.kept, channels, *self.window))),
            ("Labelled voxels in window cores", f"{self.labeled_in_cores}"),
            ("Data duplication rate", f"{self.duplication_rate:.2f}"),
            ("Data volume reduction", f"{self.reduction:.2f}x"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class CleanResult:
    """Kept training windows: ``image`` and ``labels`` batched, their records, and the report."""

    image: Any
    labels: Any
    indices: np.ndarray
    windows: list[Window]
    images: np.ndarray
    report: CleanReport


def _min_count(min_labeled: Any, core_voxels: int) -> int:
    if isinstance(min_labeled, bool) or not isinstance(min_labeled, int | float | np.number):
        raise ParameterTypeError(
            message(
                "min_labeled",
                expected="an int >= 1 (voxels) or a float in (0, 1] (fraction of the core)",
                received=repr(min_labeled),
                fix="pass e.g. min_labeled=1 or min_labeled=0.01",
            )
        )
    if isinstance(min_labeled, int | np.integer):
        if min_labeled < 1:
            raise ParameterError(
                message(
                    "min_labeled",
                    expected="at least 1 labelled voxel",
                    received=repr(min_labeled),
                    fix="use min_labeled=1 to keep every window with a label in its core",
                )
            )
        return int(min_labeled)
    frac = float(min_labeled)
    if not 0.0 < frac <= 1.0:
        raise ParameterError(
            message(
                "min_labeled",
                expected="a fraction in (0, 1] when given as a float",
                received=repr(min_labeled),
                fix="use an int for a voxel count or a fraction such as 0.01",
            )
        )
    return max(1, math.ceil(frac * core_voxels))


def _mark_border(lab: Any, border: tuple[int, ...], ignore: float, spatial_from: int) -> None:
    for ax, b in enumerate(border):
        if b == 0:
            continue
        dim = spatial_from + ax
        n = lab.shape[dim]
        for sl in (slice(0, b), slice(n - b, n)):
            idx: list[slice] = [slice(None)] * lab.ndim
            idx[dim] = sl
            lab[tuple(idx)] = ignore


def _gather(
    x: Any,
    tiling: Tiling,
    indices: np.ndarray,
    channel_axis: bool,
    pad_value: float | None = None,
) -> Any:
    """Kept windows of ``x``; one vectorised extract for in-memory data, else one read each.

    ``pad_value`` fills virtual padding instead of the tiling's mode (labels: the ignore value).
    """
    if isinstance(x, torch.Tensor | np.ndarray) and not isinstance(x, np.memmap):
        src = x if channel_axis else x[:, None]
        plan = tiling
        if pad_value is not None and tiling.pad is not None:
            plan = Tiling(
                tiling.shape, tiling.window, tiling.step, pad="constant", pad_value=pad_value
            )
        out = extract(src, plan, indices)
        return out if channel_axis else out[:, 0]
    per = len(tiling)
    wins = [
        read_window(
            x,
            int(i) // per,
            tiling[int(i) % per],
            tiling,
            channel_axis=channel_axis,
            pad_value=pad_value,
        )
        for i in indices
    ]
    if wins:
        return np.stack(wins)
    lead = (shape_of(x, "x")[1],) if channel_axis else ()
    return np.empty((0, *lead, *tiling.window), dtype=np.dtype(str(x.dtype)))


def clean(
    image: Any,
    labels: Any,
    tiling: Tiling,
    *,
    border: int | Sequence[int] = 0,
    ignore: Any = None,
    min_labeled: int | float = 1,
) -> CleanResult:
    """Keep the training windows whose core holds labels; mark their border labels as ignored.

    Parameters
    ----------
    image
        ``(N, C, *spatial)``: torch tensor, numpy array/memmap, or a lazy zarr/h5py array.
    labels
        ``(N, *spatial)`` or ``(N, C_l, *spatial)``, same kinds; unlabelled voxels hold ``ignore``.
    tiling
        The window plan over ``spatial``.
    border
        Width of the band inside each window whose labels are set to ``ignore`` (every side,
        including sides at the array edge: the network has no context there either).
    ignore
        The "not labelled" value: an int for integer labels, a float or NaN for float targets.
        The default ``None`` means -1 for integer labels and NaN for float labels. NaN is never
        a label. Virtual padding of a padded tiling (``Tiling(..., pad=...)``) reads as
        ``ignore`` in the label windows, whatever the image's padding mode.
    min_labeled
        Keep a window when its core holds at least this many labelled voxels (an int), or this
        fraction of its core voxels (a float in (0, 1]).

    Returns
    -------
    CleanResult with ``image`` and ``labels`` (kept windows, batched, numpy or torch like the
    input), ``indices`` (flat ``n * len(tiling) + i``), ``windows`` (their records), ``images``
    (the ``n`` of each) and ``report`` (see :class:`CleanReport`; float labels with more than
    256 distinct values count as one class there).

    Examples
    --------
    >>> import numpy as np, tilewise as tw
    >>> img = np.zeros((1, 1, 16, 16), np.float32)
    >>> lab = np.full((1, 16, 16), -1); lab[0, 3, 3] = 1
    >>> r = tw.clean(img, lab, tw.Tiling((16, 16), window=8, step=4), border=1)
    >>> r.report.total, r.report.kept, r.labels.shape
    (9, 1, (1, 8, 8))
    """
    ishape = shape_of(image, "image")
    tiling.check_array_shape(ishape, "image")
    spec = _label_spec(ishape, labels, ignore)
    b = as_axis_ints(border, tiling.ndim, "border", minimum=0)
    counts, cc = _window_counts(labels, spec, tiling, b, count_classes=True)
    core = math.prod(w - 2 * bb for w, bb in zip(tiling.window, b, strict=True))
    need = _min_count(min_labeled, core)
    keep = np.flatnonzero(counts.reshape(-1) >= need).astype(np.int64)
    per = len(tiling)
    report = CleanReport(
        image_shape=ishape,
        window=tiling.window,
        step=tiling.step,
        border=b,
        total=counts.size,
        kept=len(keep),
        labeled=int(cc.cells.sum()),
        labeled_in_cores=_labeled_in_kept_cores(cc, tiling, b, keep),
        occurrences=int(counts.reshape(-1)[keep].sum()),
        classes=dict(cc.classes),
    )
    img_w = _gather(image, tiling, keep, True)
    lab_w = _gather(labels, tiling, keep, spec.channel_axis, pad_value=spec.ignore)
    if isinstance(lab_w, torch.Tensor):
        lab_w = lab_w.clone() if not lab_w.is_contiguous() else lab_w
    _mark_border(lab_w, b, spec.ignore, 2 if spec.channel_axis else 1)
    return CleanResult(
        image=img_w,
        labels=lab_w,
        indices=keep,
        windows=[tiling[int(i) % per] for i in keep],
        images=keep // per,
        report=report,
    )


# -- random windows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Points:
    """Coordinates ``(n, *voxel)`` of labelled voxels of one class (subsampled if many);
    ``value`` is ``None`` for the one class of continuous float targets."""

    value: float | None
    coords: np.ndarray  # (P, 1 + ndim) int64


class RandomWindows:
    """Windows at random offsets, uniformly or weighted toward labelled voxels, per class.

    Draw ``i`` depends only on ``(seed, epoch, i)``: reproducible, and identical in any
    DataLoader worker. Windows never cross the array edge.

    Parameters
    ----------
    shape
        Spatial shape of the image(s).
    window
        Window size (int or per axis); must fit in the array.
    count
        Windows per epoch (``len(sampler)``).
    n
        Number of images; uniform draws pick one at random.
    labels, ignore
        When given, draws are centred on labelled voxels: a class is picked (with
        ``class_weights``), then one of its labelled voxels, then a window whose core holds it.
        Classes are the labelled values over all label channels (a voxel belongs to every
        class one of its channels holds). Float labels with more than 256 distinct values are
        continuous targets: all their labelled voxels form one class (``classes`` is empty).
        ``ignore`` is the "not labelled" value; the default ``None`` means -1 for integer
        labels and NaN for float labels. Neither the ignore value nor NaN is ever a class.
    border
        Core border: the labelled voxel lands at least ``border`` voxels inside the window when
        the array allows.
    class_weights
        ``"balanced"`` (default: every class equally often, so rare classes are not drowned),
        ``"frequency"`` (proportional to labelled voxels), or a mapping class value -> weight
        (not for continuous float targets, which are one class).
    max_points
        At most this many labelled voxels are remembered per class (a uniform subsample).
    seed
        Reproducibility.

    Examples
    --------
    >>> import numpy as np, tilewise as tw
    >>> lab = np.full((1, 50, 50), -1); lab[0, 10, 40] = 3
    >>> s = tw.RandomWindows((50, 50), window=8, count=4, labels=lab, border=2, seed=1)
    >>> all(w.start[0] <= 10 - 2 and 10 + 2 < w.stop[0] for _, w in s)
    True
    """

    def __init__(
        self,
        shape: Sequence[int],
        window: int | Sequence[int],
        count: int,
        *,
        n: int | None = None,
        labels: Any = None,
        ignore: Any = None,
        border: int | Sequence[int] = 0,
        class_weights: Literal["balanced", "frequency"] | Mapping[float, float] = "balanced",
        max_points: int = 1_000_000,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.tiling = Tiling(shape, window=window, step=window)  # validates shape and window
        self.shape, self.window = self.tiling.shape, self.tiling.window
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ParameterError(
                message("count", expected="an int >= 0", received=repr(count), fix="e.g. 1000")
            )
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ParameterError(
                message(
                    "max_points",
                    expected="an int >= 1",
                    received=repr(max_points),
                    fix="e.g. max_points=1_000_000",
                )
            )
        self.count, self.seed, self.epoch = count, int(seed), int(epoch)
        self.border = as_axis_ints(border, len(self.shape), "border", minimum=0)
        self.points: list[_Points] = []
        self.weights = np.zeros(0)
        if labels is not None:
            lshape = shape_of(labels, "labels")
            spec = _label_spec((lshape[0], 1, *self.shape), labels, ignore)
            self.n = lshape[0]
            self.points = self._collect(labels, spec, max_points)
            if not self.points:
                raise ParameterError(
                    message(
                        "labels",
                        expected="at least one labelled voxel to centre windows on",
                        received=f"no voxel differs from ignore={spec.ignore:g}"
                        + (" or NaN" if spec.floating and not spec.is_nan else ""),
                        fix="check the ignore value, or sample uniformly (labels=None)",
                    )
                )
            self.weights = self._class_weights(class_weights)
        else:
            self.n = 1 if n is None else int(n)
        self._args = (class_weights, max_points)

    def _collect(self, labels: Any, spec: LabelSpec, max_points: int) -> list[_Points]:
        """Labelled voxels per class; one class ``None`` for continuous float targets."""
        rng = np.random.default_rng([self.seed, 7])
        found: dict[float | None, list[np.ndarray]] = {}
        lshape = shape_of(labels, "labels")
        channels = lshape[1] if spec.channel_axis else 1
        spatial_plane = math.prod(self.shape[1:]) * channels
        slab = max(1, SLAB_VOXELS // max(spatial_plane, 1))
        lead: tuple[Any, ...] = (slice(None),) if spec.channel_axis else ()
        for n in range(lshape[0]):
            for a in range(0, self.shape[0], slab):
                lab = read_region(labels, (n, *lead, slice(a, min(a + slab, self.shape[0]))))
                full = spec.labelled(lab)  # per channel, if any (then on axis 0)
                where = np.nonzero(full)
                if not len(where[0]):
                    continue
                values = lab[where]
                if spec.channel_axis:
                    where = where[1:]  # voxel coordinates; a voxel joins each class it holds
                coords = np.stack(where, axis=1).astype(np.int64)
                coords[:, 0] += a
                coords = np.concatenate([np.full((len(coords), 1), n), coords], axis=1)
                if None in found:  # continuous targets: one class
                    found[None].append(coords)
                    continue
                vals, inverse = np.unique(values, return_inverse=True)
                if spec.floating and len(found.keys() | set(vals.tolist())) > MAX_FLOAT_CLASSES:
                    found = {None: [p for parts in found.values() for p in parts] + [coords]}
                    continue
                inverse = inverse.reshape(-1)
                order = np.argsort(inverse, kind="stable")
                split = np.cumsum(np.bincount(inverse, minlength=len(vals)))[:-1]
                for v, part in zip(vals.tolist(), np.split(coords[order], split), strict=True):
                    found.setdefault(float(v), []).append(part)
        points = []
        for v, parts in sorted(found.items(), key=lambda kv: -math.inf if kv[0] is None else kv[0]):
            c = np.concatenate(parts)
            if channels > 1:  # a voxel held by two channels with the same value: once
                c = np.unique(c, axis=0)
            if len(c) > max_points:
                c = c[np.sort(rng.choice(len(c), size=max_points, replace=False))]
            points.append(_Points(v, c))
        return points

    def _class_weights(self, spec: Any) -> np.ndarray:
        if spec == "balanced":
            w = np.ones(len(self.points))
        elif spec == "frequency":
            w = np.array([len(p.coords) for p in self.points], dtype=np.float64)
        elif isinstance(spec, Mapping) and self.points[0].value is None:
            raise ParameterError(
                message(
                    "class_weights",
                    expected="'balanced' or 'frequency' for continuous float labels "
                    f"(more than {MAX_FLOAT_CLASSES} distinct values: one class)",
                    received=f"a mapping {dict(spec)!r}",
                    fix="drop class_weights, or quantise the labels into classes",
                )
            )
        elif isinstance(spec, Mapping):
            w = np.array([float(spec.get(p.value, 0.0)) for p in self.points])
        else:
            raise ParameterError(
                message(
                    "class_weights",
                    expected="'balanced', 'frequency' or a mapping class -> weight",
                    received=repr(spec),
                    fix="use class_weights='balanced'",
                )
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ParameterError(
                message(
                    "class_weights",
                    expected="finite weights >= 0, one positive for a class that has labels",
                    received=repr(spec),
                    fix=f"classes present: {[p.value for p in self.points]}",
                )
            )
        return np.asarray(w / w.sum(), dtype=np.float64)

    @property
    def classes(self) -> dict[float, int]:
        """Labelled voxels remembered per class (empty for continuous float targets)."""
        return {p.value: len(p.coords) for p in self.points if p.value is not None}

    def with_epoch(self, epoch: int) -> RandomWindows:
        """The same sampler drawing a fresh set of windows for ``epoch``."""
        new = object.__new__(RandomWindows)
        new.__dict__.update(self.__dict__)
        new.epoch = int(epoch)
        return new

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, Window]:
        """Draw ``i``: ``(n, window)``."""
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < self.count:
            raise ParameterError(
                message(
                    "draw index",
                    expected=f"an int in [0, {self.count})",
                    received=repr(i),
                    fix="index within len(sampler)",
                )
            )
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        hi = np.array([s - w for s, w in zip(self.shape, self.window, strict=True)])
        if self.points:
            cls = self.points[int(rng.choice(len(self.points), p=self.weights))]
            n, *voxel = cls.coords[int(rng.integers(len(cls.coords)))].tolist()
            v = np.array(voxel)
            w = np.array(self.window)
            b = np.array(self.border)
            lo_s = np.clip(v - (w - b - 1), 0, hi)
            hi_s = np.clip(v - b, 0, hi)
            hi_s = np.maximum(hi_s, lo_s)
            start = lo_s + (rng.random(len(v)) * (hi_s - lo_s + 1)).astype(np.int64)
        else:
            n = int(rng.integers(self.n))
            start = (rng.random(len(hi)) * (hi + 1)).astype(np.int64)
        start_t = tuple(int(s) for s in start)
        stop = tuple(s + w for s, w in zip(start_t, self.window, strict=True))
        return n, Window(
            index=int(i),
            grid=(),
            start=start_t,
            stop=stop,
            touches_low=tuple(s == 0 for s in start_t),
            touches_high=tuple(e == s for e, s in zip(stop, self.shape, strict=True)),
            array_shape=self.shape,
        )

    def __iter__(self) -> Any:
        return (self[i] for i in range(self.count))


# -- dataset ---------------------------------------------------------------------------------------
def _address(x: np.ndarray) -> int:
    return int(x.__array_interface__["data"][0])


def _memmap_spec(x: Any) -> Any:
    """A memmap, or any view of one (a slice, a strided or reversed view), as the file, the byte
    offset of its first element in that file, dtype, shape and strides; anything else as is."""
    mapped = getattr(x, "_mmap", None)
    if not isinstance(x, np.memmap) or x.filename is None or mapped is None:
        return x
    root: np.ndarray = x
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or root.base is not mapped:
        return x  # not a map numpy made: pickled by value
    # the root's first element lies at byte ``root.offset`` of the file
    offset = int(root.offset) + _address(x) - _address(root)
    return ("__memmap__", x.filename, x.dtype, x.shape, x.strides, offset)


def _memmap_open(x: Any) -> Any:
    """Reopen what :func:`_memmap_spec` described, read-only: the exact same view of the file."""
    if isinstance(x, tuple) and x and x[0] == "__memmap__":
        _, name, dtype, shape, strides, offset = x
        whole = np.memmap(name, dtype=np.uint8, mode="r")
        view = np.ndarray.__new__(
            np.memmap, shape, dtype=dtype, buffer=whole, offset=offset, strides=strides
        )
        view.__array_finalize__(whole)  # as numpy does for views: keep the file's name and map
        return view
    return x


def _axes(axes: Any, what: str) -> tuple[int, ...]:
    """A sequence of axis numbers as ints, or a ParameterTypeError."""
    if (
        isinstance(axes, str | bytes)
        or not isinstance(axes, Sequence | np.ndarray)
        or any(isinstance(a, bool) or not isinstance(a, int | np.integer) for a in axes)
    ):
        raise ParameterTypeError(
            message(
                what,
                expected="a sequence of ints (tiled axes, numbered from 0)",
                received=repr(axes),
                fix=f"pass e.g. {what}=(0, 1)",
            )
        )
    return tuple(int(a) for a in axes)


def _int_indices(indices: Any) -> np.ndarray:
    """Flat window indices as int64, refusing floats and bools (never truncated)."""
    idx = np.asarray(indices)
    if idx.size and (idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer)):
        raise ParameterTypeError(
            message(
                "indices",
                expected="integer flat window indices",
                received=f"dtype {idx.dtype}: {np.ravel(idx)[:5].tolist()!r}",
                fix="pass ints, e.g. tw.clean(...).indices, not floats or a mask",
            )
        )
    return idx.astype(np.int64)


class PatchDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A torch Dataset of training windows read lazily from big arrays.

    Each item is a dict, so positions travel through a ``DataLoader`` with the default collate:

    - ``image``: tensor ``(C, *window)``, the image's dtype;
    - ``labels`` (only when labels are given): tensor ``(*window)`` or ``(C_l, *window)``, the
      labels' dtype; the border band and any virtual padding of a padded tiling hold ``ignore``;
    - ``n``: int, which image;
    - ``index``: int, the flat window index ``n * len(tiling) + i`` (grid mode) or the draw
      number (random mode);
    - ``start``, ``stop``: int64 tensors ``(ndim,)``, the window's voxel box in array
      coordinates (before augmentation; with virtual padding ``start`` may be negative).

    Sources may be torch tensors, numpy arrays or memmaps, or zarr/h5py arrays; only the windows
    asked for are read. The dataset pickles without copying memmaps (they are reopened), so it
    works with ``DataLoader(num_workers=...)``.

    Parameters
    ----------
    image, labels
        ``(N, C, *spatial)`` and ``(N, *spatial)`` / ``(N, C_l, *spatial)``.
    tiling, indices
        Grid mode: the plan and which flat window indices (default all; pass
        ``tw.clean(...).indices`` or :func:`count_labeled` results to keep labelled ones).
    sampler
        Random mode: a :class:`RandomWindows` (instead of ``tiling``).
    border, ignore
        Labels within ``border`` of a window side are set to ``ignore`` (default ``None``: -1
        for integer labels, NaN for float labels).
    augment
        Paired augmentation applied identically to image and labels: random flips along
        ``flip_axes`` and random 90-degree rotations in the plane of ``rotate_axes``.
    flip_axes, rotate_axes
        Tiled axes (0-based) to flip / two different axes to rotate in. Defaults: all tiled
        axes / the last two, or no rotation when the window is not square in that plane (or
        there is one tiled axis). An explicit ``rotate_axes`` plane where the window is not
        square is an error.
    seed
        Augmentation draws depend only on ``(seed, epoch, item)``.

    Examples
    --------
    >>> import numpy as np, tilewise as tw
    >>> img = np.random.rand(1, 1, 32, 32).astype(np.float32)
    >>> lab = np.full((1, 32, 32), -1); lab[0, 5, 5] = 1
    >>> t = tw.Tiling((32, 32), window=16, step=8)
    >>> ds = tw.PatchDataset(img, lab, tiling=t, indices=tw.clean(img, lab, t).indices)
    >>> item = ds[0]
    >>> len(ds), tuple(item["image"].shape), item["start"].tolist()
    (1, (1, 16, 16), [0, 0])
    """

    def __init__(
        self,
        image: Any,
        labels: Any = None,
        *,
        tiling: Tiling | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        sampler: RandomWindows | None = None,
        border: int | Sequence[int] = 0,
        ignore: Any = None,
        augment: bool = False,
        flip_axes: Sequence[int] | None = None,
        rotate_axes: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        if not is_array_like(image):
            shape_of(image, "image")  # raises the clear error
        ishape = shape_of(image, "image")
        if (tiling is None) == (sampler is None):
            raise ParameterError(
                message(
                    "PatchDataset",
                    expected="exactly one of tiling= (grid windows) or sampler= (random windows)",
                    received=f"tiling={tiling!r}, sampler={sampler!r}",
                    fix="pass tiling=tw.Tiling(...) or sampler=tw.RandomWindows(...)",
                )
            )
        plan = tiling if tiling is not None else sampler.tiling  # type: ignore[union-attr]
        plan.check_array_shape(ishape, "image")
        if sampler is not None and sampler.n > ishape[0]:
            raise ShapeMismatchError(
                message(
                    "sampler",
                    expected=f"at most N = {ishape[0]} images",
                    received=f"a sampler over {sampler.n} images",
                    fix="build the sampler from these labels or with n=image.shape[0]",
                )
            )
        self.spec = _label_spec(ishape, labels, ignore) if labels is not None else None
        self.tiling, self.sampler = tiling, sampler
        total = ishape[0] * len(plan)
        if tiling is not None:
            idx = np.arange(total) if indices is None else _int_indices(indices)
            if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= total)):
                raise ParameterError(
                    message(
                        "indices",
                        expected=f"flat window indices in [0, {total})",
                        received=f"array of shape {idx.shape}",
                        fix="pass tw.clean(...).indices or a subset of range(N * len(tiling))",
                    )
                )
            self.indices: np.ndarray | None = idx
        else:
            self.indices = None
        self.border = as_axis_ints(border, plan.ndim, "border", minimum=0)
        ndim = plan.ndim
        self.flip_axes = tuple(range(ndim)) if flip_axes is None else _axes(flip_axes, "flip_axes")
        if rotate_axes is None:
            square = ndim >= 2 and plan.window[-2] == plan.window[-1]
            self.rotate_axes = (ndim - 2, ndim - 1) if square else None
        else:
            pair = _axes(rotate_axes, "rotate_axes")
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ParameterError(
                    message(
                        "rotate_axes",
                        expected="two different tiled axes, e.g. (0, 1)",
                        received=repr(rotate_axes),
                        fix="name the plane to rotate in by its two axes",
                    )
                )
            self.rotate_axes = (pair[0], pair[1])
        for ax in (*self.flip_axes, *(self.rotate_axes or ())):
            if not 0 <= ax < ndim:
                raise ParameterError(
                    message(
                        "augment axes",
                        expected=f"tiled axes in [0, {ndim})",
                        received=f"flip_axes={flip_axes!r}, rotate_axes={rotate_axes!r}",
                        fix="number the tiled axes from 0 (not counting N and C)",
                    )
                )
        if self.rotate_axes is not None:
            a, b = self.rotate_axes
            if plan.window[a] != plan.window[b]:
                raise ParameterError(
                    message(
                        "rotate_axes",
                        expected=f"a plane where the window is square (90-degree rotations "
                        f"keep the window's shape), window {plan.window}",
                        received=f"rotate_axes={rotate_axes!r}: window sizes "
                        f"{plan.window[a]} x {plan.window[b]} in the plane of axes {a} and {b}",
                        fix="rotate in a plane where the window is square, or use a window "
                        "with equal sizes on those axes",
                    )
                )
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.image, self.labels = image, labels

    def set_epoch(self, epoch: int) -> None:
        """New random windows and augmentations for another epoch."""
        self.epoch = int(epoch)
        if self.sampler is not None:
            self.sampler = self.sampler.with_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.sampler or ())

    def _locate(self, i: int) -> tuple[int, Window, int]:
        if self.indices is not None and self.tiling is not None:
            flat = int(self.indices[i])
            per = len(self.tiling)
            return flat // per, self.tiling[flat % per], flat
        n, w = self.sampler[i]  # type: ignore[index]
        return n, w, w.index

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} windows")
        n, w, flat = self._locate(int(i))
        plan = self.tiling if self.tiling is not None else self.sampler.tiling  # type: ignore[union-attr]
        img = read_window(self.image, n, w, plan)
        lab = None
        if self.labels is not None and self.spec is not None:
            lab = np.array(
                read_window(
                    self.labels,
                    n,
                    w,
                    plan,
                    channel_axis=self.spec.channel_axis,
                    pad_value=self.spec.ignore,
                )
            )
            _mark_border(
                lab[None], self.border, self.spec.ignore, 2 if self.spec.channel_axis else 1
            )
        if self.augment:
            img, lab = self._augment(img, lab, i)
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(img)),
            "n": n,
            "index": flat,
            "start": torch.tensor(w.start, dtype=torch.int64),
            "stop": torch.tensor(w.stop, dtype=torch.int64),
        }
        if lab is not None:
            item["labels"] = torch.from_numpy(np.ascontiguousarray(lab))
        return item

    def _augment(
        self, img: np.ndarray, lab: np.ndarray | None, i: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 1])
        lab_off = 1 if (self.spec is not None and self.spec.channel_axis) else 0
        for ax in self.flip_axes:
            if rng.random() < 0.5:
                img = np.flip(img, axis=1 + ax)
                if lab is not None:
                    lab = np.flip(lab, axis=lab_off + ax)
        if self.rotate_axes is not None:  # a square plane (checked at construction)
            a, b = self.rotate_axes
            k = int(rng.integers(4))
            img = np.rot90(img, k, axes=(1 + a, 1 + b))
            if lab is not None:
                lab = np.rot90(lab, k, axes=(lab_off + a, lab_off + b))
        return img, lab

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["image"] = _memmap_spec(self.image)
        state["labels"] = _memmap_spec(self.labels)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["image"] = _memmap_open(state["image"])
        state["labels"] = _memmap_open(state["labels"])
        self.__dict__.update(state)
