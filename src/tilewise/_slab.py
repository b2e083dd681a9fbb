"""The input of a sweep, read once: a slab that moves forward along the first axis.

A sweep runs the windows of a box of the grid in C order, so along the first axis the windows it
needs only move forward. Reading each line of windows on its own reads every stored chunk it
touches whole, again for the next line (windows overlap) and again for every line the chunk
reaches on the other axes: 10x the input for a 3-D volume with chunks the size of a window. A
:class:`Slab` holds the box's input for the current line of windows, over the box's whole extent
on the other axes; moving on keeps the rows the next line shares and reads only the new ones,
rounded up to the end of the stored chunk they end in while that stays within the memory
allowed, so a chunk is read once per sweep.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tilewise._alloc import host_empty
from tilewise._arrays import read_region, shape_of

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PIECE_BYTES", "SLAB_BYTES", "Slab", "padded_read", "source_index"]

PIECE_BYTES = 32 << 20  # one read's size when the source has no chunks to follow
SLAB_BYTES = 128 << 20  # a slab rounds up to a chunk's end only while it stays this small


def source_index(p: int, size: int, mode: str) -> int:
    """The stored index that padded index ``p`` (``0`` = the first stored one) reads, as
    ``np.pad`` with ``mode`` ("reflect", else "edge") would fill it.

    >>> [source_index(p, 3, "reflect") for p in range(-4, 7)]
    [0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2]
    >>> [source_index(p, 3, "edge") for p in (-2, 0, 4)]
    [0, 0, 2]
    """
    if mode != "reflect" or size == 1:
        return min(max(p, 0), size - 1)
    period = 2 * (size - 1)
    r = p % period
    return period - r if r >= size else r


def padded_read(
    source: Any, n: int, lo: Sequence[int], hi: Sequence[int], margin: Sequence[int], mode: str
) -> np.ndarray:
    """Region ``[lo, hi)`` (padded coordinates: ``margin`` voxels of padding before every axis)
    of image ``n`` of ``source``, ``(C, *region)``, the padding filled as ``np.pad`` with
    ``mode`` ("reflect", else "edge") fills it."""
    shape = shape_of(source, "source")[2:]
    a = [max(0, p - m) for p, m in zip(lo, margin, strict=True)]
    b = [min(s, q - m) for q, m, s in zip(hi, margin, shape, strict=True)]
    data = read_region(source, (n, slice(None), *(slice(x, y) for x, y in zip(a, b, strict=True))))
    pads = [(0, 0)] + [
        (x + m - p, q - (y + m)) for p, q, x, y, m in zip(lo, hi, a, b, margin, strict=True)
    ]
    if any(pb or pa for pb, pa in pads):
        return np.pad(data, pads, mode="reflect" if mode == "reflect" else "edge")
    return data


def _spatial_chunks(source: Any, ndim: int) -> tuple[int, ...] | None:
    chunks = getattr(source, "chunks", None)
    if not isinstance(chunks, tuple) or len(chunks) != ndim + 2:
        return None
    try:
        spatial = tuple(int(c) for c in chunks[2:])
    except (TypeError, ValueError):
        return None
    return spatial if all(c > 0 for c in spatial) else None


class Slab:
    """Input rows of a box ``[lo, hi)`` (padded coordinates) of image ``n``, held a slab at a
    time along the first axis: :meth:`rows` gives rows ``[a, b)``, reading only those not held
    yet. The box is cut along the second axis into pieces (at the source's chunk boundaries)
    that are read when a request first reaches them, so moving on to the next line of windows
    reads a little for every batch rather than the whole line's input for its first one.

    Rows must be asked for in non-decreasing order of ``a`` for the reuse to work (any order is
    correct). ``budget`` bounds the slab's bytes where rounding up to a chunk's end would pass
    it (a slab always holds at least the rows asked for).

    >>> src = np.arange(2 * 10 * 4, dtype=np.float32).reshape(1, 2, 10, 4)
    >>> s = Slab(src, 0, (0, 0), (10, 4), (0, 0), "reflect", torch.float32)
    >>> x, origin = s.rows(2, 6)
    >>> origin, x.shape[2] >= 4, bool((x[0, :, 2 - origin[0] : 6 - origin[0]] ==
    ...                                 torch.from_numpy(src[0, :, 2:6])).all())
    ([2, 0], True, True)
    """

    def __init__(
        self,
        source: Any,
        n: int,
        lo: Sequence[int],
        hi: Sequence[int],
        margin: Sequence[int],
        mode: str,
        dtype: torch.dtype,
        budget: int = SLAB_BYTES,
    ) -> None:
        shape = shape_of(source, "source")
        self.source, self.n, self.mode, self.dtype = source, n, mode, dtype
        self.lo, self.hi, self.margin = list(lo), list(hi), list(margin)
        self.size = shape[2:]
        self.channels = shape[1]
        self.chunks = _spatial_chunks(source, len(self.size))
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.plane = self.channels * math.prod(b - a for a, b in zip(lo[1:], hi[1:], strict=True))
        self.plane_bytes = self.plane * itemsize
        self.budget = budget
        self.buf: torch.Tensor | None = None
        self.start = self.lo[0]  # the slab's first row (padded coordinates)
        self.pieces = self._pieces()
        self.ends = [self.start] * len(self.pieces)  # rows [start, end) held, per piece
        self.voxels_read = 0  # voxels read from the source, channels counted (the reuse)

    @property
    def have(self) -> tuple[int, int]:
        """Rows ``[a, b)`` held for the whole box."""
        return self.start, min(self.ends)

    # -- the slab --------------------------------------------------------------------------
    def rows(
        self, a: int, b: int, lo1: int | None = None, hi1: int | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Rows ``[a, b)`` (padded) of the box, at least on ``[lo1, hi1)`` of the second axis
        (default: all of it): ``(1, C, rows, *box)`` and the padded position of its first
        voxel. Other parts of the view may hold rows not read yet."""
        if not self.lo[0] <= a < b <= self.hi[0]:
            raise ValueError(f"rows [{a}, {b}) outside the box [{self.lo[0]}, {self.hi[0]})")
        if a < self.start:  # a step back: start again from there
            self.start, self.ends = a, [a] * len(self.pieces)
        elif a > self.start:
            self._shift(a)
        for k, (plo, phi) in enumerate(self.pieces):
            reached = not plo or ((lo1 is None or phi[0] > lo1) and (hi1 is None or plo[0] < hi1))
            if self.ends[k] < b and reached:
                end = max(b, self._end(b))
                self._room(end - self.start)
                self._read(k, self.ends[k], end)
                self.ends[k] = end
        assert self.buf is not None
        return self.buf[:, :, : max(self.ends) - self.start], [self.start, *self.lo[1:]]

    def _end(self, b: int) -> int:
        """Where a slab that must reach ``b`` ends: the end of the chunk ``b`` falls in, when
        that fits the budget."""
        if self.chunks is None:
            return b
        c, m = self.chunks[0], self.margin[0]
        real = b - m
        if real <= 0 or real >= self.size[0]:
            return b
        end = min(self.hi[0], min(self.size[0], -(-real // c) * c) + m)
        return end if (end - self.start) * self.plane_bytes <= self.budget else b

    def _shift(self, a: int) -> None:
        """Drop the rows before ``a``: the rows still held move to the front."""
        top = max(self.ends)
        src_row = a - self.start
        keep = top - a
        if self.buf is not None and keep > 0:
            buf = self.buf
            if src_row >= keep:  # apart: one copy
                buf[0, :, :keep].copy_(buf[0, :, src_row : src_row + keep])
            else:
                for r in range(keep):  # forward, one plane at a time: source rows lie ahead
                    buf[0, :, r].copy_(buf[0, :, src_row + r])
        self.start = a
        self.ends = [max(e, a) for e in self.ends]

    def _room(self, need: int) -> None:
        """A slab of at least ``need`` rows, holding what it held."""
        old = self.buf
        if old is not None and old.shape[2] >= need:
            return
        # room for the budget at once: pages never written take no memory, and growing
        # later would hold the old slab and the new one together
        rows = min(self.hi[0] - self.lo[0], max(need, self.budget // max(1, self.plane_bytes)))
        if self.chunks is None:
            rows = need
        self.buf, _ = host_empty((1, self.channels, rows, *self._box()[1:]), self.dtype)
        held = max(self.ends) - self.start
        if old is not None and held:
            self.buf[0, :, :held].copy_(old[0, :, :held])

    def _box(self) -> list[int]:
        return [b - a for a, b in zip(self.lo, self.hi, strict=True)]

    # -- reading ---------------------------------------------------------------------------
    def _read(self, k: int, r0: int, r1: int) -> None:
        """Read rows ``[r0, r1)`` (padded) of piece ``k`` into the slab: stored rows in one
        read, padding rows one stored row each."""
        if r0 >= r1:
            return
        plo, phi = self.pieces[k]
        m0, s0 = self.margin[0], self.size[0]
        ra, rb = max(r0, m0), min(r1, s0 + m0)  # the rows stored as they are
        for p in [*range(r0, min(ra, r1)), *range(max(rb, r0), r1)]:
            q = source_index(p - m0, s0, self.mode) + m0
            self._put(p, self._piece(q, q + 1, plo, phi), plo)
        if ra < rb and not self._read_into(ra, rb, plo, phi):
            self._put(ra, self._piece(ra, rb, plo, phi), plo)
        self.voxels_read += (
            (r1 - r0) * self.channels * math.prod(y - x for x, y in zip(plo, phi, strict=True))
        )

    def _read_into(self, r0: int, r1: int, lo: Sequence[int], hi: Sequence[int]) -> bool:
        """Stored rows ``[r0, r1)`` of a piece that needs no padding, read by the source
        straight into the slab where it can (:meth:`~tilewise.LazyArray.read_into`)."""
        reader = getattr(self.source, "read_into", None)
        if reader is None or self.buf is None:
            return False
        shape = self.size[1:]
        if any(
            a < m or b > z + m for a, b, m, z in zip(lo, hi, self.margin[1:], shape, strict=True)
        ):
            return False
        r = r0 - self.start
        idx: tuple[int | slice, ...] = (0, slice(None), slice(r, r + r1 - r0))
        idx += tuple(slice(a - q, b - q) for a, b, q in zip(lo, hi, self.lo[1:], strict=True))
        m0 = self.margin[0]
        key: tuple[int | slice, ...] = (self.n, slice(None), slice(r0 - m0, r1 - m0))
        key += tuple(slice(a - m, b - m) for a, b, m in zip(lo, hi, self.margin[1:], strict=True))
        return bool(reader(key, self.buf[idx].numpy()))

    def _piece(self, r0: int, r1: int, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        return padded_read(self.source, self.n, [r0, *lo], [r1, *hi], self.margin, self.mode)

    def _put(self, row: int, data: np.ndarray, lo: Sequence[int]) -> None:
        assert self.buf is not None
        r = row - self.start
        idx: tuple[int | slice, ...] = (0, slice(None), slice(r, r + data.shape[1]))
        idx += tuple(
            slice(p - q, p - q + k) for p, q, k in zip(lo, self.lo[1:], data.shape[2:], strict=True)
        )
        np.copyto(self.buf[idx].numpy(), data, casting="unsafe")

    def _pieces(self) -> list[tuple[list[int], list[int]]]:
        """The box's extent on every axis but the first, cut along the second axis: at the
        source's chunk boundaries, or into reads of about :data:`PIECE_BYTES` for a window's
        depth. A box that reaches into padding on the second axis is read whole there
        (reflection needs the stored voxels next to the edge in the same read)."""
        lo, hi = self.lo[1:], self.hi[1:]
        if not lo:
            return [([], [])]
        m, s = self.margin[1], self.size[1]
        if lo[0] < m or hi[0] > s + m:
            return [(lo, hi)]
        if self.chunks is not None:
            step = self.chunks[1]
        else:
            rows = max(1, min(self.hi[0] - self.lo[0], 128))
            line = max(1, rows * self.plane_bytes // max(1, hi[0] - lo[0]))
            step = max(1, PIECE_BYTES // line)
        cuts = [lo[0], *range((lo[0] - m) // step * step + step + m, hi[0], step), hi[0]]
        return [([x, *lo[1:]], [y, *hi[1:]]) for x, y in itertools.pairwise(cuts)]
