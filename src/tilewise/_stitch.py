"""Stitch window outputs back into one array with pre-normalised blend weights.

Each batch is split into boxes of consecutive windows; along every axis a box splits into pieces
whose weighted supports never overlap (see :mod:`tilewise._weights`). The product of one piece
per axis is one strided view of the output, added with a single ``addcmul_`` (or a plain copy
when the plan's supports tile the array exactly, as with a zero-weight border). There is no
per-window Python loop, no full-size weight or count array, and no final division.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tilewise._alloc import host_empty
from tilewise._errors import (
    MissingWindowError,
    NonFiniteError,
    ParameterError,
    ParameterTypeError,
    ShapeMismatchError,
    message,
)
from tilewise._extract import Indices, as_tensor, check_tiling, resolve_indices
from tilewise._weights import AxisPiece, WeightPlan, clip_pieces, contiguous_boxes
from tilewise.blend import Blend, resolve

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tilewise._geometry import Tiling

__all__ = ["Stitcher", "stitch", "weight_plan"]

_ACC_DTYPES = {torch.float32: torch.float32, torch.float64: torch.float64}
_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


class _WeightCache:
    """Normalised window weights as tensors, shared by every Stitcher of a plan (blocks reuse
    them), least recently used first out beyond a byte budget."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[Any, tuple[torch.Tensor, bool]] = OrderedDict()
        self.nbytes = 0

    def get(
        self, plan: WeightPlan, sigs: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, bool]:
        key = (plan, sigs, dtype, device)  # the plan itself: ids of dead plans get reused
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
            return hit
        used = [slice(*plan.support(ax, sg)) for ax, sg in enumerate(sigs)]
        if plan.blend.separable:  # an outer product of 1-D profiles, made on the device
            profs = [plan.profiles[ax][sg] for ax, sg in enumerate(sigs)]
            is_one = all(bool(np.all(p[u] == 1.0)) for p, u in zip(profs, used, strict=True))
            w = torch.ones((), dtype=dtype, device=device)
            if not is_one:  # a weight of one is never multiplied: no window-sized tensor
                for prof in profs:
                    w = w.unsqueeze(-1) * torch.from_numpy(prof).to(dtype=dtype, device=device)
        else:
            nd = plan.weight(sigs)
            is_one = bool(np.all(nd[tuple(used)] == 1.0))
            w = torch.from_numpy(np.ascontiguousarray(nd)).to(dtype=dtype, device=device)
        self.items[key] = (w, is_one)
        self.nbytes += w.numel() * w.element_size()
        while self.nbytes > self.max_bytes and len(self.items) > 1:
            _, (old, _) = self.items.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
        return w, is_one


_WEIGHTS = _WeightCache()


@lru_cache(maxsize=32)
def weight_plan(tiling: Tiling, blend: Blend) -> WeightPlan:
    """The blend bound to the tiling (cached)."""
    return WeightPlan(tiling, blend)


def _check_region(region: Any, tiling: Tiling) -> tuple[tuple[int, int], ...]:
    if region is None:
        return tuple((0, s) for s in tiling.shape)
    try:
        box = tuple((int(a), int(b)) for a, b in region)
    except (TypeError, ValueError):
        box = ()
    if len(box) != tiling.ndim or any(
        not 0 <= a < b <= s for (a, b), s in zip(box, tiling.shape, strict=True)
    ):
        raise ParameterError(
            message(
                "region",
                expected=f"{tiling.ndim} (start, stop) pairs inside the array {tiling.shape}",
                received=repr(region),
                fix="pass e.g. region=((0, 64), (128, 256)) with 0 <= start < stop <= size",
            )
        )
    return box


def _as_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ParameterError(
            message(
                "device",
                expected="a torch device such as 'cpu' or 'cuda:0'",
                received=repr(device),
                fix="pass device='cpu' or device='cuda'",
            )
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            message(
                "device",
                expected="a device this machine has",
                received=f"{device!r}, but torch sees no CUDA device",
                fix="use device='cpu' (or install a CUDA build of torch on a GPU machine)",
            )
        )
    return dev


def _acc_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in _ACC_DTYPES:
        raise ParameterError(
            message(
                "dtype",
                expected="torch.float32 or torch.float64 (the accumulation and result dtype)",
                received=repr(dtype),
                fix="use dtype=torch.float64 for double precision, or leave it None",
            )
        )
    return _ACC_DTYPES[dtype]


class Stitcher:
    """Accumulates window outputs, in batches and in any order, into one ``(N, C, *shape)`` array.

    Parameters
    ----------
    tiling
        The plan the windows came from.
    n
        Number of images ``N`` (windows are indexed ``n * len(tiling) + window``).
    blend
        Weight profile (default :func:`tilewise.blend.uniform`).
    dtype
        Accumulation/result dtype: float32 (default; also for float16/bfloat16 outputs) or
        float64 (default for float64 outputs).
    device
        Where the result lives (default: the device of the first batch). Window outputs on a
        GPU may be stitched into host memory and vice versa.
    out
        A preallocated ``(N, C, *shape)`` float32/float64 tensor to stitch into; it is
        overwritten. (:func:`stitch` also takes a writable numpy array.)
    region
        Stitch only this box of the array, ``((start, stop), ...)`` per tiled axis: the result
        has the region's shape, only the windows that touch it count (others are accepted and
        ignored), and the values are those of the whole stitched array there (up to the last
        bit: additions may happen in another order). This is how blocks of an out-of-core or
        distributed result are made independently, each always computed the same way.

    Examples
    --------
    >>> import torch, tilewise as tw
    >>> t = tw.Tiling((6,), window=4, step=2)
    >>> s = tw.Stitcher(t)
    >>> s.add(torch.ones(1, 1, 4), [1])      # any order, any batch size
    >>> s.add(torch.ones(1, 1, 4), [0])
    >>> s.result()[0, 0].tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        tiling: Tiling,
        *,
        n: int = 1,
        blend: Blend | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        out: torch.Tensor | None = None,
        region: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        check_tiling(tiling)
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise ParameterTypeError(
                message("n", expected="an int", received=repr(n), fix="pass n=x.shape[0]")
            )
        if n < 1:
            raise ParameterError(
                message("n", expected="a positive int", received=repr(n), fix="pass n=x.shape[0]")
            )
        n = int(n)
        blend = resolve(blend)
        self.tiling, self.n, self.blend = tiling, n, blend
        self.plan = weight_plan(tiling, blend)  # validates coverage now, before any work
        self._dtype = _acc_dtype(dtype)
        self._device = _as_device(device)
        self.region = _check_region(region, tiling)
        self.shape = tuple(b - a for a, b in self.region)
        self._needed = self._needed_windows()
        self._seen = np.zeros(n * len(tiling), dtype=bool)
        self._out: torch.Tensor | None = None
        if out is not None:
            self._adopt(out)

    def _adopt(self, out: torch.Tensor) -> None:
        if not isinstance(out, torch.Tensor):
            raise ParameterTypeError(
                message(
                    "out",
                    expected="a torch.Tensor (tw.stitch also takes a writable numpy array)",
                    received=type(out).__name__,
                    fix="allocate it with torch.empty((N, C, *shape))",
                )
            )
        if tuple(out.shape[2:]) != self.shape or out.ndim != 2 + len(self.shape):
            raise ShapeMismatchError(
                message(
                    "out",
                    expected=f"shape (N, C, {', '.join(map(str, self.shape))})",
                    received=f"shape {tuple(out.shape)}",
                    fix="allocate out with the array's (or the region's) spatial shape",
                )
            )
        if out.shape[0] != self.n or out.dtype not in _ACC_DTYPES:
            raise ShapeMismatchError(
                message(
                    "out",
                    expected=f"N = {self.n} and dtype float32 or float64",
                    received=f"shape {tuple(out.shape)}, dtype {out.dtype}",
                    fix="allocate out with torch.empty((n, C, *tiling.shape), dtype=torch.float32)",
                )
            )
        if self._dtype is not None and out.dtype != self._dtype:
            raise ShapeMismatchError(
                message(
                    "out",
                    expected=f"dtype {self._dtype} (as requested)",
                    received=str(out.dtype),
                    fix="make dtype and out agree",
                )
            )
        if self._device is not None and out.device != self._device:
            raise ShapeMismatchError(
                message(
                    "out",
                    expected=f"a tensor on {self._device}",
                    received=str(out.device),
                    fix="make device and out agree",
                )
            )
        if not self.plan.partition:
            out.zero_()
        self._out = out

    @property
    def added(self) -> int:
        """How many windows have been added."""
        return int(self._seen.sum())

    @property
    def missing(self) -> np.ndarray:
        """Flat indices of the windows (that touch the region) not added yet."""
        return np.flatnonzero(self._needed & ~self._seen)

    @property
    def needed(self) -> np.ndarray:
        """Flat indices of the windows the result depends on (all, unless a region is set)."""
        return np.flatnonzero(self._needed)

    def _needed_windows(self) -> np.ndarray:
        per_axis = [self.plan.touching(ax, a, b) for ax, (a, b) in enumerate(self.region)]
        mask = np.zeros(self.tiling.counts, dtype=bool)
        mask[np.ix_(*per_axis)] = True
        return np.tile(mask.reshape(-1), self.n)

    def add(self, patches: Any, indices: Indices) -> None:
        """Add a batch of window outputs ``(B, C_out, *window)`` for windows ``indices``."""
        p, _ = as_tensor(patches, "patches")
        runs, count = resolve_indices(indices, len(self._seen))
        win = self.tiling.window
        if p.ndim != 2 + len(win) or tuple(p.shape[2:]) != win or p.shape[0] != count:
            raise ShapeMismatchError(
                message(
                    "patches",
                    expected=f"shape ({count}, C, {', '.join(map(str, win))}): one window "
                    "output per index",
                    received=f"shape {tuple(p.shape)} for {count} indices",
                    fix="pass one (C, *window) output per index, in the same order",
                )
            )
        if (
            p.is_complex()
            or p.dtype == torch.bool
            or not (p.dtype.is_floating_point or p.dtype in _INT_DTYPES)
        ):
            raise ParameterTypeError(
                message(
                    "patches",
                    expected="real-valued window outputs (float or integer)",
                    received=str(p.dtype),
                    fix="convert with patches.float()",
                )
            )
        if count == 0:
            return
        flat = self._check_new(runs)
        out = self._output(p)
        if p.shape[1] != out.shape[1]:
            raise ShapeMismatchError(
                message(
                    "patches",
                    expected=f"{out.shape[1]} channels, as in the first batch/out",
                    received=f"{p.shape[1]} channels",
                    fix="every batch must have the same number of output channels",
                )
            )
        if p.device != out.device:
            # non_blocking only towards a GPU: the stream orders the copy before the adds. A
            # GPU -> host copy must have landed before the CPU reads it.
            p = p.to(out.device, non_blocking=out.device.type == "cuda")
        if not p.is_contiguous():
            p = p.contiguous()
        self._weights_for_all(flat)
        for pos, first, length in runs:
            self._add_run(out, p[pos : pos + length], first, length)
            self._seen[first : first + length] = True

    def _check_new(self, runs: list[tuple[int, int, int]]) -> np.ndarray:
        """The flat indices of a batch; raises if one was added before or appears twice."""
        flat = np.concatenate([np.arange(f, f + n) for _, f, n in runs])
        seen = flat[self._seen[flat]]
        if not len(seen):
            uniq, counts = np.unique(flat, return_counts=True)
            seen = uniq[counts > 1]
        if len(seen):
            raise MissingWindowError(
                message(
                    "indices",
                    expected="each window added once",
                    received=f"window {int(seen[0])} added twice ({len(seen)} such windows)",
                    fix="add every window exactly once; start a new Stitcher to redo a run",
                )
            )
        return flat

    def _weights_for_all(self, flat: np.ndarray) -> None:
        """Compute (and so validate) the weights of these windows before anything is written."""
        if self.plan.blend.separable:
            return
        grid = np.unravel_index(flat % len(self.tiling), self.tiling.counts)
        sigs = np.stack([ax.sig[g] for ax, g in zip(self.plan.axes, grid, strict=True)], 1)
        for combo in {tuple(int(v) for v in row) for row in sigs}:
            self.plan.weight(combo)

    def _output(self, p: torch.Tensor) -> torch.Tensor:
        if self._out is None:
            dtype = self._dtype or (torch.float64 if p.dtype == torch.float64 else torch.float32)
            device = self._device or p.device
            shape = (self.n, p.shape[1], *self.shape)
            out, zeroed = host_empty(shape, dtype, device)
            if not (zeroed or self.plan.partition):
                out.zero_()
            self._out = out
        return self._out

    def _weight(self, sigs: tuple[int, ...], out: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The normalised window weight on ``out``'s device, and whether it is 1 wherever used."""
        return _WEIGHTS.get(self.plan, sigs, out.dtype, out.device)

    def _add_run(self, out: torch.Tensor, p: torch.Tensor, first: int, length: int) -> None:
        d = self.tiling.ndim
        c = out.shape[1]
        sn, sc, *ss = out.stride()
        perm = [0, d + 1]
        for ax in range(d):
            perm += [1 + ax, d + 2 + ax]
        pos = 0
        for lo, hi in contiguous_boxes(first, first + length, (self.n, *self.tiling.counts)):
            box = tuple(b - a for a, b in zip(lo, hi, strict=True))
            count = math.prod(box)
            block = p[pos : pos + count].view(*box, c, *self.tiling.window)
            pos += count
            pieces = [self._pieces(ax, lo[ax + 1], hi[ax + 1]) for ax in range(d)]
            for combo in itertools.product(*pieces):
                self._apply(out, block, lo, combo, perm, (sn, sc, ss))

    def _pieces(self, ax: int, a: int, b: int) -> tuple[AxisPiece, ...]:
        pieces = self.plan.pieces(ax, a, b)
        r0, r1 = self.region[ax]
        if (r0, r1) == (0, self.tiling.shape[ax]):
            return pieces
        return clip_pieces(pieces, r0, r1)

    def _apply(
        self,
        out: torch.Tensor,
        block: torch.Tensor,
        lo: tuple[int, ...],
        combo: tuple[AxisPiece, ...],
        perm: list[int],
        strides: tuple[int, int, list[int]],
    ) -> None:
        sn, sc, ss = strides
        size = [block.shape[0], out.shape[1]]
        stride = [sn, sc]
        offset = out.storage_offset() + lo[0] * sn
        idx: list[slice] = [slice(None)]
        local: list[slice] = []
        for ax, pc in enumerate(combo):
            a = pc.first - lo[ax + 1]
            idx.append(slice(a, a + (pc.count - 1) * pc.gstride + 1, pc.gstride))
            local.append(slice(pc.lo, pc.hi))
            size += [pc.count, pc.hi - pc.lo]
            stride += [pc.vstride * ss[ax], ss[ax]]
            offset += (pc.vstart + pc.lo - self.region[ax][0]) * ss[ax]
        view = out.as_strided(size, stride, offset)
        src = block[(*idx, slice(None), *local)].permute(perm)
        w, is_one = self._weight(tuple(pc.sig for pc in combo), out)
        if is_one:
            if self.plan.partition:
                view.copy_(src)
            else:
                view.add_(src)
            return
        crop = tuple(slice(pc.lo, pc.hi) for pc in combo)
        wv = w[crop][
            (None, None, *itertools.chain.from_iterable((None, slice(None)) for _ in combo))
        ]
        if self.plan.partition:
            torch.mul(src, wv, out=view)
        else:
            view.addcmul_(src, wv)

    def result(self, *, check_finite: bool = True) -> torch.Tensor:
        """The stitched ``(N, C, *shape)`` array; raises if a window is missing or non-finite.

        The finite check is one reduction over the result. A zero-weight border band
        (``border(b, weight=0)``), virtual padding and the zero ends of a custom 1-D profile are
        never read, so NaN/Inf there cannot reach the result and is not reported; any other
        NaN/Inf output does reach it (a zero weight inside a custom profile still multiplies,
        and 0 * NaN is NaN) and raises :class:`~tilewise.NonFiniteError`. A Stitcher keeps only
        the weighted sums, so the error names the first non-finite voxel and the *candidate*
        windows that contribute to it; :func:`tilewise.stitch`, which holds every output,
        names the window(s) whose output is NaN/Inf there.
        """
        missing = self.missing
        if len(missing) or self._out is None:
            shown = ", ".join(str(int(i)) for i in missing[:5])
            raise MissingWindowError(
                message(
                    "stitch",
                    expected=f"all {len(self._seen)} windows added",
                    received=f"{len(missing)} missing (windows {shown}"
                    f"{', ...' if len(missing) > 5 else ''})",
                    fix="add the missing windows before asking for the result",
                )
            )
        out = self._out
        if check_finite:
            self._check_finite(out)
        return out

    def _check_finite(self, out: torch.Tensor, patches: torch.Tensor | None = None) -> None:
        """Raise NonFiniteError if ``out`` holds NaN/Inf: one reduction over the result."""
        if out.numel():
            lo, hi = torch.aminmax(out)
            if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
                self._raise_non_finite(out, patches)

    def _contributors(self, voxel: tuple[int, ...]) -> list[int]:
        """Windows (per image) whose used, non-zero-weight part contains ``voxel``."""
        found = []
        for i in self.tiling.windows_containing(voxel):
            grid = self.tiling.grid_index(i)
            start = self.tiling[i].start
            used = (
                self.plan.support(ax, int(self.plan.axes[ax].sig[g])) for ax, g in enumerate(grid)
            )
            if all(lo <= v - a < hi for (lo, hi), v, a in zip(used, voxel, start, strict=True)):
                found.append(i)
        return found

    def _raise_non_finite(self, out: torch.Tensor, patches: torch.Tensor | None = None) -> None:
        """Error path only: name the first non-finite voxel and where it comes from.

        With ``patches`` (all window outputs, in window order) the culprits are found by
        reading the candidate windows' outputs at that voxel; without, the candidates are
        listed as such.
        """
        bad_mask = ~torch.isfinite(out)
        count = int(bad_mask.sum())
        bad = torch.nonzero(bad_mask)[0].tolist()
        n, c = bad[0], bad[1]
        voxel = tuple(v + a for v, (a, _) in zip(bad[2:], self.region, strict=True))
        per_image = len(self.tiling)
        where = (
            f"{out[tuple(bad)].item()} at (n={n}, c={c}, voxel={voxel}) ({count} non-finite "
            f"value{'s' if count > 1 else ''} in the result, {per_image} windows per image)"
        )

        def named(i: int, value: float | None = None) -> str:
            got = "" if value is None else f" = {value}"
            if value is not None and math.isfinite(value):
                got += f" (too large for {out.dtype})"
            return f"window {n * per_image + i} (start {self.tiling[i].start}){got}"

        def listed(names: list[str], most: int = 8) -> str:
            extra = f", ... ({len(names)} in all)" if len(names) > most else ""
            return ", ".join(names[:most]) + extra

        candidates = self._contributors(voxel)
        fix = "check the model on those windows (inputs, normalisation, AMP overflow)"
        if patches is None:
            received = (
                f"{where}; candidate windows (the ones that contribute to that voxel; a "
                "Stitcher keeps only sums, so it cannot tell which of them is non-finite): "
                + listed([named(i) for i in candidates])
            )
        else:
            culprits = []
            for i in candidates:
                local = tuple(v - a for v, a in zip(voxel, self.tiling[i].start, strict=True))
                value = patches[(n * per_image + i, c, *local)]
                if not bool(torch.isfinite(value.to(out.dtype))):
                    culprits.append(named(i, value.item()))
            if culprits:
                received = f"{where}, which comes from " + listed(culprits)
            else:
                received = (
                    f"{where}, but the outputs of the windows there ("
                    + listed([named(i) for i in candidates])
                    + f") are finite: their weighted sum overflowed {out.dtype}"
                )
                fix = "stitch with dtype=torch.float64, or scale the outputs down"
        raise NonFiniteError(
            message("window outputs", expected="finite values", received=received, fix=fix)
        )


def stitch(
    patches: Any,
    tiling: Tiling,
    blend: Blend | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    out: torch.Tensor | np.ndarray | None = None,
) -> Any:
    """Stitch all window outputs ``(N * len(tiling), C, *window)``, in window order, in one call.

    Parameters
    ----------
    patches
        Every window output, a torch tensor (any device) or a numpy array.
    tiling
        The plan the windows came from.
    blend
        Weight profile (default :func:`tilewise.blend.uniform`).
    dtype, device
        As for :class:`Stitcher`.
    out
        A preallocated ``(N, C, *tiling.shape)`` float32/float64 buffer to stitch into: a torch
        tensor or a writable numpy array (viewed, not copied). It is overwritten and returned.

    Returns
    -------
    ``(N, C, *tiling.shape)``: ``out`` if given, else numpy for numpy patches, else a tensor.

    Raises
    ------
    NonFiniteError
        If the result holds NaN/Inf (checked with one reduction over the result). The message
        names the window(s) whose output is NaN/Inf at the first such voxel, with their start.
        Values in a zero-weight border band or in virtual padding never reach the result and
        are not reported (see :meth:`Stitcher.result`).

    Examples
    --------
    >>> import torch, tilewise as tw
    >>> x = torch.rand(2, 1, 50, 40)
    >>> t = tw.Tiling((50, 40), window=16, step=12)
    >>> y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.hann())
    >>> torch.allclose(y, x)
    True
    >>> import numpy as np
    >>> buf = np.empty((2, 1, 50, 40), np.float32)
    >>> tw.stitch(tw.extract(x.numpy(), t), t, out=buf) is buf
    True
    """
    check_tiling(tiling)
    p, from_numpy = as_tensor(patches, "patches")
    total = p.shape[0] if p.ndim else 0
    if p.ndim == 0 or total == 0 or total % len(tiling):
        raise ShapeMismatchError(
            message(
                "patches",
                expected=f"N * {len(tiling)} windows (the tiling's window count per image)",
                received=f"{total} windows",
                fix="pass every window output in order, or use Stitcher to add them in batches",
            )
        )
    target = as_tensor(out, "out", writable=True)[0] if isinstance(out, np.ndarray) else out
    n = total // len(tiling)
    st = Stitcher(tiling, n=n, blend=blend, dtype=dtype, device=device, out=target)
    st.add(p, range(total))
    res = st.result(check_finite=False)
    st._check_finite(res, p)  # all outputs at hand: name the culprit windows, not candidates
    if isinstance(out, np.ndarray):
        return out
    return res.numpy() if from_numpy and res.device.type == "cpu" else res
