"""Scaling of tw.predict on dask.distributed: one process vs a LocalCluster of 1 and 2 workers.

Run: .venv/bin/python bench/run_dask.py [--shape 1,1,512,1024,1024] [--workers 1,2]
The default is the out-of-core benchmark's workload; its input is reused from
``bench/run_ooc.py``'s data directory when present. Prints one line per configuration: wall
time, rows (dask tasks), blocks, window runs, seconds per row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
import zarr

import tilewise as tw


def model(x):
    return torch.cat([2 * x, 2 * x], 1)


def _blocks(shape, tiling):
    from tilewise._predict import default_block
    from tilewise._sink import blocks

    block = default_block(tiling, (128, 128, 128), 2)
    return blocks(shape[0], tiling.shape, block, (128, 128, 128))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1,1,512,1024,1024")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "tilewise-dask-bench"))
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    os.makedirs(args.data, exist_ok=True)
    src = os.path.join(args.data, "in.zarr")
    cached = os.path.join(
        os.environ.get("TILEWISE_BENCH_DATA", "/tmp/tilewise-bench-data"),
        f"ooc-input-{'x'.join(map(str, shape[2:]))}-c128x128x128.zarr",
    )
    if os.path.exists(os.path.join(cached, ".complete")):
        src = cached
    elif not os.path.exists(src):
        z = zarr.create_array(
            src, shape=shape, chunks=(1, 1, 128, 128, 128), dtype="f4", compressors=None
        )
        rng = np.random.default_rng(0)
        for a in range(0, shape[2], 64):
            z[:, :, a : a + 64] = rng.random(
                (*shape[:2], min(64, shape[2] - a), *shape[3:]), dtype=np.float32
            )
    tiling = tw.Tiling(shape[2:], window=128, step=96)
    configs = [("single process", {})] + [
        (f"LocalCluster, {w} worker(s)", {"cluster": "local", "workers": w})
        for w in (int(v) for v in args.workers.split(","))
    ]
    print(
        f"input {shape} float32 zarr, window 128, step 96, {len(tiling)} windows, "
        f"2 output channels, chunks 128^3, default blocks"
    )
    for name, extra in configs:
        out = os.path.join(args.data, "out.zarr")
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        info = tw.predict(
            model,
            src,
            tiling,
            out=out,
            chunks=(128, 128, 128),
            return_info=True,
            progress=False,
            **extra,
        )
        dt = time.perf_counter() - t0
        n_rows = len({(b.n, b.region[1:]) for b in _blocks(shape, tiling)})
        print(
            f"{name:28s} {dt:7.1f} s  rows {n_rows}  blocks {info.blocks}  window runs "
            f"{info.windows_run}  {dt / n_rows:5.2f} s/row  {info.windows_run / dt:5.1f} windows/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
