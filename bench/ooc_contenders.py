"""Out-of-core inference: workloads, the on-disk input, the contenders and the output check.

The input is a float32 zarr v3 array on disk, ``(1, 1, *spatial)``, uncompressed, chunks
``(1, 1, 128, 128, 128)``, generated once into a cache directory and reused. The model maps the
one input channel to two (``torch.cat([2*x, 2*x], 1)``), so the exact answer is ``2*x`` on both
channels whatever the blend. Every contender reads its windows from the input zarr (nobody loads
the whole input) and writes its result to a zarr array on disk, which the check then reads back
chunk by chunk.

Each contender is ``run(src, work, wl, tm, model) -> (output_path, info)``: ``src`` is the input
path, ``work`` an empty directory for the output and any temporary stores (deleted afterwards),
``tm`` the phase timer and ``model`` the timed model (see ``contenders.py``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from workloads import C_OUT, axis_starts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from contenders import Model, Timer

TOL = 1e-4
DATA_DIR = Path(os.environ.get("TILEWISE_BENCH_DATA", "/tmp/tilewise-bench-data"))


@dataclass(frozen=True)
class OocWorkload:
    name: str
    shape: tuple[int, ...]  # (1, 1, *spatial)
    window: tuple[int, ...]
    step: tuple[int, ...]
    chunks: tuple[int, ...]  # spatial chunks of the input (and of the outputs where settable)
    batch: int = 4
    warm: str = "warm"  # the workload run once before the timed run
    description: str = ""

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def voxels(self) -> int:
        return math.prod(self.spatial)

    def starts(self) -> list[tuple[int, ...]]:
        """Every window start in raster order; the last window on an axis steps back."""
        grids = [
            axis_starts(d, w, s)
            for d, w, s in zip(self.spatial, self.window, self.step, strict=True)
        ]
        return list(itertools.product(*grids))

    @property
    def windows(self) -> int:
        return len(self.starts())

    def input_path(self, data_dir: Path) -> Path:
        dims = "x".join(str(v) for v in self.spatial)
        ch = "x".join(str(v) for v in self.chunks)
        return data_dir / f"ooc-input-{dims}-c{ch}.zarr"


W128 = {"window": (128, 128, 128), "step": (96, 96, 96), "chunks": (128, 128, 128)}
W64 = {"window": (64, 64, 64), "step": (48, 48, 48), "chunks": (64, 64, 64)}

WORKLOADS: dict[str, OocWorkload] = {
    w.name: w
    for w in [
        OocWorkload(
            "full",
            (1, 1, 512, 1024, 1024),
            **W128,
            description="(1,1,512,1024,1024) float32, window 128, step 96",
        ),
        OocWorkload(
            "x4",
            (1, 1, 2048, 1024, 1024),
            **W128,
            description="(1,1,2048,1024,1024) float32 (first axis x4), window 128, step 96",
        ),
        OocWorkload(
            "quick",
            (1, 1, 128, 256, 256),
            **W64,
            description="quick (1,1,128,256,256) float32, window 64, step 48",
        ),
        OocWorkload(
            "quick-x4",
            (1, 1, 512, 256, 256),
            **W64,
            description="quick (1,1,512,256,256) float32 (first axis x4), window 64, step 48",
        ),
        OocWorkload(
            "warm",
            (1, 1, 64, 64, 64),
            window=(32, 32, 32),
            step=(24, 24, 24),
            chunks=(32, 32, 32),
            description="warm-up (1,1,64,64,64), window 32, step 24",
        ),
    ]
}


# ---------------------------------------------------------------------------------------------
# the input on disk


def ensure_input(wl: OocWorkload, data_dir: Path = DATA_DIR, log: Callable | None = None) -> Path:
    """Create the input zarr (uncompressed, chunked) once; reuse it when complete.

    Values are ``torch.rand`` per chunk-aligned slab, seeded by the slab's position, so the
    content does not depend on how often or where it was generated. A marker file written last
    tells a complete array from an interrupted one.
    """
    import zarr

    path = wl.input_path(data_dir)
    done = path / ".complete"
    if done.exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arr = zarr.create_array(
        str(path),
        shape=wl.shape,
        chunks=(1, 1, *wl.chunks),
        dtype="float32",
        compressors=None,
        fill_value=0.0,
        zarr_format=3,
    )
    cz, cy = wl.chunks[0], wl.chunks[1]
    for z in range(0, wl.spatial[0], cz):
        for y in range(0, wl.spatial[1], 2 * cy):
            shape = (
                min(cz, wl.spatial[0] - z),
                min(2 * cy, wl.spatial[1] - y),
                *wl.spatial[2:],
            )
            g = torch.Generator().manual_seed(1_000_003 * z + y)
            slab = torch.rand(shape, generator=g, dtype=torch.float32).numpy()
            arr[0, 0, z : z + shape[0], y : y + shape[1]] = slab
    done.write_text(f"{wl.shape}\n")
    if log:
        log(f"generated {path} in {time.perf_counter() - t0:.1f} s")
    return path


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def preload(path: Path) -> float:
    """Read every file under ``path`` once (into the page cache); returns seconds."""
    t0 = time.perf_counter()
    buf = bytearray(16 << 20)
    for root, _dirs, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
    return time.perf_counter() - t0


def fsync_tree(path: Path) -> float:
    """fsync every file and directory under ``path`` (the output reaches the disk); seconds."""
    t0 = time.perf_counter()
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def check_output(out_path: Path, src: Path, wl: OocWorkload) -> dict:
    """Max |out - 2x| over both channels, read back chunk by chunk from disk (never whole)."""
    import zarr

    x = zarr.open_array(str(src), mode="r")
    y = zarr.open_array(str(out_path), mode="r")
    res: dict = {"out_shape": list(y.shape), "out_dtype": str(y.dtype), "out_chunks": None}
    try:
        res["out_chunks"] = list(y.chunks)
        res["out_codecs"] = [type(c).__name__ for c in y.metadata.codecs]
    except AttributeError:
        pass
    want = (1, C_OUT, *wl.spatial)
    if tuple(y.shape) != want:
        res.update(max_err=None, n_bad=None, ok=False, why=f"shape {tuple(y.shape)} != {want}")
        return res
    max_err, n_bad, has_nan = 0.0, 0, False
    t0 = time.perf_counter()
    grids = [range(0, d, c) for d, c in zip(wl.spatial, wl.chunks, strict=True)]
    for lo in itertools.product(*grids):
        sl = tuple(
            slice(a, min(a + c, d)) for a, c, d in zip(lo, wl.chunks, wl.spatial, strict=True)
        )
        want2 = 2.0 * np.asarray(x[(0, 0, *sl)], dtype=np.float64)
        got = np.asarray(y[(0, slice(None), *sl)], dtype=np.float64)
        d = np.abs(got - want2[None])
        if np.isnan(d).any():
            has_nan = True
            d = np.nan_to_num(d, nan=np.inf)
        max_err = max(max_err, float(d.max()))
        n_bad += int((d > TOL).sum())
    ok = (not has_nan) and max_err <= TOL
    why = "NaN in output" if has_nan else ("" if ok else f"max err {max_err:.3g} > {TOL}")
    res.update(max_err=max_err, n_bad=n_bad, ok=ok, why=why, check_s=time.perf_counter() - t0)
    return res


# ---------------------------------------------------------------------------------------------
# helpers shared by the peers


def _window_slices(start: tuple[int, ...], window: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + w) for s, w in zip(start, window, strict=True))


def _batches(wl: OocWorkload) -> Iterator[list[tuple[int, ...]]]:
    starts = wl.starts()
    for i in range(0, len(starts), wl.batch):
        yield starts[i : i + wl.batch]


def _read_batch(x, starts, wl: OocWorkload, buf: torch.Tensor) -> torch.Tensor:
    """Copy the windows at ``starts`` from the zarr input into ``buf`` (one read per window)."""
    for j, st in enumerate(starts):
        buf[j].copy_(torch.from_numpy(x[(0, slice(None), *_window_slices(st, wl.window))]))
    return buf[: len(starts)]


# ---------------------------------------------------------------------------------------------
# tilewise


def tilewise_predict(
    src: Path, work: Path, wl: OocWorkload, tm: Timer, model: Model, zstd: bool = False
):
    import tilewise as tw

    out = work / "out.zarr"
    extra = {}
    if zstd:  # zarr's own default codec, as MONAI's stores use: the codec's share of the time
        from zarr.codecs import ZstdCodec

        extra["compressors"] = ZstdCodec()
    with tm("predict"):
        t = tw.Tiling(wl.spatial, window=wl.window, step=wl.step)
        p = tw.predict(
            model,
            str(src),
            t,
            out=str(out),
            batch_size=wl.batch,
            chunks=wl.chunks,
            overwrite=True,
            return_info=True,
            **extra,
        )
    info = {
        "windows": p.windows,
        "windows_run": p.windows_run,
        "blocks": p.blocks,
        "blocks_skipped": p.blocks_skipped,
        "lib_seconds": p.seconds,
        "lib_seconds_model": p.seconds_model,
        "lib_seconds_waiting": p.seconds_waiting,
        "note": f"tw.predict(path, out=zarr, batch_size={wl.batch}, chunks={wl.chunks[0]}^3, "
        f"default block, uniform blend{', compressors=ZstdCodec()' if zstd else ''}): "
        f"{p.blocks} blocks, {p.windows_run} window runs for {p.windows} windows",
    }
    return out, info


# ---------------------------------------------------------------------------------------------
# naive: two zarr accumulators, read-modify-write per window, one division pass


def naive_zarr(src: Path, work: Path, wl: OocWorkload, tm: Timer, model: Model):
    import zarr

    x = zarr.open_array(str(src), mode="r")
    acc_path = work / "acc.zarr"
    with tm("stitch"):
        acc = zarr.create_array(
            str(acc_path),
            shape=(1, C_OUT, *wl.spatial),
            chunks=(1, C_OUT, *wl.chunks),
            dtype="float32",
            compressors=None,
            fill_value=0.0,
            zarr_format=3,
        )
        cnt = zarr.create_array(
            str(work / "cnt.zarr"),
            shape=(1, 1, *wl.spatial),
            chunks=(1, 1, *wl.chunks),
            dtype="float32",
            compressors=None,
            fill_value=0.0,
            zarr_format=3,
        )
    buf = torch.empty((wl.batch, 1, *wl.window), dtype=torch.float32)
    ones = np.ones((1, 1, *wl.window), dtype=np.float32)
    for starts in _batches(wl):
        with tm("read"):
            b = _read_batch(x, starts, wl, buf)
        y = model(b)
        with tm("stitch"):
            yn = y.numpy()
            for j, st in enumerate(starts):
                sl = (slice(0, 1), slice(None), *_window_slices(st, wl.window))
                acc[sl] = acc[sl] + yn[j : j + 1]
                cnt[sl] = cnt[sl] + ones
    with tm("finalize"):  # in place, chunk by chunk: acc becomes the output
        grids = [range(0, d, c) for d, c in zip(wl.spatial, wl.chunks, strict=True)]
        for lo in itertools.product(*grids):
            sl = tuple(
                slice(a, min(a + c, d)) for a, c, d in zip(lo, wl.chunks, wl.spatial, strict=True)
            )
            acc[(0, slice(None), *sl)] = acc[(0, slice(None), *sl)] / cnt[(0, slice(None), *sl)]
    note = (
        "zarr accumulators (uncompressed, chunks "
        f"{wl.chunks[0]}^3): acc[w] += y; cnt[w] += 1 per window, then acc /= cnt per chunk"
    )
    return acc_path, {"note": note}


# ---------------------------------------------------------------------------------------------
# MONAI ZarrAvgMerger


def _monai_zarr(tuned: bool):
    def run(src: Path, work: Path, wl: OocWorkload, tm: Timer, model: Model):
        import zarr
        from monai.inferers import ZarrAvgMerger

        x = zarr.open_array(str(src), mode="r")
        out = work / "merged.zarr"
        shape = (1, C_OUT, *wl.spatial)
        kw: dict = {}
        if tuned:
            raw = [zarr.codecs.BytesCodec()]
            kw = {"chunks": (1, C_OUT, *wl.chunks), "codecs": raw}
            kw |= {"value_codecs": raw, "count_codecs": raw}
        with tm("stitch"):
            merger = ZarrAvgMerger(
                merged_shape=shape,
                store=zarr.storage.LocalStore(str(out)),
                value_store=zarr.storage.LocalStore(str(work / "values.zarr")),
                count_store=zarr.storage.LocalStore(str(work / "counts.zarr")),
                **kw,
            )
            chunks = tuple(merger.values.chunks)
        buf = torch.empty((wl.batch, 1, *wl.window), dtype=torch.float32)
        for starts in _batches(wl):
            with tm("read"):
                b = _read_batch(x, starts, wl, buf)
            y = model(b)
            with tm("stitch"):
                for j, st in enumerate(starts):
                    merger.aggregate(y[j : j + 1], st)
        with tm("finalize"):
            merger.finalize()
        what = f"chunks (1,2,{wl.chunks[0]}^3), uncompressed" if tuned else "defaults"
        note = (
            f"ZarrAvgMerger {what} (value/count chunks {chunks}, count uint8); windows read "
            "from the input zarr by our loop on the step-back grid"
        )
        return out, {"note": note, "merger_chunks": list(chunks)}

    return run


# ---------------------------------------------------------------------------------------------
# qlty 1.5.0 LargeNCZYXQuilt


def qlty_large(src: Path, work: Path, wl: OocWorkload, tm: Timer, model: Model):
    import qlty
    import zarr

    x = zarr.open_array(str(src), mode="r")
    base = str(work / "qlty")
    with tm("read"):
        q = qlty.LargeNCZYXQuilt(
            base, 1, *wl.spatial, window=wl.window, step=wl.step, border=None, border_weight=1.0
        )
        n = q.N_chunks
    buf = torch.empty((wl.batch, 1, *wl.window), dtype=torch.float32)
    for s0 in range(0, n, wl.batch):
        idx = list(range(s0, min(s0 + wl.batch, n)))
        with tm("read"):
            for j, i in enumerate(idx):  # unstitch slices the zarr array: one read per window
                buf[j].copy_(torch.from_numpy(np.asarray(q.unstitch(x, i))))
            b = buf[: len(idx)]
        y = model(b)
        with tm("stitch"):
            for j, i in enumerate(idx):
                q.stitch(y[j : j + 1], i)
    with tm("finalize"):
        mean = q.return_mean()  # computes the whole mean in RAM, then zarr.save
        dtype = str(mean.dtype)
        del mean
    note = (
        f"stitch per window into zarr caches (chunks = window); return_mean() materialises the "
        f"whole result in RAM ({dtype}) before zarr.save"
    )
    return Path(base + "_mean.zarr"), {"note": note, "windows": n}


@dataclass
class OocContender:
    name: str
    run: Callable
    modules: tuple[str, ...]
    doc: str = ""


CONTENDERS: dict[str, OocContender] = {
    c.name: c
    for c in [
        OocContender("tilewise", tilewise_predict, ("tilewise", "zarr"), "tw.predict(out=zarr)"),
        OocContender(
            "tilewise_zstd",
            functools.partial(tilewise_predict, zstd=True),
            ("tilewise", "zarr"),
            "tw.predict(out=zarr), zarr's default zstd codec",
        ),
        OocContender("naive_zarr", naive_zarr, ("zarr",), "zarr read-modify-write, 1 division"),
        OocContender(
            "monai_zarr",
            _monai_zarr(tuned=False),
            ("monai.inferers", "zarr"),
            "ZarrAvgMerger, defaults",
        ),
        OocContender(
            "monai_zarr_tuned",
            _monai_zarr(tuned=True),
            ("monai.inferers", "zarr"),
            "ZarrAvgMerger, 128^3 chunks, uncompressed",
        ),
        OocContender("qlty_large", qlty_large, ("qlty", "zarr"), "qlty LargeNCZYXQuilt"),
    ]
}


def setup(name: str) -> None:
    for m in CONTENDERS[name].modules:
        importlib.import_module(m)
