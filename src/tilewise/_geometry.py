"""The tiling plan: pure integer geometry, no torch.

A :class:`Tiling` places windows over the spatial axes of an array laid out ``(N, C, *spatial)``.
Along each axis the windows start every ``step`` voxels; the last one steps back so that it ends
flush with the array (the paper's Algorithm 1)::

    size = 10, window = 4, step = 3

    voxel      0 1 2 3 4 5 6 7 8 9
    window 0   [-----]                 start 0
    window 1         [-----]           start 3
    window 2               [-----]     start 6 = min(2*3, 10-4)
    (no window 3: window 2 already ends at the edge)

Nothing is dropped and nothing is padded. An axis shorter than its window is an error unless
``pad=`` asks for virtual padding, in which case that axis gets one window centred on the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, overload

import numpy as np

from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError, message

__all__ = ["MAX_AXES", "PadMode", "Tiling", "Window", "as_axis_ints"]

PadMode = Literal["reflect", "constant", "replicate"]
MAX_AXES = 4


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ParameterTypeError(
            message(
                what,
                expected="a whole number (int)",
                received=f"{value!r} of type {type(value).__name__}",
                fix=f"pass {what} as an int, e.g. {what}=64",
            )
        )
    return int(value)


def as_axis_ints(value: Any, ndim: int, what: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Normalise an int or a per-axis sequence to a tuple of ``ndim`` ints >= ``minimum``.

    Examples
    --------
    >>> as_axis_ints(64, 3, "window")
    (64, 64, 64)
    >>> as_axis_ints([8, 16], 2, "step")
    (8, 16)
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim:
            raise ParameterError(
                message(
                    what,
                    expected=f"one int or {ndim} ints (one per tiled axis)",
                    received=f"{len(value)} values {tuple(value)!r}",
                    fix=f"give {what} as a single int or a sequence of {ndim} ints",
                )
            )
        ints = tuple(_as_int(v, what) for v in value)
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        return as_axis_ints(value.tolist(), ndim, what, minimum=minimum)
    else:
        ints = (_as_int(value, what),) * ndim
    for v in ints:
        if v < minimum:
            raise ParameterError(
                message(
                    what,
                    expected=f"values >= {minimum}",
                    received=f"{ints!r}",
                    fix=f"use {what} values of at least {minimum}",
                )
            )
    return ints


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a :class:`Tiling`: where it is and which array edges it touches.

    ``start`` and ``stop`` are in array voxel coordinates; with virtual padding they may lie
    outside the array (``start`` negative), while ``slices`` is always clipped to the array and
    ``valid`` says which part of the window those voxels fill.

    Examples
    --------
    >>> w = Tiling((10,), window=4, step=3)[2]
    >>> w.start, w.stop, w.touches_low, w.touches_high
    ((6,), (10,), (False,), (True,))
    >>> w.slices
    (slice(6, 10, None),)
    """

    index: int
    grid: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]
    touches_low: tuple[bool, ...]
    touches_high: tuple[bool, ...]
    array_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The window's extent along each tiled axis."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def slices(self) -> tuple[slice, ...]:
        """Slices of the array this window covers (clipped to the array when padded)."""
        return tuple(
            slice(max(a, 0), min(b, s))
            for a, b, s in zip(self.start, self.stop, self.array_shape, strict=True)
        )

    @property
    def valid(self) -> tuple[slice, ...]:
        """Slices of the window that hold array voxels (all of it unless padded)."""
        return tuple(
            slice(max(a, 0) - a, min(b, s) - a)
            for a, b, s in zip(self.start, self.stop, self.array_shape, strict=True)
        )

    def physical_origin(
        self, voxel_size: Sequence[float], origin: Sequence[float] | None = None
    ) -> tuple[float, ...]:
        """Physical coordinates of the window's first voxel, given voxel size and array origin.

        >>> Tiling((100, 100), window=32, step=16)[1].physical_origin((0.5, 0.5), (10.0, 0.0))
        (10.0, 8.0)
        """
        ndim = len(self.start)
        sizes: object = voxel_size
        if (
            not isinstance(sizes, Sequence | np.ndarray)
            or len(voxel_size) != ndim
            or (origin is not None and len(origin) != ndim)
        ):
            raise ParameterError(
                message(
                    "voxel_size/origin",
                    expected=f"{ndim} values each (one per tiled axis)",
                    received=f"voxel_size={voxel_size!r}, origin={origin!r}",
                    fix="give one value per tiled axis",
                )
            )
        base = origin if origin is not None else (0.0,) * ndim
        return tuple(
            float(o) + float(s) * a for o, s, a in zip(base, voxel_size, self.start, strict=True)
        )


class Tiling:
    """A frozen plan of overlapping windows over an N-D array.

    Parameters
    ----------
    shape
        The tiled (spatial) shape: 1 to 4 axes, e.g. ``(Z, Y, X)`` or ``(T, Z, Y, X)``. Arrays
        that use the plan are laid out ``(N, C, *shape)``.
    window
        Window size, one int for every axis or one per axis.
    step
        Distance between window starts, one int or one per axis. A step larger than the window
        is allowed for extraction (sparse sampling); stitching refuses a plan that leaves
        voxels uncovered.
    pad
        ``None`` (default): an axis shorter than its window is an error. ``"reflect"``,
        ``"constant"`` or ``"replicate"``: such an axis is padded virtually, symmetrically, to
        the window size; stitched results come back at the original size.
    pad_value
        The fill value for ``pad="constant"``.

    Examples
    --------
    The paper's Table 2 training setting:

    >>> t = Tiling((236, 720, 510), window=64, step=32)
    >>> len(t), t.counts
    (2310, (7, 22, 15))
    >>> t[0].start, t[-1].start
    ((0, 0, 0), (172, 656, 446))
    """

    __slots__ = ("_axis_starts", "_counts", "_pad", "_pad_value", "_shape", "_step", "_window")

    def __init__(
        self,
        shape: Sequence[int],
        window: int | Sequence[int],
        step: int | Sequence[int],
        *,
        pad: PadMode | None = None,
        pad_value: float = 0.0,
    ) -> None:
        given: object = shape  # checked at run time: callers may pass anything
        if (
            isinstance(given, str)
            or not isinstance(given, Sequence | np.ndarray)
            or np.ndim(given) != 1
        ):
            raise ParameterTypeError(
                message(
                    "shape",
                    expected="a sequence of 1 to 4 ints (the tiled axes)",
                    received=f"{shape!r} of type {type(shape).__name__}",
                    fix="pass e.g. shape=(236, 720, 510); leave out the N and C axes",
                )
            )
        ndim = len(shape)
        if not 1 <= ndim <= MAX_AXES:
            raise ParameterError(
                message(
                    "shape",
                    expected=f"1 to {MAX_AXES} tiled axes (Y X, Z Y X, T Y X or T Z Y X)",
                    received=f"{ndim} axes {tuple(shape)!r}",
                    fix="pass only the spatial/time axes; batch N and channel C are not tiled",
                )
            )
        self._shape = as_axis_ints(list(shape), ndim, "shape")
        self._window = as_axis_ints(window, ndim, "window")
        self._step = as_axis_ints(step, ndim, "step")
        if pad is not None and pad not in get_args(PadMode):
            raise ParameterError(
                message(
                    "pad",
                    expected=f"None or one of {get_args(PadMode)}",
                    received=repr(pad),
                    fix="use pad='reflect', 'constant' or 'replicate', or None for no padding",
                )
            )
        if isinstance(pad_value, bool) or not isinstance(pad_value, int | float | np.number):
            raise ParameterTypeError(
                message(
                    "pad_value",
                    expected="a number",
                    received=repr(pad_value),
                    fix="pass pad_value as a float",
                )
            )
        self._pad: PadMode | None = pad
        self._pad_value = float(pad_value)
        if pad is None:
            short = [
                (ax, s, w)
                for ax, (s, w) in enumerate(zip(self._shape, self._window, strict=True))
                if s < w
            ]
            if short:
                ax, s, w = short[0]
                raise ParameterError(
                    message(
                        "window",
                        expected=f"a window no larger than the array along every axis "
                        f"(array {self._shape})",
                        received=f"window {self._window}: axis {ax} has size {s} < window {w}",
                        fix=f"use a window <= {s} on axis {ax}, or pass pad='reflect' "
                        "(or 'constant'/'replicate') to pad that axis virtually",
                    )
                )
        self._axis_starts = tuple(
            self._starts_along(s, w, st)
            for s, w, st in zip(self._shape, self._window, self._step, strict=True)
        )
        self._counts = tuple(len(a) for a in self._axis_starts)

    @staticmethod
    def _starts_along(size: int, window: int, step: int) -> np.ndarray:
        if size < window:  # virtual padding: one window, centred
            return np.array([-((window - size) // 2)], dtype=np.int64)
        n = 1 + math.ceil((size - window) / step)
        starts = np.arange(n, dtype=np.int64) * step
        return np.minimum(starts, size - window)

    # -- basic properties --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The tiled shape (without N and C)."""
        return self._shape

    @property
    def window(self) -> tuple[int, ...]:
        """Window size per axis."""
        return self._window

    @property
    def step(self) -> tuple[int, ...]:
        """Step per axis."""
        return self._step

    @property
    def ndim(self) -> int:
        """Number of tiled axes."""
        return len(self._shape)

    @property
    def pad(self) -> PadMode | None:
        """The padding mode, or None."""
        return self._pad

    @property
    def pad_value(self) -> float:
        """Fill value for constant padding."""
        return self._pad_value

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of windows along each axis."""
        return self._counts

    @property
    def axis_starts(self) -> tuple[np.ndarray, ...]:
        """Window starts along each axis (int64; read-only copies)."""
        return tuple(a.copy() for a in self._axis_starts)

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """Virtual padding (before, after) per axis; zeros where the axis is not padded."""
        return tuple(
            ((w - s) // 2, w - s - (w - s) // 2) if s < w else (0, 0)
            for s, w in zip(self._shape, self._window, strict=True)
        )

    @property
    def starts(self) -> np.ndarray:
        """Start of every window, shape ``(len(self), ndim)``, int64, in window order."""
        grids = np.meshgrid(*self._axis_starts, indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1)

    @property
    def covers_every_voxel(self) -> bool:
        """Whether every voxel lies in at least one window (False when a step leaves gaps)."""
        return all(
            bool(np.all(np.diff(a) <= w))
            for a, w in zip(self._axis_starts, self._window, strict=True)
        )

    def __len__(self) -> int:
        return math.prod(self._counts)

    # -- windows -----------------------------------------------------------------------------
    def grid_index(self, index: int) -> tuple[int, ...]:
        """Grid position (one index per axis) of flat window ``index``."""
        return tuple(int(i) for i in np.unravel_index(self._check_index(index), self._counts))

    def flat_index(self, grid: Sequence[int]) -> int:
        """Flat window index of a grid position (C order, last axis fastest)."""
        g = as_axis_ints(list(grid), self.ndim, "grid", minimum=0)
        for ax, (gi, c) in enumerate(zip(g, self._counts, strict=True)):
            if gi >= c:
                raise ParameterError(
                    message(
                        "grid",
                        expected=f"indices below counts {self._counts}",
                        received=f"{g} (axis {ax})",
                        fix="use a grid position inside the tiling",
                    )
                )
        return int(np.ravel_multi_index(g, self._counts))

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = _as_int(index, "window index")
        if not -n <= i < n:
            raise ParameterError(
                message(
                    "window index",
                    expected=f"an index in [-{n}, {n})",
                    received=str(i),
                    fix=f"this tiling has {n} windows",
                )
            )
        return i % n

    @overload
    def __getitem__(self, index: int) -> Window: ...
    @overload
    def __getitem__(self, index: slice) -> list[Window]: ...
    def __getitem__(self, index: int | slice) -> Window | list[Window]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = self._check_index(index)
        grid = tuple(int(g) for g in np.unravel_index(i, self._counts))
        start = tuple(int(a[g]) for a, g in zip(self._axis_starts, grid, strict=True))
        stop = tuple(a + w for a, w in zip(start, self._window, strict=True))
        return Window(
            index=i,
            grid=grid,
            start=start,
            stop=stop,
            touches_low=tuple(a <= 0 for a in start),
            touches_high=tuple(b >= s for b, s in zip(stop, self._shape, strict=True)),
            array_shape=self._shape,
        )

    def __iter__(self) -> Iterator[Window]:
        for i in range(len(self)):
            yield self[i]

    def windows_containing(self, voxel: Sequence[int]) -> list[int]:
        """Flat indices of the windows that contain ``voxel`` (array coordinates).

        >>> Tiling((10,), window=4, step=3).windows_containing((3,))
        [0, 1]
        """
        v = as_axis_ints(list(voxel), self.ndim, "voxel", minimum=0)
        if any(p >= s for p, s in zip(v, self._shape, strict=True)):
            raise ParameterError(
                message(
                    "voxel",
                    expected=f"a voxel inside the array {self._shape}",
                    received=str(v),
                    fix="use coordinates below the array shape",
                )
            )
        per_axis = [
            np.flatnonzero((a <= p) & (p < a + w))
            for a, p, w in zip(self._axis_starts, v, self._window, strict=True)
        ]
        grids = np.meshgrid(*per_axis, indexing="ij")
        flat = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), self._counts)
        return [int(i) for i in flat]

    def check_array_shape(self, shape: Sequence[int], what: str = "array") -> None:
        """Raise ShapeMismatchError unless ``shape`` is ``(N, C, *self.shape)``."""
        if len(shape) != self.ndim + 2 or tuple(shape[2:]) != self._shape:
            raise ShapeMismatchError(
                message(
                    what,
                    expected=f"shape (N, C, {', '.join(map(str, self._shape))}) "
                    f"for this {self.ndim}-axis tiling",
                    received=f"shape {tuple(shape)}",
                    fix="lay the array out as (N, C, *spatial) (add axes with x[None, None]) "
                    "or build the Tiling from x.shape[2:]",
                )
            )

    # -- value semantics ---------------------------------------------------------------------
    def _key(self) -> tuple[object, ...]:
        return (self._shape, self._window, self._step, self._pad, self._pad_value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tiling):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        pad = f", pad={self._pad!r}" if self._pad is not None else ""
        return (
            f"Tiling(shape={self._shape}, window={self._window}, step={self._step}{pad}) "
            f"# {len(self)} windows, counts {self._counts}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; :meth:`from_dict` rebuilds the same plan.

        >>> t = Tiling((100, 80), window=32, step=(16, 24))
        >>> Tiling.from_dict(t.to_dict()) == t
        True
        """
        return {
            "shape": list(self._shape),
            "window": list(self._window),
            "step": list(self._step),
            "pad": self._pad,
            "pad_value": self._pad_value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tiling:
        """Rebuild a plan from :meth:`to_dict` output."""
        missing = {"shape", "window", "step"} - set(data)
        if missing:
            raise ParameterError(
                message(
                    "Tiling.from_dict",
                    expected="keys shape, window, step (and optionally pad, pad_value)",
                    received=f"keys {sorted(data)}",
                    fix=f"add the missing keys {sorted(missing)}",
                )
            )
        return cls(
            data["shape"],
            window=data["window"],
            step=data["step"],
            pad=data.get("pad"),
            pad_value=data.get("pad_value", 0.0),
        )
