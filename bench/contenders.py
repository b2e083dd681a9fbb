"""Contenders: one function per way of doing extract -> model -> stitch.

Each contender is ``run(x, wl, tm, model) -> (result, note)`` where ``x`` is the (N, C, *spatial)
float32 input, ``tm`` a phase timer (``with tm("extract"): ...``), ``model`` the timed model and
``result`` the stitched (N, C_out, *spatial) tensor or array. Imports happen in ``setup`` (outside
the timed section). Everything from the input tensor to the result is inside the timed section:
planning objects (Tiling, Tiler, GridSampler, ...) are timed as part of extract, accumulators
(Stitcher, Merger, AggRegator) as part of stitch.
"""

from __future__ import annotations

import importlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workloads import C_OUT, Workload, axis_starts

if TYPE_CHECKING:
    from collections.abc import Callable


class Timer:
    """Accumulates wall time per phase name."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0


class Model:
    """Identity-like model: C=1 -> C_out=2 channels, both 2*x. Timed as phase "model"."""

    def __init__(self, tm: Timer) -> None:
        self.tm = tm
        self.windows = 0
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.tm("model"):
            y = x * 2
            out = torch.cat([y] * C_OUT, 1)
        self.windows += x.shape[0]
        self.calls += 1
        return out


@dataclass
class Contender:
    name: str
    run: Callable
    modules: tuple[str, ...]  # imported in setup, before the baseline RSS
    fused: bool = False  # extract and stitch are not separable (one library call)
    doc: str = ""


def _ranges(total: int, batch: int):
    for s in range(0, total, batch):
        yield range(s, min(s + batch, total))


def _pads(wl: Workload, padded: tuple[int, ...]) -> str:
    padded = tuple(int(p) for p in padded)
    if padded != tuple(wl.spatial):
        return f"pads input to {padded}"
    return "no padding needed"


def _no_border_note(wl: Workload) -> str:
    if wl.blend[0] == "border":
        return f"no border concept -> uniform averaging, overlap {wl.overlap[0]}"
    return ""


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------
# tilewise


def _tw_blend(tw, wl: Workload):
    if wl.blend[0] == "uniform":
        return tw.blend.uniform()
    if wl.blend[0] == "border":
        _, width, weight = wl.blend
        return tw.blend.border(width, weight=weight)
    raise ValueError(wl.blend)


def _tw_blend_name(wl: Workload) -> str:
    if wl.blend[0] == "border":
        return f"blend border({wl.blend[1]}, weight={wl.blend[2]})"
    return "blend uniform"


def tilewise_stream(x, wl: Workload, tm: Timer, model: Model):
    import tilewise as tw

    n, c = x.shape[:2]
    with tm("extract"):
        t = tw.Tiling(tuple(wl.spatial), window=wl.window, step=wl.step)
        buf = torch.empty((wl.batch, c, *wl.window), dtype=x.dtype)
    with tm("stitch"):
        st = tw.Stitcher(t, n=n, blend=_tw_blend(tw, wl))
    total = n * len(t)
    for r in _ranges(total, wl.batch):
        b = buf[: len(r)]
        with tm("extract"):
            tw.extract(x, t, r, out=b)
        y = model(b)
        with tm("stitch"):
            st.add(y, r)
    with tm("stitch"):
        res = st.result()
    return res, _join(f"batch={wl.batch}", _tw_blend_name(wl))


def tilewise_onecall(x, wl: Workload, tm: Timer, model: Model):
    import tilewise as tw

    with tm("extract"):
        t = tw.Tiling(tuple(wl.spatial), window=wl.window, step=wl.step)
        p = tw.extract(x, t)
    y = model(p)
    del p
    with tm("stitch"):
        res = tw.stitch(y, t, blend=_tw_blend(tw, wl))
    return res, _join("all windows in one model call", _tw_blend_name(wl))


# --------------------------------------------------------------------------------------------
# naive per-window Python loop


def naive(x, wl: Workload, tm: Timer, model: Model):
    import itertools

    n, c = x.shape[:2]
    with tm("extract"):
        grids = [
            axis_starts(d, w, s) for d, w, s in zip(wl.spatial, wl.window, wl.step, strict=True)
        ]
        slices = [
            (i, tuple(slice(s, s + w) for s, w in zip(starts, wl.window, strict=True)))
            for i in range(n)
            for starts in itertools.product(*grids)
        ]
        buf = torch.empty((wl.batch, c, *wl.window), dtype=x.dtype)
    with tm("stitch"):
        acc = torch.zeros((n, C_OUT, *wl.spatial), dtype=torch.float32)
        cnt = torch.zeros((n, 1, *wl.spatial), dtype=torch.float32)
    for s0 in range(0, len(slices), wl.batch):
        chunk = slices[s0 : s0 + wl.batch]
        with tm("extract"):
            for j, (i, sl) in enumerate(chunk):
                buf[j].copy_(x[(i, slice(None), *sl)])
        y = model(buf[: len(chunk)])
        with tm("stitch"):
            for j, (i, sl) in enumerate(chunk):
                acc[(i, slice(None), *sl)] += y[j]
                cnt[(i, slice(None), *sl)] += 1.0
    with tm("stitch"):
        acc /= cnt
    return acc, _join(f"batch={wl.batch}", _no_border_note(wl))


# --------------------------------------------------------------------------------------------
# MONAI


def _monai_overlap(wl: Workload) -> list[float]:
    """MONAI's SWI takes a fraction; its interval is int(roi * (1 - overlap))."""
    fracs = []
    for w, s in zip(wl.window, wl.step, strict=True):
        f = (w - s) / w
        if int(w * (1 - f)) != s:  # guard against rounding down one pixel
            f -= 1e-9
        assert int(w * (1 - f)) == s, (w, s, f)
        fracs.append(f)
    return fracs


def _monai_swi(mode: str):
    def run(x, wl: Workload, tm: Timer, model: Model):
        from monai.inferers import sliding_window_inference

        ov = _monai_overlap(wl)
        with tm("fused"):
            res = sliding_window_inference(
                x,
                roi_size=list(wl.window),
                sw_batch_size=wl.batch,
                predictor=model,
                overlap=ov,
                mode=mode,
                padding_mode="constant",
            )
        note = _join(
            f"overlap={ov[0]:.5f} (step {wl.step[0]})",
            f"sw_batch_size={wl.batch}",
            "sigma_scale=0.125" if mode == "gaussian" else "",
            _no_border_note(wl),
        )
        return res, note

    return run


def monai_splitter(x, wl: Workload, tm: Timer, model: Model):
    from monai.inferers import AvgMerger, SlidingWindowSplitter

    n = x.shape[0]
    with tm("extract"):
        sp = SlidingWindowSplitter(patch_size=list(wl.window), overlap=list(wl.overlap))
        padded = tuple(int(v) for v in sp.get_padded_shape(x))
        it = iter(sp(x))
    with tm("stitch"):
        merger = AvgMerger(merged_shape=(n, C_OUT, *padded), cropped_shape=(n, C_OUT, *wl.spatial))
    done = False
    while not done:
        patches, locs = [], []
        with tm("extract"):
            for _ in range(wl.batch):
                try:
                    p, loc = next(it)
                except StopIteration:
                    done = True
                    break
                patches.append(p)
                locs.append(loc)
            if not patches:
                break
            b = torch.cat(patches, 0)
        y = model(b)
        with tm("stitch"):
            for j, loc in enumerate(locs):
                merger.aggregate(y[j * n : (j + 1) * n], loc)
    with tm("stitch"):
        res = merger.finalize()
    note = _join(
        f"overlap={wl.overlap[0]}px", _pads(wl, padded), f"batch={wl.batch}", _no_border_note(wl)
    )
    return res, note


# --------------------------------------------------------------------------------------------
# TorchIO


def _torchio(mode: str):
    def run(x, wl: Workload, tm: Timer, model: Model):
        import torchio as tio

        assert x.shape[0] == 1, "TorchIO path handles one subject (N=1)"
        two_d = wl.ndim == 2
        with tm("extract"):
            img = x[0].unsqueeze(-1) if two_d else x[0]  # TorchIO is 3D: 2D as depth 1
            subject = tio.Subject(img=tio.ScalarImage(tensor=img))
            patch = (*wl.window, 1) if two_d else wl.window
            ov = (*wl.overlap, 0) if two_d else wl.overlap
            sampler = tio.GridSampler(subject, patch_size=patch, patch_overlap=ov)
            loader = tio.SubjectsLoader(sampler, batch_size=wl.batch, num_workers=0)
            it = iter(loader)
        with tm("stitch"):
            agg = tio.GridAggregator(sampler, overlap_mode=mode)
        while True:
            with tm("extract"):
                try:
                    batch = next(it)
                except StopIteration:
                    break
                data = batch["img"][tio.DATA]
                locs = batch[tio.LOCATION]
            y = model(data)
            with tm("stitch"):
                agg.add_batch(y, locs)
        with tm("stitch"):
            out = agg.get_output_tensor()
        res = out[..., 0].unsqueeze(0) if two_d else out.unsqueeze(0)
        note = _join(
            f"patch_overlap={wl.overlap[0]}",
            f"SubjectsLoader batch_size={wl.batch}, num_workers=0",
            _no_border_note(wl),
        )
        return res, note

    return run


# --------------------------------------------------------------------------------------------
# tiler


def _tiler(window: str):
    def run(x, wl: Workload, tm: Timer, model: Model):
        import numpy as np
        from tiler import Merger, Tiler

        assert x.shape[0] == 1, "tiler path handles one image (N=1)"
        with tm("extract"):
            data = x[0].numpy()  # (C, *spatial), a view
            tiler = Tiler(
                data_shape=data.shape,
                tile_shape=(data.shape[0], *wl.window),
                overlap=(0, *wl.overlap),
                channel_dimension=0,
            )
            padded = tuple(int(v) for v in tiler._new_shape[1:])
            it = tiler(data, batch_size=wl.batch)
        with tm("stitch"):
            merger = Merger(tiler, window=window, logits=C_OUT)
        while True:
            with tm("extract"):
                try:
                    bid, tiles = next(it)
                except StopIteration:
                    break
                b = torch.from_numpy(tiles)
            y = model(b)
            with tm("stitch"):
                merger.add_batch(bid, wl.batch, y.unsqueeze(2).numpy())  # (B, logits, C, *w)
        with tm("stitch"):
            out = merger.merge(unpad=True)  # (logits, C, *spatial)
        res = np.ascontiguousarray(out).reshape(1, C_OUT, *wl.spatial)
        note = _join(
            f"overlap={wl.overlap[0]}px, window={window}, Merger(logits={C_OUT})",
            _pads(wl, padded),
            f"batch_size={wl.batch}",
            _no_border_note(wl),
        )
        return res, note

    return run


# --------------------------------------------------------------------------------------------
# qlty 1.5.0


def qlty_quilt(x, wl: Workload, tm: Timer, model: Model):
    import qlty

    if wl.blend[0] == "border":
        border, weight = wl.blend[1], wl.blend[2]
    else:
        border, weight = None, 1.0
    with tm("extract"):
        if wl.ndim == 2:
            q = qlty.NCYXQuilt(
                *wl.spatial,
                window=tuple(wl.window),
                step=tuple(wl.step),
                border=border,
                border_weight=weight,
            )
        else:
            q = qlty.NCZYXQuilt(
                *wl.spatial,
                window=tuple(wl.window),
                step=tuple(wl.step),
                border=border,
                border_weight=weight,
            )
        p = q.unstitch(x)
    y = model(p)
    del p
    with tm("stitch"):
        res, _norma = q.stitch(y)
    del _norma
    cls = "NCYXQuilt (numba stitch)" if wl.ndim == 2 else "NCZYXQuilt"
    bw = f"border={border}, border_weight={weight} (clamped to >=1e-8)" if border else "no border"
    return res, _join(cls, bw, "all windows in one model call")


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender(
            "tilewise_stream", tilewise_stream, ("tilewise",), doc="extract(out=buf) / Stitcher.add"
        ),
        Contender("tilewise_onecall", tilewise_onecall, ("tilewise",), doc="extract all / stitch"),
        Contender("naive", naive, (), doc="per-window Python loop, 2 accumulators, 1 division"),
        Contender(
            "monai_swi_constant",
            _monai_swi("constant"),
            ("monai.inferers",),
            fused=True,
            doc="sliding_window_inference mode=constant",
        ),
        Contender(
            "monai_swi_gaussian",
            _monai_swi("gaussian"),
            ("monai.inferers",),
            fused=True,
            doc="sliding_window_inference mode=gaussian",
        ),
        Contender(
            "monai_splitter",
            monai_splitter,
            ("monai.inferers",),
            doc="SlidingWindowSplitter + AvgMerger",
        ),
        Contender(
            "torchio_average",
            _torchio("average"),
            ("torchio",),
            doc="GridSampler + GridAggregator(average)",
        ),
        Contender(
            "torchio_hann",
            _torchio("hann"),
            ("torchio",),
            doc="GridSampler + GridAggregator(hann)",
        ),
        Contender("tiler", _tiler("boxcar"), ("tiler", "numpy"), doc="Tiler + Merger(boxcar)"),
        Contender("tiler_hann", _tiler("hann"), ("tiler", "numpy"), doc="Tiler + Merger(hann)"),
        Contender("qlty", qlty_quilt, ("qlty",), doc="qlty 1.5.0 NCYXQuilt / NCZYXQuilt"),
    ]
}


def setup(name: str) -> None:
    for m in CONTENDERS[name].modules:
        importlib.import_module(m)
