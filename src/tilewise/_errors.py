"""Errors raised by tilewise.

Every error derives from :class:`TilewiseError`, itself a :class:`ValueError`, and where a builtin
fits better the subclass inherits it too (so ``except TypeError`` keeps working). Messages follow
one pattern: what was expected, what was received, and how to fix it.
"""

from __future__ import annotations

import re

__all__ = [
    "CoverageError",
    "MissingWindowError",
    "NonFiniteError",
    "ParameterError",
    "ParameterTypeError",
    "ShapeMismatchError",
    "TilewiseError",
    "message",
    "redact",
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
    """Build an error message in the project's one format (credentials in URLs removed).

    Examples
    --------
    >>> print(message("window", expected="a positive int", received="0", fix="use window >= 1"))
    window: expected a positive int, received 0. Fix: use window >= 1.
    >>> print(message("out", expected="a writable location", received="'s3://K:S@b/o.zarr'",
    ...               fix="check the credentials"))
    out: expected a writable location, received 's3://b/o.zarr'. Fix: check the credentials.
    """
    return redact(f"{what}: expected {expected}, received {received}. Fix: {fix}.")


# ``scheme://userinfo@``: RFC 3986 userinfo, or ``user:secret@`` whose secret holds a raw '/' (AWS
# secret keys often do) unless what follows the ':' is a port (digits, then '/' or the URL's end)
_USERINFO = re.compile(
    r"""(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)
    (?P<userinfo>
        [^\s/?#@"'<>:]*:(?!\d*(?:[/?#\s"'<>]|$))[^\s?#@"'<>]*@
      | [^\s/?#@"'<>]*@
    )""",
    re.VERBOSE,
)


def redact(text: str) -> str:
    """Remove the ``user:password@`` (or ``user@``) part of every URL in a text, of any scheme.

    Use it on every message that may show a location the user gave, so that credentials written
    into a URL are never printed or logged.

    Examples
    --------
    >>> redact("received 'https://alice:s3cr3t@127.0.0.1:9/o.zarr': ClientConnectorError")
    "received 'https://127.0.0.1:9/o.zarr': ClientConnectorError"
    >>> redact("s3://KEY:se/cret@bucket/x.zarr and ssh://git@host/repo")
    's3://bucket/x.zarr and ssh://host/repo'
    >>> redact("https://host:8080/path@v2 s3://bucket/a@b file:///x@y")  # no userinfo: unchanged
    'https://host:8080/path@v2 s3://bucket/a@b file:///x@y'
    """
    return _USERINFO.sub(r"\g<scheme>", text)
