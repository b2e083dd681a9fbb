"""tilewise: exact, seam-free tiling and stitching of images and volumes larger than memory.

Arrays are laid out ``(N, C, *spatial)`` with 1 to 4 tiled axes. A :class:`Tiling` is the plan,
:func:`extract` cuts windows, :func:`stitch` / :class:`Stitcher` put window outputs back together
with the weights of a :mod:`tilewise.blend`.

>>> import torch, tilewise as tw
>>> x = torch.rand(1, 1, 64, 64, 64)
>>> t = tw.Tiling(x.shape[2:], window=32, step=24)
>>> y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.border(4, weight=0.0))
>>> torch.allclose(y, x)
True
"""

from __future__ import annotations

from tilewise import blend
from tilewise._errors import (
    CoverageError,
    MissingWindowError,
    NonFiniteError,
    ParameterError,
    ParameterTypeError,
    ShapeMismatchError,
    TilewiseError,
)
from tilewise._extract import extract, extract_batches
from tilewise._geometry import Tiling, Window
from tilewise._io import (
    ArrayInfo,
    LazyArray,
    OmeZarrArray,
    SourceNotFoundError,
    create_zarr,
    open_array,
)
from tilewise._models import ModelFactory, load_model
from tilewise._predict import MemoryPlan, Prediction, plan, predict
from tilewise._sampling import (
    CleanReport,
    CleanResult,
    PatchDataset,
    RandomWindows,
    clean,
    count_labeled,
)
from tilewise._sink import ConcurrentWriterError, ResumeMismatchError
from tilewise._stitch import Stitcher, stitch

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``tw.plot`` is imported on first use (it needs the optional matplotlib only when drawing)."""
    if name == "plot":
        import importlib

        return importlib.import_module("tilewise.plot")
    raise AttributeError(f"module 'tilewise' has no attribute {name!r}")


__all__ = [
    "ArrayInfo",
    "CleanReport",
    "CleanResult",
    "ConcurrentWriterError",
    "CoverageError",
    "LazyArray",
    "MemoryPlan",
    "MissingWindowError",
    "ModelFactory",
    "NonFiniteError",
    "OmeZarrArray",
    "ParameterError",
    "ParameterTypeError",
    "PatchDataset",
    "Prediction",
    "RandomWindows",
    "ResumeMismatchError",
    "ShapeMismatchError",
    "SourceNotFoundError",
    "Stitcher",
    "TilewiseError",
    "Tiling",
    "Window",
    "__version__",
    "blend",
    "clean",
    "count_labeled",
    "create_zarr",
    "extract",
    "extract_batches",
    "load_model",
    "open_array",
    "plan",
    "predict",
    "stitch",
]
