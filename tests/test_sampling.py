"""Training windows: label counting, cleaning, the report, random windows and the Dataset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tilewise as tw
from strategies import tilings
from tilewise import _sampling


def brute_counts(labels: np.ndarray, t: tw.Tiling, border: tuple[int, ...], ignore) -> np.ndarray:
    mask = ~np.isnan(labels) if ignore != ignore else labels != ignore
    if mask.ndim == t.ndim + 2:
        mask = mask.any(axis=1)
    out = np.zeros((mask.shape[0], len(t)), dtype=np.int64)
    for n in range(mask.shape[0]):
        for w in t:
            core = tuple(
                slice(max(a + b, 0), min(z - b, s))
                for a, z, b, s in zip(w.start, w.stop, border, t.shape, strict=True)
            )
            out[n, w.index] = mask[n][core].sum()
    return out


def brute_in_kept_cores(mask, t: tw.Tiling, border, kept) -> int:
    """Labelled voxels inside the union of the kept windows' cores, image by image."""
    union = np.zeros(mask.shape, dtype=bool)
    for flat in kept.tolist():
        n, w = divmod(flat, len(t))
        win = t[w]
        core = tuple(
            slice(max(a + b, 0), max(min(z - b, s), 0))
            for a, z, b, s in zip(win.start, win.stop, border, t.shape, strict=True)
        )
        union[(n, *core)] = True
    return int((mask & union).sum())


@given(t=tilings(stitchable=False), data=st.data())
def test_summed_area_counts_equal_brute_force(t, data):
    border = tuple(data.draw(st.integers(0, max(0, (w - 1) // 2))) for w in t.window)
    n = data.draw(st.integers(1, 2))
    density = data.draw(st.sampled_from([0.0, 0.01, 0.3, 1.0]))  # sparse and dense slabs
    # word-wise scan of sparse integer labels: every width, and an ignore value of each sign
    dtype = np.dtype(data.draw(st.sampled_from(["int8", "uint8", "int16", "int32", "int64"])))
    ignore = 255 if dtype == np.uint8 else data.draw(st.sampled_from([-1, 7]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    values = rng.integers(0, 3, (n, *t.shape))
    labels = np.where(rng.random((n, *t.shape)) < density, values, ignore).astype(dtype)
    got = tw.count_labeled(labels, t, border=border, ignore=ignore)
    np.testing.assert_array_equal(got, brute_counts(labels, t, border, ignore))
    need = data.draw(st.integers(1, 3))
    r = tw.clean(
        np.zeros((n, 1, *t.shape)), labels, t, border=border, ignore=ignore, min_labeled=need
    )
    report = r.report
    values, per_class = np.unique(labels[labels != ignore], return_counts=True)
    assert report.classes == dict(zip(values.tolist(), per_class.tolist(), strict=True))
    assert r.indices.tolist() == np.flatnonzero(got.reshape(-1) >= need).tolist()
    assert report.labeled_in_cores == brute_in_kept_cores(labels != ignore, t, border, r.indices)


def test_counts_with_channels_nan_and_small_slabs(monkeypatch):
    monkeypatch.setattr(_sampling, "SLAB_VOXELS", 7)  # force many slabs per cell
    rng = np.random.default_rng(3)
    t = tw.Tiling((9, 10, 11), window=(4, 5, 6), step=(2, 3, 4))
    labels = np.where(rng.random((2, 3, 9, 10, 11)) < 0.05, rng.random((2, 3, 9, 10, 11)), np.nan)
    got = tw.count_labeled(labels, t, border=1, ignore=float("nan"))
    np.testing.assert_array_equal(got, brute_counts(labels, t, (1, 1, 1), float("nan")))


def hand_volume():
    """A 1x1x12x12 image; labels at three voxels. Tiling 6/3 -> 3x3 windows."""
    img = np.arange(144, dtype=np.float32).reshape(1, 1, 12, 12)
    lab = np.full((1, 12, 12), -1, dtype=np.int16)
    lab[0, 1, 1] = 0  # in window (0,0) only; with border 1 it is still in its core
    lab[0, 0, 7] = 1  # on the array edge: in a border band of every window that holds it
    lab[0, 7, 7] = 2  # windows (1,1), (1,2), (2,1), (2,2)
    return img, lab, tw.Tiling((12, 12), window=6, step=3)


def test_hand_made_volume_kept_windows_and_report():
    img, lab, t = hand_volume()
    r = tw.clean(img, lab, t, border=1)
    # cores (border 1) of window (i, j) cover rows/cols [3i+1, 3i+5)
    assert r.indices.tolist() == [0, 4, 5, 7, 8]
    assert [w.grid for w in r.windows] == [(0, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert r.images.tolist() == [0, 0, 0, 0, 0]
    rep = r.report
    assert (rep.total, rep.kept, rep.labeled, rep.labeled_in_cores) == (9, 5, 3, 2)
    assert rep.occurrences == 5
    assert rep.duplication_rate == pytest.approx(5 / 3)
    assert rep.reduction == pytest.approx(9 / 5)
    assert dict(rep.classes) == {0.0: 1, 1.0: 1, 2.0: 1}
    text = str(rep)
    assert "Total windows" in text
    assert "(9, 1, 6, 6)" in text
    assert "Data duplication rate            1.67" in text
    # kept image windows are exactly the image's windows
    np.testing.assert_array_equal(r.image, tw.extract(img, t, r.indices))


def test_border_labels_are_marked_ignored_on_every_side():
    img, lab, t = hand_volume()
    lab[:] = 5  # everything labelled
    r = tw.clean(img, lab, t, border=2)
    expected = np.full((6, 6), -1)
    expected[2:4, 2:4] = 5
    for window_labels in r.labels:
        np.testing.assert_array_equal(window_labels, expected)
    assert r.labels.dtype == np.int16
    assert lab.min() == 5  # the input is never modified


def test_min_labeled_count_and_fraction():
    img, lab, t = hand_volume()
    lab[0, 9:12, 9:12] = 1  # 9 labelled voxels, only in window (2, 2) (which also holds (7, 7))
    r9 = tw.clean(img, lab, t, min_labeled=9)
    assert [w.grid for w in r9.windows] == [(2, 2)]
    frac = tw.clean(img, lab, t, min_labeled=0.25)  # 9 of 36 core voxels
    assert frac.indices.tolist() == r9.indices.tolist()


def test_labeled_in_cores_counts_only_kept_cores():
    img, lab, t = hand_volume()
    lab[:] = -1
    lab[0, 1, 1] = 0  # only in window (0, 0), which min_labeled=9 drops
    lab[0, 9:12, 9:12] = 1  # 9 voxels, all in window (2, 2)
    rep = tw.clean(img, lab, t, min_labeled=9).report
    assert (rep.kept, rep.labeled, rep.occurrences) == (1, 10, 9)
    assert rep.labeled_in_cores == 9
    # per image: a label of image 1 inside a core kept only for image 0 is not counted
    img2 = np.concatenate([img, img])
    lab2 = np.concatenate([lab, np.full_like(lab, -1)])
    lab2[1, 10, 10] = 1
    rep2 = tw.clean(img2, lab2, t, min_labeled=9).report
    assert (rep2.kept, rep2.labeled, rep2.labeled_in_cores) == (1, 11, 9)


def test_several_images_2d_plus_time_and_torch_inputs():
    img = torch.rand(2, 3, 5, 16, 16)  # N=2, C=3, T Y X
    lab = torch.full((2, 2, 5, 16, 16), -1, dtype=torch.int64)  # two label channels
    lab[1, 1, 2, 9, 9] = 1
    lab[0, 0, 4, 0, 15] = 0
    t = tw.Tiling((5, 16, 16), window=(3, 8, 8), step=(2, 4, 4))
    r = tw.clean(img, lab, t)
    assert isinstance(r.image, torch.Tensor)
    assert isinstance(r.labels, torch.Tensor)
    assert r.labels.shape[1:] == (2, 3, 8, 8)
    assert set(r.images.tolist()) == {0, 1}
    assert r.report.labeled == 2
    ref = brute_counts(lab.numpy(), t, (0, 0, 0), -1).reshape(-1)
    assert r.indices.tolist() == np.flatnonzero(ref >= 1).tolist()
    # classes over every label channel (the 1 is only in channel 1); -1 is never a class
    assert r.report.classes == {0.0: 1, 1.0: 1}
    assert "class -1" not in str(r.report)


def test_zarr_labels_and_image_are_read_lazily(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    monkeypatch.setattr(_sampling, "SLAB_VOXELS", 64)
    img, lab, t = hand_volume()
    zimg = zarr.create_array(
        tmp_path / "img.zarr", shape=img.shape, chunks=(1, 1, 4, 4), dtype="f4"
    )
    zimg[:] = img
    zlab = zarr.create_array(tmp_path / "lab.zarr", shape=lab.shape, chunks=(1, 4, 4), dtype="i2")
    zlab[:] = lab
    a = tw.clean(img, lab, t, border=1)
    b = tw.clean(zimg, zlab, t, border=1)
    assert a.report == b.report
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_paper_scale_counts_match_per_axis_coverage():
    """The paper's geometry (2310 windows) with two labelled boxes; each voxel is counted once
    per window that holds it, which for a box factorises into per-axis coverage sums."""
    t = tw.Tiling((236, 720, 510), window=64, step=32)
    lab = np.full((1, 236, 720, 510), -1, dtype=np.int8)
    boxes = [((100, 101), (200, 300), (100, 200)), ((50, 60), (400, 401), (300, 320))]
    for (z0, z1), (y0, y1), (x0, x1) in boxes:
        lab[0, z0:z1, y0:y1, x0:x1] = 1
    counts = tw.count_labeled(lab, t)
    assert counts.shape == (1, 2310)
    cover = [
        np.array([((s <= p) & (p < s + 64)).sum() for p in range(n)])
        for s, n in zip(t.axis_starts, t.shape, strict=True)
    ]
    expected = sum(
        int(np.prod([cover[ax][a:b].sum() for ax, (a, b) in enumerate(box)])) for box in boxes
    )
    assert counts.sum() == expected
    assert counts.max() == 64 * 64  # a window whose XY face lies inside the 100 x 100 patch


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels": np.zeros((1, 12, 11))}, tw.ShapeMismatchError, r"shape \(N, 12, 12\)"),
        ({"labels": np.zeros((2, 12, 12))}, tw.ShapeMismatchError, "N = 1 images"),
        ({"ignore": float("nan")}, tw.ParameterError, "whole number"),
        ({"ignore": 1.5}, tw.ParameterError, "whole number"),
        ({"ignore": "none"}, tw.ParameterTypeError, "an int"),
        ({"labels": np.zeros((1, 12, 12), np.uint8), "ignore": -1}, tw.ParameterError, "0..255"),
        ({"border": 3}, tw.ParameterError, "less than half the window"),
        ({"min_labeled": 0}, tw.ParameterError, "at least 1"),
        ({"min_labeled": 1.5}, tw.ParameterError, r"\(0, 1\]"),
        ({"min_labeled": "1"}, tw.ParameterTypeError, "min_labeled"),
        ({"labels": [1, 2]}, tw.ParameterTypeError, "an array"),
        ({"labels": np.zeros((1, 12, 12), complex)}, tw.ParameterTypeError, "integer or float"),
    ],
)
def test_clean_errors(kwargs, error, match):
    img, lab, t = hand_volume()
    args = {"labels": lab, **kwargs}
    labels = args.pop("labels")
    with pytest.raises(error, match=match) as info:
        tw.clean(img, labels, t, **args)
    assert "Fix:" in str(info.value)


# -- random windows ---------------------------------------------------------------------------
def rare_class_labels():
    lab = np.full((1, 40, 60, 60), -1, dtype=np.int64)
    lab[0, 5:35, 10:50, 30] = 0  # 1,200 background voxels in one plane
    lab[0, 20, 45, 5:10] = 1  # 5 voxels of a rare class
    return lab


def test_random_windows_are_reproducible_and_inside():
    s = tw.RandomWindows((40, 60, 60), window=(16, 24, 24), count=200, seed=5)
    again = tw.RandomWindows((40, 60, 60), window=(16, 24, 24), count=200, seed=5)
    assert [w.start for _, w in s] == [w.start for _, w in again]
    other = s.with_epoch(1)
    assert [w.start for _, w in s] != [w.start for _, w in other]
    for _, w in s:
        assert all(a >= 0 and b <= n for a, b, n in zip(w.start, w.stop, (40, 60, 60), strict=True))


def test_label_weighted_windows_balance_rare_classes():
    lab = rare_class_labels()
    s = tw.RandomWindows((40, 60, 60), window=16, count=400, labels=lab, border=2, seed=0)
    assert s.classes == {0.0: 1200, 1.0: 5}
    rare = 0
    for _, w in s:
        core = tuple(slice(a + 2, b - 2) for a, b in zip(w.start, w.stop, strict=True))
        window_labels = lab[0][core]
        assert (window_labels >= 0).any()  # the chosen labelled voxel is in the core
        rare += int((window_labels == 1).any())
    assert 150 < rare < 250  # balanced: about half the draws centre the rare class
    freq = tw.RandomWindows((40, 60, 60), 16, 400, labels=lab, class_weights="frequency", seed=0)
    assert sum(int((lab[0][w.slices] == 1).any()) for _, w in freq) < 40


def test_random_windows_multichannel_labels_never_make_ignore_a_class():
    lab = np.full((1, 2, 20, 20), -1, dtype=np.int64)
    lab[0, 1, 3, 4] = 2  # channel 1 only: channel 0 holds the ignore value there
    lab[0, 0, 15, 15] = 1
    lab[0, 1, 15, 15] = 1  # the same voxel and value in both channels: remembered once
    s = tw.RandomWindows((20, 20), window=6, count=30, labels=lab, seed=0)
    assert s.classes == {1.0: 1, 2.0: 1}
    for _, w in s:  # every draw holds a labelled voxel
        assert (lab[0][(slice(None), *w.slices)] >= 0).any()


@pytest.mark.parametrize("ignore", [None, -1, float("nan")])
def test_random_windows_nan_is_never_a_class(ignore):
    lab = np.full((1, 20, 20), np.nan, dtype=np.float32)
    lab[0, 2, 2] = 0.0
    lab[0, 17, 17] = 1.0
    lab[0, 5, 5] = -1.0  # unlabelled with ignore=-1, a class with ignore=NaN
    s = tw.RandomWindows((20, 20), window=4, count=20, labels=lab, ignore=ignore, seed=0)
    want = {0.0: 1, 1.0: 1} if ignore == -1 else {-1.0: 1, 0.0: 1, 1.0: 1}
    assert s.classes == want
    assert len(list(s)) == 20  # drawing works


def test_continuous_float_labels_are_one_class():
    rng = np.random.default_rng(0)
    lab = np.where(rng.random((1, 30, 30)) < 0.5, rng.random((1, 30, 30)), np.nan)
    s = tw.RandomWindows((30, 30), window=8, count=10, labels=lab, seed=0)
    assert s.classes == {}
    assert [len(p.coords) for p in s.points] == [int((~np.isnan(lab)).sum())]
    assert len(list(s)) == 10
    with pytest.raises(tw.ParameterError, match="continuous float labels"):
        tw.RandomWindows((30, 30), 8, 10, labels=lab, class_weights={0.5: 1.0})
    rep = tw.clean(np.zeros((1, 1, 30, 30)), lab, tw.Tiling((30, 30), 10, 10)).report
    assert rep.classes == {}
    assert rep.labeled == int((~np.isnan(lab)).sum())
    assert f"one class (continuous values)  {rep.labeled}" in str(rep)
    # few distinct float values stay classes
    few = np.where(np.isnan(lab), np.nan, np.round(lab * 2) / 2)
    assert tw.RandomWindows((30, 30), 8, 10, labels=few).classes.keys() == {0.0, 0.5, 1.0}
    assert tw.clean(np.zeros((1, 1, 30, 30)), few, tw.Tiling((30, 30), 10, 10)).report.classes


def test_float_labels_default_ignore_is_nan():
    lab = np.full((1, 8, 8), np.nan, dtype=np.float32)
    lab[0, 1, 1] = 0.5
    lab[0, 6, 6] = -1.0  # a real value for float labels by default
    t = tw.Tiling((8, 8), window=4, step=4)
    assert tw.count_labeled(lab, t).tolist() == [[1, 0, 0, 1]]
    r = tw.clean(np.zeros((1, 1, 8, 8)), lab, t, border=1)
    assert (r.report.labeled, r.report.kept) == (2, 2)
    assert np.isnan(r.labels[0, 0]).all()  # the border band is NaN, the ignore value
    ds = tw.PatchDataset(np.zeros((1, 1, 8, 8)), lab, tiling=t, border=1)
    assert torch.isnan(ds[0]["labels"][0]).all()
    # explicit ignore values keep working; NaN is still never a label
    assert tw.count_labeled(lab, t, ignore=-1.0).tolist() == [[1, 0, 0, 0]]
    assert tw.count_labeled(np.full((1, 8, 8), -1), t).sum() == 0  # integer default: -1


@pytest.mark.parametrize("pad", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize("kind", ["numpy", "torch", "memmap"])
def test_padded_tiling_pads_labels_with_ignore(pad, kind, tmp_path):
    img = np.arange(4 * 12, dtype=np.float32).reshape(1, 1, 4, 12)
    lab = np.arange(4 * 12, dtype=np.int16).reshape(1, 4, 12) % 3  # every voxel labelled
    t = tw.Tiling((4, 12), window=(8, 6), step=(8, 6), pad=pad)
    pad_lo, pad_hi = t.padding[0]
    assert (pad_lo, pad_hi) == (2, 2)
    if kind == "torch":
        lab_in = torch.from_numpy(lab)
    elif kind == "memmap":
        np.save(tmp_path / "lab.npy", lab)
        lab_in = np.load(tmp_path / "lab.npy", mmap_mode="r")
    else:
        lab_in = lab
    r = tw.clean(img, lab_in, t)
    got = np.asarray(r.labels)
    assert got.shape == (2, 8, 6)
    for k, w in enumerate(r.windows):
        assert (got[k, :pad_lo] == -1).all()
        assert (got[k, 8 - pad_hi :] == -1).all()
        np.testing.assert_array_equal(got[k, pad_lo : 8 - pad_hi], lab[0][w.slices])
    ds = tw.PatchDataset(img, lab_in, tiling=t)
    for k in range(len(ds)):
        np.testing.assert_array_equal(ds[k]["labels"].numpy(), got[k])
    if pad != "constant":  # the image is still padded as the tiling says
        assert not (ds[0]["image"][0, :pad_lo] == 0).all()


def test_random_windows_errors():
    with pytest.raises(tw.ParameterError, match="axis 0 has size 4"):
        tw.RandomWindows((4, 10), window=8, count=3)
    with pytest.raises(tw.ParameterError, match="no voxel differs"):
        tw.RandomWindows((10, 10), window=4, count=3, labels=np.full((1, 10, 10), -1))
    with pytest.raises(tw.ParameterError, match="class_weights"):
        tw.RandomWindows((40, 60, 60), 16, 4, labels=rare_class_labels(), class_weights="x")
    with pytest.raises(tw.ParameterError, match=r"\[0, 3\)"):
        tw.RandomWindows((10, 10), window=4, count=3)[3]
    with pytest.raises(tw.ParameterError, match="max_points"):
        tw.RandomWindows((40, 60, 60), 16, 4, labels=rare_class_labels(), max_points=0)


# -- dataset ----------------------------------------------------------------------------------
def test_dataset_grid_items_carry_positions():
    img, lab, t = hand_volume()
    r = tw.clean(img, lab, t, border=1)
    ds = tw.PatchDataset(img, lab, tiling=t, indices=r.indices, border=1)
    assert len(ds) == 5
    for k in range(len(ds)):
        item = ds[k]
        np.testing.assert_array_equal(item["image"].numpy(), r.image[k])
        np.testing.assert_array_equal(item["labels"].numpy(), r.labels[k])
        assert tuple(item["start"].tolist()) == r.windows[k].start
        assert tuple(item["stop"].tolist()) == r.windows[k].stop
        assert item["start"].dtype == item["stop"].dtype == torch.int64
        assert item["index"] == int(r.indices[k])
    with pytest.raises(IndexError):
        ds[5]


def test_dataset_with_dataloader_workers_and_memmap(tmp_path):
    img, lab, t = hand_volume()
    path = tmp_path / "img.npy"
    np.save(path, img)
    mm = np.load(path, mmap_mode="r")
    ds = tw.PatchDataset(mm, lab, tiling=t)
    clone = pickle.loads(pickle.dumps(ds))
    assert isinstance(clone.image, np.memmap)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    starts, images = [], []
    for batch in loader:
        starts.append(batch["start"])
        images.append(batch["image"])
    assert torch.cat(starts).tolist() == [list(w.start) for w in t]
    np.testing.assert_array_equal(torch.cat(images).numpy(), tw.extract(img, t))


def memmap_views(tmp_path):
    data = np.arange(2 * 3 * 16 * 24, dtype=np.float32).reshape(2, 3, 16, 24)
    np.save(tmp_path / "a.npy", data)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="r")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\0" * 40 + np.asfortranarray(data).tobytes(order="F"))
    fortran = np.memmap(raw, dtype=np.float32, mode="r", offset=40, shape=data.shape, order="F")
    return {
        "slice": mm[:, :, :, 8:],
        "reversed": mm[:, ::-1, ::-1, 8:],
        "strided": mm[1:, 1:, ::2, 4:20:2],
        "fortran": fortran[:, 1:, :, 8:],
    }


@pytest.mark.parametrize("view", ["slice", "reversed", "strided", "fortran"])
def test_pickled_dataset_reopens_the_same_memmap_view(tmp_path, view):
    mm = memmap_views(tmp_path)[view]
    t = tw.Tiling(mm.shape[2:], window=4, step=4)
    ds = tw.PatchDataset(mm, None, tiling=t)
    clone = pickle.loads(pickle.dumps(ds))
    assert isinstance(clone.image, np.memmap)
    assert clone.image.shape == mm.shape
    np.testing.assert_array_equal(clone.image, mm)
    again = pickle.loads(pickle.dumps(clone))  # a reopened view pickles the same way
    np.testing.assert_array_equal(again.image, mm)
    for k in (0, len(ds) - 1):
        assert torch.equal(clone[k]["image"], ds[k]["image"])


def test_memmap_slice_in_spawned_dataloader_workers(tmp_path):
    mm = memmap_views(tmp_path)["slice"]
    t = tw.Tiling((16, 16), window=8, step=8)
    ds = tw.PatchDataset(mm, None, tiling=t)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, multiprocessing_context="spawn"
    )
    images = torch.cat([batch["image"] for batch in loader])
    np.testing.assert_array_equal(images.numpy(), tw.extract(np.asarray(mm), t))


def test_paired_augmentation_moves_image_and_labels_together():
    rng = np.random.default_rng(0)
    img = rng.random((1, 1, 16, 16, 16)).astype(np.float32)
    lab = (img[:, 0] * 1000).astype(np.int64)  # labels are a function of the image
    t = tw.Tiling((16, 16, 16), window=8, step=8)
    ds = tw.PatchDataset(img, lab, tiling=t, augment=True, seed=3)
    changed = 0
    for k in range(len(ds)):
        item = ds[k]
        np.testing.assert_array_equal(
            item["labels"].numpy(), (item["image"][0].numpy() * 1000).astype(np.int64)
        )
        changed += int(not np.array_equal(item["image"].numpy(), tw.extract(img, t, k)[0]))
    assert changed > 0
    assert torch.equal(ds[2]["image"], ds[2]["image"])  # deterministic per item
    epoch0 = [ds[k]["image"] for k in range(len(ds))]
    ds.set_epoch(1)
    epoch1 = [ds[k]["image"] for k in range(len(ds))]
    assert any(not torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))
    ds.set_epoch(0)  # reproducible: the same epoch gives the same augmentations
    assert all(torch.equal(ds[k]["image"], a) for k, a in enumerate(epoch0))


def test_rotation_needs_a_square_plane():
    img = np.zeros((1, 1, 8, 12, 12), np.float32)
    t = tw.Tiling((8, 12, 12), window=(4, 6, 6), step=(4, 6, 6))
    with pytest.raises(tw.ParameterError, match=r"axes 0 and 1.*\(4, 6, 6\)|\(4, 6, 6\).*axes 0"):
        tw.PatchDataset(img, tiling=t, augment=True, rotate_axes=(0, 1))
    assert tw.PatchDataset(img, tiling=t, augment=True).rotate_axes == (1, 2)
    flat = tw.Tiling((12, 12), window=(4, 6), step=(4, 6))  # default plane not square: no rotation
    ds = tw.PatchDataset(img[:, :, 0], tiling=flat, augment=True)
    assert ds.rotate_axes is None
    assert all(tuple(ds[k]["image"].shape) == (1, 4, 6) for k in range(len(ds)))


def test_dataset_random_mode():
    lab = rare_class_labels()
    img = np.random.default_rng(1).random((1, 2, 40, 60, 60)).astype(np.float32)
    sampler = tw.RandomWindows((40, 60, 60), 16, 10, labels=lab, seed=2)
    ds = tw.PatchDataset(img, lab, sampler=sampler)
    item = ds[3]
    n, w = sampler[3]
    np.testing.assert_array_equal(item["image"].numpy(), img[n][(slice(None), *w.slices)])
    assert tuple(item["stop"].tolist()) == w.stop
    assert len(ds) == 10
    starts0 = [ds[k]["start"].tolist() for k in range(len(ds))]
    ds.set_epoch(1)
    starts1 = [ds[k]["start"].tolist() for k in range(len(ds))]
    assert starts1 != starts0
    assert starts1 == [list(w.start) for _, w in sampler.with_epoch(1)]
    ds.set_epoch(0)
    assert [ds[k]["start"].tolist() for k in range(len(ds))] == starts0


def test_dataset_errors():
    img, lab, t = hand_volume()
    with pytest.raises(tw.ParameterError, match="exactly one of tiling"):
        tw.PatchDataset(img, lab)
    with pytest.raises(tw.ShapeMismatchError, match=r"\(N, C, 12, 12\)"):
        tw.PatchDataset(img[0], lab, tiling=t)
    with pytest.raises(tw.ParameterError, match="flat window indices"):
        tw.PatchDataset(img, lab, tiling=t, indices=[99])
    with pytest.raises(tw.ParameterError, match="tiled axes"):
        tw.PatchDataset(img, lab, tiling=t, flip_axes=[2])
    with pytest.raises(tw.ParameterTypeError, match="an array"):
        tw.PatchDataset("img.npy", tiling=t)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"flip_axes": [0.5]}, tw.ParameterTypeError, "flip_axes"),
        ({"flip_axes": 0}, tw.ParameterTypeError, "flip_axes"),
        ({"flip_axes": [True]}, tw.ParameterTypeError, "flip_axes"),
        ({"rotate_axes": (1, 1)}, tw.ParameterError, "two different tiled axes"),
        ({"rotate_axes": (0, 1, 1)}, tw.ParameterError, "two different tiled axes"),
        ({"rotate_axes": (0, "1")}, tw.ParameterTypeError, "rotate_axes"),
        ({"rotate_axes": (0, 2)}, tw.ParameterError, "tiled axes"),
        ({"indices": [1.7]}, tw.ParameterTypeError, "indices"),
        ({"indices": np.ones(9, bool)}, tw.ParameterTypeError, "indices"),
    ],
)
def test_dataset_argument_errors_at_construction(kwargs, error, match):
    img, lab, t = hand_volume()
    with pytest.raises(error, match=match) as info:
        tw.PatchDataset(img, lab, tiling=t, augment=True, **kwargs)
    assert "Fix:" in str(info.value)


def test_dataset_reads_zarr_lazily(tmp_path):
    zarr = pytest.importorskip("zarr")
    img, lab, t = hand_volume()
    zimg = zarr.create_array(tmp_path / "i.zarr", shape=img.shape, chunks=(1, 1, 6, 6), dtype="f4")
    zimg[:] = img
    zlab = zarr.create_array(tmp_path / "l.zarr", shape=lab.shape, chunks=(1, 6, 6), dtype="i2")
    zlab[:] = lab
    ds = tw.PatchDataset(zimg, zlab, tiling=t, border=1)
    ref = tw.PatchDataset(img, lab, tiling=t, border=1)
    clone = pickle.loads(pickle.dumps(ds))
    for k in (0, 4, 8):
        assert torch.equal(clone[k]["image"], ref[k]["image"])
        assert torch.equal(clone[k]["labels"], ref[k]["labels"])
