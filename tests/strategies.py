"""Hypothesis strategies for tilings and blends, shrinking toward few, small windows."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

import tilewise as tw

PAD_MODES = ("reflect", "constant", "replicate")


@st.composite
def tilings(
    draw: st.DrawFn, *, max_axes: int = 4, stitchable: bool = True, pad: bool = False
) -> tw.Tiling:
    """A random tiling of 1-4 axes with small sizes (so tests stay fast).

    With ``pad=True`` some axes may be shorter than the window, padded virtually (``Tiling``
    only allows a window larger than the array with ``pad=``).
    """
    ndim = draw(st.integers(1, max_axes))
    budget = {1: 40, 2: 24, 3: 12, 4: 7}[ndim]
    shape, window, step = [], [], []
    for _ in range(ndim):
        size = draw(st.integers(1, budget))
        if pad and draw(st.booleans()):  # shorter than the window: one centred, padded window
            w = draw(st.integers(size + 1, max(size + 1, budget)))
        else:
            w = draw(st.integers(1, size))
        s = draw(st.integers(1, w if stitchable else 2 * w))
        shape.append(size)
        window.append(w)
        step.append(s)
    mode = draw(st.sampled_from(PAD_MODES)) if pad else None
    t = tw.Tiling(shape, window=window, step=step, pad=mode, pad_value=-1.0)
    event(f"axes={ndim}")
    event(f"windows<=10: {len(t) <= 10}")
    if pad:
        event(f"padded axes: {sum(1 for b, a in t.padding if a or b)}")
    return t


def _weights(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Strictly positive custom weights of ``shape`` (any plan covers with them)."""
    return st.integers(0, 2**16).map(
        lambda seed: np.random.default_rng(seed).uniform(0.05, 1.0, size=shape)
    )


def _nd_cost(t: tw.Tiling) -> int:
    """Rough number of neighbour weights an N-D custom blend sums when its plan is prepared."""
    cost = 1
    for n, w, s in zip(t.counts, t.window, t.step, strict=True):
        k = 2 * math.ceil(w / s) - 1  # neighbours of an interior window
        cost *= min(n, k + 2) * min(n, k)  # kinds of window x neighbours of each
    return cost


def _zero_border_widths(t: tw.Tiling) -> list[int]:
    """Widest zero-weight border per axis that still leaves every voxel a positive weight.

    A band of weight 0 must leave a core (``2 * b < window``) and consecutive cores must meet
    (``step <= window - 2 * b``); an axis with a single window has flat (edge-aware) sides.
    """
    return [
        (w - 1) // 2 if n == 1 else min((w - 1) // 2, (w - s) // 2)
        for n, w, s in zip(t.counts, t.window, t.step, strict=True)
    ]


def _widths(window: tuple[int, ...], low: int, high: list[int]) -> st.SearchStrategy[object]:
    """One width for every axis, or one per axis (each in ``[low, high[ax]]``)."""
    one = st.integers(low, min(high))
    per_axis = st.tuples(*(st.integers(low, h) for h in high))
    return st.one_of(one, per_axis) if len(window) > 1 else one


def blends(of: tw.Tiling | tuple[int, ...]) -> st.SearchStrategy[tw.blend.Blend]:
    """Blends valid for a tiling, or for a bare window.

    Given only a window: uniform, hann, gaussian, border (weight > 0, so any step <= window
    covers) and ramp. Given a tiling, also: border weight 0 where its steps keep every voxel
    covered, per-axis widths, and custom weights (one 1-D profile per axis, a single 1-D
    profile for equal windows, or an N-D array when preparing it stays cheap).
    """
    t = of if isinstance(of, tw.Tiling) else None
    window = t.window if t is not None else tuple(of)
    half = min(window) // 2
    options = [
        st.just(tw.blend.uniform()),
        st.just(tw.blend.hann()),
        st.floats(0.05, 0.5).map(lambda s: tw.blend.gaussian(sigma=s)),
    ]
    if t is None:
        if half >= 1:
            options.append(
                st.tuples(st.integers(0, half), st.floats(0.01, 1.0)).map(
                    lambda a: tw.blend.border(a[0], weight=a[1])
                )
            )
            options.append(st.integers(1, half).map(tw.blend.ramp))
        return st.one_of(options).map(_tagged)

    halves = [w // 2 for w in window]
    options.append(st.builds(tw.blend.border, _widths(window, 0, halves), st.floats(0.01, 1.0)))
    options.append(
        st.builds(tw.blend.border, _widths(window, 0, _zero_border_widths(t)), st.just(0.0))
    )
    if min(halves) >= 1:
        options.append(_widths(window, 1, halves).map(tw.blend.ramp))
    edge = st.booleans()
    options.append(
        st.builds(
            lambda ps, e: tw.blend.custom([np.asarray(p) for p in ps], edge_aware=e),
            st.tuples(*(_weights((w,)) for w in window)),
            edge,
        )
    )
    if len(set(window)) == 1:
        options.append(
            st.builds(lambda p, e: tw.blend.custom(p, edge_aware=e), _weights(window[:1]), edge)
        )
    if t.ndim > 1 and _nd_cost(t) <= 400:
        options.append(
            st.builds(lambda a, e: tw.blend.custom(a, edge_aware=e), _weights(window), edge)
        )
    return st.one_of(options).map(_tagged)


def _tagged(blend: tw.blend.Blend) -> tw.blend.Blend:
    """Record which kind of blend was drawn (shown by ``--hypothesis-show-statistics``)."""
    kind = repr(blend).split("(")[0]
    if kind == "blend.custom":
        kind += " 1-D" if blend.separable else " N-D"
    elif getattr(blend, "weight", None) == 0:
        kind += " weight 0"
    event(kind)
    return blend
