"""Lazy readers (zarr, OME-Zarr, TIFF, OME-TIFF, HDF5, MRC, .npy, memory) and zarr writers.

Every file is written by its own library into tmp_path and read back through ``open_array``;
regions are compared against numpy slicing of the data in (N, C, *spatial) layout.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given
from hypothesis import strategies as st

from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError
from tilewise._io import (
    ArrayInfo,
    LazyArray,
    OmeZarrArray,
    SourceNotFoundError,
    create_zarr,
    open_array,
)

RNG = np.random.default_rng(0)


def vol(*shape: int, dtype=np.uint16) -> np.ndarray:
    return RNG.integers(0, 1000, shape).astype(dtype)


def check_regions(lazy: LazyArray, ref: np.ndarray) -> None:
    """``lazy`` reads like ``ref`` (already in (N, C, *spatial) layout), whole and in parts."""
    assert lazy.shape == ref.shape
    assert lazy.ndim == ref.ndim
    assert lazy.dtype == ref.dtype
    np.testing.assert_array_equal(np.asarray(lazy), ref)
    spatial = tuple(slice(1, max(2, s - 1)) for s in ref.shape[2:])
    for key in [
        (0, 0, *spatial),
        (slice(None), slice(0, 1), *spatial),
        (0, Ellipsis, 1),
        (Ellipsis, slice(2, None)),
        (0, -1, *(s // 2 for s in ref.shape[2:])),
    ]:
        np.testing.assert_array_equal(lazy[key], ref[key])
        want = np.asarray(ref[key])
        out = np.full(want.shape, 7, dtype=lazy.dtype)
        if lazy.read_into(key, out):  # straight into a buffer, where the store can
            np.testing.assert_array_equal(out, want)


def test_zarr_reads_straight_into_a_buffer_whatever_the_stored_order(tmp_path):
    data = vol(4, 3, 8, 9)
    for names, perm in ((("z", "c", "y", "x"), (1, 0, 2, 3)), (("c", "z", "y", "x"), None)):
        path = tmp_path / f"{''.join(names)}.zarr"
        z = zarr.create_array(
            path, shape=data.shape, dtype=data.dtype, chunks=(2, 1, 4, 9), dimension_names=names
        )
        z[:] = data
        lazy = open_array(path)
        ref = (data if perm is None else data.transpose(perm))[None]
        key = (0, slice(None), slice(1, 3), slice(2, 7), slice(None))
        out = np.zeros(ref[key].shape, dtype=lazy.dtype)
        assert lazy.read_into(key, out)
        np.testing.assert_array_equal(out, ref[key])
        # a buffer of another dtype, or another shape, is not read into
        assert not lazy.read_into(key, np.zeros(ref[key].shape, dtype=np.float64))
        assert not lazy.read_into(key, np.zeros((1, *ref[key].shape), dtype=lazy.dtype))
    np.save(tmp_path / "a.npy", data)
    assert not open_array(tmp_path / "a.npy", axes="zcyx").read_into(
        (0, 0), np.zeros((4, 8, 9), dtype=data.dtype)
    )


# -- zarr --------------------------------------------------------------------------------------
def test_zarr_array_without_names_is_zyx(tmp_path):
    data = vol(6, 10, 12)
    z = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, dtype=data.dtype, chunks=(2, 5, 6))
    z[:] = data
    with open_array(tmp_path / "a.zarr") as lazy:
        check_regions(lazy, data[None, None])
        assert lazy.info.format == "zarr"
        assert lazy.info.axes == ("n", "c", "z", "y", "x")
        assert lazy.chunks == (1, 1, 2, 5, 6)
        assert lazy.info.voxel_size is None
        assert lazy.info.level is None
        assert "format='zarr'" in repr(lazy)


def test_zarr_array_dimension_names_reorder_lazily(tmp_path):
    # stored z, c, y, x: presented n, c, z, y, x through a transpose of the index
    data = vol(4, 3, 8, 9)
    z = zarr.create_array(
        tmp_path / "zcyx.zarr",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(2, 1, 8, 9),
        dimension_names=("z", "c", "y", "x"),
    )
    z[:] = data
    ref = data.transpose(1, 0, 2, 3)[None]
    lazy = open_array(tmp_path / "zcyx.zarr")
    check_regions(lazy, ref)
    assert lazy.chunks == (1, 1, 2, 8, 9)
    assert lazy.stored_axes == "zcyx"


def test_axes_argument_reorders_an_unnamed_zarr(tmp_path):
    data = vol(4, 3, 8, 9)
    zarr.create_array(tmp_path / "u.zarr", data=data, chunks=(2, 1, 8, 9))
    check_regions(open_array(tmp_path / "u.zarr", axes="zcyx"), data.transpose(1, 0, 2, 3)[None])
    with pytest.raises(ParameterError, match=r"axes: expected axes=\.\.\. naming the 4 stored"):
        open_array(tmp_path / "u.zarr")


def test_zarr_group_with_one_array_and_dataset_choice(tmp_path):
    data = vol(5, 7)
    g = zarr.open_group(tmp_path / "g.zarr", mode="w")
    g.create_array("only", data=data)
    check_regions(open_array(tmp_path / "g.zarr"), data[None, None])
    g.create_array("other", data=data[::-1].copy())
    with pytest.raises(ParameterError, match=r"arrays \['only', 'other'\].*dataset='<name>'"):
        open_array(tmp_path / "g.zarr")
    check_regions(open_array(tmp_path / "g.zarr", dataset="other"), data[::-1][None, None])
    with pytest.raises(ParameterError, match=r"dataset: expected a node of the zarr group"):
        open_array(tmp_path / "g.zarr", dataset="missing")
    # an already-open group works the same
    check_regions(
        open_array(zarr.open_group(tmp_path / "g.zarr"), dataset="only"), data[None, None]
    )


def test_zarr_file_url(tmp_path):
    data = vol(3, 4, 5)
    zarr.create_array(tmp_path / "u.zarr", data=data)
    check_regions(open_array(f"file://{tmp_path}/u.zarr"), data[None, None])


# -- OME-Zarr ----------------------------------------------------------------------------------
def test_ome_zarr_round_trip_of_metadata(tmp_path):
    info = ArrayInfo(
        "ome-tiff",
        "in.ome.tif",
        ("n", "c", "z", "y", "x"),
        voxel_size=(2.0, 0.5, 0.25),
        origin=(10.0, -3.0, 1.5),
        units=("micrometer", "micrometer", "micrometer"),
    )
    shape = (1, 2, 4, 6, 8)
    out = create_zarr(
        tmp_path / "p.ome.zarr", shape, "float32", chunks=(1, 1, 2, 6, 4), info=info, ome=True
    )
    assert isinstance(out, OmeZarrArray)
    assert out.shape == shape
    assert out.chunks == (1, 1, 2, 6, 4)
    ref = RNG.random(shape).astype(np.float32)
    out[:] = ref
    check_regions(out, ref)
    attrs = zarr.open_group(tmp_path / "p.ome.zarr", mode="r").attrs.asdict()
    assert attrs["ome"]["version"] == "0.5"
    ms = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space", "space"]
    assert ms["datasets"][0]["path"] == "0"
    assert zarr.open_array(tmp_path / "p.ome.zarr" / "0").metadata.dimension_names == (
        "c",
        "z",
        "y",
        "x",
    )

    back = open_array(tmp_path / "p.ome.zarr")
    check_regions(back, ref)
    assert back.info.format == "ome-zarr"
    assert back.info.level == 0
    assert back.info.axes == info.axes
    assert back.info.voxel_size == info.voxel_size
    assert back.info.origin == info.origin
    assert back.info.units == info.units
    assert back.chunks == (1, 1, 2, 6, 4)


def test_ome_zarr_with_time_is_stored_time_first(tmp_path):
    # NGFF orders axes time, channel, space: (N, C, T, Y, X) is stored (T, C, Y, X)
    shape = (1, 3, 5, 6, 7)
    info = ArrayInfo(
        "memory", "x", ("n", "c", "t", "y", "x"), (4.0, 0.5, 0.5), None, ("second", None, None)
    )
    out = create_zarr(
        tmp_path / "t.ome.zarr", shape, "uint8", chunks=(1, 1, 2, 6, 7), info=info, ome=True
    )
    assert out.array.shape == (5, 3, 6, 7)
    ref = np.zeros(shape, np.uint8)
    for key, value in [
        ((0, 1, slice(1, 3), slice(None), 2), 7),  # ints and slices mixed
        ((Ellipsis, slice(5, None)), 9),  # trailing block
        ((0, slice(None, None, -1), 4), np.arange(3 * 6 * 7).reshape(3, 6, 7) % 200),  # reversed C
        ((slice(0, 1), 2, 0, 0, slice(0, 0)), 1),  # empty selection writes nothing
    ]:
        out[key] = value
        ref[key] = value
    np.testing.assert_array_equal(out.array[:], ref[0].transpose(1, 0, 2, 3))
    back = open_array(tmp_path / "t.ome.zarr")
    check_regions(back, ref)
    assert back.info.axes == ("n", "c", "t", "y", "x")
    assert back.info.voxel_size == (4.0, 0.5, 0.5)
    assert back.info.origin == (0.0, 0.0, 0.0)
    assert back.info.units == ("second", None, None)
    with pytest.raises(IndexError, match="out of bounds"):
        out[1, 0, 0, 0, 0] = 1  # N is 1


def test_ngff_04_group_written_by_hand(tmp_path):
    # zarr v2, NGFF 0.4: two levels, per-level scale + translation, a multiscale-wide scale
    full = vol(2, 3, 8, 12)  # t, c, y, x
    half = full[:, :, ::2, ::2].copy()
    g = zarr.open_group(tmp_path / "v04.zarr", mode="w", zarr_format=2)
    g.create_array("s0", data=full, chunks=(1, 1, 8, 12))
    g.create_array("s1", data=half, chunks=(1, 1, 4, 6))
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "t", "type": "time", "unit": "second"},
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 1.0, 0.5, 0.5]},
                        {"type": "translation", "translation": [0.0, 0.0, 3.0, 4.0]},
                    ],
                },
                {
                    "path": "s1",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0]},
                        {"type": "translation", "translation": [0.0, 0.0, 3.25, 4.25]},
                    ],
                },
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [10.0, 1.0, 2.0, 2.0]}],
        }
    ]
    lazy = open_array(tmp_path / "v04.zarr")
    check_regions(lazy, full.transpose(1, 0, 2, 3)[None])
    assert lazy.info.format == "ome-zarr"
    assert lazy.info.axes == ("n", "c", "t", "y", "x")
    assert lazy.info.voxel_size == (10.0, 1.0, 1.0)
    assert lazy.info.origin == (0.0, 6.0, 8.0)
    assert lazy.info.units == ("second", "micrometer", "micrometer")
    low = open_array(tmp_path / "v04.zarr", level=1)
    check_regions(low, half.transpose(1, 0, 2, 3)[None])
    assert low.info.level == 1
    assert low.info.voxel_size == (10.0, 2.0, 2.0)
    assert low.info.origin == (0.0, 6.5, 8.5)
    with pytest.raises(
        ParameterError, match=r"level: expected 0\.\.1, the resolution levels.*'s1'"
    ):
        open_array(tmp_path / "v04.zarr", level=2)
    with pytest.raises(ParameterTypeError, match="level: expected an int"):
        open_array(tmp_path / "v04.zarr", level=1.0)


def test_bioformats2raw_layout_opens_the_first_image(tmp_path):
    root = tmp_path / "b2r.zarr"
    image = create_zarr(root / "0", (1, 2, 6, 7), "uint8", chunks=(1, 1, 6, 7), ome=True)
    image[:] = 4
    meta = zarr.open_group(root, mode="a")
    meta.attrs["bioformats2raw.layout"] = 3
    meta.create_group("OME")
    lazy = open_array(root)
    assert lazy.info.format == "ome-zarr"
    check_regions(lazy, np.full((1, 2, 6, 7), 4, np.uint8))


def test_ome_zarr_unmappable_axes_are_an_error(tmp_path):
    g = zarr.open_group(tmp_path / "odd.zarr", mode="w")
    g.create_array("0", data=vol(2, 3, 4, 5))
    g.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": "angle"}, {"name": "phase"}, {"name": "y"}, {"name": "x"}],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1]}],
                    }
                ],
            }
        ],
    }
    with pytest.raises(
        ParameterError, match=r"stored axes '\?\?yx'.*more than one axis could be z"
    ):
        open_array(tmp_path / "odd.zarr")
    lazy = open_array(tmp_path / "odd.zarr", axes="tzyx")
    assert lazy.shape == (1, 1, 2, 3, 4, 5)
    # one unknown axis of length 1 is ignored; one unknown axis with data is the z axis
    data = vol(1, 3, 4, 5)
    g["0"] = data  # replaces the array
    check_regions(open_array(tmp_path / "odd.zarr"), data[0][None, None])
    assert open_array(tmp_path / "odd.zarr").stored_axes == "_zyx"


# -- TIFF / OME-TIFF ---------------------------------------------------------------------------
def test_uncompressed_tiff_is_memory_mapped(tmp_path):
    data = vol(5, 20, 24)
    tifffile.imwrite(tmp_path / "u.tif", data, photometric="minisblack")
    with open_array(tmp_path / "u.tif") as lazy:  # tifffile names the stack axis "Q": z
        assert isinstance(lazy._data, np.memmap)
        check_regions(lazy, data[None, None])
        assert lazy.info.format == "tiff"
        assert lazy.info.axes == ("n", "c", "z", "y", "x")
        assert lazy.chunks is None
        region = lazy[0, 0, 1:3]
        assert not isinstance(region, np.memmap)
        assert region.flags.writeable
        assert region.flags.owndata


def test_compressed_tiled_tiff_is_read_through_zarr(tmp_path):
    data = vol(4, 40, 48)
    tifffile.imwrite(
        tmp_path / "c.tif", data, compression="zlib", tile=(16, 16), photometric="minisblack"
    )
    with open_array(tmp_path / "c.tif") as lazy:
        assert isinstance(lazy._data, zarr.Array)
        check_regions(lazy, data[None, None])
        assert lazy.chunks == (1, 1, 1, 16, 16)
        clone = pickle.loads(pickle.dumps(lazy))  # reopened from the path
        with clone:
            np.testing.assert_array_equal(clone[0, 0, 2], data[2])


def test_pyramidal_tiff_levels(tmp_path):
    full, half = vol(64, 64, dtype=np.uint8), vol(32, 32, dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as w:
        w.write(full, subifds=1, tile=(16, 16), photometric="minisblack")
        w.write(half, subfiletype=1, tile=(16, 16), photometric="minisblack")
    with open_array(tmp_path / "pyr.tif") as top, open_array(tmp_path / "pyr.tif", level=1) as low:
        check_regions(top, full[None, None])
        check_regions(low, half[None, None])
        assert (top.info.level, low.info.level) == (0, 1)
    with pytest.raises(ParameterError, match=r"level: expected 0\.\.1.*received level=2"):
        open_array(tmp_path / "pyr.tif", level=2)


def test_rgb_tiff_samples_become_channels(tmp_path):
    data = vol(20, 30, 3, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    lazy = open_array(tmp_path / "rgb.tif")
    check_regions(lazy, data.transpose(2, 0, 1)[None])
    assert lazy.info.axes == ("n", "c", "y", "x")


def test_ome_tiff_physical_sizes(tmp_path):
    data = vol(5, 20, 24)
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeX": 0.5,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.25,  # unit left out: OME's default is µm
        "PhysicalSizeZ": 2.0,
        "PhysicalSizeZUnit": "µm",
    }
    tifffile.imwrite(
        tmp_path / "o.ome.tif", data, ome=True, photometric="minisblack", metadata=metadata
    )
    with open_array(tmp_path / "o.ome.tif") as lazy:
        check_regions(lazy, data[None, None])
        assert lazy.info.format == "ome-tiff"
        assert lazy.info.voxel_size == (2.0, 0.25, 0.5)
        assert lazy.info.origin == (0.0, 0.0, 0.0)
        assert lazy.info.units == ("micrometer", "micrometer", "nanometer")


def test_ome_tiff_time_and_channels(tmp_path):
    data = vol(2, 3, 16, 20)
    metadata = {"axes": "TCYX", "PhysicalSizeX": 0.5, "TimeIncrement": 3.0}
    tifffile.imwrite(
        tmp_path / "tc.ome.tif", data, ome=True, photometric="minisblack", metadata=metadata
    )
    with open_array(tmp_path / "tc.ome.tif") as lazy:
        check_regions(lazy, data.transpose(1, 0, 2, 3)[None])
        assert lazy.info.axes == ("n", "c", "t", "y", "x")
        assert lazy.info.voxel_size == (3.0, 1.0, 0.5)  # Y has no PhysicalSizeY: 1.0, no unit
        assert lazy.info.units == ("second", None, "micrometer")
        with pytest.raises(ParameterError, match=r"level: expected 0\.\.0"):
            open_array(tmp_path / "tc.ome.tif", level=1)


def test_imagej_hyperstack_calibration(tmp_path):
    data = vol(2, 5, 3, 20, 30)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 2.0, "unit": "um", "axes": "TZCYX", "finterval": 4.0},
    )
    with open_array(tmp_path / "ij.tif") as lazy:
        check_regions(lazy, data.transpose(2, 0, 1, 3, 4)[None])
        assert lazy.info.axes == ("n", "c", "t", "z", "y", "x")
        assert lazy.info.voxel_size == (4.0, 2.0, 0.25, 0.5)
        assert lazy.info.units == ("second", "micrometer", "micrometer", "micrometer")


def test_ome_tiff_metadata_round_trips_into_ome_zarr(tmp_path):
    data = vol(4, 12, 16)
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.5}
    tifffile.imwrite(
        tmp_path / "in.ome.tif", data, ome=True, photometric="minisblack", metadata=metadata
    )
    with open_array(tmp_path / "in.ome.tif") as src:
        out = create_zarr(
            tmp_path / "out.ome.zarr",
            src.shape,
            "float32",
            chunks=(1, 1, 4, 12, 16),
            info=src.info,
            ome=True,
        )
        out[...] = src[...].astype(np.float32) / 2
        back = open_array(tmp_path / "out.ome.zarr")
        assert back.info.axes == src.info.axes
        assert back.info.voxel_size == src.info.voxel_size
        assert back.info.origin == src.info.origin
        assert back.info.units == src.info.units
        np.testing.assert_array_equal(back[0, 0], data / 2)


# -- HDF5 --------------------------------------------------------------------------------------
@pytest.fixture
def h5_file(tmp_path):
    data = vol(3, 10, 12).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("g/data", data=data, chunks=(1, 5, 12))
        f.create_dataset("g/labels", data=data > 500)
    return tmp_path / "f.h5", data


def test_hdf5_dataset_path_forms(h5_file):
    path, data = h5_file
    for lazy in [
        open_array(f"{path}:/g/data"),
        open_array(path, dataset="/g/data"),
        open_array(path, dataset="g/data"),
    ]:
        with lazy:
            check_regions(lazy, data[None, None])
            assert lazy.info.format == "hdf5"
            assert lazy.info.source.endswith("f.h5:/g/data")
            assert lazy.chunks == (1, 1, 1, 5, 12)
    labels = open_array(f"{path}:/g/labels")
    assert labels.dtype == np.bool_
    labels.close()


def test_hdf5_dataset_errors_and_single_dataset(h5_file, tmp_path):
    path, data = h5_file
    with pytest.raises(ParameterError, match=r"holds 2 datasets \['g/data', 'g/labels'\]"):
        open_array(path)
    with pytest.raises(ParameterError, match=r"dataset: expected a dataset of .*received '/nope'"):
        open_array(path, dataset="/nope")
    with pytest.raises(ParameterError, match="either in the path or as dataset="):
        open_array(f"{path}:/g/data", dataset="/g/labels")
    with h5py.File(tmp_path / "one.hdf5", "w") as f:
        f["x"] = data[0]
    with open_array(tmp_path / "one.hdf5") as lazy:
        check_regions(lazy, data[0][None, None])
        assert lazy.info.axes == ("n", "c", "y", "x")
    with h5py.File(tmp_path / "labelled.h5", "w") as f:  # HDF5 dimension labels name the axes
        f["v"] = data.transpose(1, 0, 2)
        for dim, label in zip(f["v"].dims, "yzx", strict=True):
            dim.label = label
    with open_array(tmp_path / "labelled.h5") as lazy:
        check_regions(lazy, data[None, None])


def test_hdf5_open_objects_pickling_and_close(h5_file):
    path, data = h5_file
    with h5py.File(path, "r") as f:
        check_regions(open_array(f["g/data"]), data[None, None])
        check_regions(open_array(f, dataset="g/data"), data[None, None])
    lazy = open_array(f"{path}:/g/data")
    clone = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(clone[0, 0, 1], data[1])
    lazy.close()
    clone.close()
    with pytest.raises(ParameterError, match=r"array: expected an open LazyArray.*closed"):
        lazy[0, 0, 0]


def test_reopened_in_a_forked_process(h5_file, tmp_path, monkeypatch):
    # a DataLoader worker forked from the parent must not share the parent's file handles
    path, data = h5_file
    tifffile.imwrite(
        tmp_path / "c.tif", data, compression="zlib", tile=(16, 16), photometric="minisblack"
    )
    for lazy in [open_array(f"{path}:/g/data"), open_array(tmp_path / "c.tif")]:
        with lazy:
            before = lazy._data
            monkeypatch.setattr("os.getpid", lambda: -1)
            np.testing.assert_array_equal(lazy[0, 0, 1], data[1])
            assert lazy._data is not before
            monkeypatch.undo()


# -- MRC ---------------------------------------------------------------------------------------
def test_mrc_voxel_size_and_origin(tmp_path):
    data = RNG.random((4, 6, 8)).astype(np.float32)
    with mrcfile.new(tmp_path / "m.mrc") as m:
        m.set_data(data)
        m.voxel_size = (1.5, 2.0, 2.5)  # x, y, z
        m.header.origin = (10.0, 20.0, 30.0)
    with open_array(tmp_path / "m.mrc") as lazy:
        check_regions(lazy, data[None, None])
        assert lazy.info.format == "mrc"
        assert lazy.info.axes == ("n", "c", "z", "y", "x")
        assert lazy.info.voxel_size == (2.5, 2.0, 1.5)
        assert lazy.info.origin == (30.0, 20.0, 10.0)
        assert lazy.info.units == ("angstrom",) * 3
        assert lazy[0, 0, 1].flags.owndata


def test_mrc_2d_without_voxel_size(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    with mrcfile.new(tmp_path / "m2.mrcs") as m:
        m.set_data(data)
    with open_array(tmp_path / "m2.mrcs") as lazy:
        check_regions(lazy, data[None, None])
        assert lazy.info.voxel_size is None
        assert lazy.info.origin is None


def test_invalid_mrc(tmp_path):
    (tmp_path / "bad.mrc").write_bytes(b"x" * 2048)
    with pytest.raises(ParameterError, match=r"source: expected a valid MRC file"):
        open_array(tmp_path / "bad.mrc")


# -- .npy and memory ---------------------------------------------------------------------------
def test_npy_is_memory_mapped(tmp_path):
    data = vol(2, 5, 6, 7).astype(">f4")  # big-endian on disk: presented as native float32
    np.save(tmp_path / "a.npy", data)
    lazy = open_array(tmp_path / "a.npy", axes="czyx")
    assert isinstance(lazy._data, np.memmap)
    assert lazy.dtype == np.dtype("float32")
    check_regions(lazy, data.astype(np.float32)[None])
    assert lazy.info.format == "npy"


def test_memory_arrays_and_axes(tmp_path):
    data = vol(7, 9)
    lazy = open_array(data)
    check_regions(lazy, data[None, None])
    assert lazy.info.format == "memory"
    assert open_array(lazy) is lazy
    four = vol(2, 3, 4, 5)
    check_regions(open_array(four, axes="NCYX"), four)
    check_regions(open_array(four, axes="ycxt"), four.transpose(1, 3, 0, 2)[None])
    assert open_array(four, axes="ycxt").info.axes == ("n", "c", "t", "y", "x")
    line = vol(10)
    check_regions(open_array(line), line[None, None])
    assert open_array(line).info.axes == ("n", "c", "x")
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.int32, shape=(4, 5))
    lazy = open_array(mm)
    assert lazy.info.format == "npy"
    assert lazy.info.source.endswith("m.npy")
    assert lazy[0, 0].flags.owndata


@st.composite
def basic_keys(draw, shape):
    key = []
    for size in shape:
        if draw(st.booleans()):
            key.append(draw(st.integers(-size, size - 1)))
        else:
            start = draw(st.none() | st.integers(-size - 1, size + 1))
            stop = draw(st.none() | st.integers(-size - 1, size + 1))
            step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
            key.append(slice(start, stop, step))
    cut = draw(st.integers(0, len(key)))
    if draw(st.booleans()):
        return (*key[:cut], Ellipsis)
    return tuple(key[:cut])


@given(data=st.data())
def test_indexing_matches_numpy(data):
    # stored (z, c, y, x) presented as (n, c, z, y, x): ints, slices, steps, negative steps
    stored = np.arange(3 * 2 * 4 * 5).reshape(3, 2, 4, 5)
    ref = stored.transpose(1, 0, 2, 3)[None]
    lazy = open_array(stored, axes="zcyx")
    key = data.draw(basic_keys(ref.shape))
    np.testing.assert_array_equal(lazy[key], ref[key])


@pytest.mark.parametrize("backend", ["zarr", "hdf5", "tiff-zarr", "tiff-memmap", "mrc"])
def test_backends_agree_with_numpy_on_steps_and_empty_keys(tmp_path, backend):
    data = vol(4, 6, 32, dtype=np.int16)
    if backend == "zarr":
        zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(2, 3, 16))
        source = tmp_path / "a.zarr"
    elif backend == "hdf5":
        with h5py.File(tmp_path / "a.h5", "w") as f:
            f.create_dataset("d", data=data, chunks=(2, 3, 16))
        source = tmp_path / "a.h5"
    elif backend == "mrc":
        with mrcfile.new(tmp_path / "a.mrc") as m:
            m.set_data(data)
        source = tmp_path / "a.mrc"
    else:
        tiled = {"compression": "zlib", "tile": (16, 16)} if backend == "tiff-zarr" else {}
        tifffile.imwrite(tmp_path / "a.tif", data, photometric="minisblack", **tiled)
        source = tmp_path / "a.tif"
    ref = data[None, None]
    with open_array(source) as lazy:
        for key in [
            (0, 0, slice(None, None, 2), slice(1, 5, 3), slice(None, None, -3)),
            (0, slice(None, None, -1), 3, slice(2, 2), slice(None)),
            (slice(1, None), 0, slice(0, 2)),
            (Ellipsis, slice(30, 5, -7)),
        ]:
            np.testing.assert_array_equal(lazy[key], ref[key])


def test_pickling_sources_opened_from_objects(tmp_path):
    data = vol(3, 4, 5)
    lazy = open_array(data)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy))[0, 0], data)
    z = zarr.create_array(tmp_path / "a.zarr", data=data)
    clone = pickle.loads(pickle.dumps(open_array(z)))
    np.testing.assert_array_equal(clone[0, 0], data)


@given(data=st.data())
def test_writes_match_numpy(data):
    # the OME writer's mapping: (n, c, t, y, x) written into a store laid out (t, c, y, x)
    stored = np.zeros((3, 2, 4, 5))
    info = ArrayInfo("ome-zarr", "<test>", ("n", "c", "t", "y", "x"))
    out = OmeZarrArray(None, stored, ("t", "c", "y", "x"), info)
    ref = np.zeros((1, 2, 3, 4, 5))
    for _ in range(3):
        key = data.draw(basic_keys(ref.shape))
        value = np.arange(ref[key].size, dtype=float).reshape(ref[key].shape) + 1
        if data.draw(st.booleans()):
            value = 7.0  # scalars broadcast
        out[key] = value
        ref[key] = value
    np.testing.assert_array_equal(stored.transpose(1, 0, 2, 3)[None], ref)
    np.testing.assert_array_equal(out[...], ref)


def test_index_errors():
    lazy = open_array(np.zeros((3, 4)))
    with pytest.raises(IndexError, match="out of bounds for axis 0"):
        lazy[1]
    with pytest.raises(IndexError, match="too many indices"):
        lazy[0, 0, 0, 0, 0]
    with pytest.raises(IndexError, match="single ellipsis"):
        lazy[..., 0, ...]
    with pytest.raises(ParameterTypeError, match=r"index: expected ints, slices and '\.\.\.'"):
        lazy[0, 0, [0, 1]]
    assert len(lazy) == 1


# -- errors ------------------------------------------------------------------------------------
def test_missing_source(tmp_path):
    for source in [tmp_path / "nope.tif", str(tmp_path / "nope.zarr"), f"{tmp_path}/x.h5:/data"]:
        with pytest.raises(FileNotFoundError, match=r"source: expected an existing file"):
            open_array(source)
    with pytest.raises(SourceNotFoundError, match=r"which does not exist\. Fix: check the path"):
        open_array(tmp_path / "nope.npy")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(SourceNotFoundError, match="no zarr metadata was found"):
        open_array(tmp_path / "empty.zarr")


def test_unknown_format_and_sniffing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ParameterError, match=r"source: expected a file or store in a known format"):
        open_array(tmp_path / "notes.txt")
    # no extension: recognised from the file's signature
    data = vol(3, 4)
    np.save(tmp_path / "a.npy", data)
    (tmp_path / "a.npy").rename(tmp_path / "blob")
    np.testing.assert_array_equal(open_array(tmp_path / "blob")[0, 0], data)
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="minisblack")
    (tmp_path / "t.tif").rename(tmp_path / "tiffblob")
    with open_array(tmp_path / "tiffblob") as lazy:
        np.testing.assert_array_equal(lazy[0, 0], data)
    zarr.create_array(tmp_path / "store", data=data)
    np.testing.assert_array_equal(open_array(tmp_path / "store")[0, 0], data)
    with pytest.raises(ParameterError, match="zarr or OME-Zarr store when reading from a URL"):
        open_array("https://example.org/volume.tif")


def test_unsupported_dtype_and_source_type(tmp_path):
    with pytest.raises(ParameterTypeError, match=r"dtype: expected a numeric dtype.*received <U1"):
        open_array(np.array([["a", "b"]]))
    with pytest.raises(ParameterTypeError, match="source: expected a path or URL"):
        open_array([1, 2, 3])
    with pytest.raises(ParameterError, match="dataset: expected None for a memory source"):
        open_array(np.zeros((3, 3)), dataset="x")
    np.save(tmp_path / "a.npy", np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="level: expected 0 for a npy source"):
        open_array(tmp_path / "a.npy", level=1)
    with pytest.raises(
        ParameterError, match=r"axes: expected 3 distinct letters.*repeated letters"
    ):
        open_array(np.zeros((2, 3, 4)), axes="zzx")
    with pytest.raises(ParameterError, match=r"axes: .*\(2 letters for 3 axes\)"):
        open_array(np.zeros((2, 3, 4)), axes="yx")
    with pytest.raises(ParameterError, match=r"axes: .*no tiled axis"):
        open_array(np.zeros((2, 3)), axes="nc")
    with pytest.raises(ParameterTypeError, match="axes: expected a string"):
        open_array(np.zeros((2, 3)), axes=["y", "x"])


def test_missing_optional_library_names_the_extra(tmp_path, monkeypatch):
    data = vol(3, 4)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["d"] = data
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="minisblack")
    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.setitem(sys.modules, "tifffile", None)
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r"'h5py'.*pip install 'tilewise\[io\]'"):
        open_array(tmp_path / "f.h5")
    with pytest.raises(ImportError, match=r"'tifffile'.*pip install 'tilewise\[io\]'"):
        open_array(tmp_path / "t.tif")
    with pytest.raises(ImportError, match=r"'zarr'.*pip install 'tilewise\[zarr\]'"):
        create_zarr(tmp_path / "o.zarr", (1, 1, 4, 4), "uint8", chunks=4)


def test_io_imports_no_optional_library():
    code = (
        "import sys, tilewise._io; "
        "print(sorted(m for m in ('zarr', 'tifffile', 'h5py', 'mrcfile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- writers -----------------------------------------------------------------------------------
def test_create_zarr_plain_carries_metadata(tmp_path):
    info = ArrayInfo(
        "mrc",
        "in.mrc",
        ("n", "c", "z", "y", "x"),
        (2.5, 2.0, 1.5),
        (30.0, 20.0, 10.0),
        ("angstrom",) * 3,
    )
    out = create_zarr(
        tmp_path / "o.zarr",
        (2, 1, 4, 6, 8),
        "float32",
        chunks=(1, 1, 2, 6, 8),
        info=info,
        attributes={"model": "unet"},
    )
    assert isinstance(out, zarr.Array)
    assert out.metadata.dimension_names == ("n", "c", "z", "y", "x")
    ref = RNG.random((2, 1, 4, 6, 8)).astype(np.float32)
    out[:] = ref
    assert out.attrs["model"] == "unet"
    back = open_array(tmp_path / "o.zarr")
    check_regions(back, ref)
    assert back.info.axes == info.axes
    assert back.info.voxel_size == info.voxel_size
    assert back.info.origin == info.origin
    assert back.info.units == info.units
    assert back.chunks == (1, 1, 2, 6, 8)


def test_create_zarr_resume_and_overwrite(tmp_path):
    path = tmp_path / "o.zarr"
    out = create_zarr(path, (1, 1, 4, 4), "uint8", chunks=(1, 1, 2, 2), fill_value=3)
    out[0, 0, 0, 0] = 9
    again = create_zarr(path, (1, 1, 4, 4), "uint8", chunks=(1, 1, 2, 2))
    assert int(again[0, 0, 0, 0]) == 9  # resumed, not wiped
    with pytest.raises(ShapeMismatchError, match=r"holding shape \(1, 1, 4, 4\).*overwrite=True"):
        create_zarr(path, (1, 1, 4, 5), "uint8", chunks=(1, 1, 2, 2))
    with pytest.raises(ShapeMismatchError, match=r"dtype float32.*dtype uint8"):
        create_zarr(path, (1, 1, 4, 4), "float32", chunks=(1, 1, 2, 2))
    fresh = create_zarr(path, (1, 1, 4, 5), "float32", chunks=(1, 1, 4, 5), overwrite=True)
    assert fresh.shape == (1, 1, 4, 5)
    assert float(fresh[0, 0, 0, 0]) == 0.0
    with pytest.raises(ShapeMismatchError, match="holding something other than an OME-Zarr image"):
        create_zarr(path, (1, 1, 4, 5), "float32", chunks=(1, 1, 4, 5), ome=True)

    ome = tmp_path / "o.ome.zarr"
    w = create_zarr(ome, (1, 2, 8, 8), "uint16", chunks=(1, 1, 8, 8), ome=True)
    w[0, 1] = 5
    resumed = create_zarr(ome, (1, 2, 8, 8), "uint16", chunks=(1, 1, 8, 8), ome=True)
    assert isinstance(resumed, OmeZarrArray)
    assert int(resumed[0, 1, 3, 3]) == 5
    with pytest.raises(ShapeMismatchError, match=r"chunks \(1, 4, 4\)"):
        create_zarr(ome, (1, 2, 8, 8), "uint16", chunks=(1, 1, 4, 4), ome=True)
    with pytest.raises(ShapeMismatchError, match="holding a zarr group"):
        create_zarr(ome, (1, 2, 8, 8), "uint16", chunks=(1, 1, 8, 8))


def test_create_zarr_argument_errors(tmp_path):
    p = tmp_path / "x.zarr"
    with pytest.raises(ShapeMismatchError, match="shape: expected N = 1 for an OME-Zarr image"):
        create_zarr(p, (2, 1, 8, 8), "uint8", chunks=(1, 1, 8, 8), ome=True)
    with pytest.raises(ParameterError, match="2 or 3 space axes"):
        create_zarr(p, (1, 1, 8), "uint8", chunks=(1, 1, 8), ome=True)
    with pytest.raises(ParameterError, match=r"chunks: expected 4 positive ints"):
        create_zarr(p, (1, 1, 8, 8), "uint8", chunks=(8, 8))
    with pytest.raises(ParameterError, match=r"shape: expected \(N, C, \*spatial\)"):
        create_zarr(p, (8, 8), "uint8", chunks=(8, 8))
    with pytest.raises(ParameterTypeError, match="dtype: expected a numeric dtype"):
        create_zarr(p, (1, 1, 8, 8), "U4", chunks=8)
    with pytest.raises(ParameterError, match="attributes: expected no 'ome' key"):
        create_zarr(p, (1, 1, 8, 8), "uint8", chunks=8, ome=True, attributes={"ome": {}})
    info = ArrayInfo("memory", "x", ("n", "c", "y", "x"), (1.0, 1.0), None, None)
    with pytest.raises(ShapeMismatchError, match=r"info: expected metadata for 5 axes"):
        create_zarr(p, (1, 1, 4, 8, 8), "uint8", chunks=8, info=info)
    with pytest.raises(ParameterTypeError, match="path: expected a path or URL"):
        create_zarr(3, (1, 1, 8, 8), "uint8", chunks=8)
