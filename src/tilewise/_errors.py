"""Errors raised by tilewise.

Every error derives from :class:`TilewiseError`, itself a :class:`ValueError`, and where a builtin
fits better the subclass inherits it too (so ``except TypeError`` keeps working). Messages follow
one pattern: what was expected, what was received, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CoverageError",
    "MissingWindowError",
    "NonFiniteError",
    "ParameterError",
    "ParameterTypeError",
    "ShapeMismatchError",
    "TilewiseError",
    "message",
]


class TilewiseError(ValueError):
    """Base class of every error tilewise raises on bad input or bad results."""


class ParameterError(TilewiseError):
    """A parameter has the right type but an impossible value (zero window, border too wide...)."""


class ParameterTypeError(TilewiseError, TypeError):
    """A parameter has the wrong type (a float where a whole number is needed, ...)."""


class ShapeMismatchError(TilewiseError):
    """An array's shape does not match the tiling or the other arrays it goes with."""


class CoverageError(TilewiseError):
    """A stitching plan would leave voxels uncovered or with zero total weight."""


class MissingWindowError(TilewiseError, LookupError):
    """A window was never added to a stitcher, added twice, or does not exist."""


class NonFiniteError(TilewiseError, FloatingPointError):
    """NaN or Inf found among window outputs."""


def message(what: str, *, expected: str, received: str, fix: str) -> str:
    """Build an error message in the project's one format.

    Examples
    --------
    >>> print(message("window", expected="a positive int", received="0", fix="use window >= 1"))
    window: expected a positive int, received 0. Fix: use window >= 1.
    """
    return f"{what}: expected {expected}, received {received}. Fix: {fix}."
