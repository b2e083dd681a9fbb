"""Pre-normalised blend weights and the per-axis piece plan used by extract and stitch.

Pure numpy, no torch.

Why this works (DESIGN.md, ideas 1 and 2): the windows form a Cartesian product of per-axis
starts and the blend is a product of 1-D profiles, so the stitching normaliser is a product of
1-D normalisers. Dividing each window's profile by the normaliser once, per axis, gives weights
whose sum over all windows is exactly 1 at every voxel: stitching becomes one pass of weighted
adds with no weight or count array and no final division.

A window's normalised profile along an axis depends only on which neighbours overlap it, where
they are relative to it and which of them touch the array edge: its *signature*. Interior windows
share one signature, so only a handful of distinct profiles exist per axis.

Windows whose weighted supports do not overlap can be added in one strided operation. Along an
axis a run of windows with one signature is split into ``m`` interleaved classes, ``m =
ceil(support / step)``; each class is one strided view of the output::

    step 8, support 32 -> m = 4 classes:   k = 0, 4, 8, ...   k = 1, 5, 9, ...   ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from tilewise._errors import CoverageError, message

if TYPE_CHECKING:
    from tilewise._geometry import Tiling
    from tilewise.blend import Blend

MAX_EAGER_COMBOS = 512  # N-D custom blends: weights prepared up front up to this many kinds

__all__ = ["AxisPiece", "AxisPlan", "WeightPlan", "clip_pieces", "contiguous_boxes", "index_runs"]


@dataclass(frozen=True, slots=True)
class AxisPiece:
    """Windows ``first, first + gstride, ...`` (``count`` of them) along one axis.

    Their voxel starts are ``vstart + i * vstride``. ``lo:hi`` is the part of the window that is
    used (padding and zero-weight bands cropped away); ``sig`` names their shared weight profile.
    """

    first: int
    count: int
    gstride: int
    vstart: int
    vstride: int
    lo: int
    hi: int
    sig: int


class AxisPlan:
    """Everything about one tiled axis: starts, signatures, normalised profiles, pieces."""

    def __init__(self, size: int, window: int, step: int, starts: np.ndarray) -> None:
        self.size, self.window, self.step = size, window, step
        self.starts = starts
        self.n = len(starts)
        self.low = starts <= 0
        self.high = starts + window >= size
        self.valid_lo = np.maximum(0, -starts)
        self.valid_hi = np.minimum(window, size - starts)
        # windows 0..n_regular-1 start at k * step exactly; the rest (at most one) stepped back
        regular = starts == np.arange(self.n, dtype=np.int64) * step
        self.n_regular = int(np.argmin(regular)) if not regular.all() else self.n
        if self.starts[0] < 0:  # virtual padding: a single window, never regular
            self.n_regular = 0
        self.sig, self.rep = self._signatures()

    def _signatures(self) -> tuple[np.ndarray, list[int]]:
        keys: dict[tuple[tuple[int, bool, bool], ...], int] = {}
        sig = np.empty(self.n, dtype=np.int64)
        rep: list[int] = []
        s, w = self.starts, self.window
        lo_idx = np.searchsorted(s, s - w, side="right")
        hi_idx = np.searchsorted(s, s + w, side="left")
        for k in range(self.n):
            key = tuple(
                (int(s[j] - s[k]), bool(self.low[j]), bool(self.high[j]))
                for j in range(lo_idx[k], hi_idx[k])
            )
            if key not in keys:
                keys[key] = len(rep)
                rep.append(k)
            sig[k] = keys[key]
        return sig, rep

    def neighbours(self, k: int) -> range:
        """Windows overlapping window ``k`` (including itself)."""
        s, w = self.starts, self.window
        return range(
            int(np.searchsorted(s, s[k] - w, side="right")),
            int(np.searchsorted(s, s[k] + w, side="left")),
        )

    def gaps(self) -> list[tuple[int, int]]:
        """Voxel ranges not covered by any window (step larger than the window)."""
        ends = self.starts + self.window
        return [
            (int(ends[k]), int(self.starts[k + 1]))
            for k in range(self.n - 1)
            if ends[k] < self.starts[k + 1]
        ]

    def extract_segments(self, a: int, b: int) -> list[tuple[int, int, int, int]]:
        """Split grid range ``[a, b)`` into affine runs ``(first, count, vstart, vstride)``."""
        segs: list[tuple[int, int, int, int]] = []
        r_end = min(b, self.n_regular)
        if r_end > a:
            segs.append((a, r_end - a, int(self.starts[a]), self.step))
        segs.extend((k, 1, int(self.starts[k]), self.step) for k in range(max(a, r_end), b))
        return segs


def contiguous_boxes(
    i0: int, i1: int, counts: tuple[int, ...]
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Split the flat C-order range ``[i0, i1)`` of a grid into boxes that are contiguous.

    Each box ``(lo, hi)`` holds windows whose flat indices are consecutive, so a block of
    consecutive patches maps onto it with a plain reshape.

    >>> contiguous_boxes(3, 11, (3, 4))
    [((0, 3), (1, 4)), ((1, 0), (2, 4)), ((2, 0), (3, 3))]
    """
    if i0 >= i1:
        return []
    if len(counts) == 1:
        return [((i0,), (i1,))]
    inner = math.prod(counts[1:])
    a0, r0 = divmod(i0, inner)
    a1, r1 = divmod(i1, inner)
    if a0 == a1:
        return [((a0, *s), (a0 + 1, *e)) for s, e in contiguous_boxes(r0, r1, counts[1:])]
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if r0:
        out += [((a0, *s), (a0 + 1, *e)) for s, e in contiguous_boxes(r0, inner, counts[1:])]
        a0 += 1
    if a1 > a0:
        out.append(((a0,) + (0,) * (len(counts) - 1), (a1, *counts[1:])))
    if r1:
        out += [((a1, *s), (a1 + 1, *e)) for s, e in contiguous_boxes(0, r1, counts[1:])]
    return out


def index_runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """Split an index array into runs of consecutive values: ``(position, first, length)``.

    >>> index_runs(np.array([4, 5, 6, 0, 9, 10]))
    [(0, 4, 3), (3, 0, 1), (4, 9, 2)]
    """
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(indices)]))
    return [(int(s), int(indices[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


class WeightPlan:
    """A blend bound to a tiling: normalised weights and the pieces stitching adds at once.

    Raises :class:`CoverageError` when the plan leaves voxels uncovered or with zero weight.
    """

    def __init__(self, tiling: Tiling, blend: Blend) -> None:
        blend.check(tiling.window)
        self.tiling, self.blend = tiling, blend
        self.axes = tuple(
            AxisPlan(s, w, st, a)
            for s, w, st, a in zip(
                tiling.shape, tiling.window, tiling.step, tiling.axis_starts, strict=True
            )
        )
        for ax, plan in enumerate(self.axes):
            gaps = plan.gaps()
            if gaps:
                lo, hi = gaps[0]
                raise CoverageError(
                    message(
                        "tiling",
                        expected="windows that cover every voxel to stitch",
                        received=f"step {plan.step} > window {plan.window} on axis {ax}: "
                        f"voxels {lo}..{hi - 1} (and {len(gaps) - 1} more gaps) are in no window",
                        fix="use step <= window for stitching (a larger step is only for "
                        "sparse extraction)",
                    )
                )
        if blend.separable:
            self.profiles = tuple(self._axis_profiles(ax) for ax in range(tiling.ndim))
            self.partition = all(self._disjoint_supports(ax) for ax in range(tiling.ndim))
        else:
            self.partition = False
        self._nd_cache: dict[tuple[int, ...], np.ndarray] = {}
        self.pieces = lru_cache(maxsize=4096)(self._pieces)
        combos = math.prod(len(plan.rep) for plan in self.axes)
        if not blend.separable and combos <= MAX_EAGER_COMBOS:
            for sigs in np.ndindex(*(len(plan.rep) for plan in self.axes)):
                self.weight(tuple(int(v) for v in sigs))  # refuse a bad plan before any work

    # -- separable blends ------------------------------------------------------------------------
    def _axis_profiles(self, ax: int) -> list[np.ndarray]:
        plan = self.axes[ax]
        raw = [
            self.blend.edge_profile(plan.window, ax, low=bool(lo), high=bool(hi))
            for lo, hi in zip(plan.low, plan.high, strict=True)
        ]
        for k in range(plan.n):  # virtual padding carries no weight
            raw[k][: plan.valid_lo[k]] = 0.0
            raw[k][plan.valid_hi[k] :] = 0.0
        total = np.zeros(plan.size, dtype=np.float64)
        for k in range(plan.n):
            s = int(plan.starts[k])
            lo, hi = max(0, -s), min(plan.window, plan.size - s)
            total[s + lo : s + hi] += raw[k][lo:hi]
        zero = np.flatnonzero(total <= 0)
        if len(zero):
            gaps = np.split(zero, np.flatnonzero(np.diff(zero) != 1) + 1)
            first = gaps[0]
            where = f"voxel {first[0]}" if len(first) == 1 else f"voxels {first[0]}..{first[-1]}"
            more = (
                f" (the first of {len(gaps)} separate gaps, {len(zero)} voxels in all)"
                if len(gaps) > 1
                else ""
            )
            raise CoverageError(
                message(
                    "blend",
                    expected="a positive total weight at every voxel",
                    received=f"{self.blend!r} gives {where} on axis {ax} zero total weight "
                    f"with window {plan.window}, step {plan.step}{more}",
                    fix="use a smaller step (step <= window - 2*border when border weight is "
                    "0), or a positive border weight"
                    if getattr(self.blend, "weight", None) == 0
                    else "use a smaller step, or weights that are positive where windows meet",
                )
            )
        out = []
        for k in plan.rep:
            s = int(plan.starts[k])
            lo, hi = max(0, -s), min(plan.window, plan.size - s)
            norm = np.ones(plan.window, dtype=np.float64)
            norm[lo:hi] = total[s + lo : s + hi]
            out.append(raw[k] / norm)
        return out

    def support(self, ax: int, sig: int) -> tuple[int, int]:
        if not self.blend.separable:
            k = self.axes[ax].rep[sig]
            return int(self.axes[ax].valid_lo[k]), int(self.axes[ax].valid_hi[k])
        nz = np.flatnonzero(self.profiles[ax][sig] > 0)
        return (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)

    def _disjoint_supports(self, ax: int) -> bool:
        plan = self.axes[ax]
        spans = [self.support(ax, int(plan.sig[k])) for k in range(plan.n)]
        ends = [int(plan.starts[k]) + hi for k, (_, hi) in enumerate(spans)]
        begins = [int(plan.starts[k]) + lo for k, (lo, _) in enumerate(spans)]
        return all(ends[k] <= begins[k + 1] for k in range(plan.n - 1))

    # -- weights ---------------------------------------------------------------------------------
    def weight(self, sigs: tuple[int, ...]) -> np.ndarray:
        """The normalised float64 weight of a window with per-axis signatures ``sigs``."""
        if self.blend.separable:
            w = np.ones((), dtype=np.float64)
            for ax, s in enumerate(sigs):
                w = np.multiply.outer(w, self.profiles[ax][s])
            return w
        if sigs not in self._nd_cache:
            self._nd_cache[sigs] = self._nd_weight(sigs)
        return self._nd_cache[sigs]

    def _nd_weight(self, sigs: tuple[int, ...]) -> np.ndarray:
        """Normalise an N-D (non-separable) weight by summing its overlapping neighbours."""
        reps = [plan.rep[s] for plan, s in zip(self.axes, sigs, strict=True)]
        window = self.tiling.window
        own = self._raw_nd(reps)
        norm = np.zeros(window, dtype=np.float64)
        neighbour_lists = [plan.neighbours(k) for plan, k in zip(self.axes, reps, strict=True)]
        for combo in np.ndindex(*(len(r) for r in neighbour_lists)):
            js = [r[i] for r, i in zip(neighbour_lists, combo, strict=True)]
            wj = self._raw_nd(js)
            dst, src = [], []
            for plan, k, j in zip(self.axes, reps, js, strict=True):
                d = int(plan.starts[j] - plan.starts[k])  # neighbour offset in local coords
                dst.append(slice(max(0, d), min(plan.window, plan.window + d)))
                src.append(slice(max(0, -d), min(plan.window, plan.window - d)))
            norm[tuple(dst)] += wj[tuple(src)]
        valid = own > 0
        if np.any(norm[valid] <= 0):
            raise CoverageError(
                message(
                    "blend",
                    expected="a positive total weight at every voxel",
                    received=f"{self.blend!r} leaves zero total weight near window {reps}",
                    fix="give the custom weights positive values or use edge_aware=True",
                )
            )
        inside = tuple(
            slice(int(p.valid_lo[k]), int(p.valid_hi[k]))
            for p, k in zip(self.axes, reps, strict=True)
        )
        if np.any(norm[inside] <= 0):
            raise CoverageError(
                message(
                    "blend",
                    expected="a positive total weight at every voxel",
                    received=f"{self.blend!r} gives some voxels of window {reps} zero total weight",
                    fix="give the custom weights positive values or use edge_aware=True",
                )
            )
        out = np.zeros(window, dtype=np.float64)
        out[valid] = own[valid] / norm[valid]
        return out

    def _raw_nd(self, grid: list[int]) -> np.ndarray:
        low = [bool(p.low[k]) for p, k in zip(self.axes, grid, strict=True)]
        high = [bool(p.high[k]) for p, k in zip(self.axes, grid, strict=True)]
        w = np.array(self.blend.nd_weight(self.tiling.window, low, high), dtype=np.float64)
        for ax, (p, k) in enumerate(zip(self.axes, grid, strict=True)):
            idx: list[slice] = [slice(None)] * w.ndim
            idx[ax] = slice(0, int(p.valid_lo[k]))
            w[tuple(idx)] = 0.0
            idx[ax] = slice(int(p.valid_hi[k]), None)
            w[tuple(idx)] = 0.0
        return w

    def touching(self, ax: int, r0: int, r1: int) -> np.ndarray:
        """Windows on axis ``ax`` whose used (non-zero-weight) part meets voxels ``[r0, r1)``."""
        plan = self.axes[ax]
        spans = np.array([self.support(ax, int(sg)) for sg in plan.sig]).reshape(-1, 2)
        lo = plan.starts + spans[:, 0]
        hi = plan.starts + spans[:, 1]
        return np.flatnonzero((lo < r1) & (hi > r0) & (spans[:, 1] > spans[:, 0]))

    # -- pieces ----------------------------------------------------------------------------------
    def _pieces(self, ax: int, a: int, b: int) -> tuple[AxisPiece, ...]:
        """Pieces of grid range ``[a, b)`` on axis ``ax`` whose windows can be added at once."""
        plan = self.axes[ax]
        out: list[AxisPiece] = []
        k = a
        while k < b:
            sig = int(plan.sig[k])
            end = k + 1
            regular = k < plan.n_regular
            while end < b and plan.sig[end] == sig and (end < plan.n_regular) == regular:
                end += 1
            lo, hi = self.support(ax, sig)
            if hi > lo:
                if not regular:  # stepped-back or padded windows: one at a time
                    out.extend(
                        AxisPiece(j, 1, 1, int(plan.starts[j]), plan.step, lo, hi, sig)
                        for j in range(k, end)
                    )
                else:
                    m = max(1, math.ceil((hi - lo) / plan.step))
                    for r in range(min(m, end - k)):
                        first = k + r
                        count = len(range(first, end, m))
                        out.append(
                            AxisPiece(
                                first, count, m, int(plan.starts[first]), m * plan.step, lo, hi, sig
                            )
                        )
            k = end
        return tuple(out)


def clip_pieces(pieces: tuple[AxisPiece, ...], r0: int, r1: int) -> tuple[AxisPiece, ...]:
    """Restrict pieces to the voxel range ``[r0, r1)``: windows keep only what lies inside.

    Windows cut by the range get their own piece (their used part differs); the rest keep
    sharing one.

    >>> p = AxisPiece(first=0, count=4, gstride=1, vstart=0, vstride=10, lo=0, hi=10, sig=0)
    >>> [(q.first, q.count, q.lo, q.hi) for q in clip_pieces((p,), 5, 30)]
    [(0, 1, 5, 10), (1, 2, 0, 10)]
    """
    out: list[AxisPiece] = []
    for pc in pieces:
        group: tuple[int, int, int] | None = None  # (first index in piece, lo, hi)
        count = 0
        for i in range(pc.count):
            start = pc.vstart + i * pc.vstride
            lo, hi = max(pc.lo, r0 - start), min(pc.hi, r1 - start)
            if lo >= hi:
                lo = hi = -1
            if group is not None and (lo, hi) == group[1:]:
                count += 1
                continue
            if group is not None and group[1] >= 0:
                out.append(_sub_piece(pc, group, count))
            group, count = (i, lo, hi), 1
        if group is not None and group[1] >= 0:
            out.append(_sub_piece(pc, group, count))
    return tuple(out)


def _sub_piece(pc: AxisPiece, group: tuple[int, int, int], count: int) -> AxisPiece:
    i, lo, hi = group
    return AxisPiece(
        first=pc.first + i * pc.gstride,
        count=count,
        gstride=pc.gstride,
        vstart=pc.vstart + i * pc.vstride,
        vstride=pc.vstride,
        lo=lo,
        hi=hi,
        sig=pc.sig,
    )
