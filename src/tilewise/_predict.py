"""``predict``: run a network over an array window by window and stitch the outputs — in memory
or block by block into a zarr store, resumable, with bounded memory.

The output is cut into blocks aligned with its chunks, and the blocks into rows: those that share
their box on every axis but the first. A row is swept along the first axis: its windows are run
once each, in fixed batches, and added to the blocks they reach (a :class:`~tilewise.Stitcher`
restricted to each block); a block is written once every window reaching it is in, then
forgotten, so only the blocks a window spans are open at a time. Windows that reach two rows are
run by both. A row cuts its windows into batches in one fixed way and adds them in one fixed
order, so a block's values never depend on which blocks ran before it: a rerun after an
interruption skips finished blocks and gives a bit-identical result, and rows can run on
different machines with the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import torch

from tilewise._alloc import host_empty, release_freed_memory, reusing_freed_memory
from tilewise._arrays import is_array_like, shape_of
from tilewise._errors import (
    NonFiniteError,
    ParameterError,
    ParameterTypeError,
    ShapeMismatchError,
    message,
)
from tilewise._extract import check_tiling, copy_box, fill_padding
from tilewise._geometry import Tiling, as_axis_ints
from tilewise._models import resolve_model
from tilewise._sink import (
    Block,
    Journal,
    blocks,
    check_writable,
    convert_block,
    is_url,
    rows,
    stored_channels,
    stored_dtype,
)
from tilewise._slab import SLAB_BYTES, Slab, padded_read
from tilewise._stitch import Stitcher, _as_device, weight_plan
from tilewise._weights import contiguous_boxes
from tilewise.blend import Blend, resolve, uniform

__all__ = ["MemoryPlan", "Prediction", "plan", "predict"]

NonFinite = Literal["raise", "drop"]
ROW_BYTES = 128 << 20  # float32 accumulators a row of blocks keeps open (default blocks)


# -- output geometry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Head:
    """What one model output looks like relative to its input window."""

    name: str | None
    channels: int
    scale: tuple[Fraction, ...]
    crop: tuple[int, ...]


def _heads(y: Any) -> list[tuple[str | None, torch.Tensor]]:
    if isinstance(y, torch.Tensor):
        return [(None, y)]
    if isinstance(y, Mapping):
        return [(str(k), v) for k, v in y.items()]
    if isinstance(y, list | tuple):
        return [(str(i), v) for i, v in enumerate(y)]
    raise ParameterTypeError(
        message(
            "model output",
            expected="a tensor, or a tuple/list/dict of tensors (several heads)",
            received=type(y).__name__,
            fix="return torch tensors laid out (B, C_out, *window)",
        )
    )


Geometry = Literal["auto", "crop", "scale"]


def _check_output(name: str | None, y: Any, window: Sequence[int], batch: int) -> None:
    if not isinstance(y, torch.Tensor) or y.ndim != 2 + len(window) or y.shape[0] != batch:
        raise ShapeMismatchError(
            message(
                f"model output {name or ''}".strip(),
                expected=f"a tensor ({batch}, C_out, *spatial) for a batch of {batch} windows",
                received=f"{type(y).__name__} of shape {tuple(getattr(y, 'shape', ()))}",
                fix="keep the batch axis first and the spatial axes last",
            )
        )


def _options(o: int, w: int, geometry: str) -> list[tuple[str, Fraction | int]]:
    """What an output size ``o`` for a window ``w`` can mean: same, a crop, or a scale."""
    if o == w:
        return [("same", 0)]
    opts: list[tuple[str, Fraction | int]] = []
    if o < w and (w - o) % 2 == 0 and geometry != "scale":
        opts.append(("crop", (w - o) // 2))
    if ((o > w and o % w == 0) or (o < w and w % o == 0)) and geometry != "crop":
        opts.append(("scale", Fraction(o, w)))
    return opts


def _geometry_error(name: str | None, ax: int, w: int, o: int, why: str) -> ShapeMismatchError:
    return ShapeMismatchError(
        message(
            f"model output {name or ''}".strip(),
            expected=f"on axis {ax} the window size {w}, a centred crop of it (w - 2m, valid "
            "convolutions) or an integer up/down-scale of it",
            received=f"size {o}{why}",
            fix="make the network keep, crop symmetrically or scale the window (crop and "
            "scale together are not supported); pass geometry='crop' or 'scale' if the "
            "network only runs at one window size",
        )
    )


@dataclass(frozen=True)
class _Layout:
    """Where input windows are read and where each head's outputs go."""

    in_tiling: Tiling  # over the (virtually margin-padded) input
    margin: tuple[int, ...]
    heads: tuple[_Head, ...]
    out_tilings: tuple[Tiling, ...]

    @property
    def multi(self) -> bool:
        return len(self.heads) > 1 or self.heads[0].name is not None


def _layout(tiling: Tiling, heads: list[_Head]) -> _Layout:
    crops = {h.crop for h in heads}
    if len(crops) > 1:
        raise ShapeMismatchError(
            message(
                "model outputs",
                expected="every head cropped by the same margin",
                received=f"crops {[h.crop for h in heads]}",
                fix="crop all heads alike (or pad them to the same size inside the model)",
            )
        )
    margin = heads[0].crop
    padded = any(b or a for b, a in tiling.padding)
    if padded and any(f != 1 for h in heads for f in h.scale):
        raise ParameterError(
            message(
                "tiling",
                expected="no virtual padding when the model scales its output",
                received=f"pad={tiling.pad!r} (axes shorter than the window) with scales "
                f"{[h.scale for h in heads]}",
                fix="use a window no larger than the array",
            )
        )
    if any(margin):
        if padded:
            raise ParameterError(
                message(
                    "tiling",
                    expected="no virtual padding when the model crops its output",
                    received=f"pad={tiling.pad!r} with a crop of {margin}",
                    fix="use a window no larger than the array",
                )
            )
        shape = tuple(s + 2 * m for s, m in zip(tiling.shape, margin, strict=True))
        in_tiling = Tiling(shape, window=tiling.window, step=tiling.step)
    else:
        in_tiling = tiling
    outs = []
    for h in heads:
        if any(m and f != 1 for m, f in zip(h.crop, h.scale, strict=True)):
            raise ShapeMismatchError(
                message(
                    "model output",
                    expected="either a crop or a scale per axis",
                    received=f"crop {h.crop} and scale {h.scale}",
                    fix="crop or scale, not both",
                )
            )
        sizes = []
        for ax, (s, w, st, m, f) in enumerate(
            zip(tiling.shape, tiling.window, tiling.step, margin, h.scale, strict=True)
        ):
            vals = (Fraction(s) * f, Fraction(w - 2 * m) * f, Fraction(st) * f)
            if any(v.denominator != 1 for v in vals):
                raise ShapeMismatchError(
                    message(
                        "model output",
                        expected=f"array, window and step on axis {ax} divisible by the "
                        f"downscale factor {f.denominator}",
                        received=f"size {s}, window {w}, step {st}",
                        fix="choose sizes that are multiples of the model's downscale factor",
                    )
                )
            sizes.append(tuple(int(v) for v in vals))
        out = Tiling(
            tuple(v[0] for v in sizes),
            window=tuple(v[1] for v in sizes),
            step=tuple(v[2] for v in sizes),
            pad=tiling.pad,
            pad_value=tiling.pad_value,
        )
        if out.counts != in_tiling.counts:  # pragma: no cover - follows from the arithmetic
            raise ShapeMismatchError("output windows do not match input windows")
        outs.append(out)
    return _Layout(in_tiling, margin, tuple(heads), tuple(outs))


# -- reading ---------------------------------------------------------------------------------------
def _as_source(source: Any, tiling: Tiling) -> Any:
    if isinstance(source, str | os.PathLike):
        from tilewise._io import open_array  # optional readers, loaded on use

        try:
            return open_array(source)
        except ParameterError as err:
            if "axes" not in str(err):
                raise
            # unnamed axes: read them as (N, C, *tiled axes), the layout predict works in
            return open_array(source, axes="nc" + "tzyx"[-tiling.ndim :])
    if isinstance(source, torch.Tensor | np.ndarray) or is_array_like(source):
        return source
    raise ParameterTypeError(
        message(
            "source",
            expected="a tensor, numpy array, zarr/h5py array, or a path/URL to open",
            received=type(source).__name__,
            fix="pass the array or its path",
        )
    )


# -- progress --------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr: windows, throughput, ETA. Silent when not a terminal."""

    def __init__(self, total: int, enabled: bool | None, label: str = "predict") -> None:
        self.total, self.done, self.label = total, 0, label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, k: int) -> None:
        self.done += k
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            frac = self.done / max(self.total, 1)
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            sys.stderr.write(
                f"\r{self.label} [{bar}] {self.done}/{self.total} windows "
                f"{rate:6.1f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}"
            )
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """A line of its own above the bar."""
        if self.enabled:
            sys.stderr.write(f"\r{text}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- the runner ------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """Where the result went, and what it cost (returned by ``predict(..., return_info=True)``)."""

    output: Any
    windows: int
    windows_run: int
    blocks: int
    blocks_skipped: int
    seconds: float
    seconds_model: float
    #: time the model waited for its next input batch (reading and cutting windows)
    seconds_waiting: float = 0.0


Sink = Callable[[int, np.ndarray, list[tuple[str | None, torch.Tensor]], np.ndarray | None], None]


@dataclass(frozen=True)
class _Sweep:
    """A box of the grid of image ``n`` to run, whose batches go to ``sink``, ``wanted`` ones
    only (all by default)."""

    n: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    sink: Sink
    wanted: Callable[[int], bool] | None = None


class _Runner:
    def __init__(
        self,
        model: Callable[..., Any],
        source: Any,
        tiling: Tiling,
        blend: Blend,
        batch_size: int,
        device: torch.device,
        amp: torch.dtype | None,
        tta: Sequence[tuple[int, ...]],
        on_nonfinite: NonFinite,
        pad_mode: str,
        geometry: str = "auto",
    ) -> None:
        self.model, self.source, self.tiling, self.blend = model, source, tiling, blend
        self.geometry = geometry
        self.batch_size, self.device, self.amp, self.tta = batch_size, device, amp, tta
        self.on_nonfinite, self.pad_mode = on_nonfinite, pad_mode
        self.shape = shape_of(source, "source")
        self.seconds_model = 0.0
        self.seconds_waiting = 0.0
        self.windows_run = 0
        self.pin = device.type == "cuda"
        self._spare: list[list[torch.Tensor]] = []  # batch buffer pairs not lent out
        self._spare_lock = threading.Lock()
        self.layout = self._probe()

    def accumulate_on(self, nbytes: int) -> torch.device:
        """Accumulate on the model's GPU when the result takes under a quarter of its memory.

        The choice depends only on sizes, never on free memory at run time, so a resumed or
        distributed run makes every block the same way (bit-identical results).
        """
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            if nbytes * 4 < total:
                return self.device
        return torch.device("cpu")

    def _call(self, x: torch.Tensor) -> list[tuple[str | None, torch.Tensor]]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            ctx = (
                torch.autocast(device_type=self.device.type, dtype=self.amp)
                if self.amp is not None
                else _null()
            )
            with ctx:
                outs: list[tuple[str | None, torch.Tensor]] | None = None
                for axes in self.tta:
                    dims = [2 + a for a in axes]
                    # a model may change its input in place: every pass gets its own copy
                    xi = torch.flip(x, dims) if dims else (x.clone() if len(self.tta) > 1 else x)
                    heads = _heads(self.model(xi))
                    heads = [(k, torch.flip(v, dims) if dims else v) for k, v in heads]
                    heads = [(k, v.float()) for k, v in heads]
                    if outs is None:
                        outs = heads
                    else:
                        outs = [(k, a + b) for (k, a), (_, b) in zip(outs, heads, strict=True)]
                if outs is None:  # pragma: no cover - tta always has the identity
                    raise ParameterError("no test-time augmentation")
                if len(self.tta) > 1:
                    outs = [(k, v / len(self.tta)) for k, v in outs]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds_model += time.perf_counter() - t0
        return outs

    def _input_dtype(self) -> torch.dtype:
        """The dtype batches reach the model in: the source's float type, else float32."""
        dt = getattr(self.source, "dtype", None)
        if isinstance(dt, torch.dtype):
            return dt if dt.is_floating_point else torch.float32
        name = str(np.dtype(dt)) if dt is not None else "float32"
        return {"float16": torch.float16, "float64": torch.float64}.get(name, torch.float32)

    def _probe(self) -> _Layout:
        """Forward passes on zero windows tell the output channels, heads and geometry.

        One window size is enough unless an output is smaller than the window by a size that
        could be a crop or a downscale; then a second, larger window tells them apart.
        """
        c, w = self.shape[1], self.tiling.window
        dtype = self._input_dtype()
        first = self._call(torch.zeros((1, c, *w), device=self.device, dtype=dtype))
        if not first:
            raise ShapeMismatchError(
                message(
                    "model output",
                    expected="at least one output tensor",
                    received="an empty tuple/list/dict",
                    fix="return the network's output",
                )
            )
        options = []
        for name, y in first:
            _check_output(name, y, w, 1)
            per_axis = []
            for ax, (o, wa) in enumerate(zip(y.shape[2:], w, strict=True)):
                opts = _options(int(o), wa, self.geometry)
                if not opts:
                    raise _geometry_error(name, ax, wa, int(o), "")
                per_axis.append(opts)
            options.append(per_axis)
        grow = [0] * len(w)
        for per_axis in options:
            for ax, opts in enumerate(per_axis):
                if len(opts) > 1:  # crop m or downscale by w/o: a larger window tells
                    step = 2 * int(1 / opts[1][1])
                    grow[ax] = math.lcm(grow[ax] or step, step)
        second = None
        if any(grow):
            w2 = tuple(a + g for a, g in zip(w, grow, strict=True))
            try:
                second = self._call(torch.zeros((1, c, *w2), device=self.device, dtype=dtype))
            except Exception as err:  # the network may accept only one window size
                raise ShapeMismatchError(
                    message(
                        "model output",
                        expected="a network that also runs on a slightly larger window, to "
                        "tell a crop from a downscale",
                        received=f"an error on window {w2}: {str(err).splitlines()[0][:200]}",
                        fix="pass geometry='crop' (valid convolutions) or geometry='scale'",
                    )
                ) from None
        heads = []
        for i, ((name, y), per_axis) in enumerate(zip(first, options, strict=True)):
            scale, crop = [], []
            for ax, opts in enumerate(per_axis):
                kind, val = opts[0]
                if len(opts) > 1 and second is not None:
                    o, o2 = int(y.shape[2 + ax]), int(second[i][1].shape[2 + ax])
                    if o2 - o == grow[ax]:
                        kind, val = opts[0]
                    elif o2 * w[ax] == o * (w[ax] + grow[ax]):
                        kind, val = opts[1]
                    else:
                        raise _geometry_error(
                            name, ax, w[ax], o, f" (and {o2} for a window {w[ax] + grow[ax]})"
                        )
                scale.append(Fraction(val) if kind == "scale" else Fraction(1))
                crop.append(int(val) if kind == "crop" else 0)
            heads.append(_Head(name, int(y.shape[1]), tuple(scale), tuple(crop)))
        return _layout(self.tiling, heads)

    # -- batches of windows ------------------------------------------------------------------
    def _region(self, n: int, lo: list[int], hi: list[int]) -> tuple[torch.Tensor, list[int]]:
        """Input voxels ``[lo, hi)`` (padded coordinates) of image ``n`` as a float tensor."""
        t = self.layout.in_tiling
        if any(b or a for b, a in t.padding):  # windows longer than the array: whole axes
            lo = [max(0, v) for v in lo]
            hi = [min(s, v) for s, v in zip(t.shape, hi, strict=True)]
        region = padded_read(self.source, n, lo, hi, self.layout.margin, self.pad_mode)
        x = torch.from_numpy(np.require(region, requirements=["C", "W"]))[None]
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            x = x.float()
        return x, lo

    @contextlib.contextmanager
    def _buffers(self) -> Iterator[list[torch.Tensor]]:
        """Two batch buffers (pinned when the model is on a GPU) lent to one sweep. Sweeps may
        run at once in one process (dask workers with several threads, or the rerun that names
        a non-finite window while a sweep's reader is still busy): each gets its own pair, and
        returned pairs are lent again rather than allocated anew."""
        with self._spare_lock:
            bufs = self._spare.pop() if self._spare else None
        if bufs is None:
            shape = (self.batch_size, self.shape[1], *self.layout.in_tiling.window)
            dtype = self._input_dtype()
            if self.pin:
                bufs = [torch.empty(shape, dtype=dtype, pin_memory=True) for _ in range(2)]
            else:  # mapped apart from the heap, where long-lived blocks fragment it
                bufs = [host_empty(shape, dtype)[0] for _ in range(2)]
        try:
            yield bufs
        finally:
            with self._spare_lock:
                self._spare.append(bufs)

    def batches(
        self,
        n: int,
        box_lo: tuple[int, ...],
        box_hi: tuple[int, ...],
        wanted: Callable[[int], bool] | None,
        bufs: list[torch.Tensor],
        turn: list[int] | None = None,
    ) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
        """Input batches ``(j, flat indices, windows)`` of grid box ``[box_lo, box_hi)`` of image
        ``n``: ``batch_size`` windows at a time in C order, batch ``j`` only if ``wanted(j)``.

        In-memory sources are viewed whole. Lazy ones (zarr, HDF5, memmaps, files) are read
        through a :class:`~tilewise._slab.Slab`: the box's extent on every axis but the first,
        a line of windows deep on the first, moving forward with the sweep and reading each
        stored chunk once. (With virtual padding, one region per line of windows on the last
        axis instead.) Two window buffers take turns (``turn`` counts the batches handed out
        across the sweeps that share them): a batch must be done with before the one after
        next is asked for.
        """
        turn = [0] if turn is None else turn
        t = self.layout.in_tiling
        starts = t.axis_starts
        src = self.source
        in_memory = isinstance(src, torch.Tensor) or (
            isinstance(src, np.ndarray) and not isinstance(src, np.memmap)
        )
        box_v_lo = [int(starts[ax][box_lo[ax]]) for ax in range(t.ndim)]
        box_v_hi = [int(starts[ax][box_hi[ax] - 1]) + t.window[ax] for ax in range(t.ndim)]
        whole = self._region(n, box_v_lo, box_v_hi) if in_memory else None
        # with virtual padding: (tensor, origin, lo, hi) of the last line read
        region: tuple[torch.Tensor, list[int], list[int], list[int]] | None = None
        slab: Slab | None = None
        if not in_memory and not any(b or a for b, a in t.padding):
            slab = Slab(
                src, n, box_v_lo, box_v_hi, self.layout.margin, self.pad_mode, self._input_dtype()
            )
        counts = tuple(b - a for a, b in zip(box_lo, box_hi, strict=True))
        grid = (1, *counts)
        total = math.prod(counts)
        for j, start in enumerate(range(0, total, self.batch_size)):
            if wanted is not None and not wanted(j):
                continue
            stop = min(start + self.batch_size, total)
            boxes = []
            for blo, bhi in contiguous_boxes(start, stop, grid):
                glo = tuple(a + b for a, b in zip((0, *box_lo), blo, strict=True))
                ghi = tuple(a + b for a, b in zip((0, *box_lo), bhi, strict=True))
                boxes.append((glo, ghi))
            buf = bufs[turn[0] % 2][: stop - start]
            turn[0] += 1
            flat: list[np.ndarray] = []
            pos = 0
            for glo, ghi in boxes:
                if whole is not None:
                    x, origin = whole
                elif slab is not None:
                    a, b = int(starts[0][glo[1]]), int(starts[0][ghi[1] - 1]) + t.window[0]
                    if t.ndim > 1:  # the slab reads only the part of the line the box reaches
                        lo1 = int(starts[1][glo[2]])
                        x, origin = slab.rows(a, b, lo1, int(starts[1][ghi[2] - 1]) + t.window[1])
                    else:
                        x, origin = slab.rows(a, b)
                else:
                    # the box's extent on every axis but the last, the whole box's on the
                    # last: the next boxes of the same row of windows reuse it
                    lo = [int(starts[ax][glo[ax + 1]]) for ax in range(t.ndim - 1)]
                    hi = [
                        int(starts[ax][ghi[ax + 1] - 1]) + t.window[ax] for ax in range(t.ndim - 1)
                    ]
                    lo.append(box_v_lo[-1])
                    hi.append(box_v_hi[-1])
                    if region is None or any(
                        a < c or b > d
                        for a, b, c, d in zip(lo, hi, region[2], region[3], strict=True)
                    ):
                        del region  # free the old region before reading the next
                        region = (*self._region(n, lo, hi), lo, hi)
                    x, origin = region[0], region[1]
                size = tuple(b - a for a, b in zip(glo, ghi, strict=True))
                count = math.prod(size)
                block = buf[pos : pos + count].view(*size, x.shape[1], *t.window)
                copy_box(x, t, glo, ghi, block, origin=(0, *origin))
                pos += count
                grids = np.meshgrid(
                    *[np.arange(a, b) for a, b in zip(glo[1:], ghi[1:], strict=True)],
                    indexing="ij",
                )
                flat.append(np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), t.counts))
            if any(b or a for b, a in t.padding):
                fill_padding(buf, t)
            yield j, np.concatenate(flat), buf

    def run_box(
        self,
        n: int,
        box_lo: tuple[int, ...],
        box_hi: tuple[int, ...],
        sink: Sink,
        progress: _Progress,
        wanted: Callable[[int], bool] | None = None,
        check: bool | None = None,
    ) -> None:
        """Run the model on the batches of grid box ``[box_lo, box_hi)`` of image ``n`` and hand
        each batch's outputs to ``sink`` (see :meth:`run_sweeps`)."""
        self.run_sweeps([_Sweep(n, box_lo, box_hi, sink, wanted)], progress, check)

    def run_sweeps(
        self, sweeps: Iterable[_Sweep], progress: _Progress, check: bool | None = None
    ) -> None:
        """Run the model on the batches of every sweep, one sweep after another, and hand each
        batch's outputs to its sweep's ``sink(j, flat indices, outputs, non-finite windows)``.

        A reader thread prepares the next batch while the model runs on this one, across the
        end of a sweep too: the next sweep's first batch is read while the last one's runs.
        ``sweeps`` is consumed as the reader reaches it. Outputs are checked for NaN/Inf
        batch by batch (``check``; default: only with ``on_nonfinite='drop'``, which needs to
        know the windows to leave out). Otherwise one reduction over each finished result
        finds them, and :meth:`finish` then reruns the windows that feed the first bad voxel
        to name the culprit.
        """
        if check is None:
            check = self.on_nonfinite == "drop"
        per = len(self.layout.in_tiling)
        with self._buffers() as bufs, ThreadPoolExecutor(max_workers=1) as pool:
            turn = [0]  # one alternation of the two buffers over all the sweeps

            def chained() -> Generator[tuple[_Sweep, tuple[int, np.ndarray, torch.Tensor]]]:
                for sw in sweeps:
                    for item in self.batches(sw.n, sw.lo, sw.hi, sw.wanted, bufs, turn):
                        yield sw, item

            it = chained()
            nxt: Future[Any] | None = pool.submit(_next, it)
            try:
                while nxt is not None:
                    t0 = time.perf_counter()
                    got = nxt.result()
                    self.seconds_waiting += time.perf_counter() - t0
                    if got is None:
                        break
                    nxt = pool.submit(_next, it)  # read the next batch while the model runs
                    sw, (j, local, buf) = got
                    x = buf.to(self.device, non_blocking=self.pin)
                    outs = self._call(x)
                    self.windows_run += len(local)
                    progress.update(len(local))
                    bad = self._check(outs, local + sw.n * per) if check else None
                    sw.sink(j, local, outs, bad)
                    del x, outs  # not held while the model makes the next batch's outputs
            finally:
                if nxt is not None:  # a failure: let the reader finish its batch, then stop
                    with contextlib.suppress(BaseException):
                        nxt.result()
                    with contextlib.suppress(ValueError):  # still running (a second Ctrl-C)
                        it.close()

    def finish(self, st: Stitcher, drop: Stitcher | None, where: str, n: int) -> torch.Tensor:
        """A stitched result (of image ``n`` for a block's stitcher), non-finite values refused:
        the windows feeding the first bad voxel are run again to name the one at fault."""
        try:
            return _finish(st, drop, where)
        except NonFiniteError:
            if drop is not None or st._out is None:
                raise
            acc = st._out
            bad = torch.nonzero(~torch.isfinite(acc))[0].tolist()
            voxel = tuple(v + a for v, (a, _) in zip(bad[2:], st.region, strict=True))
            image = n if st.n == 1 else bad[0]
            grid = [st.tiling.grid_index(i) for i in st._contributors(voxel)]
            if grid:
                lo = tuple(min(g[ax] for g in grid) for ax in range(st.tiling.ndim))
                hi = tuple(max(g[ax] for g in grid) + 1 for ax in range(st.tiling.ndim))
                self.run_box(image, lo, hi, _ignore, _Progress(0, False), check=True)
            raise  # the rerun found nothing (a sum overflowed, or the model is not deterministic)

    def _check(
        self, outs: list[tuple[str | None, torch.Tensor]], idx: np.ndarray
    ) -> np.ndarray | None:
        bad_any: np.ndarray | None = None
        for name, y in outs:
            lo, hi = torch.aminmax(y)
            if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
                continue
            bad = (~torch.isfinite(y)).flatten(1).any(1).cpu().numpy()
            if self.on_nonfinite == "raise":
                per = len(self.layout.in_tiling)
                wins = [self.layout.in_tiling[int(i) % per] for i in idx[bad][:3]]
                raise NonFiniteError(
                    message(
                        f"model output {name or ''}".strip(),
                        expected="finite values",
                        received=f"NaN/Inf in {int(bad.sum())} window(s), e.g. window "
                        f"{int(idx[bad][0])} at start {wins[0].start} (image "
                        f"{int(idx[bad][0]) // per})",
                        fix="check the model on those windows, or pass on_nonfinite='drop' to "
                        "fill them from their neighbours",
                    )
                )
            bad_any = bad if bad_any is None else (bad_any | bad)
        return None if bad_any is None else np.flatnonzero(bad_any)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _ignore(*args: Any) -> None:
    return None


def _next(it: Iterator[Any]) -> Any:
    return next(it, None)


def _fill_dropped(acc: torch.Tensor, deficit: torch.Tensor | None, where: str) -> torch.Tensor:
    """Rescale where dropped windows left weight missing; refuse voxels nothing else covers."""
    if deficit is None:
        return acc
    have = 1.0 - deficit.to(device=acc.device, dtype=acc.dtype)
    if bool((have <= 1e-6).any()):
        raise NonFiniteError(
            message(
                "model output",
                expected="dropped windows covered by neighbours",
                received=f"voxels in {where} covered only by dropped (non-finite) windows",
                fix="use a smaller step so windows overlap, or fix the model's non-finite outputs",
            )
        )
    return acc / have


# -- public API ------------------------------------------------------------------------------------
def _tta_axes(tta: bool | Sequence[Sequence[int]], ndim: int) -> list[tuple[int, ...]]:
    if tta is False:
        return [()]
    if tta is True:
        return [tuple(a for a in range(ndim) if mask >> a & 1) for mask in range(1 << ndim)]
    try:
        out = [tuple(int(a) for a in axes) for axes in tta]
    except (TypeError, ValueError):
        raise ParameterTypeError(
            message(
                "tta",
                expected="True, False, or a list of flip axis sets such as [(0,), (1, 2)]",
                received=repr(tta),
                fix="pass tta=True for all flips",
            )
        ) from None
    if () not in out:
        out.insert(0, ())
    if any(not 0 <= a < ndim for axes in out for a in axes):
        raise ParameterError(
            message(
                "tta",
                expected=f"flip axis sets among the tiled axes 0..{ndim - 1}",
                received=repr(tta),
                fix="pass tta=True for all flips, or e.g. tta=[(0,), (1,)]",
            )
        )
    return out


def _amp_dtype(amp: Any, device: torch.device) -> torch.dtype | None:
    if amp in (None, False):
        return None
    if amp is True:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in ("float16", torch.float16):
        return torch.float16
    if amp in ("bfloat16", torch.bfloat16):
        return torch.bfloat16
    raise ParameterError(
        message(
            "amp",
            expected="False, True, 'float16' or 'bfloat16'",
            received=repr(amp),
            fix="pass amp=True for mixed precision",
        )
    )


@reusing_freed_memory  # the model's batch-sized tensors are not faulted in anew each batch
def predict(
    model: Callable[..., Any],
    source: Any,
    tiling: Tiling,
    *,
    blend: Blend | None = None,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool | str | torch.dtype | None = None,
    out: str | os.PathLike[str] | None = None,
    out_dtype: str = "float32",
    threshold: float = 0.5,
    chunks: Sequence[int] | None = None,
    block: Sequence[int] | None = None,
    tta: bool | Sequence[Sequence[int]] = False,
    on_nonfinite: NonFinite = "raise",
    pad_mode: Literal["reflect", "replicate"] = "reflect",
    geometry: Geometry = "auto",
    progress: bool | None = None,
    ome: bool | None = None,
    compressors: Any = "auto",
    overwrite: bool = False,
    client: Any = None,
    cluster: Literal["local"] | None = None,
    workers: int = 2,
    return_info: bool = False,
) -> Any:
    """Run ``model`` over ``source`` window by window and stitch the outputs.

    Parameters
    ----------
    model
        Any callable (a ``torch.nn.Module``) mapping ``(B, C, *window)`` to ``(B, C_out, *w)``
        where ``w`` is the window, a centred crop of it (valid convolutions), or an integer up-
        or down-scale of it; or a tuple/list/dict of such tensors (several heads). Also a
        TorchScript/torch.export file path or a :class:`~tilewise.ModelFactory` (how a model
        reaches dask workers: loaded once per worker).
    source
        ``(N, C, *spatial)``: a tensor, numpy array/memmap, zarr/h5py array, or a path/URL
        (opened with :func:`tilewise.open_array`). Only the regions the windows need are read.
    tiling
        The window plan over the input's spatial shape.
    blend
        Weights for stitching (default uniform); the paper uses ``border(10, weight=0.0)``.
    batch_size
        Windows per model call.
    device
        Where the model runs (default: CUDA when available, else CPU). Inputs are read by a
        background thread (pinned memory, non-blocking copies on CUDA) while the model runs.
    amp
        Autocast the model: True (float16 on CUDA, bfloat16 on CPU), 'float16' or 'bfloat16'.
    out
        None: return the result in memory (``(N, C_out, *shape)`` float32, or a dict per head).
        A path: write a zarr v3 array (OME-Zarr with ``ome=True``, the default when the input
        is OME-Zarr), block by block, and return the opened array (or a dict per head).
    out_dtype
        'float32', 'float16', 'argmax' (uint8 labels), 'threshold' (uint8 0/1 of ``> threshold``)
        or 'uint8' (probabilities in [0, 1] quantised to 0..255), applied per finished block.
    chunks, block
        Output chunk shape and block shape (spatial; default chunks 64 per axis; default blocks
        a step deep on the first axis and as wide on the others as keeps the accumulators a row
        holds open under 128 MiB of float32, see :func:`tilewise.plan`; whole chunks). Windows
        reaching two rows of blocks are run twice, so wider blocks run fewer windows again at
        the cost of memory. Peak memory depends on these, the window and
        the batch size, never on the volume size.
    tta
        Test-time augmentation: True averages over all flips of the tiled axes; or a list of
        axis sets to flip.
    on_nonfinite
        'raise' (default): NaN/Inf in an output raises with the window's position. 'drop': such
        windows are left out and their voxels refilled from the overlapping windows.
    pad_mode
        How the input is extended when the model crops its output (valid convolutions).
    geometry
        How an output smaller than its window is read: ``"auto"`` (a second probe on a larger
        window tells a crop from a downscale when the sizes allow both), ``"crop"`` or
        ``"scale"``.
    progress
        Show a progress bar (default: only on a terminal).
    compressors
        How the zarr output is compressed: ``"auto"`` (Blosc LZ4 with bit shuffling: smaller
        and several times faster than zarr's default zstd on network outputs), ``None``, or zarr
        v3 compressor(s). Chunks that come out all zero are not stored (they read as zero).
    overwrite
        Start an existing output afresh instead of resuming it. A resume must use the same
        input, model and settings (they are recorded in ``<out>/.tilewise/run.json``), except
        ``batch_size``, ``device`` and the cluster, which may change (a smaller batch after an
        out-of-memory error, say); with the same batch size the result is bit-identical to an
        uninterrupted run, with another it differs only by float rounding where windows
        overlap. An existing output that no tilewise run recorded is never overwritten
        without ``overwrite=True``.
    client, cluster, workers
        Run the blocks as tasks on a ``distributed.Client`` (``client=``), or on a
        ``LocalCluster`` of ``workers`` processes started for this call (``cluster="local"``).
        Each task reads its block's input region, runs the model, stitches and writes only its
        own block: no two tasks write one chunk, and the result equals the single-process one.
        Needs ``out`` (a path or URL every worker can reach).
    return_info
        Return a :class:`Prediction` with timings and counts instead of only the output.

    Examples
    --------
    >>> import torch, tilewise as tw
    >>> x = torch.rand(1, 1, 40, 50)
    >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> t = tw.Tiling((40, 50), window=24, step=16)
    >>> y = tw.predict(net, x, t, blend=tw.blend.border(4, weight=0.0))
    >>> with torch.no_grad():
    ...     bool(torch.allclose(y, net(x), atol=1e-6))
    True
    """
    t0 = time.perf_counter()
    check_tiling(tiling)
    model_fn = resolve_model(model)
    src = _as_source(source, tiling)
    shape = shape_of(src, "source")
    tiling.check_array_shape(shape, "source")
    as_axis_ints(batch_size, 1, "batch_size")
    for what, value, allowed in (
        ("on_nonfinite", on_nonfinite, ("raise", "drop")),
        ("pad_mode", pad_mode, ("reflect", "replicate")),
        ("geometry", geometry, ("auto", "crop", "scale")),
    ):
        if value not in allowed:
            raise ParameterError(
                message(
                    what,
                    expected=f"one of {allowed}",
                    received=repr(value),
                    fix=f"use {what}={allowed[0]!r}",
                )
            )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ParameterTypeError(
            message(
                "threshold", expected="a number", received=repr(threshold), fix="e.g. threshold=0.5"
            )
        )
    if out is not None and not isinstance(out, str | os.PathLike):
        raise ParameterTypeError(
            message(
                "out",
                expected="None (in memory) or a path/URL",
                received=repr(out),
                fix="pass out='result.zarr'",
            )
        )
    for what, sizes in (("chunks", chunks), ("block", block)):
        if sizes is not None:
            as_axis_ints(sizes, tiling.ndim, what)
    dev = _as_device(device) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    blend = resolve(blend)
    runner = _Runner(
        model_fn,
        src,
        tiling,
        blend,
        int(batch_size),
        dev,
        _amp_dtype(amp, dev),
        _tta_axes(tta, tiling.ndim),
        on_nonfinite,
        pad_mode,
        geometry,
    )
    lay = runner.layout
    for h in lay.heads:
        stored_dtype(out_dtype, h.channels)  # validate early
    n_img = shape[0]
    total = n_img * len(lay.in_tiling)
    bar = _Progress(total, progress)
    if client is not None:
        try:
            import distributed

            is_client = isinstance(client, distributed.Client)
        except ImportError:
            is_client = False
        if not is_client:
            raise ParameterError(
                message(
                    "client",
                    expected="a distributed.Client",
                    received=type(client).__name__,
                    fix="connect one with distributed.Client(scheduler_address)",
                )
            )
    if cluster not in (None, "local"):
        raise ParameterError(
            message(
                "cluster",
                expected="None or 'local'",
                received=repr(cluster),
                fix="pass cluster='local' to start a LocalCluster, or client=...",
            )
        )
    if (client is not None or cluster is not None) and out is None:
        raise ParameterError(
            message(
                "out",
                expected="an output path or URL when running on a dask cluster",
                received="out=None",
                fix="pass out='result.zarr' (or an s3:// URL every worker can reach)",
            )
        )
    try:
        if out is None:
            result, nblocks, skipped = _in_memory(runner, n_img, out_dtype, threshold, bar), 1, 0
        else:
            job = _Job(
                token=uuid.uuid4().hex,
                model=model,
                source=src,
                tiling=tiling,
                blend=blend,
                batch_size=int(batch_size),
                device=str(dev),
                amp=amp,
                tta=tuple(runner.tta),
                on_nonfinite=on_nonfinite,
                pad_mode=pad_mode,
                geometry=geometry,
                out=os.fspath(out),
                out_dtype=out_dtype,
                threshold=threshold,
                outputs=(),
                compressors=compressors,
            )
            result, nblocks, skipped = _to_zarr(
                runner,
                job,
                n_img,
                chunks,
                block,
                bar,
                ome,
                overwrite,
                src,
                client,
                cluster,
                workers,
            )
    finally:
        bar.close()
    if not return_info:
        return result
    return Prediction(
        output=result,
        windows=total,
        windows_run=runner.windows_run,
        blocks=nblocks,
        blocks_skipped=skipped,
        seconds=time.perf_counter() - t0,
        seconds_model=runner.seconds_model,
        seconds_waiting=runner.seconds_waiting,
    )


def _deficit_stitchers(
    runner: _Runner, n_img: int, region: tuple[tuple[int, int], ...] | None
) -> list[Stitcher] | None:
    """Accumulators of the weight that dropped (non-finite) windows leave missing."""
    if runner.on_nonfinite != "drop":
        return None
    out = []
    for t in runner.layout.out_tilings:
        shape = tuple(b - a for a, b in region) if region is not None else t.shape
        zeros = torch.zeros((n_img, 1, *shape))
        out.append(Stitcher(t, n=n_img, blend=runner.blend, device="cpu", region=region, out=zeros))
    return out


def _finish(st: Stitcher, drop: Stitcher | None, where: str) -> torch.Tensor:
    if drop is not None and drop.added and st._out is None:
        raise NonFiniteError(
            message(
                "model output",
                expected="dropped windows covered by neighbours",
                received=f"every window of {where} was dropped (non-finite outputs)",
                fix="fix the model's non-finite outputs, or use a smaller step",
            )
        )
    acc = st.result(check_finite=drop is None)
    if drop is None or not drop.added:
        return acc
    deficit = drop._out
    return acc if deficit is None else _fill_dropped(acc, deficit, where)


def _add_outputs(
    stitchers: list[Stitcher],
    drops: list[Stitcher] | None,
    outs: list[tuple[str | None, torch.Tensor]],
    idx: np.ndarray,
    bad: np.ndarray | None,
) -> None:
    """Add one batch of outputs (one per head) for windows ``idx``; non-finite windows ``bad``
    are left out and recorded as missing weight, to be refilled from their neighbours."""
    keep = np.ones(len(idx), dtype=bool)
    if bad is not None:
        keep[bad] = False
    for i, (st, (_, y)) in enumerate(zip(stitchers, outs, strict=True)):
        if keep.all():
            st.add(y, idx)
            continue
        ki = torch.from_numpy(np.flatnonzero(keep)).to(y.device)
        st.add(y.index_select(0, ki), idx[keep])
        st._seen[idx[~keep]] = True  # dropped on purpose; refilled from neighbours
        if drops is not None:
            ones = torch.ones((int((~keep).sum()), 1, *y.shape[2:]))
            drops[i].add(ones, idx[~keep])


def _in_memory(
    runner: _Runner, n_img: int, out_dtype: str, threshold: float, bar: _Progress
) -> Any:
    lay = runner.layout
    dev = runner.accumulate_on(
        sum(
            n_img * h.channels * math.prod(t.shape) * 4
            for h, t in zip(lay.heads, lay.out_tilings, strict=True)
        )
    )
    stitchers = [Stitcher(t, n=n_img, blend=runner.blend, device=dev) for t in lay.out_tilings]
    drops = _deficit_stitchers(runner, n_img, None)
    counts = lay.in_tiling.counts
    per = len(lay.in_tiling)
    for n in range(n_img):

        def sink(
            j: int,
            local: np.ndarray,
            outs: list[tuple[str | None, torch.Tensor]],
            bad: np.ndarray | None,
            shift: int = n * per,
        ) -> None:
            _add_outputs(stitchers, drops, outs, local + shift, bad)

        runner.run_box(n, (0,) * len(counts), counts, sink, bar)
    results = {}
    for i, (h, st) in enumerate(zip(lay.heads, stitchers, strict=True)):
        acc = runner.finish(st, drops[i] if drops else None, "the array", 0)
        if out_dtype != "float32":
            acc = torch.from_numpy(convert_block(acc, out_dtype, threshold))
        results[h.name] = acc.cpu()
    return results[None] if not lay.multi else results


# -- rows of blocks --------------------------------------------------------------------------------
def default_block(tiling: Tiling, chunks: Sequence[int], channels: int) -> tuple[int, ...]:
    """Output blocks for writing ``tiling``'s result: whole chunks, as deep along the first axis
    as a step (at least one chunk), and as wide on the other axes as :data:`ROW_BYTES` of open
    float32 accumulators allow (a row sweeps along the first axis with the blocks its windows
    reach open: a window's depth plus one block).

    >>> default_block(Tiling((512, 1024, 1024), window=128, step=96), (128, 128, 128), 2)
    (128, 256, 256)
    """
    c0 = chunks[0]
    depth0 = max(c0, math.ceil(tiling.step[0] / c0) * c0)
    if tiling.ndim == 1:
        return (depth0,)
    open_depth = min(tiling.shape[0], tiling.window[0] + depth0)
    cross = ROW_BYTES / (4 * channels * open_depth)
    limit = [
        max(c, math.ceil(s / c) * c) for s, c in zip(tiling.shape[1:], chunks[1:], strict=True)
    ]
    side = cross ** (1 / (tiling.ndim - 1))
    sizes = [min(lim, max(c, int(side) // c * c)) for lim, c in zip(limit, chunks[1:], strict=True)]
    grown = True
    while grown:  # widen the narrowest axis by a chunk while the row still fits
        grown = False
        for ax in sorted(range(len(sizes)), key=lambda a: sizes[a]):
            wider = [*sizes[:ax], sizes[ax] + chunks[1 + ax], *sizes[ax + 1 :]]
            if wider[ax] <= limit[ax] and math.prod(wider) <= cross:
                sizes, grown = wider, True
                break
    return (depth0, *sizes)


@dataclass(frozen=True)
class _RowPlan:
    """How one row of blocks is swept: the grid box of its windows, run in C order in batches,
    and for every block the first and last batch that touch it."""

    n: int
    box_lo: tuple[int, ...]
    box_hi: tuple[int, ...]
    batch_size: int
    first: tuple[int, ...]
    last: tuple[int, ...]

    def wanted(self, live: Sequence[bool]) -> Callable[[int], bool]:
        """Whether batch ``j`` touches a block that is still to be made."""
        spans = [(f, e) for f, e, keep in zip(self.first, self.last, live, strict=True) if keep]
        return lambda j: any(f <= j <= e for f, e in spans)

    def windows(self, live: Sequence[bool]) -> int:
        """Windows the row runs when only the ``live`` blocks are to be made."""
        total = math.prod(b - a for a, b in zip(self.box_lo, self.box_hi, strict=True))
        wanted = self.wanted(live)
        bs = self.batch_size
        return sum(min(bs, total - s) for s in range(0, total, bs) if wanted(s // bs))


def _row_plan(tiling: Tiling, blend: Blend, batch_size: int, row: Sequence[Block]) -> _RowPlan:
    """The sweep of ``row`` (blocks sharing their box on every axis but the first, in order).

    A window is run once for the whole row, whichever of its blocks it touches; only windows
    touching two rows are run twice. Batches are cut from the row's windows in one fixed way, so
    a block gets the same additions in the same order whether its row runs whole, resumes after
    an interruption or runs on another machine: its values are bit-identical.
    """
    wp = weight_plan(tiling, blend)
    spans = []
    for b in row:
        idx = wp.touching(0, *b.region[0])
        spans.append((int(idx[0]), int(idx[-1]) + 1))
    rest = [wp.touching(ax, a, z) for ax, (a, z) in enumerate(row[0].region[1:], start=1)]
    box_lo = (spans[0][0], *(int(r[0]) for r in rest))
    box_hi = (max(z for _, z in spans), *(int(r[-1]) + 1 for r in rest))
    inner = math.prod(b - a for a, b in zip(box_lo[1:], box_hi[1:], strict=True))
    return _RowPlan(
        n=row[0].n,
        box_lo=box_lo,
        box_hi=box_hi,
        batch_size=batch_size,
        first=tuple((a - box_lo[0]) * inner // batch_size for a, _ in spans),
        last=tuple(((z - box_lo[0]) * inner - 1) // batch_size for _, z in spans),
    )


def _row_sweep(
    runner: _Runner,
    row: Sequence[Block],
    live: Sequence[bool],
    finished: Callable[[Block, dict[str | None, np.ndarray]], None],
    out_dtype: str,
    threshold: float,
) -> _Sweep:
    """The sweep of one row of blocks along the first axis, handing each ``live`` block, once
    all its windows are in, to ``finished`` in its stored form; blocks are open only while
    windows still reach them."""
    lay = runner.layout
    rp = _row_plan(lay.out_tilings[0], runner.blend, runner.batch_size, row)
    # the blocks open at once: those a window's depth spans, and one finished being written
    depth, window = row[0].shape[0], lay.out_tilings[0].window[0]
    opened = min(len(row), math.ceil(window / depth) + 1) + 1
    nbytes = opened * sum(h.channels * math.prod(row[0].shape) * 4 for h in lay.heads)
    dev = runner.accumulate_on(nbytes)
    open_: dict[int, tuple[list[Stitcher], list[Stitcher] | None]] = {}

    def sink(
        j: int,
        local: np.ndarray,
        outs: list[tuple[str | None, torch.Tensor]],
        bad: np.ndarray | None,
    ) -> None:
        for i, b in enumerate(row):
            if not live[i] or not rp.first[i] <= j <= rp.last[i]:
                continue
            if i not in open_:
                stitchers = [
                    Stitcher(t, n=1, blend=runner.blend, device=dev, region=b.region)
                    for t in lay.out_tilings
                ]
                open_[i] = (stitchers, _deficit_stitchers(runner, 1, b.region))
            stitchers, drops = open_[i]
            _add_outputs(stitchers, drops, outs, local, bad)
            if j == rp.last[i]:
                del open_[i]
                stored = {
                    h.name: convert_block(
                        runner.finish(st, drops[k] if drops else None, f"block {b.key}", b.n),
                        out_dtype,
                        threshold,
                    )
                    for k, (h, st) in enumerate(zip(lay.heads, stitchers, strict=True))
                }
                finished(b, stored)

    return _Sweep(rp.n, rp.box_lo, rp.box_hi, sink, rp.wanted(live))


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to run blocks of one ``predict`` call (picklable)."""

    token: str
    model: Any
    source: Any
    tiling: Tiling
    blend: Blend
    batch_size: int
    device: str
    amp: Any
    tta: tuple[tuple[int, ...], ...]
    on_nonfinite: NonFinite
    pad_mode: str
    geometry: str
    out: str
    out_dtype: str
    threshold: float
    outputs: tuple[tuple[str | None, str, tuple[int, ...], str, tuple[int, ...], Any, bool], ...]
    compressors: Any = "auto"
    rewrite_zeros: bool = False  # a resumed output may hold chunks of unfinished blocks


def _open_outputs(job: _Job) -> dict[str | None, Any]:
    from tilewise._io import create_zarr  # zarr is an optional extra

    heads = [name for name, target, *_ in job.outputs if target != job.out]
    if heads:  # several heads: a zarr group holding one array (or OME-Zarr image) per head
        import zarr

        root = zarr.open_group(job.out, mode="a", zarr_format=3)
        if "tilewise" not in root.attrs:
            root.attrs["tilewise"] = {"heads": [str(h) for h in heads]}
    return {
        name: create_zarr(
            target,
            shape,
            dtype,
            chunks=chunks,
            info=info,
            ome=ome,
            compressors=job.compressors,
            write_empty_chunks=True,  # _write_block leaves empty chunks out itself, faster
        )
        for name, target, shape, dtype, chunks, info, ome in job.outputs
    }


_WORKER_STATE: dict[str, tuple[_Runner, dict[str | None, Any]]] = {}


def _job_state(job: _Job) -> tuple[_Runner, dict[str | None, Any]]:
    """The model and outputs of a job, built once per worker process."""
    if job.token not in _WORKER_STATE:
        dev = torch.device(job.device)
        runner = _Runner(
            resolve_model(job.model),
            job.source,
            job.tiling,
            job.blend,
            job.batch_size,
            dev,
            _amp_dtype(job.amp, dev),
            job.tta,
            job.on_nonfinite,
            job.pad_mode,
            job.geometry,
        )
        _WORKER_STATE.clear()  # one job at a time per worker: free the previous model
        _WORKER_STATE[job.token] = (runner, _open_outputs(job))
    return _WORKER_STATE[job.token]


@reusing_freed_memory
def run_job_row(job: _Job, row: tuple[Block, ...]) -> tuple[str, int]:
    """A dask task: sweep one row of blocks, writing and journalling each block as it is
    finished. Blocks already journalled (a retry after a lost worker) are not made again."""
    journal = Journal(job.out, {})
    done = journal.done()
    live = [b.key not in done for b in row]
    if not any(live):
        return row[0].key, 0
    runner, arrays = _job_state(job)
    before = runner.windows_run

    def finished(b: Block, stored: dict[str | None, np.ndarray]) -> None:
        _store_block(arrays, journal, b, stored, job.rewrite_zeros)

    sweep = _row_sweep(runner, row, live, finished, job.out_dtype, job.threshold)
    runner.run_sweeps([sweep], _Progress(0, False))
    return row[0].key, runner.windows_run - before


def _to_zarr(
    runner: _Runner,
    job: _Job,
    n_img: int,
    chunks: Sequence[int] | None,
    block: Sequence[int] | None,
    bar: _Progress,
    ome: bool | None,
    overwrite: bool,
    src: Any,
    client: Any,
    cluster: str | None,
    workers: int,
) -> tuple[Any, int, int]:
    lay = runner.layout
    ref = lay.out_tilings[0]
    if any(t.shape != ref.shape for t in lay.out_tilings):
        raise ShapeMismatchError(
            message(
                "model outputs",
                expected="heads of one spatial size when writing to zarr",
                received=f"sizes {[t.shape for t in lay.out_tilings]}",
                fix="write such heads in memory (out=None) or run them separately",
            )
        )
    ndim = ref.ndim
    ch = tuple(chunks) if chunks is not None else tuple(min(64, s) for s in ref.shape)
    if len(ch) != ndim or any(not isinstance(c, int | np.integer) or c < 1 for c in ch):
        raise ParameterError(
            message(
                "chunks",
                expected=f"{ndim} positive ints (spatial chunk shape)",
                received=repr(chunks),
                fix="e.g. chunks=(64, 64, 64)",
            )
        )
    if block is None:
        block = default_block(ref, ch, max(h.channels for h in lay.heads))
    blist = blocks(n_img, ref.shape, block, ch)
    info = _info_of(src)
    use_ome = (
        ome
        if ome is not None
        else bool(info is not None and getattr(info, "format", "") == "ome-zarr")
    )
    settings = {
        "tiling": runner.tiling.to_dict(),
        "blend": _digest(runner.blend._key()),
        "model": _model_digest(runner.model),
        "pad_mode": job.pad_mode,
        "geometry": job.geometry,
        "amp": str(runner.amp),
        "on_nonfinite": job.on_nonfinite,
        "out_dtype": job.out_dtype,
        "threshold": job.threshold,
        "chunks": list(ch),
        "block": list(block),
        "heads": [h.name for h in lay.heads],
        "tta": [list(a) for a in runner.tta],
        "shape": list(runner.shape),
        "dtype": str(getattr(src, "dtype", "")),
        "source": _source_digest(src),
    }
    check_writable(job.out)
    _refuse_same_store(job.out, src)
    outputs = tuple(
        (
            h.name,
            job.out if not lay.multi else job.out.rstrip("/") + "/" + str(h.name),
            (n_img, stored_channels(job.out_dtype, h.channels), *ref.shape),
            str(stored_dtype(job.out_dtype, h.channels)),
            (1, stored_channels(job.out_dtype, h.channels), *ch),
            _scaled_info(info, h.scale),
            use_ome,
        )
        for h in lay.heads
    )
    job = dataclasses.replace(job, outputs=outputs)
    journal = Journal(job.out, settings)
    journal.open(fresh=overwrite)  # the lock comes first: overwrite empties under it
    try:
        job = dataclasses.replace(job, rewrite_zeros=journal.resumed)
        arrays = _open_outputs(job)
        done = journal.done()
        skipped = sum(b.key in done for b in blist)
        todo = [(row, [b.key not in done for b in row]) for row in rows(blist)]
        todo = [(row, live) for row, live in todo if any(live)]
        work = {
            row[0].key: _row_plan(ref, runner.blend, runner.batch_size, row).windows(live)
            for row, live in todo
        }
        bar.total = sum(work.values())
        if client is None and cluster is None:
            _run_rows_here(
                runner, todo, arrays, journal, job.out_dtype, job.threshold, bar, job.rewrite_zeros
            )
        else:
            from tilewise._distributed import run_rows  # dask is an optional extra

            runner.windows_run += run_rows(job, [r for r, _ in todo], work, bar, client, workers)
    finally:
        journal.close()
    res = arrays[None] if not lay.multi else arrays
    return res, len(blist), skipped


def _scaled_info(info: Any, scale: Sequence[Fraction]) -> Any:
    """The input's geometry for an output scaled by ``scale`` (voxel size / f; the centre of
    output voxel 0 sits at ``origin + voxel * (1 / (2 f) - 1 / 2)``)."""
    if info is None or all(f == 1 for f in scale):
        return info
    vs, org = getattr(info, "voxel_size", None), getattr(info, "origin", None)
    if vs is None or len(vs) != len(scale):
        return info
    new_vs = tuple(float(v / f) for v, f in zip(vs, scale, strict=True))
    new_org = (
        tuple(
            float(o + v * (1 / (2 * f) - Fraction(1, 2)))
            for o, v, f in zip(org, vs, scale, strict=True)
        )
        if org is not None
        else None
    )
    return dataclasses.replace(info, voxel_size=new_vs, origin=new_org)


def _digest(obj: Any) -> str:
    """A short stable fingerprint of settings that have no readable form (weights, models)."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(repr(obj).encode())
    return h.hexdigest()[:16]


def _model_digest(model: Any) -> str:
    """A fingerprint of a model, so that a resume runs the same network: its type, its
    architecture (a module's repr), its weights, and for plain functions their code and the
    modules they close over."""
    h = hashlib.sha1(usedforsecurity=False)
    _feed_model(h, model, depth=0)
    return h.hexdigest()[:16]


def _feed_model(h: Any, model: Any, depth: int) -> None:
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    if isinstance(model, torch.nn.Module):
        h.update(repr(model).encode())
        for k, v in model.state_dict().items():
            h.update(k.encode())
            if isinstance(v, torch.Tensor):
                data = v.detach().cpu().contiguous().reshape(-1)  # 0-dim buffers too
                h.update(data.view(torch.uint8).numpy().tobytes())
        return
    code = getattr(model, "__code__", None)
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
    used: list[Any] = []
    for cell in getattr(model, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # an empty cell
            used.append(cell.cell_contents)
    if code is not None:  # the modules and functions it calls by global name
        names = getattr(model, "__globals__", {})
        used += [names[k] for k in code.co_names if k in names]
    elif hasattr(model, "__dict__"):  # a callable object: the modules it holds
        used += list(vars(model).values())
    for value in used:
        if depth < 3 and (isinstance(value, torch.nn.Module) or hasattr(value, "__code__")):
            _feed_model(h, value, depth + 1)
        elif isinstance(value, int | float | str | bool):
            h.update(repr(value).encode())


def _source_digest(src: Any) -> str:
    """Where the input comes from (a fingerprint: paths and URLs are not stored as such)."""
    info = _info_of(src)
    where = getattr(info, "source", None) if info is not None else None
    if not where and hasattr(src, "store_path"):  # a zarr array
        where = str(src.store_path)
    if not where and hasattr(src, "file") and hasattr(src, "name"):  # an h5py dataset
        where = f"{getattr(src.file, 'filename', '')}:{src.name}"
    if not where and isinstance(getattr(src, "filename", None), str):  # a numpy memmap
        where = f"{src.filename}@{getattr(src, 'offset', 0)}"
    if not where:
        return "in memory"
    if not is_url(str(where)):
        where = os.path.realpath(str(where).removeprefix("file://"))
    return _digest(where)


def _info_of(src: Any) -> Any:
    """The tilewise ArrayInfo of a source opened by open_array (zarr arrays have another .info)."""
    info = getattr(src, "info", None)
    return info if hasattr(info, "voxel_size") and hasattr(info, "axes") else None


def _refuse_same_store(out: str, src: Any) -> None:
    """Refuse to write over the input while reading it."""
    info = _info_of(src)
    source = getattr(info, "source", None) if info is not None else None
    if source is None and hasattr(src, "store_path"):
        source = str(src.store_path)
    if not source or is_url(out) != is_url(str(source)):
        return
    a = out.removeprefix("file://").rstrip("/")
    b = str(source).removeprefix("file://").split(":/")[0].rstrip("/")
    if not is_url(out):
        a, b = os.path.realpath(a), os.path.realpath(b)
    if a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep):
        raise ParameterError(
            message(
                "out",
                expected="an output location apart from the input",
                received=f"out={out!r} overlapping the input {source!r}",
                fix="write the result to a new path",
            )
        )


def _store_block(
    arrays: dict[str | None, Any],
    journal: Journal,
    b: Block,
    stored: dict[str | None, Any],
    rewrite_zeros: bool,
) -> None:
    """Write a finished block, then journal it, then return the memory its work left free."""
    _write_block(arrays, b, stored, rewrite_zeros)
    journal.mark(b)  # only after its data are written
    release_freed_memory()


def _write_block(
    arrays: dict[str | None, Any],
    b: Block,
    stored: dict[str | None, Any],
    rewrite_zeros: bool = False,
) -> None:
    """Write a block chunk by chunk (a store copies and encodes what it is given at once),
    leaving out chunks that are all zero, the fill value: they read back as zero. A resumed
    output may hold such a chunk from an interrupted write of this block: ``rewrite_zeros``
    writes them too."""
    for name, values in stored.items():
        arr = arrays[name]
        chunks = tuple(getattr(arr, "chunks", values.shape))[2:]
        spans = [
            [(a, min(a + c, z)) for a in range(lo, z, c)]
            for (lo, z), c in zip(b.region, chunks, strict=True)
        ]
        for box in itertools.product(*spans):
            dst = tuple(slice(a, z) for a, z in box)
            src = tuple(
                slice(a - lo, z - lo) for (a, z), (lo, _) in zip(box, b.region, strict=True)
            )
            chunk = values[(slice(None), slice(None), *src)]
            if rewrite_zeros or chunk.view(f"u{chunk.dtype.itemsize}").max(initial=0):
                arr[(slice(b.n, b.n + 1), slice(None), *dst)] = chunk  # not all +0: store it


def _run_rows_here(
    runner: _Runner,
    todo: list[tuple[tuple[Block, ...], list[bool]]],
    arrays: dict[str | None, Any],
    journal: Journal,
    out_dtype: str,
    threshold: float,
    bar: _Progress,
    rewrite_zeros: bool,
) -> None:
    """Rows one after another; each finished block is written (and journalled) by a writer
    thread while the sweep goes on, so storage and compression overlap the model."""

    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[None] | None = None

        def finished(b: Block, stored: dict[str | None, np.ndarray]) -> None:
            nonlocal pending
            if pending is not None:  # at most one block waits to be written
                pending.result()
            pending = writer.submit(_store_block, arrays, journal, b, stored, rewrite_zeros)

        try:
            runner.run_sweeps(
                (_row_sweep(runner, r, live, finished, out_dtype, threshold) for r, live in todo),
                bar,
            )
        except BaseException:
            if pending is not None:  # finish the last write, but report the first error
                with contextlib.suppress(Exception):
                    pending.result()
            raise
        if pending is not None:
            pending.result()


# -- planning --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak memory of a ``predict`` run, and a batch size that fits a budget."""

    windows: int
    windows_run: int
    batch_size: int
    device_bytes: int
    host_bytes: int
    suggested_batch_size: int | None
    result_bytes: int = 0
    budget_bytes: int | None = None

    def __str__(self) -> str:
        mib = 1 << 20
        if self.suggested_batch_size is None:
            sug = ""
        elif self.suggested_batch_size == 0:
            sug = (
                f"; one window alone needs ~{self.device_bytes / self.batch_size / mib:.0f} "
                f"MiB, over the budget of {(self.budget_bytes or 0) / mib:.0f} MiB: use a "
                "smaller window"
            )
        else:
            sug = f", suggested batch size {self.suggested_batch_size}"
        return (
            f"{self.windows} windows ({self.windows_run} runs); batch {self.batch_size}: "
            f"device ~{self.device_bytes / mib:.0f} MiB (+ ~{self.result_bytes / mib:.0f} MiB "
            f"of results kept on a GPU that has 4x that), host ~{self.host_bytes / mib:.0f} "
            f"MiB{sug}"
        )


def plan(
    tiling: Tiling,
    *,
    n: int = 1,
    channels: int = 1,
    out_channels: int = 1,
    batch_size: int = 4,
    itemsize: int = 4,
    activation_bytes_per_voxel: float = 0.0,
    out: bool = False,
    chunks: Sequence[int] | None = None,
    block: Sequence[int] | None = None,
    blend: Blend | None = None,
    budget_bytes: int | None = None,
) -> MemoryPlan:
    """Estimate peak host and device memory of :func:`predict` and suggest a batch size.

    Device: the input batch, the model's activations (``activation_bytes_per_voxel`` per
    window voxel per window, from your network; 0 if unknown; the model's weights are not
    counted) and its float32 outputs. ``result_bytes``: the float32 accumulators, the whole
    result in memory or a row's open blocks when writing zarr, which :func:`predict` keeps on a
    CUDA device when they take under a quarter of its memory (else in host memory). Host: the
    two (pinned) input batch buffers, and the stitched result: the whole array in memory, or,
    when writing to zarr, the accumulators of the blocks a row's windows reach at once and the
    slab of input the row reads its windows from. ``budget_bytes`` (device memory for the
    batches) gives the largest batch that fits: 0 when not even one window does.

    >>> t = Tiling((236, 720, 510), window=128, step=108)
    >>> p = plan(t, out_channels=2, batch_size=2)
    >>> p.windows, p.device_bytes // 2**20, p.host_bytes // 2**20
    (70, 48, 1354)
    """
    check_tiling(tiling)
    for what, value in (
        ("n", n),
        ("channels", channels),
        ("out_channels", out_channels),
        ("batch_size", batch_size),
        ("itemsize", itemsize),
    ):
        as_axis_ints(value, 1, what)
    for what, sizes in (("chunks", chunks), ("block", block)):
        if sizes is not None:
            as_axis_ints(sizes, tiling.ndim, what)
    if blend is not None:
        resolve(blend)
    vox = math.prod(tiling.window)
    per_window_dev = vox * (channels * itemsize + 4 * out_channels + activation_bytes_per_voxel)
    device_bytes = int(batch_size * per_window_dev)
    batch_host = 2 * batch_size * vox * channels * itemsize  # two buffers take turns
    bl = uniform() if blend is None else blend
    if out:
        ch = tuple(chunks) if chunks is not None else tuple(min(64, s) for s in tiling.shape)
        if block is None:
            block = default_block(tiling, ch, out_channels)
        row_list = rows(blocks(n, tiling.shape, block, ch))
        runs = sum(_row_plan(tiling, bl, batch_size, r).windows([True] * len(r)) for r in row_list)
        size = [min(b, s) for b, s in zip(block, tiling.shape, strict=True)]
        w0 = tiling.window[0]
        # accumulators of the blocks a window reaches, plus one waiting and one being written
        opened = min(math.ceil(tiling.shape[0] / size[0]), math.ceil(w0 / size[0]) + 1) + 2
        accum = opened * math.prod(size) * 4 * out_channels
        # the input slab: the row's reach on every axis but the first, a window deep or, up to
        # SLAB_BYTES, to the end of the chunk it ends in; and the piece being read into it
        reach = [min(s, z + w) for s, z, w in zip(tiling.shape, size, tiling.window, strict=True)]
        plane = math.prod(reach[1:]) * channels * 4
        slab = max(w0 * plane, min(SLAB_BYTES, (w0 + ch[0] - 1) * plane))
        slab = min(slab, tiling.shape[0] * plane)
        piece = slab if tiling.ndim == 1 else slab * min(1.0, ch[1] / reach[1])
        host = accum + slab + int(piece) + batch_host
        result = (opened - 2) * math.prod(size) * 4 * out_channels
    else:
        runs = n * len(tiling)
        weight_plan(tiling, bl)
        # the stitched result, plus the image read whole and its float32 copy
        result = n * math.prod(tiling.shape) * (4 * out_channels)
        host = result + batch_host + math.prod(tiling.shape) * channels * (itemsize + 4)
    suggestion = None
    if budget_bytes is not None:
        if isinstance(budget_bytes, float) and float(budget_bytes).is_integer():
            budget_bytes = int(budget_bytes)  # e.g. 8e9
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int | np.integer):
            raise ParameterTypeError(
                message(
                    "budget_bytes",
                    expected="an int (bytes of device memory for the batches)",
                    received=repr(budget_bytes),
                    fix="e.g. budget_bytes=8 * 2**30 for 8 GiB",
                )
            )
        if budget_bytes <= 0:
            raise ParameterError(
                message(
                    "budget_bytes",
                    expected="a positive number of bytes",
                    received=repr(budget_bytes),
                    fix="e.g. budget_bytes=8 * 2**30 for 8 GiB",
                )
            )
        suggestion = int(budget_bytes // max(per_window_dev, 1))
    return MemoryPlan(
        windows=n * len(tiling),
        windows_run=runs,
        batch_size=batch_size,
        device_bytes=device_bytes,
        host_bytes=int(host),
        suggested_batch_size=suggestion,
        result_bytes=int(result),
        budget_bytes=None if budget_bytes is None else int(budget_bytes),
    )
