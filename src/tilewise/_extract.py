"""Extract windows from an array: strided views, materialised once, in batches.

Windows that form a regular lattice along every axis are one strided view of the input
(the mirror image of ``Tensor.unfold``), so a batch of thousands of windows is copied with a
handful of ``copy_`` calls instead of one call per window.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from tilewise._alloc import host_empty
from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError, message
from tilewise._geometry import Tiling, as_axis_ints
from tilewise._weights import AxisPlan, contiguous_boxes, index_runs

__all__ = [
    "Indices",
    "as_tensor",
    "axis_plans",
    "check_tiling",
    "copy_box",
    "extract",
    "extract_batches",
    "fill_padding",
    "resolve_indices",
]

Indices = int | slice | range | Sequence[int] | np.ndarray | torch.Tensor | None


@lru_cache(maxsize=64)
def axis_plans(tiling: Tiling) -> tuple[AxisPlan, ...]:
    """Per-axis plans of a tiling (cached: tilings are immutable and hashable)."""
    return tuple(
        AxisPlan(s, w, st, a)
        for s, w, st, a in zip(
            tiling.shape, tiling.window, tiling.step, tiling.axis_starts, strict=True
        )
    )


def as_tensor(x: Any, what: str, *, writable: bool = False) -> tuple[torch.Tensor, bool]:
    """View ``x`` as a torch tensor without copying; also say whether it came from numpy.

    Inputs that torch cannot view (big-endian, negative strides) are copied; a ``writable``
    target (an ``out=`` buffer) must be viewable as it is, or the writes would be lost.
    """
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        arr = x
        viewable = arr.dtype.isnative and all(st >= 0 for st in arr.strides)
        if writable and not (viewable and arr.flags.writeable):
            raise ParameterError(
                message(
                    what,
                    expected="a writable, native-byte-order array with positive strides",
                    received=f"dtype {arr.dtype}, writable={arr.flags.writeable}, "
                    f"strides {arr.strides}",
                    fix="pass a fresh buffer, e.g. np.empty(shape, dtype)",
                )
            )
        if not viewable:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only memmaps: never written (checked above)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            try:
                return torch.from_numpy(arr), True
            except TypeError:
                raise ParameterTypeError(
                    message(
                        what,
                        expected="a numeric array (bool, int, uint8/16/32/64, float or complex)",
                        received=f"numpy dtype {x.dtype}",
                        fix="convert it with x.astype(np.float32)",
                    )
                ) from None
    raise ParameterTypeError(
        message(
            what,
            expected="a torch.Tensor or numpy.ndarray laid out (N, C, *spatial)",
            received=f"{type(x).__name__}",
            fix="convert it with torch.as_tensor(x) or np.asarray(x)",
        )
    )


def check_tiling(tiling: Any) -> Tiling:
    """``tiling`` itself, or a clear error if it is not a :class:`Tiling`."""
    if not isinstance(tiling, Tiling):
        raise ParameterTypeError(
            message(
                "tiling",
                expected="a tilewise.Tiling",
                received=type(tiling).__name__,
                fix="build one with tw.Tiling(x.shape[2:], window=..., step=...)",
            )
        )
    return tiling


def _check_pad_value(tiling: Tiling, dtype: torch.dtype) -> None:
    v = tiling.pad_value
    if tiling.pad != "constant" or dtype.is_floating_point or dtype.is_complex:
        return
    lo, hi = (0, 1) if dtype == torch.bool else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    if not (math.isfinite(v) and v == int(v) and lo <= v <= hi):
        raise ParameterError(
            message(
                "pad_value",
                expected=f"a whole number in [{lo}, {hi}] for {dtype} data",
                received=repr(v),
                fix="choose a pad_value the array's dtype can hold",
            )
        )


def resolve_indices(indices: Indices, total: int) -> tuple[list[tuple[int, int, int]], int]:
    """Turn an index spec into runs ``(position, first, length)`` and the number of windows."""
    if indices is None:
        return ([(0, 0, total)] if total else []), total
    if isinstance(indices, slice):
        try:
            indices = range(*indices.indices(total))
        except TypeError:
            raise ParameterTypeError(
                message(
                    "indices",
                    expected="a slice of ints",
                    received=repr(indices),
                    fix="use e.g. slice(0, 8)",
                )
            ) from None
    if isinstance(indices, range) and indices.step == 1:
        if len(indices) and (indices.start < 0 or indices.stop > total):
            raise ParameterError(
                message(
                    "indices",
                    expected=f"window indices in [0, {total})",
                    received=f"{indices!r}",
                    fix="index windows as n * len(tiling) + window index",
                )
            )
        return ([(0, indices.start, len(indices))] if len(indices) else []), len(indices)
    if isinstance(indices, bool):
        raise ParameterTypeError(
            message("indices", expected="window indices", received="a bool", fix="pass ints")
        )
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    arr = np.asarray(indices)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ParameterTypeError(
            message(
                "indices",
                expected="an int, a range/slice, or a 1-D sequence of ints",
                received=f"array of shape {arr.shape} and dtype {arr.dtype}",
                fix="pass flat window indices as ints",
            )
        )
    if arr.size and (arr.min() < 0 or arr.max() >= total):
        bad = int(arr[(arr < 0) | (arr >= total)][0])
        raise ParameterError(
            message(
                "indices",
                expected=f"window indices in [0, {total})",
                received=f"index {bad}",
                fix="index windows as n * len(tiling) + window index",
            )
        )
    return index_runs(arr.astype(np.int64, copy=False)), int(arr.size)


def _pad_maps(tiling: Tiling) -> list[tuple[int, int, int, np.ndarray | None]]:
    """For each padded axis: (axis, before, after, source index map or None for constant)."""
    maps: list[tuple[int, int, int, np.ndarray | None]] = []
    for ax, ((before, after), size, w) in enumerate(
        zip(tiling.padding, tiling.shape, tiling.window, strict=True)
    ):
        if before == 0 and after == 0:
            continue
        rel = np.arange(w, dtype=np.int64) - before
        if tiling.pad == "constant":
            maps.append((ax, before, after, None))
            continue
        if tiling.pad == "replicate" or size == 1:
            src = np.clip(rel, 0, size - 1)
        else:  # reflect about the edge voxels, repeatedly if the pad is wider than the axis
            period = 2 * (size - 1)
            r = np.mod(rel, period)
            src = np.where(r >= size, period - r, r)
        maps.append((ax, before, after, src + before))
    return maps


def fill_padding(out: torch.Tensor, tiling: Tiling) -> None:
    for ax, before, after, src in _pad_maps(tiling):
        dim = 2 + ax
        w = out.shape[dim]
        for lo, n in ((0, before), (w - after, after)):
            if n == 0:
                continue
            region = out.narrow(dim, lo, n)
            if src is None:
                region.fill_(tiling.pad_value)
            else:
                idx = torch.from_numpy(src[lo : lo + n]).to(out.device)
                region.copy_(out.index_select(dim, idx))


def copy_box(
    x: torch.Tensor,
    tiling: Tiling,
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    block: torch.Tensor,
    origin: tuple[int, ...] | None = None,
) -> None:
    """Copy the windows of grid box ``[lo, hi)`` (first entry: the image ``n``) into ``block``.

    ``block`` is laid out ``(n, *box counts, C, *window)``. ``x`` holds the array, or only a
    region of it whose first voxel is at ``origin`` (``(n, *voxel)``; the region must contain
    every window of the box).
    """
    plans = axis_plans(tiling)
    c = x.shape[1]
    sn, sc, *ss = x.stride()
    org = origin if origin is not None else (0,) * (1 + tiling.ndim)
    segs = [plans[ax].extract_segments(lo[ax + 1], hi[ax + 1]) for ax in range(tiling.ndim)]
    for combo in itertools.product(*segs):
        size: list[int] = [hi[0] - lo[0]]
        stride: list[int] = [sn]
        offset = x.storage_offset() + (lo[0] - org[0]) * sn
        g_idx: list[slice] = [slice(None)]
        l_idx: list[slice] = []
        local_size: list[int] = []
        for ax, (k, cnt, vstart, vstride) in enumerate(combo):
            plan = plans[ax]
            vlo, vhi = int(plan.valid_lo[k]), int(plan.valid_hi[k])
            size.append(cnt)
            stride.append(vstride * ss[ax])
            offset += (vstart + vlo - org[ax + 1]) * ss[ax]
            g_idx.append(slice(k - lo[ax + 1], k - lo[ax + 1] + cnt))
            l_idx.append(slice(vlo, vhi))
            local_size.append(vhi - vlo)
        src = x.as_strided((*size, c, *local_size), (*stride, sc, *ss), offset)
        block[(*g_idx, slice(None), *l_idx)].copy_(src)


def _copy_run(x: torch.Tensor, tiling: Tiling, first: int, length: int, dst: torch.Tensor) -> None:
    """Copy windows ``first .. first + length`` (flat over N and the grid) into ``dst``."""
    pos = 0
    for lo, hi in contiguous_boxes(first, first + length, (x.shape[0], *tiling.counts)):
        box = tuple(b - a for a, b in zip(lo, hi, strict=True))
        count = math.prod(box)
        block = dst[pos : pos + count].view(*box, x.shape[1], *tiling.window)
        pos += count
        copy_box(x, tiling, lo, hi, block)


def extract(
    x: Any, tiling: Tiling, indices: Indices = None, *, out: torch.Tensor | None = None
) -> Any:
    """Cut windows out of ``x`` (laid out ``(N, C, *tiling.shape)``).

    Parameters
    ----------
    x
        A torch tensor (any device and dtype, kept) or a numpy array (a numpy array comes back).
    tiling
        The plan.
    indices
        Which windows: ``None`` for all ``N * len(tiling)`` (n-major, then grid order), an int,
        a range/slice, or a sequence of flat indices ``n * len(tiling) + window``.
    out
        A preallocated ``(len(indices), C, *window)`` buffer to fill (same dtype and device).

    Returns
    -------
    The windows, shape ``(len(indices), C, *tiling.window)``.

    Examples
    --------
    >>> import torch, tilewise as tw
    >>> x = torch.arange(10.0).reshape(1, 1, 10)
    >>> tw.extract(x, tw.Tiling((10,), window=4, step=3))[:, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [3.0, 4.0, 5.0, 6.0], [6.0, 7.0, 8.0, 9.0]]
    """
    check_tiling(tiling)
    t, from_numpy = as_tensor(x, "x")
    tiling.check_array_shape(t.shape, "x")
    _check_pad_value(tiling, t.dtype)
    runs, count = resolve_indices(indices, t.shape[0] * len(tiling))
    shape = (count, t.shape[1], *tiling.window)
    if out is None:
        buf, _ = host_empty(shape, t.dtype, t.device)
    else:
        buf, _ = as_tensor(out, "out", writable=True)
        if tuple(buf.shape) != shape or buf.dtype != t.dtype or buf.device != t.device:
            raise ShapeMismatchError(
                message(
                    "out",
                    expected=f"a buffer of shape {shape}, dtype {t.dtype} on {t.device}",
                    received=f"shape {tuple(buf.shape)}, dtype {buf.dtype} on {buf.device}",
                    fix="allocate it with x.new_empty((len(indices), C, *tiling.window))",
                )
            )
        if not buf.is_contiguous():
            raise ShapeMismatchError(
                message(
                    "out",
                    expected="a contiguous buffer",
                    received="a non-contiguous view",
                    fix="pass a contiguous tensor (or a leading slice of one)",
                )
            )
    for p, first, length in runs:
        _copy_run(t, tiling, first, length, buf[p : p + length])
    if any(b or a for b, a in tiling.padding):
        fill_padding(buf, tiling)
    if out is not None:
        return out
    return buf.numpy() if from_numpy else buf


def extract_batches(
    x: Any, tiling: Tiling, batch_size: int, *, reuse: bool = False
) -> Iterator[tuple[range, Any]]:
    """Yield ``(indices, windows)`` for consecutive batches of ``batch_size`` windows.

    Memory is bounded by one batch. With ``reuse=True`` one buffer is filled again for every
    batch (no allocation, fastest); the windows of a batch are then only valid until the next
    batch is produced.

    >>> import torch, tilewise as tw
    >>> t = tw.Tiling((8, 8), window=4, step=4)
    >>> [(r, tuple(b.shape)) for r, b in tw.extract_batches(torch.zeros(1, 2, 8, 8), t, 3)]
    [(range(0, 3), (3, 2, 4, 4)), (range(3, 4), (1, 2, 4, 4))]
    """
    check_tiling(tiling)
    as_axis_ints(batch_size, 1, "batch_size")
    t, from_numpy = as_tensor(x, "x")
    tiling.check_array_shape(t.shape, "x")
    total = t.shape[0] * len(tiling)
    buf: torch.Tensor | None = None
    batch_size = int(batch_size)
    for start in range(0, total, batch_size):
        r = range(start, min(start + batch_size, total))
        if reuse:
            if buf is None:
                buf = t.new_empty((min(batch_size, total), t.shape[1], *tiling.window))
            view = buf[: len(r)]
            extract(t, tiling, r, out=view)
        else:
            view = extract(t, tiling, r)
        yield r, (view.numpy() if from_numpy else view)
