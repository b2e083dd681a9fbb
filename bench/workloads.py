"""Workload definitions for the tilewise benchmark (full and --quick sizes).

Every workload is float32, layout (N, C, *spatial) with N=1, C_in=1; the model maps the one
input channel to two output channels (2*x on both), so the exact stitched answer is 2*x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

C_IN = 1
C_OUT = 2
BYTES = 4  # float32


@dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple[int, ...]  # (N, C, *spatial)
    window: tuple[int, ...]
    step: tuple[int, ...]
    batch: int  # streaming batch size (windows per model call) for every batching contender
    blend: tuple = ("uniform",)  # tilewise blend: ("uniform",) or ("border", width, weight)
    # tiny variant (shape, window, step) run once untimed-per-rep as warm-up (JIT, first calls)
    warm: tuple = field(default=())
    description: str = ""

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def overlap(self) -> tuple[int, ...]:
        return tuple(w - s for w, s in zip(self.window, self.step, strict=True))

    def warm_workload(self) -> Workload:
        shape, window, step = self.warm
        return Workload(
            name=self.name + "-warm",
            shape=shape,
            window=window,
            step=step,
            batch=self.batch,
            blend=self.blend,
            warm=self.warm,
        )


def axis_starts(size: int, window: int, step: int) -> list[int]:
    """Window starts on one axis: k*step, and a last window stepped back to end at the edge."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def n_windows(wl: Workload) -> int:
    per_axis = [
        len(axis_starts(d, w, s)) for d, w, s in zip(wl.spatial, wl.window, wl.step, strict=True)
    ]
    return wl.shape[0] * math.prod(per_axis)


def min_bytes(wl: Workload) -> dict[str, int]:
    """Bytes that any extract -> model -> stitch pipeline must move (model traffic excluded)."""
    n = wl.shape[0]
    vox = math.prod(wl.spatial)
    win = math.prod(wl.window)
    m = n_windows(wl)
    return {
        "input_read": BYTES * n * C_IN * vox,
        "windows_written": BYTES * m * C_IN * win,
        "window_outputs_read": BYTES * m * C_OUT * win,
        "output_fresh": BYTES * n * C_OUT * vox,  # first touch of the freshly allocated output
        "output_rw": 2 * BYTES * n * C_OUT * vox,  # output read + write (accumulate / normalise)
    }


def bound_seconds(wl: Workload, copy_gbps: float, first_touch_gbps: float) -> float:
    b = min_bytes(wl)
    fresh = b["output_fresh"]
    other = sum(v for k, v in b.items() if k != "output_fresh")
    return fresh / (first_touch_gbps * 1e9) + other / (copy_gbps * 1e9)


BORDER = ("border", 10, 0.0)

FULL = {
    "a": Workload(
        name="a",
        shape=(1, 1, 4096, 4096),
        window=(256, 256),
        step=(192, 192),
        batch=32,  # 32 windows = 8 MiB in, 16 MiB out
        warm=((1, 1, 64, 64), (16, 16), (12, 12)),
        description="2D (1,1,4096,4096) window 256 step 192, uniform blend",
    ),
    "b": Workload(
        name="b",
        shape=(1, 1, 2048, 2048),
        window=(32, 32),
        step=(8, 8),
        batch=4096,  # 4096 windows = 16 MiB in, 32 MiB out
        warm=((1, 1, 64, 64), (16, 16), (4, 4)),
        description="2D (1,1,2048,2048) window 32 step 8 (many small windows), uniform blend",
    ),
    "c": Workload(
        name="c",
        shape=(1, 1, 236, 720, 510),
        window=(128, 128, 128),
        step=(108, 108, 108),
        batch=2,  # 2 windows = 16 MiB in, 32 MiB out
        blend=BORDER,
        warm=((1, 1, 56, 56, 56), (32, 32, 32), (12, 12, 12)),
        description="3D (1,1,236,720,510) window 128 step 108; tilewise border(10, weight=0)",
    ),
}

QUICK = {
    "a": Workload(
        name="a",
        shape=(1, 1, 512, 512),
        window=(64, 64),
        step=(48, 48),
        batch=16,
        warm=FULL["a"].warm,
        description="quick 2D (1,1,512,512) window 64 step 48",
    ),
    "b": Workload(
        name="b",
        shape=(1, 1, 256, 256),
        window=(32, 32),
        step=(8, 8),
        batch=512,
        warm=FULL["b"].warm,
        description="quick 2D (1,1,256,256) window 32 step 8",
    ),
    "c": Workload(
        name="c",
        shape=(1, 1, 60, 180, 128),  # not divisible by the grid, like the full size
        window=(48, 48, 48),
        step=(28, 28, 28),
        batch=2,
        blend=BORDER,
        warm=FULL["c"].warm,
        description="quick 3D (1,1,60,180,128) window 48 step 28; tilewise border(10, weight=0)",
    ),
}


def get(name: str, quick: bool) -> Workload:
    return (QUICK if quick else FULL)[name]
