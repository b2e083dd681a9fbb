"""The slab reader: any sequence of row requests reads what the padded box holds, and a forward
sweep over a chunked source reads every stored row once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from hypothesis import assume, given
from hypothesis import strategies as st

from tilewise._slab import Slab, source_index


class CountingArray:
    """A chunked array that counts the rows of its first spatial axis it hands out."""

    def __init__(self, data: np.ndarray, chunks: tuple[int, ...] | None) -> None:
        self.data, self.chunks = data, chunks
        self.shape, self.dtype = data.shape, data.dtype
        self.rows = 0

    def __getitem__(self, key):
        out = self.data[key]
        self.rows += out.shape[1]
        return out


@st.composite
def boxes(draw):
    ndim = draw(st.integers(1, 3))
    size = [draw(st.integers(1, 9)) for _ in range(ndim)]
    margin = [draw(st.integers(0, 4)) for _ in range(ndim)]
    lo, hi = [], []
    for ax, (s, m) in enumerate(zip(size, margin, strict=True)):
        # along the first axis a box may lie in the padding alone; a window always reaches
        # stored voxels on the others
        a = draw(st.integers(0, s + 2 * m - 1 if ax == 0 else s + m - 1))
        lo.append(a)
        hi.append(draw(st.integers(max(a + 1, m + 1 if ax else 0), s + 2 * m)))
    chunked = draw(st.booleans())
    chunks = tuple(draw(st.integers(1, 5)) for _ in range(ndim)) if chunked else None
    return size, margin, lo, hi, chunks


@given(
    box=boxes(),
    mode=st.sampled_from(["reflect", "edge"]),
    channels=st.integers(1, 2),
    budget=st.sampled_from([0, 64, 1 << 20]),
    data=st.data(),
)
def test_rows_hold_the_padded_box_whatever_the_order(box, mode, channels, budget, data):
    size, margin, lo, hi, chunks = box
    if mode == "reflect":  # a read reflects within itself, as a window (longer than twice
        # its margin) always can: boxes that need stored voxels beyond their own are not asked
        for a, b, n, m in zip(lo[1:], hi[1:], size[1:], margin[1:], strict=True):
            ra, rb = max(0, a - m), min(n, b - m)
            left, right = max(0, m - a), max(0, b - m - n)
            assume(not left or (ra == 0 and (rb > left or rb == n)))
            assume(not right or (rb == n and (n - ra > right or ra == 0)))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, (2, channels, *size)).astype(np.int16)
    src = CountingArray(x, None if chunks is None else (1, channels, *chunks))
    padded = np.pad(x[1], [(0, 0)] + [(m, m) for m in margin], mode=mode)
    whole = padded[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]
    slab = Slab(src, 1, lo, hi, margin, mode, torch.float32, budget=budget)
    for _ in range(data.draw(st.integers(1, 6))):
        a = data.draw(st.integers(lo[0], hi[0] - 1))
        b = data.draw(st.integers(a + 1, hi[0]))
        if len(size) > 1 and data.draw(st.booleans()):  # only part of the second axis
            y0 = data.draw(st.integers(lo[1], hi[1] - 1))
            y1 = data.draw(st.integers(y0 + 1, hi[1]))
            view, origin = slab.rows(a, b, y0, y1)
            part = (slice(None), slice(None), slice(y0 - lo[1], y1 - lo[1]))
        else:
            view, origin = slab.rows(a, b)
            part = (slice(None), slice(None))
        assert origin[1:] == lo[1:]
        assert origin[0] <= a
        assert origin[0] + view.shape[2] >= b
        got = view[0, :, a - origin[0] : b - origin[0]].numpy()[part]
        want = whole[:, a - lo[0] : b - lo[0]][part]
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("chunk", [4, 5, 7])
def test_a_forward_sweep_reads_each_stored_row_once(chunk):
    x = np.arange(40 * 6 * 5, dtype=np.float32).reshape(1, 1, 40, 6, 5)
    src = CountingArray(x, (1, 1, chunk, 3, 5))
    slab = Slab(src, 0, (0, 0, 0), (40, 6, 5), (0, 0, 0), "reflect", torch.float32)
    starts = [*range(0, 40 - 8, 6), 32]  # window 8, step 6, the last one stepped back
    for a in starts:
        view, origin = slab.rows(a, a + 8)
        np.testing.assert_array_equal(
            view[0, 0, a - origin[0] : a - origin[0] + 8], x[0, 0, a : a + 8]
        )
    assert slab.voxels_read == x.size  # every voxel read once
    # reads follow the chunks of the second axis: each row came in two pieces
    assert src.rows == 2 * 40


def test_a_line_is_read_piece_by_piece_as_its_windows_reach_them():
    x = np.arange(16 * 12, dtype=np.float32).reshape(1, 1, 16, 12)
    src = CountingArray(x, (1, 1, 8, 4))
    slab = Slab(src, 0, (0, 0), (16, 12), (0, 0), "edge", torch.float32)
    slab.rows(0, 8, 0, 5)  # the first window of the line reaches the first two pieces
    assert slab.ends == [8, 8, 0]
    assert slab.voxels_read == 8 * 8
    view, _ = slab.rows(4, 12, 6, 12)  # the next line, further along the second axis
    assert slab.ends == [8, 16, 16]  # the first piece: rows 4 to 8 still held, not read again
    np.testing.assert_array_equal(view[0, 0, 0:8, 6:12].numpy(), x[0, 0, 4:12, 6:12])


def test_a_small_budget_reads_only_what_is_asked_beyond_what_is_held():
    x = np.ones((1, 1, 40, 6), np.float32)
    src = CountingArray(x, (1, 1, 16, 6))
    slab = Slab(src, 0, (0, 0), (40, 6), (0, 0), "edge", torch.float32, budget=0)
    for a in range(0, 33, 4):
        slab.rows(a, a + 8)
        assert slab.have == (a, a + 8)
    assert slab.voxels_read == x.size


def test_a_zarr_source_with_reflected_margins(tmp_path):
    x = np.random.default_rng(1).random((1, 2, 23, 17, 9), dtype=np.float32)
    z = zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(1, 2, 5, 4, 9), dtype="f4")
    z[:] = x
    margin = (3, 2, 1)
    lo, hi = (0, 0, 0), (29, 21, 11)  # the whole padded array
    whole = np.pad(x[0], [(0, 0)] + [(m, m) for m in margin], mode="reflect")
    slab = Slab(z, 0, lo, hi, margin, "reflect", torch.float32)
    for a in range(0, 29 - 8 + 1, 3):
        view, origin = slab.rows(a, a + 8)
        np.testing.assert_array_equal(
            view[0, :, a - origin[0] : a - origin[0] + 8].numpy(), whole[:, a : a + 8]
        )


def test_source_index_matches_numpy_padding():
    for size in range(1, 6):
        for pad in range(12):
            a = np.arange(size)
            for mode in ("reflect", "edge"):
                m = mode if size > 1 else "edge"
                want = np.pad(a, (pad, pad), mode=m)
                got = [source_index(p - pad, size, mode) for p in range(size + 2 * pad)]
                assert got == want.tolist()
