"""Blend weights: how much each voxel of a window counts when overlapping windows are stitched.

Pure numpy, no torch. A blend is a recipe; the stitcher binds it to a :class:`~tilewise.Tiling`
and pre-normalises it (see :mod:`tilewise._weights`). Every blend here is separable (an outer
product of 1-D profiles) except :func:`custom` given an N-D array.

Edge-aware: on a side where a window touches the array edge nothing else covers those voxels, so
the profile on that side is held at its centre value (flat). The array's own border is therefore
never down-weighted to nothing.

Examples
--------
>>> import numpy as np
>>> np.round(border(2, weight=0.25).profile(6), 2).tolist()
[0.25, 0.25, 1.0, 1.0, 0.25, 0.25]
>>> np.round(border(2, weight=0.25).edge_profile(6, low=True, high=False), 2).tolist()
[1.0, 1.0, 1.0, 1.0, 0.25, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError, message

__all__ = ["Blend", "border", "custom", "gaussian", "hann", "ramp", "resolve", "uniform"]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ParameterTypeError(
            message(what, expected="a number", received=repr(value), fix=f"pass {what} as a float")
        )
    v = float(value)
    if not math.isfinite(v):
        raise ParameterError(
            message(
                what, expected="a finite number", received=repr(value), fix="use a finite value"
            )
        )
    return v


def _per_axis(value: int | Sequence[int], axis: int, what: str) -> int:
    if isinstance(value, Sequence):
        if axis >= len(value):
            raise ParameterError(
                message(
                    what,
                    expected=f"a value for axis {axis}",
                    received=f"{len(value)} values {tuple(value)!r}",
                    fix="give one value per tiled axis, or a single int",
                )
            )
        return int(value[axis])
    return int(value)


def _widths(value: Any, what: str, minimum: int, example: str) -> int | tuple[int, ...]:
    """One whole number >= ``minimum``, or a non-empty sequence of them (one per tiled axis)."""
    per_axis = isinstance(value, Sequence) and not isinstance(value, str)
    items = list(value) if per_axis else [value]
    for w in items:
        if isinstance(w, bool) or not isinstance(w, int | np.integer):
            raise ParameterTypeError(
                message(
                    what,
                    expected=f"a whole number >= {minimum} (or one per tiled axis)",
                    received=f"{w!r} of type {type(w).__name__}"
                    + (f" in {value!r}" if per_axis else ""),
                    fix=f"pass whole voxel counts, e.g. {example}",
                )
            )
        if w < minimum:
            raise ParameterError(
                message(
                    what,
                    expected=f"a whole number >= {minimum} (or one per tiled axis)",
                    received=repr(value),
                    fix=f"pass e.g. {example}",
                )
            )
    if not items:
        raise ParameterError(
            message(
                what,
                expected="one value per tiled axis, or a single int",
                received="an empty sequence",
                fix=f"pass e.g. {example}",
            )
        )
    return tuple(int(w) for w in items) if per_axis else int(items[0])


def _check_axes(value: int | tuple[int, ...], window: Sequence[int], what: str) -> None:
    """Per-axis values must match the tiled axes: none may be ignored, none may be missing."""
    if isinstance(value, tuple) and len(value) != len(window):
        raise ParameterError(
            message(
                what,
                expected=f"a single int or {len(window)} values, one per tiled axis of "
                f"window {tuple(window)}",
                received=f"{len(value)} values {value!r}",
                fix=f"give {what} as one int or {len(window)} ints",
            )
        )


class Blend:
    """Base class of blend recipes. Subclasses define :meth:`profile` (1-D, per axis).

    A blend is immutable and hashable, so plans built from it can be cached.
    """

    separable: bool = True

    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        """The raw float64 weight profile of a window of ``length`` voxels along ``axis``."""
        raise NotImplementedError

    def check(self, window: Sequence[int]) -> None:
        """Raise ParameterError if the blend cannot be used with this window."""

    def edge_profile(self, length: int, axis: int = 0, *, low: bool, high: bool) -> np.ndarray:
        """:meth:`profile`, held flat at its centre value on the sides that touch the edge."""
        return _flatten_edges(self.profile(length, axis), 0, low=low, high=high)

    def nd_weight(self, window: Sequence[int], low: Sequence[bool], high: Sequence[bool]) -> Any:
        """The full N-D weight of a window with the given edge contacts (float64)."""
        w = np.ones((), dtype=np.float64)
        for ax, n in enumerate(window):
            p = self.edge_profile(n, ax, low=low[ax], high=high[ax])
            w = np.multiply.outer(w, p)
        return w

    def _key(self) -> tuple[object, ...]:
        return (type(self).__name__,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blend) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = ", ".join(repr(a) for a in self._key()[1:])
        return f"blend.{type(self).__name__.lower().lstrip('_')}({args})"


def _flatten_edges(w: np.ndarray, axis: int, *, low: bool, high: bool) -> np.ndarray:
    """Hold ``w`` at its centre slice along ``axis`` from each touched side up to the centre."""
    if not (low or high):
        return w
    w = np.array(w, dtype=np.float64, copy=True)
    n = w.shape[axis]
    moved = np.moveaxis(w, axis, 0)  # a view: writes go to w
    lo_c, hi_c = (n - 1) // 2, n // 2
    if low:
        moved[:lo_c] = moved[lo_c]
    if high:
        moved[hi_c + 1 :] = moved[hi_c]
    return w


class _Uniform(Blend):
    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        return np.ones(length, dtype=np.float64)


class _Border(Blend):
    def __init__(self, width: int | Sequence[int], weight: float) -> None:
        self.width = _widths(width, "border width", 0, "border(10, weight=0.0)")
        self.weight = _number(weight, "border weight")
        if self.weight < 0:
            raise ParameterError(
                message(
                    "border weight",
                    expected="a weight >= 0 (0 ignores the border band completely)",
                    received=repr(weight),
                    fix="use a weight between 0 and 1",
                )
            )

    def check(self, window: Sequence[int]) -> None:
        _check_axes(self.width, window, "border width")
        for ax, n in enumerate(window):
            b = _per_axis(self.width, ax, "border width")
            if 2 * b > n or (self.weight == 0 and 2 * b >= n):
                limit = n // 2 if self.weight else (n - 1) // 2
                raise ParameterError(
                    message(
                        "border width",
                        expected=f"at most half the window ({limit} on axis {ax}"
                        + (
                            ", leaving a core, as the border weight is 0)"
                            if not self.weight
                            else ")"
                        ),
                        received=f"border {b} with window {n}",
                        fix="use a narrower border or a larger window",
                    )
                )

    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        b = _per_axis(self.width, axis, "border width")
        p = np.ones(length, dtype=np.float64)
        if b:
            p[:b] = self.weight
            p[length - b :] = self.weight
        return p

    def _key(self) -> tuple[object, ...]:
        return ("Border", self.width, self.weight)


class _Ramp(Blend):
    def __init__(self, width: int | Sequence[int]) -> None:
        self.width = _widths(width, "ramp width", 1, "ramp(16)")

    def check(self, window: Sequence[int]) -> None:
        _check_axes(self.width, window, "ramp width")
        for ax, n in enumerate(window):
            r = _per_axis(self.width, ax, "ramp width")
            if 2 * r > n:
                raise ParameterError(
                    message(
                        "ramp width",
                        expected=f"at most half the window ({n // 2} on axis {ax})",
                        received=f"ramp {r} with window {n}",
                        fix="use a shorter ramp or a larger window",
                    )
                )

    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        r = _per_axis(self.width, axis, "ramp width")
        p = np.ones(length, dtype=np.float64)
        up = np.arange(1, r + 1, dtype=np.float64) / (r + 1)  # never 0, never 1
        p[:r] = up
        p[length - r :] = np.minimum(p[length - r :], up[::-1])
        return p

    def _key(self) -> tuple[object, ...]:
        return ("Ramp", self.width)


class _Gaussian(Blend):
    def __init__(self, sigma: float) -> None:
        self.sigma = _number(sigma, "gaussian sigma")
        if self.sigma <= 0:
            raise ParameterError(
                message(
                    "gaussian sigma",
                    expected="a positive fraction of the window (nnU-Net uses 0.125)",
                    received=repr(sigma),
                    fix="use e.g. gaussian(sigma=0.125)",
                )
            )

    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        t = np.arange(length, dtype=np.float64) - (length - 1) / 2
        s = self.sigma * length
        p: np.ndarray = np.exp(-0.5 * (t / s) ** 2)
        # strictly positive: far tails are clamped instead of underflowing to 0
        return np.asarray(np.maximum(p / p.max(), 1e-12), dtype=np.float64)

    def _key(self) -> tuple[object, ...]:
        return ("Gaussian", self.sigma)


class _Hann(Blend):
    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        t = np.arange(1, length + 1, dtype=np.float64)
        p: np.ndarray = np.sin(np.pi * t / (length + 1)) ** 2  # no zero end points
        return np.asarray(p / p.max(), dtype=np.float64)


class _Custom(Blend):
    def __init__(self, weights: Any, edge_aware: bool) -> None:
        self.edge_aware = bool(edge_aware)
        if (
            isinstance(weights, list | tuple)
            and all(np.ndim(w) == 1 for w in weights)
            and (len(weights) > 0 and not np.isscalar(weights[0]))
        ):
            arrays = tuple(self._checked(w) for w in weights)
            self.per_axis: tuple[np.ndarray, ...] | None = arrays
            self.array: np.ndarray | None = None
        else:
            arr = self._checked(weights)
            if arr.ndim == 1:
                self.per_axis, self.array = None, arr
            else:
                self.per_axis, self.array = None, arr
                self.separable = False
        if self.array is not None:
            self.array.setflags(write=False)
        for a in self.per_axis or ():
            a.setflags(write=False)

    @staticmethod
    def _checked(w: Any) -> np.ndarray:
        try:
            arr = np.array(w, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterTypeError(
                message(
                    "custom blend",
                    expected="an array of numbers",
                    received=f"{type(w).__name__}",
                    fix="pass a numpy array of weights",
                )
            ) from None
        if arr.ndim == 0 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ParameterError(
                message(
                    "custom blend",
                    expected="a non-empty array of finite weights >= 0",
                    received=f"shape {arr.shape}, min {arr.min() if arr.size else None}",
                    fix="replace NaN/Inf/negative weights",
                )
            )
        if not np.any(arr > 0):
            raise ParameterError(
                message(
                    "custom blend",
                    expected="at least one positive weight",
                    received="all zeros",
                    fix="give the window a positive weight somewhere",
                )
            )
        return arr

    def check(self, window: Sequence[int]) -> None:
        if self.per_axis is not None:
            got: tuple[int, ...] = tuple(len(a) for a in self.per_axis)
        elif self.array is not None and self.array.ndim == 1:
            got = tuple(len(self.array) for _ in window)
        else:
            got = tuple(self.array.shape) if self.array is not None else ()
        if got != tuple(window):
            raise ShapeMismatchError(
                message(
                    "custom blend",
                    expected=f"weights for window {tuple(window)}",
                    received=f"weights of shape {got}",
                    fix="give one 1-D profile per axis or an N-D array of the window's shape",
                )
            )

    def profile(self, length: int, axis: int = 0) -> np.ndarray:
        if self.per_axis is not None:
            return np.array(self.per_axis[axis])
        if self.array is None or self.array.ndim != 1:
            raise ParameterError(
                message(
                    "custom blend",
                    expected="a separable blend for 1-D profiles",
                    received="an N-D array",
                    fix="use nd_weight() for N-D custom weights",
                )
            )
        return np.array(self.array)

    def edge_profile(self, length: int, axis: int = 0, *, low: bool, high: bool) -> np.ndarray:
        if not self.edge_aware:
            return self.profile(length, axis)
        return super().edge_profile(length, axis, low=low, high=high)

    def nd_weight(self, window: Sequence[int], low: Sequence[bool], high: Sequence[bool]) -> Any:
        if self.separable:
            return super().nd_weight(window, low, high)
        w = np.array(self.array)  # non-separable: always an N-D array
        if self.edge_aware:
            for ax in range(w.ndim):
                w = _flatten_edges(w, ax, low=low[ax], high=high[ax])
        return w

    def _key(self) -> tuple[object, ...]:
        data = self.per_axis if self.per_axis is not None else (self.array,)
        digest = tuple((a.shape, a.tobytes()) for a in data if a is not None)
        mode = "per-axis" if self.array is None else f"{self.array.ndim}-d"
        return ("Custom", mode, digest, self.edge_aware)

    def __repr__(self) -> str:
        shape = (
            [a.shape for a in self.per_axis]
            if self.per_axis is not None
            else (None if self.array is None else self.array.shape)
        )
        return f"blend.custom(<weights {shape}>, edge_aware={self.edge_aware})"


def uniform() -> Blend:
    """Equal weights: the plain mean of all windows covering a voxel.

    >>> uniform().profile(4).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    return _Uniform()


def border(width: int | Sequence[int], weight: float = 0.1) -> Blend:
    """qlty's border weighting: ``weight`` in a band of ``width`` voxels, 1 in the core.

    ``width`` is one int for every axis or one per tiled axis (a tiling with another number of
    axes refuses it). ``weight=0`` ignores the band entirely (the paper's inference setting:
    window 128, step 108, border 10, weight 0 pastes the 108-voxel cores side by side): values
    in the band are never read, so NaN/Inf there cannot reach the stitched result and is not
    reported. Where the window touches the array edge the band is not applied (edge-aware).

    >>> border(1, weight=0.0).profile(4).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    return _Border(width, weight)


def ramp(width: int | Sequence[int]) -> Blend:
    """Linear ramp over ``width`` voxels at each side, strictly positive (no zero end points).

    ``width`` is one int for every axis or one per tiled axis.

    >>> ramp(3).profile(8).tolist()
    [0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    return _Ramp(width)


def gaussian(sigma: float = 0.125) -> Blend:
    """Gaussian importance weights (nnU-Net style); ``sigma`` is a fraction of the window size.

    >>> p = gaussian().profile(64)
    >>> round(float(p.max()), 3), bool(p.min() > 0)
    (1.0, True)
    """
    return _Gaussian(sigma)


def hann() -> Blend:
    """A sin-squared (Hann) taper without zero end points, peak 1.

    >>> [round(v, 2) for v in hann().profile(3).tolist()]
    [0.5, 1.0, 0.5]
    """
    return _Hann()


def custom(weights: Any, *, edge_aware: bool = True) -> Blend:
    """User weights: one 1-D profile for every axis, a list/tuple of per-axis 1-D profiles, or an
    N-D numpy array of the window's shape (not separable: slower to prepare, same stitching
    speed). A nested list is read as per-axis profiles; pass ``np.array(...)`` for N-D weights.

    With ``edge_aware=True`` the weights are held flat at their centre value on sides that touch
    the array edge, like the built-in blends; with ``False`` they are used exactly as given (and
    stitching refuses the plan if some voxel would get zero total weight).

    >>> custom([1.0, 2.0, 1.0]).profile(3).tolist()
    [1.0, 2.0, 1.0]
    """
    return _Custom(weights, edge_aware)


def resolve(blend: Any) -> Blend:
    """``blend`` itself, :func:`uniform` for None, or a clear error for anything else.

    >>> resolve(None)
    blend.uniform()
    """
    if blend is None:
        return uniform()
    if not isinstance(blend, Blend):
        raise ParameterTypeError(
            message(
                "blend",
                expected="a tilewise.blend recipe",
                received=type(blend).__name__,
                fix="use e.g. tw.blend.border(10, weight=0.0) or tw.blend.gaussian()",
            )
        )
    return blend
