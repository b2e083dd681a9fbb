"""Hypothesis strategies for tilings, shrinking toward few, small windows."""

from __future__ import annotations

from hypothesis import event
from hypothesis import strategies as st

import tilewise as tw


@st.composite
def tilings(draw: st.DrawFn, *, max_axes: int = 4, stitchable: bool = True) -> tw.Tiling:
    """A random tiling of 1-4 axes with small sizes (so tests stay fast)."""
    ndim = draw(st.integers(1, max_axes))
    budget = {1: 40, 2: 24, 3: 12, 4: 7}[ndim]
    shape, window, step = [], [], []
    for _ in range(ndim):
        size = draw(st.integers(1, budget))
        w = draw(st.integers(1, size))
        s = draw(st.integers(1, w if stitchable else 2 * w))
        shape.append(size)
        window.append(w)
        step.append(s)
    t = tw.Tiling(shape, window=window, step=step)
    event(f"axes={ndim}")
    event(f"windows<=10: {len(t) <= 10}")
    return t


def blends(window: tuple[int, ...]) -> st.SearchStrategy[tw.blend.Blend]:
    """Blends valid for ``window`` (border weight > 0 so any step <= window covers)."""
    half = min(window) // 2
    options = [
        st.just(tw.blend.uniform()),
        st.just(tw.blend.hann()),
        st.floats(0.05, 0.5).map(lambda s: tw.blend.gaussian(sigma=s)),
    ]
    if half >= 1:
        options.append(
            st.tuples(st.integers(0, half), st.floats(0.01, 1.0)).map(
                lambda a: tw.blend.border(a[0], weight=a[1])
            )
        )
        options.append(st.integers(1, half).map(tw.blend.ramp))
    return st.one_of(options)
