"""Training-window (cleaning) benchmark: scenario, sparse annotation, reference, contenders.

The paper's Table 2 scenario: a (1, 1, 236, 720, 510) float32 image with about 53k labelled
voxels (classes 0 and 1) in a few XY, YZ and XZ planes, window 64, step 32, border 0. Every
contender cuts the image and the labels into windows and keeps the (image, label) pairs whose
window holds at least one labelled voxel (label != -1; with border 0 the core is the whole
window).

Each contender is ``run(image, labels, sc, tm) -> TrainOut``: ``image`` is (1, 1, *spatial)
float32, ``labels`` (1, *spatial) int8 with -1 = unlabelled, ``tm`` a phase timer. Imports
happen in ``setup`` (outside the timed section); everything from the input tensors to the kept
windows is timed, including planning objects (Tiling, GridSampler, Tiler, quilts).
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from workloads import axis_starts

if TYPE_CHECKING:
    from collections.abc import Callable

    from contenders import Timer

IGNORE = -1


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: tuple[int, ...]  # (N, C, Z, Y, X)
    window: int
    step: int
    border: int = 0
    batch: int = 16  # loader batch (TorchIO); the paper trained with batch size 16
    description: str = ""

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def overlap(self) -> int:
        return self.window - self.step

    @property
    def window_voxels(self) -> int:
        return self.window ** len(self.spatial)


FULL = Scenario(
    "paper",
    (1, 1, 236, 720, 510),
    window=64,
    step=32,
    description="paper Table 2: (1,1,236,720,510) window 64 step 32 border 0",
)
QUICK = Scenario(
    "quick",
    (1, 1, 60, 180, 128),  # not divisible by the grid either: reproduces the qlty crash
    window=32,
    step=16,
    description="quick: (1,1,60,180,128) window 32 step 16 border 0",
)
# warm-up (first calls, JIT) before the timed runs; divisible by its grid so that a peer that
# crashes on non-divisible sizes shows the crash in a timed run, not in the warm-up
WARM = Scenario("warm", (1, 1, 40, 48, 40), window=16, step=8, description="warm-up")


def get(quick: bool) -> Scenario:
    return QUICK if quick else FULL


# --------------------------------------------------------------------------------------------
# the sparse annotation: brush strokes in a few XY, XZ and YZ planes

# At full size (236, 720, 510): (normal axis, plane position, start on the first in-plane axis,
# start on the second, voxels, stroke width along the second in-plane axis, class). A stroke
# fills rows of `width` voxels, row after row, `voxels` voxels in all (the last row partial).
# Normal axis 0 = an XY plane (z fixed), 1 = an XZ plane (y fixed), 2 = a YZ plane (x fixed).
# The strokes do not intersect, so the class counts are exact at full size: 51,505 voxels of
# class 0 and 1,809 of class 1 (the paper's Table 2: 51,505 non-filament, 1,809 filament).
STROKES: tuple[tuple[int, int, int, int, int, int, int], ...] = (
    (0, 118, 300, 200, 8585, 92, 0),  # XY, mid-depth
    (0, 20, 100, 60, 8584, 92, 0),  # XY near the top face: fewer windows per voxel
    (1, 410, 60, 330, 8584, 92, 0),  # XZ
    (1, 620, 130, 120, 8584, 92, 0),  # XZ
    (2, 250, 40, 520, 8584, 92, 0),  # YZ
    (2, 470, 100, 150, 8584, 92, 0),  # YZ
    (0, 118, 300, 300, 905, 12, 1),  # filament next to the first stroke
    (2, 250, 140, 520, 904, 12, 1),  # filament below the fifth stroke
)
FULL_SPATIAL = FULL.spatial


def make_image(sc: Scenario, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(sc.shape, generator=g, dtype=torch.float32)


def make_labels(sc: Scenario) -> torch.Tensor:
    """(N, *spatial) int8, -1 everywhere but the strokes, scaled per axis to ``sc``'s shape."""
    spatial = sc.spatial
    ratio = [s / f for s, f in zip(spatial, FULL_SPATIAL, strict=True)]
    lab = torch.full((sc.shape[0], *spatial), IGNORE, dtype=torch.int8)
    for normal, pos, u0, v0, voxels, width, cls in STROKES:
        au, av = [a for a in range(3) if a != normal]
        p = min(round(pos * ratio[normal]), spatial[normal] - 1)
        u = min(round(u0 * ratio[au]), spatial[au] - 1)
        v = min(round(v0 * ratio[av]), spatial[av] - 1)
        w = max(1, round(width * ratio[av]))
        n = max(1, round(voxels * ratio[au] * ratio[av]))
        w = min(w, spatial[av] - v)
        rows, rest = divmod(n, w)
        for r in range(rows + (1 if rest else 0)):
            if u + r >= spatial[au]:
                break
            length = w if r < rows else rest
            idx: list[Any] = [0, 0, 0]
            idx[normal] = p
            idx[au] = u + r
            idx[av] = slice(v, v + length)
            lab[(slice(None), *idx)] = cls
    return lab


# --------------------------------------------------------------------------------------------
# window geometry and the independent reference


def pad_starts(size: int, window: int, step: int) -> list[int]:
    """Window starts of peers that pad the end of the array instead of stepping back."""
    return [k * step for k in range(math.ceil(max(size - window, 0) / step) + 1)]


def grids(sc: Scenario, geometry: str) -> list[list[int]]:
    f = axis_starts if geometry == "clamp" else pad_starts
    return [f(d, sc.window, sc.step) for d in sc.spatial]


def reference(labels: torch.Tensor, sc: Scenario, geometry: str) -> dict:
    """Labelled voxels per window, computed from the labelled voxels' coordinates (not windows).

    For every axis a membership matrix (windows on that axis x labelled voxels); the count for
    window (i, j, k) is sum_v M0[i, v] * M1[j, v] * M2[k, v]. Independent of every contender.
    """
    assert labels.shape[0] == 1, "one image"
    coords = torch.nonzero(labels[0] != IGNORE)  # (L, 3)
    g = grids(sc, geometry)
    mats = []
    for ax, starts in enumerate(g):
        s = torch.tensor(starts, dtype=torch.int64)[:, None]
        c = coords[:, ax][None]
        mats.append(((c >= s) & (c < s + sc.window)).to(torch.float64))
    counts = torch.einsum("iv,jv,kv->ijk", *mats).round().to(torch.int64)
    kept = [
        (int(i), int(j), int(k))
        for i, j, k in torch.nonzero(counts > 0).tolist()  # raster order, like the contenders
    ]
    kept_starts = [(g[0][i], g[1][j], g[2][k]) for i, j, k in kept]
    return {
        "geometry": geometry,
        "total": int(counts.numel()),
        "labelled": int(coords.shape[0]),
        "kept_starts": kept_starts,
        "occurrences": int(counts[counts > 0].sum()),
        "classes": {
            int(v): int(n)
            for v, n in zip(*labels[labels != IGNORE].unique(return_counts=True), strict=True)
        },
    }


# --------------------------------------------------------------------------------------------
# contenders


@dataclass
class TrainOut:
    image: Any  # (K, C, *window) tensor or array, or a list of such windows
    labels: Any  # (K, *window) or (K, 1, *window)
    starts: list[tuple[int, ...]] | None  # window starts; None: not reported by the library
    total: int  # windows considered
    geometry: str  # "clamp": last window steps back to the edge; "pad": the array is padded
    note: str = ""
    report: str | None = None  # the library's own report, printed once
    dup: float | None = None  # duplication rate reported by the library itself
    kept_reported: int | None = None


def tilewise_clean(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    import tilewise as tw

    with tm("clean"):
        t = tw.Tiling(sc.spatial, window=sc.window, step=sc.step)
        r = tw.clean(image, labels, t, border=sc.border, ignore=IGNORE, min_labeled=1)
    return TrainOut(
        image=r.image,
        labels=r.labels,
        starts=[w.start for w in r.windows],
        total=r.report.total,
        geometry="clamp",
        note=f"tw.clean(border={sc.border}, ignore=-1, min_labeled=1)",
        report=str(r.report),
        dup=r.report.duplication_rate,
        kept_reported=r.report.kept,
    )


def naive(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    w = sc.window
    with tm("extract"):
        starts = list(itertools.product(*grids(sc, "clamp")))
        m = len(starts)
        img_all = torch.empty((m, image.shape[1], w, w, w), dtype=image.dtype)
        lab_all = torch.empty((m, w, w, w), dtype=labels.dtype)
        for i, (z, y, x) in enumerate(starts):
            img_all[i].copy_(image[0, :, z : z + w, y : y + w, x : x + w])
            lab_all[i].copy_(labels[0, z : z + w, y : y + w, x : x + w])
    with tm("filter"):
        keep = torch.nonzero(lab_all.flatten(1).amax(1) >= 0).flatten()
        img_k = img_all[keep]
        lab_k = lab_all[keep]
    del img_all, lab_all
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=[starts[int(i)] for i in keep],
        total=m,
        geometry="clamp",
        note="all windows copied (loop), then kept = max(label) >= 0",
    )


def monai_splitter(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    from monai.inferers import SlidingWindowSplitter

    seen = 0

    def labelled(patch, location) -> bool:
        nonlocal seen
        seen += 1
        return bool((patch >= 0).any())

    ov = [sc.overlap] * len(sc.spatial)  # ints: overlap in pixels
    with tm("labels pass"):
        sp = SlidingWindowSplitter(
            patch_size=sc.window, overlap=ov, filter_fn=labelled, pad_value=IGNORE
        )
        lab_p, locs = [], []
        for p, loc in sp(labels.unsqueeze(1)):
            lab_p.append(p)
            locs.append(tuple(int(v) for v in loc))
    kept = set(locs)
    with tm("image pass"):
        sp_img = SlidingWindowSplitter(
            patch_size=sc.window,
            overlap=ov,
            filter_fn=lambda patch, location: tuple(int(v) for v in location) in kept,
        )
        img_p, img_locs = [], []
        for p, loc in sp_img(image):
            img_p.append(p)
            img_locs.append(tuple(int(v) for v in loc))
    with tm("batch"):
        img_k = torch.cat(img_p) if img_p else image.new_empty((0, 1, *[sc.window] * 3))
        lab_k = torch.cat(lab_p)[:, 0] if lab_p else labels.new_empty((0, *[sc.window] * 3))
    assert img_locs == locs, "image and label passes disagree"
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=locs,
        total=seen,
        geometry="pad",
        note=(
            "labels splitter (pad_value=-1) with filter_fn=any(label>=0), then image splitter "
            "with filter_fn=location in kept"
        ),
    )


def torchio_grid(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    import torchio as tio

    assert image.shape[0] == 1, "TorchIO path handles one subject (N=1)"
    imgs, labs, starts = [], [], []
    with tm("extract"):
        subject = tio.Subject(img=tio.ScalarImage(tensor=image[0]), lab=tio.LabelMap(tensor=labels))
        sampler = tio.GridSampler(subject, patch_size=sc.window, patch_overlap=sc.overlap)
        loader = tio.SubjectsLoader(sampler, batch_size=sc.batch, num_workers=0)
        it = iter(loader)
    lab_dtype = None
    while True:
        with tm("extract"):
            try:
                batch = next(it)
            except StopIteration:
                break
            img = batch["img"][tio.DATA]
            lab = batch["lab"][tio.DATA]
            loc = batch[tio.LOCATION]
        with tm("filter"):
            lab_dtype = lab.dtype
            keep = lab.flatten(1).amax(1) >= 0
            if keep.any():
                imgs.append(img[keep])
                labs.append(lab[keep][:, 0])
                starts += [tuple(int(v) for v in row[:3]) for row in loc[keep].tolist()]
    with tm("filter"):
        img_k = torch.cat(imgs)
        lab_k = torch.cat(labs)
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=starts,
        total=len(sampler),
        geometry="clamp",
        note=(
            f"GridSampler(patch_overlap={sc.overlap}) + SubjectsLoader(batch_size={sc.batch}, "
            f"num_workers=0), kept = max(label) >= 0 per batch; label dtype {lab_dtype}"
        ).replace("torch.", ""),
    )


def tiler_tiles(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    import numpy as np
    from tiler import Tiler

    w, ov = sc.window, sc.overlap
    with tm("extract"):
        img_np = image[0].numpy()  # (C, *spatial), a view
        lab_np = labels.numpy()  # (1, *spatial)
        t_lab = Tiler(
            data_shape=lab_np.shape,
            tile_shape=(1, w, w, w),
            overlap=(0, ov, ov, ov),
            channel_dimension=0,
            mode="constant",
            constant_value=IGNORE,
        )
        t_img = Tiler(
            data_shape=img_np.shape,
            tile_shape=(img_np.shape[0], w, w, w),
            overlap=(0, ov, ov, ov),
            channel_dimension=0,
            mode="constant",
            constant_value=0.0,
        )
    kept, labs = [], []
    with tm("labels pass"):
        for tid, tile in t_lab(lab_np):
            if tile.max() >= 0:
                kept.append(tid)
                labs.append(tile[0])
    with tm("image pass"):
        imgs = [t_img.get_tile(img_np, tid) for tid in kept]
        img_k = np.stack(imgs)
        lab_k = np.stack(labs)
    starts = [tuple(int(v) for v in t_lab.get_tile_bbox(tid)[0]) for tid in kept]
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=starts,
        total=int(t_lab.n_tiles),
        geometry="pad",
        note=(
            "two Tilers (labels constant_value=-1): iterate label tiles, keep max >= 0, then "
            f"get_tile for kept image tiles (label tile dtype {lab_k.dtype})"
        ),
    )


def qlty_weed(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    import qlty

    win, step = (sc.window,) * 3, (sc.step,) * 3
    with tm("extract"):
        q = qlty.NCZYXQuilt(*sc.spatial, window=win, step=step, border=None)
        inp, out = q.unstitch_data_pair(image, labels)
    with tm("filter"):
        bt = torch.as_tensor(q.border_tensor())
        img_k, lab_k, removed = qlty.weed_sparse_classification_training_pairs_3D(
            inp, out, IGNORE, bt
        )
    del inp, out
    g = grids(sc, "clamp")
    all_starts = list(itertools.product(*g))
    idx = torch.nonzero(~removed).flatten().tolist()
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=[all_starts[i] for i in idx] if len(all_starts) == len(removed) else None,
        total=len(removed),
        geometry="clamp",
        note="NCZYXQuilt.unstitch_data_pair + weed_sparse_classification_training_pairs_3D",
    )


def qlty_large(image, labels, sc: Scenario, tm: Timer) -> TrainOut:
    import tempfile
    from pathlib import Path

    import qlty

    win, step = (sc.window,) * 3, (sc.step,) * 3
    with tempfile.TemporaryDirectory() as d, tm("clean"):
        q = qlty.LargeNCZYXQuilt(
            str(Path(d) / "q"), 1, *sc.spatial, window=win, step=step, border=None
        )
        img_k, lab_k = q.unstitch_and_clean_sparse_data_pair(image, labels, IGNORE)
    return TrainOut(
        image=img_k,
        labels=lab_k,
        starts=None,  # not returned: matched against the reference by content
        total=int(q.N_chunks),
        geometry="clamp",
        note="LargeNCZYXQuilt.unstitch_and_clean_sparse_data_pair (one call, one window at a time)",
    )


@dataclass
class TrainContender:
    name: str
    run: Callable
    modules: tuple[str, ...]
    doc: str = ""


CONTENDERS: dict[str, TrainContender] = {
    c.name: c
    for c in [
        TrainContender("tilewise", tilewise_clean, ("tilewise",), "tw.clean"),
        TrainContender("naive", naive, (), "copy all windows, then filter"),
        TrainContender(
            "monai_splitter",
            monai_splitter,
            ("monai.inferers",),
            "SlidingWindowSplitter with filter_fn, labels then image",
        ),
        TrainContender(
            "torchio", torchio_grid, ("torchio",), "GridSampler + SubjectsLoader, filter batches"
        ),
        TrainContender("tiler", tiler_tiles, ("tiler", "numpy"), "Tiler, filter label tiles"),
        TrainContender(
            "qlty",
            qlty_weed,
            ("qlty",),
            "NCZYXQuilt.unstitch_data_pair + weed_sparse_classification_training_pairs_3D",
        ),
        TrainContender(
            "qlty_large",
            qlty_large,
            ("qlty",),
            "LargeNCZYXQuilt.unstitch_and_clean_sparse_data_pair",
        ),
    ]
}


def setup(name: str) -> None:
    for m in CONTENDERS[name].modules:
        importlib.import_module(m)
