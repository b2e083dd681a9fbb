"""Reading windows from any array-like: torch tensors, numpy arrays and memmaps, zarr arrays, h5py
datasets — anything with ``shape``, ``dtype`` and numpy-style slicing. Lazy sources are read one
window (or one slab) at a time, so only what is asked for is ever in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tilewise._errors import ParameterTypeError, message

if TYPE_CHECKING:
    from tilewise._geometry import Tiling, Window

__all__ = ["is_array_like", "read_region", "read_window", "shape_of", "to_numpy"]


def is_array_like(x: Any) -> bool:
    """Whether ``x`` has a shape, a dtype and can be sliced."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__")


def shape_of(x: Any, what: str) -> tuple[int, ...]:
    """The shape of an array-like, or a clear error."""
    if not is_array_like(x):
        raise ParameterTypeError(
            message(
                what,
                expected="an array: torch.Tensor, numpy array/memmap, zarr array or h5py dataset",
                received=type(x).__name__,
                fix="pass the array itself (e.g. zarr.open_array(path)), laid out (N, C, *spatial)",
            )
        )
    return tuple(int(s) for s in x.shape)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of a (small) array-like region."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def read_region(x: Any, index: tuple[Any, ...]) -> np.ndarray:
    """``x[index]`` as numpy (a single read for lazy sources)."""
    if isinstance(x, torch.Tensor):
        return x[index].detach().cpu().numpy()
    return np.asarray(x[index])


def read_window(
    x: Any,
    n: int,
    window: Window,
    tiling: Tiling,
    *,
    channel_axis: bool = True,
    pad_value: float | None = None,
) -> np.ndarray:
    """Read one window of image ``n`` as numpy, applying the tiling's virtual padding.

    ``channel_axis=False`` reads arrays laid out ``(N, *spatial)`` (single-channel labels).
    ``pad_value`` fills the virtual padding with that value whatever the tiling's ``pad`` mode
    (labels: padding must read as "not labelled", never as copied or invented labels); ``None``
    (default) pads as the tiling says.
    """
    lead: tuple[Any, ...] = (n, slice(None)) if channel_axis else (n,)
    data = read_region(x, (*lead, *window.slices))
    if not any(b or a for b, a in tiling.padding):
        return data
    pads = [(0, 0)] * (data.ndim - tiling.ndim)
    pads += [(v.start, w - v.stop) for v, w in zip(window.valid, tiling.window, strict=True)]
    if pad_value is not None:
        return np.pad(data, pads, mode="constant", constant_values=pad_value)
    if tiling.pad == "constant":
        return np.pad(data, pads, mode="constant", constant_values=tiling.pad_value)
    if tiling.pad == "replicate":
        return np.pad(data, pads, mode="edge")
    return np.pad(data, pads, mode="reflect")
