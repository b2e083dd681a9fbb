"""Lazy readers for zarr/OME-Zarr, TIFF/OME-TIFF, HDF5, MRC and .npy, and zarr/OME-Zarr writers.

:func:`open_array` presents any supported source as a :class:`LazyArray` laid out
``(N, C, *spatial)``: axes the file does not have (batch, channel) are added as virtual length-1
axes, stored axes are put in tilewise order by transposing the *index*, and only the region asked
for is ever read. The file's metadata (axis names, voxel size, origin, units, chunks) travels in an
:class:`ArrayInfo`, which :func:`create_zarr` writes back so that outputs line up with inputs::

    stored (zarr "zcyx")      index asked (n, c, z, y, x)        stored index (z, c, y, x)
    z c y x          <-----   [0, 1:3, 5:9, :, 7]   ----->        [5:9, 1:3, :, 7]
                                    |  (n is virtual: only 0)          |
                                    +--- result (c, z, y) <-- transpose of (z, c, y)

Each format is read by its own library (zarr, tifffile, h5py, mrcfile, numpy), imported only when
needed; a missing one raises an :class:`ImportError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tilewise._errors import (
    ParameterError,
    ParameterTypeError,
    ShapeMismatchError,
    TilewiseError,
    message,
)

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "ArrayInfo",
    "LazyArray",
    "OmeZarrArray",
    "SourceNotFoundError",
    "create_zarr",
    "open_array",
]

AXIS_LETTERS = "nctzyx"  # every axis tilewise knows, in (N, C, *spatial) order
TILED_LETTERS = "tzyx"  # the tiled (spatial) axes, in the order they are presented
_DROP = ""  # a stored length-1 axis of unknown meaning, always read at index 0
_UNKNOWN = "?"  # a stored axis the file names in a way tilewise cannot map

_ZARR_SUFFIXES = (".zarr",)
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs")
_MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".st", ".ali")
_KNOWN_FORMATS = (
    "zarr or OME-Zarr (.zarr), TIFF or OME-TIFF (.tif, .tiff), HDF5 (.h5, .hdf5), "
    "MRC (.mrc, .mrcs, .map, .rec) or NumPy (.npy)"
)
_HDF5_PATH = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5|nxs))(?::|::)(?P<dataset>/.*)$", re.I)

# OME-XML unit symbols -> the UDUNITS-2 names OME-Zarr uses.
_UNIT_NAMES = {
    "\u00c5": "angstrom",  # Å, the letter
    "\u212b": "angstrom",  # Å, the angstrom sign
    "nm": "nanometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "pm": "picometer",
    "s": "second",
    "ms": "millisecond",
    "µs": "microsecond",
    "ns": "nanosecond",
    "min": "minute",
    "h": "hour",
}


class SourceNotFoundError(TilewiseError, FileNotFoundError):
    """The file, store or URL given to :func:`open_array` does not exist."""


# -- metadata ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayInfo:
    """Metadata carried from an input array to the outputs written for it.

    All per-axis tuples follow the ``(N, C, *spatial)`` layout of the opened array: ``axes`` names
    every axis, ``voxel_size``, ``origin`` and ``units`` have one entry per tiled (spatial) axis,
    time included (its "voxel size" is the time step). Axes the file's metadata says nothing about
    get voxel size 1.0, origin 0.0 and unit ``None``; a file with no physical metadata at all has
    ``voxel_size``, ``origin`` and ``units`` ``None``.

    Examples
    --------
    >>> info = ArrayInfo("memory", "<array>", ("n", "c", "y", "x"), (0.5, 0.5), None, None, None)
    >>> info.spatial_axes
    ('y', 'x')
    """

    format: str
    source: str
    axes: tuple[str, ...]
    voxel_size: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None
    chunks: tuple[int, ...] | None = None
    level: int | None = None

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        """Names of the tiled axes, e.g. ``("z", "y", "x")``."""
        return self.axes[2:]


@dataclass
class _AxisMeta:
    """What a file says about each of its stored axes (``None``: it says nothing)."""

    names: list[str] | None = None  # a letter of AXIS_LETTERS or _UNKNOWN per stored axis
    scale: list[float | None] | None = None
    offset: list[float | None] | None = None
    unit: list[str | None] | None = None


# -- optional libraries ------------------------------------------------------------------------
def _require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional package '{module}', which is not installed. "
            f"Fix: pip install 'tilewise[{extra}]'."
        ) from e


def _zarr(what: str) -> ModuleType:
    return _require("zarr", "zarr", what)


def _loaded(module: str) -> Any:
    """A library if something already imported it (an object of its type can exist only then)."""
    return sys.modules.get(module)


# -- axes --------------------------------------------------------------------------------------
def _parse_axes(axes: Any, shape: tuple[int, ...], source: str) -> list[str]:
    if not isinstance(axes, str):
        raise ParameterTypeError(
            message(
                "axes",
                expected="a string of axis letters from 'nctzyx', e.g. 'czyx'",
                received=f"{axes!r} of type {type(axes).__name__}",
                fix="pass axes as a string, one letter per stored axis",
            )
        )
    letters = list(axes.lower())
    bad = [a for a in letters if a not in AXIS_LETTERS]
    dup = sorted({a for a in letters if letters.count(a) > 1})
    spatial = [a for a in letters if a in TILED_LETTERS]
    if len(letters) != len(shape) or bad or dup or not spatial:
        problem = (
            f"{len(letters)} letters for {len(shape)} axes"
            if len(letters) != len(shape)
            else f"unknown letters {bad}"
            if bad
            else f"repeated letters {dup}"
            if dup
            else "no tiled axis"
        )
        raise ParameterError(
            message(
                "axes",
                expected=f"{len(shape)} distinct letters from 'nctzyx' (at least one of t, z, y, "
                f"x) naming the stored axes of {source}, shape {shape}",
                received=f"axes={axes!r} ({problem})",
                fix="name each stored axis in order: n batch, c channel, t time, z, y, x",
            )
        )
    return letters


def _ambiguous(
    names: Sequence[str], shape: tuple[int, ...], source: str, why: str
) -> TilewiseError:
    shown = "".join(n if n not in (_UNKNOWN, _DROP) else "?" for n in names)
    return ParameterError(
        message(
            "axes",
            expected=f"axis names that map onto (N, C, *spatial) for {source}",
            received=f"stored axes {shown!r} (? = unknown) with shape {shape}: {why}",
            fix="pass axes=... naming every stored axis, e.g. axes='tczyx' or axes='czyx'",
        )
    )


def _resolve_axes(
    shape: tuple[int, ...], names: list[str] | None, axes: str | None, source: str
) -> list[str]:
    """One letter (or _DROP) per stored axis, from ``axes=``, the file's names, or the ndim."""
    if axes is not None:
        return _parse_axes(axes, shape, source)
    if names is None:
        by_ndim = {1: "x", 2: "yx", 3: "zyx"}
        if len(shape) not in by_ndim:
            raise ParameterError(
                message(
                    "axes",
                    expected=f"axes=... naming the {len(shape)} stored axes of {source} (the "
                    "file does not name them)",
                    received=f"shape {shape} without axes=",
                    fix="pass e.g. axes='czyx' (channel, z, y, x), 'tzyx', 'nczyx' or 'tczyx'",
                )
            )
        return list(by_ndim[len(shape)])
    out = list(names)
    for i, (name, size) in enumerate(zip(out, shape, strict=True)):
        if name == _UNKNOWN and size == 1:
            out[i] = _DROP  # a length-1 axis of unknown meaning carries no data layout
    for letter in AXIS_LETTERS:
        where = [i for i, n in enumerate(out) if n == letter]
        if len(where) > 1:  # e.g. TIFF "CYXS" with one sample: keep the axis that has data
            big = [i for i in where if shape[i] > 1]
            if len(big) > 1:
                raise _ambiguous(names, shape, source, f"two axes map to {letter!r}")
            keep = big[0] if big else where[-1]
            for i in where:
                if i != keep:
                    out[i] = _DROP
    unknown = [i for i, n in enumerate(out) if n == _UNKNOWN]
    if unknown:
        if len(unknown) > 1 or "z" in out:
            raise _ambiguous(names, shape, source, "more than one axis could be z")
        out[unknown[0]] = "z"  # the one unnamed axis of a stack (TIFF "QYX", "IYX")
    if not any(n in TILED_LETTERS for n in out):
        raise _ambiguous(names, shape, source, "no tiled (t, z, y, x) axis")
    return out


def _tiff_letter(code: str) -> str:
    return {"X": "x", "Y": "y", "Z": "z", "T": "t", "C": "c", "S": "c"}.get(code, _UNKNOWN)


def _name_letter(name: Any) -> str:
    text = str(name).lower() if name is not None else ""
    text = {"time": "t", "channel": "c", "channels": "c", "batch": "n"}.get(text, text)
    return text if len(text) == 1 and text in AXIS_LETTERS else _UNKNOWN


def _ome_unit(unit: Any) -> str | None:
    if unit is None:
        return None
    return _UNIT_NAMES.get(str(unit), str(unit))


# -- indexing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    stored_key: tuple[int | slice, ...]
    kept: tuple[int, ...]  # target axis of each stored axis left by the read, in stored order
    virtual: tuple[tuple[int, int | slice], ...]  # (target axis, index) on virtual axes
    flips: tuple[int, ...]  # target axes read with a negative step (read forward, then flipped)
    out_shape: tuple[int, ...]  # shape of the result in target order (ints dropped)


class _AxisMap:
    """Translate ``(N, C, *spatial)`` indices into indices of the stored array, and back."""

    def __init__(self, stored: Sequence[str], stored_shape: tuple[int, ...]) -> None:
        self.stored = tuple(stored)
        self.target = ("n", "c", *(a for a in TILED_LETTERS if a in self.stored))
        self.source_of = tuple(
            self.stored.index(a) if a in self.stored else None for a in self.target
        )
        self.shape = tuple(1 if s is None else stored_shape[s] for s in self.source_of)

    def plan(self, key: Any) -> _Plan:
        norm = self._normalise(key)
        stored_key: list[int | slice] = [0] * len(self.stored)
        virtual: list[tuple[int, int | slice]] = []
        flips: list[int] = []
        out_shape: list[int] = []
        for j, (index, src) in enumerate(zip(norm, self.source_of, strict=True)):
            size = self.shape[j]
            if isinstance(index, slice):
                start, stop, step = index.indices(size)
                span = range(start, stop, step)
                out_shape.append(len(span))
                if step < 0:
                    index = slice(span[-1], span[0] + 1, -step) if span else slice(0, 0)
                    flips.append(j)
                else:
                    index = slice(start, max(start, stop), step)
            else:
                if not -size <= index < size:
                    raise IndexError(
                        f"index {index} is out of bounds for axis {j} ({self.target[j]}) with "
                        f"size {size}"
                    )
                index %= size
            if src is None:
                virtual.append((j, index))
            else:
                stored_key[src] = index
        kept = tuple(
            j
            for s in range(len(self.stored))
            for j, src in enumerate(self.source_of)
            if src == s and isinstance(norm[j], slice)
        )
        return _Plan(tuple(stored_key), kept, tuple(virtual), tuple(flips), tuple(out_shape))

    def _normalise(self, key: Any) -> list[int | slice]:
        items = key if isinstance(key, tuple) else (key,)
        if sum(i is Ellipsis for i in items) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        for item in items:
            if item is not Ellipsis and (
                isinstance(item, bool) or not isinstance(item, int | np.integer | slice)
            ):
                raise ParameterTypeError(
                    message(
                        "index",
                        expected="ints, slices and '...' (basic indexing)",
                        received=f"{item!r} of type {type(item).__name__}",
                        fix="read a box with slices, then index the numpy result further",
                    )
                )
        fill = len(self.target) - (len(items) - (Ellipsis in items))
        if fill < 0:
            raise IndexError(
                f"too many indices: the array is {len(self.target)}-dimensional "
                f"{self.target}, but {len(items)} were indexed"
            )
        out: list[int | slice] = []
        for item in items:
            if item is Ellipsis:
                out.extend([slice(None)] * fill)
            else:
                out.append(item if isinstance(item, slice) else int(item))
        if Ellipsis not in items:
            out.extend([slice(None)] * fill)
        return out

    def read(self, data: Any, key: Any) -> np.ndarray:
        """``key`` (in target layout) read from ``data`` (stored layout), as numpy."""
        p = self.plan(key)
        raw = np.asarray(data[p.stored_key])
        order = sorted(range(len(p.kept)), key=lambda i: p.kept[i])
        if order != list(range(len(order))):
            raw = raw.transpose(order)
        present = sorted(p.kept)  # target axes present in raw, now in target order
        for j, index in p.virtual:
            if isinstance(index, slice):
                pos = sum(k < j for k in present)
                raw = np.expand_dims(raw, pos)[(slice(None),) * pos + (index,)]
                present = sorted([*present, j])
        for j in p.flips:
            raw = np.flip(raw, present.index(j))
        return raw

    def read_into(self, data: Any, key: Any, out: np.ndarray) -> bool:
        """Read ``key`` straight into ``out`` (target layout, the read's shape and ``data``'s
        dtype) when ``data`` can (zarr arrays): whether it did. Nothing is allocated for the
        region, and nothing is copied twice."""
        getter = getattr(data, "get_basic_selection", None)
        if getter is None or out.dtype != np.dtype(data.dtype):
            return False
        try:
            from zarr.core.buffer.cpu import NDBuffer
        except ImportError:  # pragma: no cover - a zarr without the v3 buffer API
            return False
        p = self.plan(key)
        if p.flips or tuple(out.shape) != p.out_shape:
            return False
        if 0 in p.out_shape:
            return True
        norm = self._normalise(key)
        present = [j for j in range(len(self.target)) if isinstance(norm[j], slice)]
        virtual = {j for j, index in p.virtual if isinstance(index, slice)}
        view = out[tuple(0 if j in virtual else slice(None) for j in present)]
        stored_order = [j for j in present if j not in virtual]
        if not stored_order:  # a single value: indexing gave a copy, not a view
            return False
        view = view.transpose([stored_order.index(j) for j in p.kept])
        getter(p.stored_key, out=NDBuffer.from_numpy_array(view))
        return True

    def write(self, data: Any, key: Any, value: Any) -> None:
        """Write ``value`` (broadcast to ``key``'s shape in target layout) into ``data``."""
        p = self.plan(key)
        if 0 in p.out_shape:
            return
        val = np.broadcast_to(np.asarray(value), p.out_shape)
        virtual = dict(p.virtual)
        present = [
            j
            for j in range(len(self.target))
            if j in p.kept or isinstance(virtual.get(j, 0), slice)
        ]
        for j in p.flips:
            val = np.flip(val, present.index(j))
        drop = tuple(0 if j not in p.kept else slice(None) for j in present)
        val = val[drop]  # virtual axes (length 1 here) are not stored
        order = [sorted(p.kept).index(j) for j in p.kept]
        data[p.stored_key] = val.transpose(order) if order else val


# -- the lazy array ----------------------------------------------------------------------------
class LazyArray:
    """A read-only array on disk (or in memory) presented as ``(N, C, *spatial)``.

    Indexing with ints, slices and ``...`` reads only that region from the underlying store and
    returns a numpy array; ``np.asarray(lazy)`` reads everything. Use :func:`open_array` to get
    one. ``close()`` (or a ``with`` block) releases the file; a LazyArray opened from a path
    pickles as that path and is reopened on the other side (e.g. in DataLoader workers).

    Examples
    --------
    >>> import numpy as np
    >>> x = open_array(np.arange(24).reshape(2, 3, 4), axes="cyx")
    >>> x.shape, x.info.axes
    ((1, 2, 3, 4), ('n', 'c', 'y', 'x'))
    >>> x[0, 1, :, 1:3].tolist()
    [[13, 14], [17, 18], [21, 22]]
    """

    def __init__(
        self,
        data: Any,
        stored_axes: Sequence[str],
        info: ArrayInfo,
        *,
        owners: Sequence[Any] = (),
        materialize: bool = False,
        reopen: tuple[Any, dict[str, Any]] | None = None,
    ) -> None:
        self._data = data
        self._map = _AxisMap(stored_axes, tuple(int(s) for s in data.shape))
        self._close = weakref.finalize(self, _close_all, list(owners))  # also when collected
        self._has_files = bool(owners)
        self._pid = os.getpid()
        self._materialize = materialize
        self._reopen = reopen
        self.info = info
        self.dtype: np.dtype[Any] = _native_dtype(data.dtype, info.source)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, C, *spatial)``."""
        return self._map.shape

    @property
    def ndim(self) -> int:
        """Number of axes, 2 + the number of tiled axes."""
        return len(self._map.shape)

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """Storage chunks in ``(N, C, *spatial)`` layout, or ``None`` (contiguous storage)."""
        return self.info.chunks

    @property
    def stored_axes(self) -> str:
        """The axes as stored, in file order (``""`` marks an ignored length-1 axis)."""
        return "".join(a or "_" for a in self._map.stored)

    def __len__(self) -> int:
        return self._map.shape[0]

    def _store(self) -> Any:
        """The stored array, reopened first in a forked process (DataLoader workers): file
        handles shared with the parent would interleave seeks and reads."""
        if self._has_files and not self._close.alive:
            raise ParameterError(
                message(
                    "array",
                    expected="an open LazyArray",
                    received=f"{self.info.source}, closed with close()",
                    fix="open it again with open_array(...)",
                )
            )
        if self._has_files and self._pid != os.getpid() and self._reopen is not None:
            source, kwargs = self._reopen
            fresh = open_array(source, **kwargs)
            self._close()  # this process's copies of the parent's handles (the parent's stay)
            detached = fresh._close.detach()
            owners = detached[2][0] if detached is not None else []
            self._close = weakref.finalize(self, _close_all, owners)
            self._data = fresh._data
            self._pid = os.getpid()
        return self._data

    def __getitem__(self, key: Any) -> np.ndarray:
        out = self._map.read(self._store(), key)
        if self._materialize or out.dtype != self.dtype:
            out = np.array(out, dtype=self.dtype)  # into memory: no file-backed views escape
        return out

    def read_into(self, key: Any, out: np.ndarray) -> bool:
        """Read ``key`` into ``out`` (the read's shape, this array's dtype) without a region
        of its own where the store can (zarr); whether it did: if not, index as usual."""
        return self._map.read_into(self._store(), key, out)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        i = self.info
        extra = f", level={i.level}" if i.level is not None else ""
        vox = f", voxel_size={i.voxel_size}" if i.voxel_size is not None else ""
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, "
            f"axes={''.join(i.axes)!r}, format={i.format!r}, source={i.source!r}{extra}{vox})"
        )

    def close(self) -> None:
        """Release the underlying file handles (reading afterwards fails)."""
        self._close()

    def __enter__(self) -> LazyArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        if self._reopen is not None:
            source, kwargs = self._reopen
            return (functools.partial(open_array, **kwargs), (source,))
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_close"] = None  # sources opened from objects own no files
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._close = weakref.finalize(self, _close_all, [])


class OmeZarrArray(LazyArray):
    """An OME-Zarr image written in ``(N, C, *spatial)`` layout (N = 1, not stored).

    Returned by :func:`create_zarr` with ``ome=True``: ``out[index] = value`` writes into the
    stored ``[T,] C, [Z,] Y, X`` array, ``out[index]`` reads back. ``array`` is the zarr array,
    ``group`` the OME-Zarr image group.
    """

    def __init__(self, group: Any, array: Any, stored_axes: Sequence[str], info: ArrayInfo) -> None:
        super().__init__(array, stored_axes, info)
        self.group = group
        self.array = array

    def __setitem__(self, key: Any, value: Any) -> None:
        self._map.write(self._data, key, value)


def _close_all(owners: list[Any]) -> None:
    for owner in reversed(owners):
        owner.close()
    owners.clear()


def _native_dtype(dtype: Any, source: str) -> np.dtype[Any]:
    dt: np.dtype[Any]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = np.dtype(object)
    if dt.kind not in "biufc":
        raise ParameterTypeError(
            message(
                "dtype",
                expected="a numeric dtype (bool, int, uint, float or complex)",
                received=f"{dtype} in {source}",
                fix="convert the data to a numeric type (e.g. float32) before tiling it",
            )
        )
    return dt if dt.isnative else np.dtype(dt.newbyteorder("="))


def _physical(
    meta: _AxisMeta, letters: list[str], stored_axes: Sequence[str]
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, tuple[str | None, ...] | None]:
    spatial = [stored_axes.index(a) for a in TILED_LETTERS if a in letters]

    def pick(values: list[Any] | None, default: Any) -> tuple[Any, ...] | None:
        if values is None or all(values[s] is None for s in spatial):
            return None
        return tuple(default if values[s] is None else values[s] for s in spatial)

    voxel = pick(meta.scale, 1.0)
    origin = pick(meta.offset, 0.0)
    units = pick(meta.unit, None)
    if voxel is None and origin is not None:
        voxel = (1.0,) * len(spatial)
    if origin is None and voxel is not None:
        origin = (0.0,) * len(spatial)
    return voxel, origin, units


def _build(
    data: Any,
    *,
    fmt: str,
    source: str,
    meta: _AxisMeta,
    axes: str | None,
    stored_chunks: Sequence[int] | None = None,
    level: int | None = None,
    owners: Sequence[Any] = (),
    materialize: bool = False,
    reopen: tuple[Any, dict[str, Any]] | None = None,
) -> LazyArray:
    shape = tuple(int(s) for s in data.shape)
    _native_dtype(data.dtype, source)
    letters = _resolve_axes(shape, meta.names, axes, source)
    amap = _AxisMap(letters, shape)
    voxel, origin, units = _physical(meta, letters, amap.stored)
    chunks = None
    if stored_chunks is not None:
        chunks = tuple(1 if s is None else int(stored_chunks[s]) for s in amap.source_of)
    info = ArrayInfo(fmt, source, amap.target, voxel, origin, units, chunks, level)
    return LazyArray(data, letters, info, owners=owners, materialize=materialize, reopen=reopen)


# -- sources -----------------------------------------------------------------------------------
def _no_option(option: str, value: Any, fmt: str, source: str) -> None:
    if (option == "level" and value != 0) or (option == "dataset" and value is not None):
        raise ParameterError(
            message(
                option,
                expected=f"{'0' if option == 'level' else 'None'} for a {fmt} source (it has no "
                f"{'resolution levels' if option == 'level' else 'named datasets'})",
                received=f"{option}={value!r} for {source}",
                fix=f"leave {option} out for this source",
            )
        )


def _check_level(level: Any, count: int, source: str, paths: Sequence[str]) -> int:
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise ParameterTypeError(
            message(
                "level",
                expected="an int",
                received=f"{level!r} of type {type(level).__name__}",
                fix="pass level=0 for full resolution",
            )
        )
    if not 0 <= level < count:
        raise ParameterError(
            message(
                "level",
                expected=f"0..{count - 1}, the resolution levels of {source} ({list(paths)})",
                received=f"level={level}",
                fix="pick one of the levels listed (0 is full resolution)",
            )
        )
    return int(level)


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _open_memory(data: np.ndarray, axes: str | None, level: int, dataset: str | None) -> LazyArray:
    is_map = isinstance(data, np.memmap)
    fmt = "npy" if is_map else "memory"
    source = str(getattr(data, "filename", None) or "<numpy array>") if is_map else "<numpy array>"
    _no_option("level", level, fmt, source)
    _no_option("dataset", dataset, fmt, source)
    return _build(data, fmt=fmt, source=source, meta=_AxisMeta(), axes=axes, materialize=is_map)


def _open_npy(path: str, source: str, axes: str | None, reopen: Any) -> LazyArray:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ParameterError(
            message(
                "source",
                expected="a .npy file of a numeric array",
                received=f"{source}: {e}",
                fix="save the array with np.save (numeric dtype, no objects)",
            )
        ) from None
    if not isinstance(data, np.ndarray):
        raise ParameterError(
            message(
                "source",
                expected="a .npy file holding one array",
                received=f"{source} ({type(data).__name__})",
                fix="open a .npz archive with np.load and pass the array you want",
            )
        )
    return _build(
        data, fmt="npy", source=source, meta=_AxisMeta(), axes=axes, materialize=True, reopen=reopen
    )


# zarr / OME-Zarr ------------------------------------------------------------------------------
def _ome_multiscales(attrs: Mapping[str, Any]) -> list[Any] | None:
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and isinstance(ome.get("multiscales"), list):
        return list(ome["multiscales"])  # NGFF 0.5 (zarr v3)
    if isinstance(attrs.get("multiscales"), list):
        return list(attrs["multiscales"])  # NGFF 0.4 and earlier
    return None


def _ome_transform(transforms: Any, ndim: int, source: str) -> tuple[list[float], list[float]]:
    """Compose a list of NGFF scale/translation transforms into (scale, offset) per axis."""
    scale, offset = [1.0] * ndim, [0.0] * ndim
    for t in transforms or []:
        kind = t.get("type") if isinstance(t, Mapping) else None
        if kind == "identity":
            continue
        values = t.get(kind) if kind in ("scale", "translation") else None
        if not isinstance(values, list) or len(values) != ndim:
            raise ParameterError(
                message(
                    "OME-Zarr coordinateTransformations",
                    expected=f"'scale'/'translation' transforms with {ndim} values inline",
                    received=f"{t!r} in {source}",
                    fix="write the transforms inline (NGFF 0.4/0.5), or pass the level's "
                    "zarr array and set voxel sizes yourself",
                )
            )
        v = [float(x) for x in values]
        if kind == "scale":
            scale = [a * b for a, b in zip(scale, v, strict=True)]
            offset = [a * b for a, b in zip(offset, v, strict=True)]
        else:
            offset = [a + b for a, b in zip(offset, v, strict=True)]
    return scale, offset


def _ome_meta(ms: Mapping[str, Any], dataset: Mapping[str, Any], ndim: int, src: str) -> _AxisMeta:
    axes = ms.get("axes")
    names: list[str] | None = None
    units: list[str | None] | None = None
    if isinstance(axes, list) and len(axes) == ndim:
        names, units = [], []
        for ax in axes:
            if isinstance(ax, Mapping):
                kind = str(ax.get("type") or "").lower()
                letter = _name_letter(ax.get("name"))
                if kind == "channel":
                    letter = "c"
                elif kind == "time":
                    letter = "t"
                elif kind == "space" and letter not in "zyx":
                    letter = _UNKNOWN
                names.append(letter)
                units.append(_ome_unit(ax.get("unit")) if kind != "channel" else None)
            else:  # NGFF 0.3: a list of names
                names.append(_name_letter(ax))
                units.append(None)
    elif axes is None and ndim == 5:
        names = list("tczyx")  # NGFF 0.1 and 0.2 have no axes: always 5-D t, c, z, y, x
    scale, offset = _ome_transform(dataset.get("coordinateTransformations"), ndim, src)
    scale, offset = _ome_transform_outer(ms, scale, offset, ndim, src)
    return _AxisMeta(names, list(scale), list(offset), units)


def _ome_transform_outer(
    ms: Mapping[str, Any], scale: list[float], offset: list[float], ndim: int, src: str
) -> tuple[list[float], list[float]]:
    """Apply the multiscale-wide transforms, which act after each level's own."""
    outer_scale, outer_offset = _ome_transform(ms.get("coordinateTransformations"), ndim, src)
    return (
        [s * o for s, o in zip(scale, outer_scale, strict=True)],
        [f * o + t for f, o, t in zip(offset, outer_scale, outer_offset, strict=True)],
    )


def _zarr_chunks(arr: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(c) for c in arr.chunks)
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None  # irregular chunk grids have no single chunk shape


def _open_zarr_array(
    arr: Any,
    source: str,
    axes: str | None,
    *,
    fmt: str = "zarr",
    meta: _AxisMeta | None = None,
    level: int | None = None,
    owners: Sequence[Any] = (),
    reopen: Any = None,
) -> LazyArray:
    ndim = len(arr.shape)
    if meta is None:
        meta = _AxisMeta()
        attrs = dict(arr.attrs)
        dims = getattr(getattr(arr, "metadata", None), "dimension_names", None)
        dims = dims if dims is not None else attrs.get("_ARRAY_DIMENSIONS")  # xarray on zarr v2
        if isinstance(dims, Sequence) and len(dims) == ndim and all(d is not None for d in dims):
            letters = [_name_letter(d) for d in dims]
            meta.names = letters if _UNKNOWN not in letters else None
        own = attrs.get("tilewise")
        if isinstance(own, Mapping) and meta.names is not None:
            spatial = [i for i, a in enumerate(meta.names) if a in TILED_LETTERS]
            for key in ("voxel_size", "origin", "units"):
                values = own.get(key)
                if isinstance(values, list) and len(values) == len(spatial):
                    per_axis: list[Any] = [None] * ndim
                    for i, v in zip(spatial, values, strict=True):
                        per_axis[i] = v
                    if key == "voxel_size":
                        meta.scale = per_axis
                    elif key == "origin":
                        meta.offset = per_axis
                    else:
                        meta.unit = per_axis
    return _build(
        arr,
        fmt=fmt,
        source=source,
        meta=meta,
        axes=axes,
        stored_chunks=_zarr_chunks(arr),
        level=level,
        owners=owners,
        reopen=reopen,
    )


def _visible(keys: Any) -> list[str]:
    """Names of a group's members, without hidden ones (``.tilewise``, a run's journal)."""
    return sorted(k for k in keys if not str(k).startswith("."))


def _open_zarr_node(
    node: Any, source: str, *, level: int, dataset: str | None, axes: str | None, reopen: Any
) -> LazyArray:
    zarr = _zarr("reading zarr")
    if isinstance(node, zarr.Array):
        _no_option("level", level, "zarr array", source)
        _no_option("dataset", dataset, "zarr array", source)
        return _open_zarr_array(node, source, axes, reopen=reopen)
    if dataset is not None:
        try:
            child = node[dataset.strip("/")]
        except KeyError:
            raise ParameterError(
                message(
                    "dataset",
                    expected=f"a node of the zarr group {source}: arrays "
                    f"{_listing(_visible(node.array_keys()))}, groups "
                    f"{_listing(_visible(node.group_keys()))}",
                    received=repr(dataset),
                    fix="pass one of the names listed",
                )
            ) from None
        where = f"{source.rstrip('/')}/{dataset.strip('/')}"
        return _open_zarr_node(child, where, level=level, dataset=None, axes=axes, reopen=reopen)
    attrs = dict(node.attrs)
    multiscales = _ome_multiscales(attrs)
    if multiscales:
        ms = multiscales[0]
        datasets = ms.get("datasets") if isinstance(ms, Mapping) else None
        if not isinstance(datasets, list) or not datasets:
            raise ParameterError(
                message(
                    "OME-Zarr multiscales",
                    expected="a 'datasets' list with one entry per level",
                    received=f"{ms!r} in {source}",
                    fix="repair the group's OME metadata",
                )
            )
        paths = [str(d.get("path")) for d in datasets]
        lvl = _check_level(level, len(datasets), source, paths)
        arr = node[paths[lvl]]
        meta = _ome_meta(ms, datasets[lvl], len(arr.shape), source)
        return _open_zarr_array(
            arr, source, axes, fmt="ome-zarr", meta=meta, level=lvl, reopen=reopen
        )
    arrays = _visible(node.array_keys())
    groups = _visible(node.group_keys())
    if len(arrays) == 1:
        return _open_zarr_node(
            node[arrays[0]],
            f"{source.rstrip('/')}/{arrays[0]}",
            level=level,
            dataset=None,
            axes=axes,
            reopen=reopen,
        )
    if not arrays and (len(groups) == 1 or ("bioformats2raw.layout" in attrs and "0" in groups)):
        name = groups[0] if len(groups) == 1 else "0"  # bioformats2raw: the first image is "0"
        return _open_zarr_node(
            node[name],
            f"{source.rstrip('/')}/{name}",
            level=level,
            dataset=None,
            axes=axes,
            reopen=reopen,
        )
    raise ParameterError(
        message(
            "dataset",
            expected=f"an OME-Zarr image or a group holding one array at {source}",
            received=f"a group with arrays {_listing(arrays)} and groups {_listing(groups)}",
            fix="pass dataset='<name>' to pick one",
        )
    )


def _open_zarr(
    source: str, *, level: int, dataset: str | None, axes: str | None, reopen: Any
) -> LazyArray:
    zarr = _zarr("reading zarr")
    try:
        node = zarr.open(source, mode="r")
    except FileNotFoundError:
        raise SourceNotFoundError(
            message(
                "source",
                expected="an existing zarr array or group",
                received=f"{source!r}, where no zarr metadata was found",
                fix="check the path or URL (zarr stores are directories)",
            )
        ) from None
    except (ValueError, ImportError) as err:
        if "protocol" not in str(err).lower():
            raise
        raise ParameterError(
            message(
                "source",
                expected="a local path or a URL with a protocol fsspec knows (s3://, gs://, "
                "http(s)://, file://)",
                received=f"{source!r}: {err}",
                fix="check the URL, or install the protocol's package (s3fs for s3://, "
                "aiohttp for http://)",
            )
        ) from None
    except PermissionError:
        raise ParameterError(
            message(
                "source",
                expected="a store these credentials may read",
                received=f"{source!r}: permission denied",
                fix="check the credentials in your fsspec/boto configuration",
            )
        ) from None
    return _open_zarr_node(node, source, level=level, dataset=dataset, axes=axes, reopen=reopen)


# TIFF / OME-TIFF ------------------------------------------------------------------------------
def _tiff_meta(tif: Any, stored: str) -> _AxisMeta:
    names = [_tiff_letter(a) for a in stored]
    meta = _AxisMeta(names=names)
    scale: list[float | None] = [None] * len(stored)
    unit: list[str | None] = [None] * len(stored)
    if tif.is_ome and tif.ome_metadata:
        tifffile = _require("tifffile", "io", "reading TIFF")
        image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
        image = image[0] if isinstance(image, list) else image  # series 0
        pixels = image.get("Pixels", {}) if isinstance(image, Mapping) else {}
        for i, code in enumerate(stored):
            key, unit_key, default = {
                "X": ("PhysicalSizeX", "PhysicalSizeXUnit", "µm"),
                "Y": ("PhysicalSizeY", "PhysicalSizeYUnit", "µm"),
                "Z": ("PhysicalSizeZ", "PhysicalSizeZUnit", "µm"),
                "T": ("TimeIncrement", "TimeIncrementUnit", "s"),
            }.get(code, ("", "", ""))
            if key and pixels.get(key) is not None:
                scale[i] = float(pixels[key])
                unit[i] = _ome_unit(pixels.get(unit_key, default))  # OME's default units
    elif tif.is_imagej and tif.imagej_metadata:
        ij = tif.imagej_metadata
        space = _ome_unit(ij.get("unit")) if ij.get("unit") not in (None, "pixel") else None
        res = tif.pages.first.resolution  # pixels per unit, X then Y
        for i, code in enumerate(stored):
            value, value_unit = {
                "X": (1 / res[0] if space and res[0] > 0 else None, space),
                "Y": (1 / res[1] if space and res[1] > 0 else None, space),
                "Z": (ij.get("spacing") if space else None, space),
                "T": (ij.get("finterval"), "second"),
            }.get(code, (None, None))
            if value is not None:
                scale[i], unit[i] = float(value), value_unit
    if any(v is not None for v in scale):
        meta.scale, meta.unit = scale, unit
    return meta


def _open_tiff(
    path: str, source: str, *, level: int, dataset: str | None, axes: str | None, reopen: Any
) -> LazyArray:
    tifffile = _require("tifffile", "io", "reading TIFF")
    _no_option("dataset", dataset, "TIFF", source)
    with contextlib.ExitStack() as stack:
        tif = stack.enter_context(tifffile.TiffFile(path))
        if not tif.series:
            raise ParameterError(
                message(
                    "source",
                    expected="a TIFF file with at least one image",
                    received=f"{source} with no image series",
                    fix="check the file",
                )
            )
        top = tif.series[0]
        lvl = _check_level(level, len(top.levels), source, [str(i) for i in range(len(top.levels))])
        series = top.levels[lvl]
        meta = _tiff_meta(tif, series.axes)
        fmt = "ome-tiff" if tif.is_ome else "tiff"
        info_level = lvl if len(top.levels) > 1 else None
        if series.dataoffset is not None:  # uncompressed and contiguous: memory-map it
            data = tifffile.memmap(path, series=0, level=lvl, mode="r")
            return _build(
                data,
                fmt=fmt,
                source=source,
                meta=meta,
                axes=axes,
                level=info_level,
                materialize=True,
                reopen=reopen,
            )
        zarr = _zarr("reading compressed or tiled TIFF")
        store = stack.enter_context(contextlib.closing(tif.aszarr(series=0, level=lvl)))
        data = zarr.open(store, mode="r")
        lazy = _build(
            data,
            fmt=fmt,
            source=source,
            meta=meta,
            axes=axes,
            level=info_level,
            stored_chunks=_zarr_chunks(data),
            owners=(tif, store),
            reopen=reopen,
        )
        stack.pop_all()  # the file stays open for the LazyArray's life
        return lazy
    raise AssertionError  # unreachable: the with block returns or raises


# HDF5 ----------------------------------------------------------------------------------------
def _h5_datasets(h5py: Any, group: Any) -> list[str]:
    names: list[str] = []
    group.visititems(
        lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
    )
    return names


def _open_h5_object(
    h5py: Any,
    obj: Any,
    source: str,
    *,
    dataset: str | None,
    axes: str | None,
    owners: Sequence[Any] = (),
    reopen: Any = None,
) -> LazyArray:
    if dataset is not None:
        try:
            obj = obj[dataset]
        except KeyError:
            raise ParameterError(
                message(
                    "dataset",
                    expected=f"a dataset of {source}: {_listing(_h5_datasets(h5py, obj))}",
                    received=repr(dataset),
                    fix="pass one of the datasets listed",
                )
            ) from None
    if isinstance(obj, h5py.Group):
        names = _h5_datasets(h5py, obj)
        if len(names) != 1:
            raise ParameterError(
                message(
                    "dataset",
                    expected=f"the dataset to read from {source}{obj.name}",
                    received=f"dataset=None, and the group holds {len(names)} datasets "
                    f"{_listing(names)}",
                    fix="pass dataset='/group/name' or the form 'file.h5:/group/name'",
                )
            )
        obj = obj[names[0]]
    if not isinstance(obj, h5py.Dataset):
        raise ParameterError(
            message(
                "dataset",
                expected=f"an HDF5 dataset in {source}",
                received=f"{obj.name!r} of type {type(obj).__name__}",
                fix="pass the path of a dataset",
            )
        )
    labels = [d.label for d in obj.dims] if obj.ndim else []
    letters = [_name_letter(x) for x in labels]
    meta = _AxisMeta(names=letters if labels and _UNKNOWN not in letters else None)
    return _build(
        obj,
        fmt="hdf5",
        source=f"{obj.file.filename}:{obj.name}",
        meta=meta,
        axes=axes,
        stored_chunks=obj.chunks,
        owners=owners,
        reopen=reopen,
    )


def _open_hdf5(
    path: str, source: str, *, level: int, dataset: str | None, axes: str | None, reopen: Any
) -> LazyArray:
    h5py = _require("h5py", "io", "reading HDF5")
    _no_option("level", level, "HDF5", source)
    f = h5py.File(path, "r")
    try:
        return _open_h5_object(
            h5py, f, source, dataset=dataset, axes=axes, owners=(f,), reopen=reopen
        )
    except BaseException:
        f.close()
        raise


# MRC -----------------------------------------------------------------------------------------
def _open_mrc(
    path: str, source: str, *, level: int, dataset: str | None, axes: str | None, reopen: Any
) -> LazyArray:
    mrcfile = _require("mrcfile", "io", "reading MRC")
    _no_option("level", level, "MRC", source)
    _no_option("dataset", dataset, "MRC", source)
    try:
        mrc = mrcfile.mmap(path, mode="r")
    except ValueError as e:
        raise ParameterError(
            message(
                "source",
                expected="a valid MRC file",
                received=f"{source}: {e}",
                fix="check the file, or open it with mrcfile.mmap(path, permissive=True) and "
                "pass mrc.data",
            )
        ) from None
    try:
        data = mrc.data
        vs, org = mrc.voxel_size, mrc.header.origin
        xyz_size: list[float | None] = [float(vs.x), float(vs.y), float(vs.z)]
        xyz_origin: list[float | None] = [float(org.x), float(org.y), float(org.z)]
        n = data.ndim
        stored = ("z", "y", "x")[3 - n :] if n <= 3 else None
        meta = _AxisMeta(names=list(stored) if stored else None)
        if stored:  # the header lists X, Y, Z; the data are Z, Y, X
            if all(v is not None and v > 0 for v in xyz_size):  # 0 means "not set"
                meta.scale = [xyz_size[2], xyz_size[1], xyz_size[0]][3 - n :]
                meta.unit = ["angstrom"] * n
            if meta.scale is not None or any(xyz_origin):
                meta.offset = [xyz_origin[2], xyz_origin[1], xyz_origin[0]][3 - n :]
        return _build(
            data,
            fmt="mrc",
            source=source,
            meta=meta,
            axes=axes,
            owners=(mrc,),
            materialize=True,
            reopen=reopen,
        )
    except BaseException:
        mrc.close()
        raise


# paths ---------------------------------------------------------------------------------------
def _sniff(path: str) -> str | None:
    """The format of an extension-less file or directory from its signature bytes."""
    if os.path.isdir(path):
        marks = ("zarr.json", ".zarray", ".zgroup")
        return "zarr" if any(os.path.exists(os.path.join(path, m)) for m in marks) else None
    with open(path, "rb") as f:
        head = f.read(212)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[208:212] == b"MAP ":
        return "mrc"
    return None


def _format_of(path: str) -> str | None:
    low = path.lower().rstrip("/")
    for fmt, suffixes in (
        ("zarr", _ZARR_SUFFIXES),
        ("tiff", _TIFF_SUFFIXES),
        ("hdf5", _HDF5_SUFFIXES),
        ("mrc", _MRC_SUFFIXES),
        ("npy", (".npy",)),
    ):
        if low.endswith(suffixes):
            return fmt
    return None


def _missing(source: str) -> SourceNotFoundError:
    return SourceNotFoundError(
        message(
            "source",
            expected="an existing file, zarr store or URL",
            received=f"{source!r}, which does not exist",
            fix="check the path (relative paths are taken from the current directory: "
            f"{os.getcwd()})",
        )
    )


def _open_path(source: str, *, level: int, dataset: str | None, axes: str | None) -> LazyArray:
    scheme, _, rest = source.partition("://") if "://" in source else ("", "", source)
    where = source if scheme else os.path.abspath(source)  # reopened from any directory
    reopen = (where, {"level": level, "dataset": dataset, "axes": axes})
    if scheme and scheme.lower() != "file":  # remote: zarr through fsspec
        fmt = _format_of(rest.split("?")[0])
        if fmt not in (None, "zarr"):
            raise ParameterError(
                message(
                    "source",
                    expected="a zarr or OME-Zarr store when reading from a URL",
                    received=f"{source!r} ({fmt})",
                    fix="download the file and open the local copy",
                )
            )
        return _open_zarr(source, level=level, dataset=dataset, axes=axes, reopen=reopen)
    path = rest
    if not os.path.exists(path) and (m := _HDF5_PATH.match(path)):
        path, dataset_in_path = m["file"], m["dataset"]
        if dataset is not None and dataset != dataset_in_path:
            raise ParameterError(
                message(
                    "dataset",
                    expected="the dataset either in the path or as dataset=, not both",
                    received=f"{source!r} and dataset={dataset!r}",
                    fix="give the dataset one way",
                )
            )
        dataset = dataset_in_path
    if not os.path.exists(path):
        raise _missing(source)
    fmt = _format_of(path) or _sniff(path)
    try:
        return _open_format(
            fmt, path, source, level=level, dataset=dataset, axes=axes, reopen=reopen
        )
    except (TilewiseError, ImportError):
        raise
    except Exception as err:  # a damaged or mislabelled file: each library fails its own way
        raise ParameterError(
            message(
                "source",
                expected=f"a readable {fmt or 'image'} file",
                received=f"{source!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                fix="check that the file is complete and of the format its name says",
            )
        ) from None


def _open_format(
    fmt: str | None,
    path: str,
    source: str,
    *,
    level: int,
    dataset: str | None,
    axes: str | None,
    reopen: Any,
) -> LazyArray:
    if fmt == "zarr":
        return _open_zarr(path, level=level, dataset=dataset, axes=axes, reopen=reopen)
    if fmt == "tiff":
        return _open_tiff(path, source, level=level, dataset=dataset, axes=axes, reopen=reopen)
    if fmt == "hdf5":
        return _open_hdf5(path, source, level=level, dataset=dataset, axes=axes, reopen=reopen)
    if fmt == "mrc":
        return _open_mrc(path, source, level=level, dataset=dataset, axes=axes, reopen=reopen)
    if fmt == "npy":
        _no_option("level", level, "npy", source)
        _no_option("dataset", dataset, "npy", source)
        return _open_npy(path, source, axes, reopen)
    raise ParameterError(
        message(
            "source",
            expected=f"a file or store in a known format: {_KNOWN_FORMATS}",
            received=f"{source!r}, whose format was not recognised",
            fix="give the file its format's extension, or open it yourself and pass the array",
        )
    )


def open_array(
    source: Any, *, level: int = 0, dataset: str | None = None, axes: str | None = None
) -> LazyArray:
    """Open an image or volume lazily, presented as ``(N, C, *spatial)``.

    Parameters
    ----------
    source
        A path (``str`` or ``os.PathLike``) or URL (``file://...``; zarr also reads fsspec URLs)
        of a zarr/OME-Zarr store, a TIFF/OME-TIFF, HDF5 (``"file.h5:/group/dataset"`` names the
        dataset), MRC or ``.npy`` file; or an open zarr array or group, h5py dataset, group or
        file, or a numpy array or memmap.
    level
        The resolution level of an OME-Zarr multiscale image or a pyramidal TIFF (0 = full).
    dataset
        The HDF5 dataset, or the array (or image group) inside a zarr group. Not needed when
        there is only one.
    axes
        Letters naming the stored axes, in stored order, from ``n`` (batch), ``c`` (channel),
        ``t``, ``z``, ``y``, ``x``; e.g. ``"czyx"`` or ``"zcyx"``. It overrides the axis names
        of the file. Without it: the file's names (OME axes, TIFF series axes, zarr dimension
        names, HDF5 dimension labels), else ``"yx"`` for 2-D and ``"zyx"`` for 3-D data.

    Returns
    -------
    LazyArray
        Indexable like numpy, reading only what is indexed. Missing batch and channel axes are
        virtual length-1 axes; tiled axes come in the order t, z, y, x. ``.info`` holds the
        metadata (axes, voxel size, origin, units, chunks, level) in that layout.

    Raises
    ------
    SourceNotFoundError
        The file or store does not exist (also a :class:`FileNotFoundError`).
    ParameterError
        Unknown format, missing dataset, bad level, or axes that cannot be mapped.
    ParameterTypeError
        A non-numeric dtype or an unsupported kind of source.
    ImportError
        The library for the format is not installed (``pip install 'tilewise[io]'`` or
        ``'tilewise[zarr]'``).

    Examples
    --------
    >>> import os, shutil, tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> path = os.path.join(root, "volume.npy")
    >>> np.save(path, np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    >>> vol = open_array(path)
    >>> vol.shape, vol.info.axes, vol.info.format
    ((1, 1, 4, 5, 6), ('n', 'c', 'z', 'y', 'x'), 'npy')
    >>> vol[0, 0, 1, 2, 1:4].tolist()
    [43.0, 44.0, 45.0]
    >>> shutil.rmtree(root)
    """
    if isinstance(source, LazyArray) and level == 0 and dataset is None and axes is None:
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, bytes):
        source = source.decode()
    if isinstance(source, str):
        return _open_path(source, level=level, dataset=dataset, axes=axes)
    if isinstance(source, np.ndarray):
        return _open_memory(source, axes, level, dataset)
    zarr = _loaded("zarr")
    if zarr is not None and isinstance(source, zarr.Array | zarr.Group):
        where = str(getattr(source, "store_path", "<zarr>"))
        return _open_zarr_node(source, where, level=level, dataset=dataset, axes=axes, reopen=None)
    h5py = _loaded("h5py")
    if h5py is not None and isinstance(source, h5py.Dataset | h5py.Group):
        _no_option("level", level, "HDF5", f"{source.file.filename}")
        return _open_h5_object(h5py, source, source.file.filename, dataset=dataset, axes=axes)
    raise ParameterTypeError(
        message(
            "source",
            expected="a path or URL, a zarr array/group, an h5py dataset/group, or a numpy array",
            received=f"{type(source).__name__}",
            fix="pass the file's path, or a torch tensor as tensor.numpy()",
        )
    )


# -- writers -----------------------------------------------------------------------------------
def _shape_arg(shape: Any) -> tuple[int, ...]:
    ok = isinstance(shape, Sequence | np.ndarray) and not isinstance(shape, str)
    values = list(shape) if ok else []
    if (
        not ok
        or not 3 <= len(values) <= 6
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in values)
    ):
        raise ParameterError(
            message(
                "shape",
                expected="(N, C, *spatial): 3 to 6 positive ints",
                received=repr(shape),
                fix="give the full output shape, e.g. (1, 2, 64, 512, 512)",
            )
        )
    return tuple(int(v) for v in values)


def _chunks_arg(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(chunks, int | np.integer) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * len(shape)
    ok = isinstance(chunks, Sequence | np.ndarray) and not isinstance(chunks, str)
    values = list(chunks) if ok else []
    if (
        not ok
        or len(values) != len(shape)
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in values)
    ):
        raise ParameterError(
            message(
                "chunks",
                expected=f"{len(shape)} positive ints, one per axis of (N, C, *spatial) {shape}",
                received=repr(chunks),
                fix="e.g. chunks=(1, 1, 64, 64, 64)",
            )
        )
    return tuple(int(v) for v in values)


def _dtype_arg(dtype: Any) -> np.dtype[Any]:
    try:
        dt = np.dtype(str(dtype).replace("torch.", "") if "torch." in str(dtype) else dtype)
    except TypeError:
        dt = np.dtype(object)
    if dt.kind not in "biuf":
        raise ParameterTypeError(
            message(
                "dtype",
                expected="a numeric dtype (bool, int, uint or float)",
                received=repr(dtype),
                fix="e.g. dtype='float32'",
            )
        )
    return dt


def _axes_for(shape: tuple[int, ...], info: ArrayInfo | None) -> tuple[str, ...]:
    spatial = len(shape) - 2
    if info is None:
        return ("n", "c", *TILED_LETTERS[4 - spatial :])
    if len(info.axes) != len(shape):
        raise ShapeMismatchError(
            message(
                "info",
                expected=f"metadata for {len(shape)} axes to match shape {shape}",
                received=f"axes {info.axes} from {info.source}",
                fix="pass the info of an input with the same number of axes, or info=None",
            )
        )
    for name, values in (
        ("voxel_size", info.voxel_size),
        ("origin", info.origin),
        ("units", info.units),
    ):
        if values is not None and len(values) != spatial:
            raise ShapeMismatchError(
                message(
                    f"info.{name}",
                    expected=f"{spatial} values, one per tiled axis {info.axes[2:]}",
                    received=repr(values),
                    fix="fix the ArrayInfo, or pass info=None",
                )
            )
    return tuple(info.axes)


def _tilewise_attrs(info: ArrayInfo | None) -> dict[str, Any]:
    if info is None or (info.voxel_size is None and info.origin is None):
        return {}
    own: dict[str, Any] = {"source": info.source}
    if info.voxel_size is not None:
        own["voxel_size"] = [float(v) for v in info.voxel_size]
    if info.origin is not None:
        own["origin"] = [float(v) for v in info.origin]
    if info.units is not None:
        own["units"] = list(info.units)
    return {"tilewise": own}


def _ome_attrs(
    axes: tuple[str, ...], stored: tuple[str, ...], info: ArrayInfo | None, name: str
) -> dict[str, Any]:
    spatial = axes[2:]
    voxel = info.voxel_size if info is not None and info.voxel_size is not None else None
    origin = info.origin if info is not None and info.origin is not None else None
    units = info.units if info is not None and info.units is not None else None
    entries, scale, translation = [], [], []
    for a in stored:
        kind = {"c": "channel", "t": "time"}.get(a, "space")
        entry: dict[str, Any] = {"name": a, "type": kind}
        i = spatial.index(a) if a in spatial else None
        if i is not None and units is not None and units[i] is not None:
            entry["unit"] = units[i]
        entries.append(entry)
        scale.append(float(voxel[i]) if i is not None and voxel is not None else 1.0)
        translation.append(float(origin[i]) if i is not None and origin is not None else 0.0)
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if any(translation):
        transforms.append({"type": "translation", "translation": translation})
    ms = {
        "name": name,
        "axes": entries,
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    return {"ome": {"version": "0.5", "multiscales": [ms]}}


def _exists(zarr: Any, path: str) -> Any:
    try:
        return zarr.open(path, mode="r+")
    except FileNotFoundError:
        return None


def _check_resume(
    arr: Any, shape: tuple[int, ...], dtype: np.dtype[Any], chunks: tuple[int, ...], path: str
) -> None:
    found = (tuple(arr.shape), np.dtype(arr.dtype), _zarr_chunks(arr))
    if found != (shape, dtype, chunks):
        raise ShapeMismatchError(
            message(
                "path",
                expected=f"no store, or one to resume with stored shape {shape}, dtype {dtype}, "
                f"chunks {chunks}",
                received=f"{path!r} holding shape {found[0]}, dtype {found[1]}, chunks {found[2]}",
                fix="pass overwrite=True to replace it, or write to another path",
            )
        )


def _compressors(compressors: Any, dtype: np.dtype[Any]) -> Any:
    """The zarr compressors for ``compressors="auto"``: Blosc LZ4 with bit shuffling."""
    if isinstance(compressors, str) and compressors == "auto":
        from zarr.codecs import BloscCodec

        return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=dtype.itemsize)
    return compressors


def create_zarr(
    path: Any,
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Any,
    info: ArrayInfo | None = None,
    ome: bool = False,
    fill_value: Any = 0,
    overwrite: bool = False,
    attributes: Mapping[str, Any] | None = None,
    compressors: Any = "auto",
    write_empty_chunks: bool = False,
) -> Any:
    """Create (or reopen, to resume) a zarr v3 array for an ``(N, C, *spatial)`` output.

    Parameters
    ----------
    path
        Where to write: a directory path or a URL zarr understands.
    shape
        ``(N, C, *spatial)``.
    dtype
        A numeric numpy dtype (or a torch dtype).
    chunks
        Storage chunks, one int per axis of ``shape`` (or one int for all). Stitching writes
        whole chunks, so align them with how outputs are produced.
    info
        The input's :class:`ArrayInfo` (from :func:`open_array`): axis names, voxel size, origin
        and units are written so the output lines up with the input (e.g. in napari).
    ome
        Write an OME-Zarr (NGFF 0.5) image group at ``path`` holding the array at ``path/0``.
        N must be 1; it is not stored, and the stored axes follow NGFF order ``[t,] c, [z,] y,
        x`` (time first). The result is an :class:`OmeZarrArray` read and written in
        ``(N, C, *spatial)`` layout.
    fill_value
        Value of voxels never written.
    overwrite
        Replace whatever is at ``path``. Without it an existing store is reopened, after
        checking that its shape, dtype and chunks are those asked for (resuming a run).
    attributes
        Extra attributes, stored on the array (or the OME-Zarr group).
    compressors
        ``"auto"``: Blosc with LZ4 and bit shuffling, which on network outputs (float
        probabilities, labels) both compresses better and runs several times faster than
        zarr's default zstd (measured: 0.73 vs 0.87 of the size of a float32 probability map, at
        1.8 vs 0.4 GB/s). ``None`` for no compression, or any zarr v3 compressor(s).
    write_empty_chunks
        Write chunks that hold only ``fill_value`` (zarr compares every chunk otherwise, and
        leaves such chunks out). A writer that already knows which chunks are empty passes True
        and skips them itself.

    Returns
    -------
    zarr.Array or OmeZarrArray
        Writable with numpy-style ``out[index] = values`` in ``(N, C, *spatial)`` layout.

    Examples
    --------
    >>> import os, shutil, tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> out = create_zarr(os.path.join(root, "pred.ome.zarr"), (1, 2, 4, 8, 8), "float32",
    ...                   chunks=(1, 1, 4, 8, 8), ome=True)
    >>> out[0, 1, :, 2:4] = 1.0
    >>> out.array.shape, out.group.attrs["ome"]["version"]
    ((2, 4, 8, 8), '0.5')
    >>> back = open_array(os.path.join(root, "pred.ome.zarr"))
    >>> back.shape, back.info.format, float(back[0, 1, 0, 2, 0]), float(back[0, 0].max())
    ((1, 2, 4, 8, 8), 'ome-zarr', 1.0, 0.0)
    >>> shutil.rmtree(root)
    """
    zarr = _zarr("writing zarr")
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise ParameterTypeError(
            message(
                "path",
                expected="a path or URL (str or os.PathLike)",
                received=f"{path!r} of type {type(path).__name__}",
                fix="pass where to write, e.g. 'prediction.ome.zarr'",
            )
        )
    shape_t = _shape_arg(shape)
    dt = _dtype_arg(dtype)
    chunks_t = _chunks_arg(chunks, shape_t)
    axes = _axes_for(shape_t, info)
    attrs = dict(attributes or {})
    codecs = _compressors(compressors, dt)
    config = {"write_empty_chunks": bool(write_empty_chunks)}
    existing = None if overwrite else _exists(zarr, path)
    if not ome:
        if existing is not None:
            if not isinstance(existing, zarr.Array):
                raise _not_resumable(path, "a zarr group", "a zarr array")
            _check_resume(existing, shape_t, dt, chunks_t, path)
            return existing.with_config(config)
        return zarr.create_array(
            path,
            shape=shape_t,
            dtype=dt,
            chunks=chunks_t,
            fill_value=fill_value,
            dimension_names=axes,
            attributes={**attrs, **_tilewise_attrs(info)},
            overwrite=overwrite,
            zarr_format=3,
            compressors=codecs,
            config=config,
        )
    if shape_t[0] != 1:
        raise ShapeMismatchError(
            message(
                "shape",
                expected="N = 1 for an OME-Zarr image (one image per store)",
                received=f"shape {shape_t}",
                fix="write one OME-Zarr per image, or pass ome=False for a plain zarr array",
            )
        )
    spatial = [a for a in axes[2:] if a != "t"]
    if not 2 <= len(spatial) <= 3:
        raise ParameterError(
            message(
                "shape",
                expected="2 or 3 space axes (y, x or z, y, x), plus optional time, for OME-Zarr",
                received=f"axes {axes} for shape {shape_t}",
                fix="pass ome=False to write a plain zarr array",
            )
        )
    if "ome" in attrs:
        raise ParameterError(
            message(
                "attributes",
                expected="no 'ome' key (create_zarr writes the OME metadata itself)",
                received=f"keys {sorted(attrs)}",
                fix="rename that attribute",
            )
        )
    stored = tuple(a for a in ("t", "c", "z", "y", "x") if a in axes)
    amap = _AxisMap(stored, tuple(shape_t[axes.index(a)] for a in stored))
    stored_shape = tuple(shape_t[axes.index(a)] for a in stored)
    stored_chunks = tuple(chunks_t[axes.index(a)] for a in stored)
    name = os.path.basename(path.rstrip("/")) or "image"
    if existing is not None:
        if not isinstance(existing, zarr.Group) or not _ome_multiscales(dict(existing.attrs)):
            raise _not_resumable(path, "something other than an OME-Zarr image", "one")
        try:
            arr = existing["0"]
        except KeyError:
            raise _not_resumable(path, "an OME-Zarr group without array '0'", "one") from None
        _check_resume(arr, stored_shape, dt, stored_chunks, path)
        arr = arr.with_config(config)
        group = existing
    else:
        group = zarr.create_group(
            path,
            overwrite=overwrite,
            zarr_format=3,
            attributes={**attrs, **_ome_attrs(axes, stored, info, name)},
        )
        arr = group.create_array(
            "0",
            shape=stored_shape,
            dtype=dt,
            chunks=stored_chunks,
            fill_value=fill_value,
            dimension_names=stored,
            compressors=codecs,
            config=config,
        )
    ms = _ome_multiscales(dict(group.attrs)) or [{}]
    meta = _ome_meta(ms[0], ms[0]["datasets"][0], len(stored), path)
    voxel, origin, units = _physical(meta, list(stored), stored)
    out_chunks = tuple(1 if s is None else stored_chunks[s] for s in amap.source_of)
    out_info = ArrayInfo("ome-zarr", path, amap.target, voxel, origin, units, out_chunks, 0)
    return OmeZarrArray(group, arr, stored, out_info)


def _not_resumable(path: str, found: str, wanted: str) -> TilewiseError:
    return ShapeMismatchError(
        message(
            "path",
            expected=f"no store, or {wanted} to resume",
            received=f"{path!r} holding {found}",
            fix="pass overwrite=True to replace it, or write to another path",
        )
    )
