"""The tiling plan: counts, step-back, padding, records, value semantics, errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given

import tilewise as tw
from strategies import tilings


def test_paper_table_2_counts():
    t = tw.Tiling((236, 720, 510), window=64, step=32)
    assert len(t) == 2310
    assert t.counts == (7, 22, 15)


def test_paper_table_3_counts():
    # The paper states 231 windows, but its own settings give 2 * 7 * 5 = 70 (see qlty notes).
    t = tw.Tiling((236, 720, 510), window=128, step=108)
    assert t.counts == (2, 7, 5)


@pytest.mark.parametrize(
    ("size", "window", "step", "starts"),
    [
        (10, 4, 3, [0, 3, 6]),  # last window exactly flush
        (11, 4, 3, [0, 3, 6, 7]),  # step-back: last starts at 11 - 4
        (8, 8, 3, [0]),  # window == size: one window
        (10, 3, 5, [0, 5, 7]),  # step > window: sparse, last still flush
        (5, 1, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_starts_along_an_axis(size, window, step, starts):
    t = tw.Tiling((size,), window=window, step=step)
    assert t.axis_starts[0].tolist() == starts
    assert t.axis_starts[0].dtype == np.int64


@given(tilings(stitchable=False))
def test_windows_stay_inside_and_last_is_flush(t):
    for ax, starts in enumerate(t.axis_starts):
        assert starts[0] == 0
        assert starts[-1] == t.shape[ax] - t.window[ax]
        assert np.all(np.diff(starts) > 0)
        assert np.all(np.diff(starts) <= t.step[ax])
    assert len(t) == int(np.prod(t.counts))
    assert t.starts.shape == (len(t), t.ndim)


@given(tilings())
def test_window_records_match_vectorised_starts(t):
    starts = t.starts
    for i in range(0, len(t), max(1, len(t) // 7)):
        w = t[i]
        assert w.index == i
        assert w.start == tuple(starts[i])
        assert t.flat_index(w.grid) == i
        assert w.shape == t.window
        assert w.touches_low == tuple(a == 0 for a in w.start)
        assert w.touches_high == tuple(b == s for b, s in zip(w.stop, t.shape, strict=True))


@given(tilings(pad=True))
def test_padded_axes_get_one_centred_window(t):
    """Axes shorter than the window get one window, centred, whose valid part is the axis."""
    for (before, after), size, w, starts in zip(
        t.padding, t.shape, t.window, t.axis_starts, strict=True
    ):
        if size < w:
            assert starts.tolist() == [-before]
            assert before + size + after == w
            assert after - before in (0, 1)
        else:
            assert (before, after) == (0, 0)
            assert starts[0] == 0
            assert starts[-1] == size - w
    for w in t[:: max(1, len(t) // 5)]:
        assert all(
            v.stop - v.start == s.stop - s.start for v, s in zip(w.valid, w.slices, strict=True)
        )
        assert all(0 <= s.start < s.stop <= n for s, n in zip(w.slices, t.shape, strict=True))


def test_window_order_is_c_order_last_axis_fastest():
    t = tw.Tiling((6, 6), window=4, step=2)
    assert [w.grid for w in t] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert t[-1].grid == (1, 1)
    assert [w.index for w in t[1:3]] == [1, 2]


def test_window_slices_index_the_array():
    x = np.arange(100).reshape(10, 10)
    w = tw.Tiling((10, 10), window=(4, 5), step=3)[5]
    assert x[w.slices].shape == (4, 5)
    assert x[w.slices][0, 0] == x[w.start]


def test_padding_is_virtual_and_centred():
    t = tw.Tiling((5, 20), window=(8, 8), step=(8, 6), pad="reflect")
    assert t.padding == ((1, 2), (0, 0))
    assert t.counts == (1, 3)
    w = t[0]
    assert w.start == (-1, 0)
    assert w.slices == (slice(0, 5), slice(0, 8))
    assert w.valid == (slice(1, 6), slice(0, 8))
    assert w.touches_low == (True, True)
    assert w.touches_high == (True, False)


def test_physical_origin():
    w = tw.Tiling((100,), window=10, step=10)[3]
    assert w.physical_origin((2.0,), (5.0,)) == (65.0,)
    with pytest.raises(tw.TilewiseError, match="one value per tiled axis"):
        w.physical_origin((1.0, 1.0))


def test_windows_containing():
    t = tw.Tiling((10, 10), window=4, step=3)
    assert t.windows_containing((3, 0)) == [0, 3]
    assert t.windows_containing((0, 0)) == [0]


def test_value_semantics_and_serialisation():
    a = tw.Tiling((30, 40), window=8, step=(4, 6))
    b = tw.Tiling([30, 40], window=(8, 8), step=[4, 6])
    assert a == b
    assert hash(a) == hash(b)
    assert a != tw.Tiling((30, 40), window=8, step=4)
    assert a != "not a tiling"
    assert tw.Tiling.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert "windows" in repr(a)
    padded = tw.Tiling((3,), window=4, step=4, pad="constant", pad_value=2.5)
    assert tw.Tiling.from_dict(padded.to_dict()) == padded


def test_covers_every_voxel():
    assert tw.Tiling((20,), window=4, step=4).covers_every_voxel
    assert not tw.Tiling((20,), window=4, step=5).covers_every_voxel


def test_numpy_integers_are_accepted():
    t = tw.Tiling(np.array([20, 30]), window=np.int64(8), step=(np.int32(4), 4))
    assert t.window == (8, 8)
    assert t.step == (4, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        # wrong number of axes
        ({"shape": (), "window": 1, "step": 1}, tw.ParameterError, "1 to 4 tiled axes"),
        ({"shape": (5,) * 5, "window": 1, "step": 1}, tw.ParameterError, "received 5 axes"),
        ({"shape": (10, 10), "window": (4, 4, 4), "step": 2}, tw.ParameterError, "one per tiled"),
        ({"shape": (10, 10), "window": 4, "step": (2,)}, tw.ParameterError, "received 1 values"),
        # zero, negative, float
        ({"shape": (10,), "window": 0, "step": 1}, tw.ParameterError, "values >= 1"),
        ({"shape": (10,), "window": 4, "step": -2}, tw.ParameterError, "values >= 1"),
        ({"shape": (0,), "window": 1, "step": 1}, tw.ParameterError, "shape: expected values"),
        ({"shape": (10,), "window": 4.0, "step": 2}, tw.ParameterTypeError, "whole number"),
        ({"shape": (10.5,), "window": 4, "step": 2}, tw.ParameterTypeError, "whole number"),
        ({"shape": (10,), "window": True, "step": 2}, tw.ParameterTypeError, "whole number"),
        ({"shape": "abc", "window": 4, "step": 2}, tw.ParameterTypeError, "sequence of 1 to 4"),
        # window larger than the array without padding
        ({"shape": (10, 3), "window": 4, "step": 2}, tw.ParameterError, "axis 1 has size 3"),
        ({"shape": (10,), "window": 4, "step": 2, "pad": "wrap"}, tw.ParameterError, "pad"),
        ({"shape": (10,), "window": 4, "step": 2, "pad_value": "x"}, tw.ParameterTypeError, "pad"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        tw.Tiling(**kwargs)
    text = str(info.value)
    assert "expected" in text
    assert "received" in text
    assert "Fix:" in text
    assert isinstance(info.value, ValueError)


def test_type_errors_are_also_type_errors():
    with pytest.raises(TypeError):
        tw.Tiling((10,), window=2.5, step=1)


def test_index_errors():
    t = tw.Tiling((10,), window=4, step=3)
    with pytest.raises(tw.ParameterError, match=r"index in \[-3, 3\)"):
        t[3]
    with pytest.raises(tw.ParameterError, match="below counts"):
        t.flat_index((5,))
    with pytest.raises(tw.ShapeMismatchError, match=r"\(N, C, 10\)"):
        t.check_array_shape((1, 10))
    with pytest.raises(tw.ParameterError, match="missing keys"):
        tw.Tiling.from_dict({"shape": [10]})
