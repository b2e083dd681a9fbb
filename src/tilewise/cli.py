"""The ``tilewise`` command line: ``predict``, ``sample``, ``plan``, ``info`` and ``demo``.

Each command is a thin layer over the library (:func:`tilewise.predict`, :func:`tilewise.clean`,
:func:`tilewise.plan`, :func:`tilewise.open_array`, :mod:`tilewise.demo`). Errors are reported in
one line on stderr, never as a traceback::

    tilewise: error: <what was expected, what was received, how to fix it>

Exit codes: 0 success, 2 bad arguments or bad input (including every
:class:`~tilewise.TilewiseError`, and an input or output that cannot be opened or reached), 1 an
unexpected internal error (rerun with ``--debug`` for the traceback), 130 interrupted (a
``predict`` run resumes when rerun with the same arguments). Credentials written into a URL
(``https://user:password@host/...``) are removed from everything the command prints.

Run it as ``tilewise ...`` once installed with the ``cli`` extra, or as ``python -m tilewise.cli``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import sys
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

try:
    import click
except ImportError:  # pragma: no cover - only without the extra
    raise ImportError(
        "the tilewise command line needs click: pip install 'tilewise[cli]'"
    ) from None

import numpy as np

import tilewise as tw
from tilewise._errors import _USERINFO, TilewiseError, message, redact

__all__ = ["cli", "main"]

PROG = "tilewise"
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from tilewise._geometry import PadMode

    # click >= 8.4 makes ParamType generic (for mypy); at run time any click >= 8.1 works
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType


class CliError(click.ClickException):
    """A problem with the command's arguments or inputs, reported in one line (exit code 2).

    Parameters
    ----------
    message
        The message, in the project's "expected ..., received ..., Fix: ..." form.
    """

    exit_code: ClassVar[int] = EXIT_USAGE


class SetupError(CliError):
    """An optional dependency is missing: one line naming what to install (exit code 1)."""

    exit_code: ClassVar[int] = EXIT_INTERNAL


# -- parsing ---------------------------------------------------------------------------------------
class _Ints(_ParamType):
    """One int, or comma-separated ints, one per tiled axis (``64`` or ``32,64,64``)."""

    name = "INT[,INT...]"

    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        parts = [p.strip() for p in text.split(",")]
        if not text or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            self.fail(
                f"expected one int or comma-separated ints, one per tiled axis, received "
                f"{text!r}. Fix: e.g. 64 or 32,64,64",
                param,
                ctx,
            )
        ints = tuple(int(p) for p in parts)
        if any(v < self.minimum for v in ints):
            self.fail(
                f"expected values >= {self.minimum}, received {text!r}. Fix: use whole numbers "
                f">= {self.minimum}",
                param,
                ctx,
            )
        return ints


class _Bytes(_ParamType):
    """A memory size: ``8GiB``, ``512MiB``, ``2G`` (binary), ``8GB`` (decimal) or bytes."""

    name = "SIZE"
    _UNITS: ClassVar[dict[str, int]] = {
        "": 1,
        "b": 1,
        "k": 1 << 10,
        "kib": 1 << 10,
        "kb": 10**3,
        "m": 1 << 20,
        "mib": 1 << 20,
        "mb": 10**6,
        "g": 1 << 30,
        "gib": 1 << 30,
        "gb": 10**9,
        "t": 1 << 40,
        "tib": 1 << 40,
        "tb": 10**12,
    }

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([a-zA-Z]*)", text)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in self._UNITS or float(m.group(1)) <= 0:
            self.fail(
                f"expected a positive memory size, received {text!r}. Fix: e.g. 8GiB, 512MiB "
                "or 80GB",
                param,
                ctx,
            )
        return int(float(m.group(1)) * self._UNITS[unit])


class _BlendSpec(_ParamType):
    """A blend recipe: ``uniform``, ``gaussian[:SIGMA]``, ``hann``, ``ramp:W``, ``border:W[:WT]``.

    Examples
    --------
    >>> _BlendSpec().convert("border:10:0", None, None) == tw.blend.border(10, weight=0.0)
    True
    >>> _BlendSpec().convert("ramp:4,4,8", None, None) == tw.blend.ramp((4, 4, 8))
    True
    """

    name = "BLEND"
    _FORMS = "uniform, gaussian[:SIGMA], hann, ramp:WIDTH or border:WIDTH[:WEIGHT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tw.blend.Blend):
            return value
        text = str(value).strip()
        name, *args = text.split(":")
        name = name.lower()
        ints = _Ints(minimum=0)
        try:
            if name == "uniform" and not args:
                return tw.blend.uniform()
            if name == "hann" and not args:
                return tw.blend.hann()
            if name == "gaussian" and len(args) <= 1:
                return tw.blend.gaussian(float(args[0])) if args else tw.blend.gaussian()
            if name == "ramp" and len(args) == 1:
                return tw.blend.ramp(_axis_value(ints.convert(args[0], param, ctx)))
            if name == "border" and len(args) in (1, 2):
                width = _axis_value(ints.convert(args[0], param, ctx))
                weight = float(args[1]) if len(args) == 2 else 0.0
                return tw.blend.border(width, weight=weight)
        except ValueError as err:  # float("x"), or the library's TilewiseError
            self.fail(f"{text!r}: {_one_line(str(err))}", param, ctx)
        self.fail(
            f"expected one of {self._FORMS}, received {text!r}. Fix: e.g. --blend border:10:0 "
            "or --blend gaussian",
            param,
            ctx,
        )


def _axis_value(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """One value for every axis (an int), or one per axis (a tuple) as the library takes them."""
    return values[0] if len(values) == 1 else values


def _per_axis(values: tuple[int, ...] | None, ndim: int, option: str) -> tuple[int, ...] | None:
    """Expand ``(v,)`` to ``ndim`` values; refuse a count that is neither 1 nor ``ndim``."""
    if values is None:
        return None
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise CliError(
            _message(
                option,
                expected=f"one int or {ndim} comma-separated ints (one per tiled axis)",
                received=",".join(map(str, values)),
                fix=f"give {ndim} values, e.g. {option} {','.join(['64'] * ndim)}",
            )
        )
    return values


def _message(what: str, *, expected: str, received: str, fix: str) -> str:
    """The project's one error format (see :func:`tilewise._errors.message`).

    Examples
    --------
    >>> _message("--window", expected="an int", received="'x'", fix="use 64")
    "--window: expected an int, received 'x'. Fix: use 64."
    """
    return message(what, expected=expected, received=received, fix=fix)


def _number(text: str, option: str) -> int | float:
    """An int when the text is a whole number, else a float (``nan`` allowed)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise CliError(
            _message(
                option,
                expected="a number",
                received=repr(text),
                fix=f"e.g. {option} -1",
            )
        ) from None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _is_url(path: str) -> bool:
    return "://" in path


def _local(path: str) -> str:
    """Absolute path for local files (workers may run elsewhere); URLs unchanged."""
    return path if _is_url(path) else os.path.abspath(path)


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _rows(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {redact(value)}")


# -- locations that cannot be reached --------------------------------------------------------------
# Packages whose exceptions mean "this location cannot be reached or read" (network, object stores,
# fsspec); matched by module name so that none of them is imported here.
_CLIENT_PACKAGES = frozenset(
    {"aiohttp", "aiobotocore", "botocore", "boto3", "s3fs", "fsspec", "gcsfs", "adlfs"}
    | {"requests", "urllib3", "http", "ssl", "socket"}
)
_WRITTEN = frozenset({"OUTPUT", "--picture"})  # the locations a command writes


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error and the errors it was raised from (``raise ... from``)."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__


def _is_location_error(err: BaseException) -> bool:
    """An OS error (missing file, no permission, refused connection, timeout) or an error of a
    storage or network client: the location is at fault, not tilewise (exit code 2)."""
    return any(
        isinstance(e, OSError)
        or any(c.__module__.partition(".")[0] in _CLIENT_PACKAGES for c in type(e).__mro__)
        for e in _chain(err)
    )


def _blame(err: BaseException, where: Mapping[str, str]) -> dict[str, str]:
    """The locations among ``where`` that the error names (by path or URL host), else all."""
    text = " ".join(f"{e} {getattr(e, 'filename', '') or ''}" for e in _chain(err))
    for name, location in where.items():
        if _is_url(location):
            keys = [location.rstrip("/"), urllib.parse.urlsplit(location).hostname or ""]
        else:
            keys = [location.rstrip("/"), os.path.abspath(location)]
        if any(k and k in text for k in keys):
            return {name: location}
    return dict(where)


@contextlib.contextmanager
def _locations(where: Mapping[str, str]) -> Iterator[None]:
    """Report a location that cannot be opened, reached, read or written in one line (exit 2).

    ``where`` maps an argument's name (``INPUT``, ``OUTPUT``...) to the path or URL given. Other
    errors pass through unchanged (an unexpected one is exit code 1).
    """
    try:
        yield
    except (TilewiseError, click.ClickException, ImportError):
        raise
    except Exception as err:
        if not _is_location_error(err):
            raise
        named = _blame(err, where)
        writes = all(name in _WRITTEN for name in named)
        locations = list(named.values())
        if any(_USERINFO.search(loc) for loc in locations):
            fix = (
                "remove user:password@ from the URL and give credentials through the "
                "environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), ~/.aws/credentials "
                "or fsspec's configuration"
            )
        elif any(_is_url(loc) for loc in locations):
            fix = "check the URL, that its server can be reached from here, and the credentials"
        elif writes:
            fix = "choose a path in a folder you may write to"
        else:
            fix = "check the path and its permissions"
        raise CliError(
            _message(
                " or ".join(named),
                expected=f"a location that can be {'written' if writes else 'read'}",
                received=f"{' or '.join(repr(redact(loc)) for loc in locations)}, which failed "
                f"({type(err).__name__}: {redact(_one_line(str(err)))[:300] or '(no message)'})",
                fix=fix,
            )
        ) from None


# -- shared pieces ---------------------------------------------------------------------------------
def _open(
    source: str, *, axes: str | None, level: int, dataset: str | None, what: str = "INPUT"
) -> Any:
    with _locations({what: source}):
        return tw.open_array(source, axes=axes, level=level, dataset=dataset)


def _blend(spec: Any, border: tuple[int, ...] | None, weight: float | None) -> Any:
    if spec is not None and border is not None:
        raise click.UsageError(
            "--border and --blend are alternatives: pass one (--border 10 is --blend border:10:0)"
        )
    if weight is not None and border is None:
        raise click.UsageError("--border-weight needs --border (the band it weights)")
    if border is not None:
        return tw.blend.border(_axis_value(border), weight=0.0 if weight is None else weight)
    return spec


def _tiling(
    shape: Sequence[int], window: tuple[int, ...], step: tuple[int, ...], pad: str | None
) -> tw.Tiling:
    return tw.Tiling(
        tuple(shape),
        window=_axis_value(window),
        step=_axis_value(step),
        pad=cast("PadMode | None", pad),  # one of click.Choice(PadMode's values)
    )


def _zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise SetupError("writing zarr needs zarr: pip install 'tilewise[zarr]'") from None
    return zarr


def _debug_option(f: F) -> F:
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        help="On an error, print the full traceback.",
    )(f)


def _tiling_options(f: F) -> F:
    f = click.option(
        "--pad",
        type=click.Choice(["reflect", "constant", "replicate"]),
        default=None,
        help="Pad axes shorter than the window virtually (default: such an axis is an error).",
    )(f)
    f = click.option(
        "--step",
        type=_Ints(minimum=1),
        required=True,
        help="Distance between window starts: one int or one per axis.",
    )(f)
    return click.option(
        "--window",
        type=_Ints(minimum=1),
        required=True,
        help="Window size: one int for every axis, or one per axis (32,64,64).",
    )(f)


def _blend_options(f: F) -> F:
    f = click.option(
        "--blend",
        "blend_spec",
        type=_BlendSpec(),
        default=None,
        help="Stitching weights: uniform (default), gaussian[:SIGMA], hann, ramp:W or "
        "border:W[:WEIGHT].",
    )(f)
    f = click.option(
        "--border-weight",
        type=float,
        default=None,
        help="Weight inside the --border band (default 0.0: only window cores count).",
    )(f)
    return click.option(
        "--border",
        type=_Ints(minimum=0),
        default=None,
        help="Down-weight a band this wide inside each window (qlty's border), per axis or one.",
    )(f)


def _input_options(f: F) -> F:
    f = click.option(
        "--dataset",
        default=None,
        help="The HDF5 dataset or the array inside a zarr group (when there are several).",
    )(f)
    f = click.option(
        "--level",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Resolution level of a multiscale OME-Zarr or pyramidal TIFF.",
    )(f)
    return click.option(
        "--axes",
        default=None,
        help="Letters naming the stored axes in order, from n c t z y x (e.g. czyx); overrides "
        "the file's names.",
    )(f)


def _epilog(text: str) -> str:
    """A command's examples for ``--help``, each paragraph kept as written (click rewraps text
    unless a paragraph starts with ``\\b``)."""
    return "\n\n".join("\b\n" + p for p in text.strip("\n").split("\n\n"))


# -- the commands ----------------------------------------------------------------------------------
@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_epilog(
        """Examples:
  tilewise info volume.ome.zarr
  tilewise plan 236,720,510 --window 64 --step 32
  tilewise predict net.pt2 volume.ome.zarr pred.ome.zarr --window 128 --step 108 --border 10
  tilewise sample image.zarr labels.zarr train.zarr --window 64 --step 32 --border 4

Run 'tilewise COMMAND --help' for a command's options and examples."""
    ),
)
@click.version_option(tw.__version__, "--version", prog_name=PROG)
@_debug_option
def cli() -> None:
    """Exact, seam-free tiling and stitching of images and volumes larger than memory.

    \f
    The command group; see :func:`main` for the entry point.
    """


@cli.command(
    short_help="Run a model over an array window by window, stitched into zarr.",
    epilog=_epilog(
        """Examples:
  # the paper's inference setting: 128^3 windows, step 108, a zero-weight border of 10
  tilewise predict net.pt2 volume.ome.zarr pred.ome.zarr --window 128 --step 108 --border 10

  # labels, not probabilities; 64^3 chunks; on the GPU with mixed precision
  tilewise predict net.pt2 volume.zarr labels.zarr --window 96 --step 64 --blend gaussian \\
      --out-dtype argmax --chunks 64 --device cuda --amp

  # blocks as tasks on 4 local worker processes, or on a running dask scheduler
  tilewise predict net.pt2 volume.zarr pred.zarr --window 64 --step 48 --workers 4
  tilewise predict net.pt2 s3://bucket/vol.zarr s3://bucket/pred.zarr --window 64 --step 48 \\
      --dask-scheduler tcp://scheduler:8786

Rerunning an interrupted command with the same arguments resumes it: finished blocks
are skipped. Export the model with a dynamic batch axis, so that any batch size runs:
  batch = torch.export.Dim("batch")
  program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
  torch.export.save(program, "net.pt2")"""
    ),
)
@click.argument("model")
@click.argument("input_path", metavar="INPUT")
@click.argument("output")
@_tiling_options
@_blend_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Windows per model call.",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1, mps... (default: cuda if any).")
@click.option("--amp/--no-amp", default=False, help="Mixed precision (autocast).")
@click.option(
    "--out-dtype",
    type=click.Choice(["float32", "float16", "argmax", "threshold", "uint8"]),
    default="float32",
    show_default=True,
    help="Stored values: probabilities, argmax labels, 0/1 of > --threshold, or quantised 0..255.",
)
@click.option("--argmax", is_flag=True, help="Store argmax labels: short for --out-dtype argmax.")
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="With --out-dtype threshold, store 1 where the output is > this, else 0.",
)
@click.option("--chunks", type=_Ints(minimum=1), default=None, help="Output chunks (default 64).")
@click.option(
    "--block",
    type=_Ints(minimum=1),
    default=None,
    help="Output block written at once, whole chunks (default: a step deep, and as wide as "
    "keeps a row's open float32 blocks under 128 MiB).",
)
@_input_options
@click.option("--tta", is_flag=True, help="Average over all flips of the tiled axes.")
@click.option(
    "--on-nonfinite",
    type=click.Choice(["raise", "drop"]),
    default="raise",
    show_default=True,
    help="NaN/Inf in a window's output: stop with its position, or refill it from neighbours.",
)
@click.option("--dask-scheduler", default=None, metavar="ADDRESS", help="Run blocks on dask.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Run blocks on a local dask cluster of N processes.",
)
@click.option("--overwrite", is_flag=True, help="Start the output afresh instead of resuming.")
@click.option("--no-progress", is_flag=True, help="No progress bar (shown only on a terminal).")
@_debug_option
def predict(
    model: str,
    input_path: str,
    output: str,
    window: tuple[int, ...],
    step: tuple[int, ...],
    pad: str | None,
    border: tuple[int, ...] | None,
    border_weight: float | None,
    blend_spec: Any,
    batch_size: int,
    device: str | None,
    amp: bool,
    out_dtype: str,
    argmax: bool,
    threshold: float,
    chunks: tuple[int, ...] | None,
    block: tuple[int, ...] | None,
    axes: str | None,
    level: int,
    dataset: str | None,
    tta: bool,
    on_nonfinite: str,
    dask_scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    no_progress: bool,
) -> int:
    """Run MODEL over INPUT window by window; stitch the outputs into the zarr OUTPUT.

    MODEL is a torch.export (.pt2) or TorchScript (.pt) file; INPUT is zarr, OME-Zarr, TIFF,
    HDF5 (file.h5:/dataset), MRC or .npy; OUTPUT is a zarr path, written as OME-Zarr when it
    ends in .ome.zarr or the input is OME-Zarr. The output is written block by block, so memory
    depends on the window, batch and block, never on the volume.

    \f
    Returns
    -------
    int
        The exit code.
    """
    if dask_scheduler is not None and workers is not None:
        raise click.UsageError("--dask-scheduler and --workers are alternatives: pass one")
    if argmax:
        source = click.get_current_context().get_parameter_source("out_dtype")
        if out_dtype != "argmax" and source != click.core.ParameterSource.DEFAULT:
            raise click.UsageError(
                f"--argmax is short for --out-dtype argmax, which contradicts --out-dtype "
                f"{out_dtype}: pass one"
            )
        out_dtype = "argmax"
    dev = _device(device)
    blend = _blend(blend_spec, border, border_weight)
    src = _open(input_path, axes=axes, level=level, dataset=dataset)
    tiling = _tiling(src.shape[2:], window, step, pad)
    if blend is not None:
        blend.check(tiling.window)
    net = _load_model(model)
    distributed = dask_scheduler is not None or workers is not None
    client = _connect(dask_scheduler) if dask_scheduler is not None else None
    ome = True if output.rstrip("/").endswith(".ome.zarr") else None
    try:
        with _locations({"OUTPUT": output, "INPUT": input_path}):
            info = tw.predict(
                cast("Callable[..., Any]", _local(model) if distributed else net),
                src,
                tiling,
                blend=blend,
                batch_size=batch_size,
                device=dev,
                amp=True if amp else None,
                out=_local(output) if distributed else output,
                out_dtype=out_dtype,
                threshold=threshold,
                chunks=_per_axis(chunks, tiling.ndim, "--chunks"),
                block=_per_axis(block, tiling.ndim, "--block"),
                tta=tta,
                on_nonfinite="drop" if on_nonfinite == "drop" else "raise",
                progress=False if no_progress else None,
                ome=ome,
                overwrite=overwrite,
                client=client,
                cluster="local" if workers is not None else None,
                workers=workers if workers is not None else 2,
                return_info=True,
            )
    except TilewiseError:
        raise
    except Exception as err:
        if "Guard failed" not in str(err):
            raise
        # torch.export checks input shapes at call time: the model was exported for other sizes
        raise CliError(
            _message(
                "MODEL",
                expected=f"a model that accepts windows of {_shape_str(tiling.window)} with "
                f"{src.shape[1]} channel(s) and any batch size",
                received=f"{model!r}, which refuses them ({_one_line(str(err))[:200]})",
                fix="pass the --window the model was exported for, or export it with "
                "dynamic_shapes for the batch (and spatial) axes",
            )
        ) from None
    finally:
        if client is not None:
            client.close()
    outs = info.output if isinstance(info.output, dict) else {None: info.output}
    run = info.blocks - info.blocks_skipped
    rows = [
        ("windows", f"{info.windows} ({info.windows_run} run by this command)"),
        ("blocks", f"{info.blocks} ({run} run, {info.blocks_skipped} skipped: finished before)"),
        (
            "seconds",
            f"{info.seconds:.2f} (model {info.seconds_model:.2f}, waiting for input "
            f"{info.seconds_waiting:.2f})",
        ),
    ]
    for name, arr in outs.items():
        where = output if name is None else f"{output.rstrip('/')}/{name}"
        shape = _shape_str(getattr(arr, "shape", ()))
        rows.append(("output", f"{where}  {shape} {getattr(arr, 'dtype', '')}".rstrip()))
    _rows(rows)
    return EXIT_OK


def _device(device: str | None) -> str | None:
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(
            _message(
                "--device",
                expected="a torch device such as cpu, cuda, cuda:1 or mps",
                received=repr(device),
                fix="pass --device cpu, or leave it out to use the GPU when there is one",
            )
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CliError(
            _message(
                "--device",
                expected="a device this machine has",
                received=f"{device!r}, but torch sees no CUDA device",
                fix="pass --device cpu (or leave --device out)",
            )
        )
    return device


def _load_model(path: str) -> Any:
    """Load a model file with :func:`tilewise.load_model`; a file it cannot read is exit 2."""
    try:
        return tw.load_model(path)
    except Exception as err:
        if os.path.isfile(path) and _is_state_dict(path):
            raise CliError(
                _message(
                    "MODEL",
                    expected="a torch.export (.pt2) or TorchScript model file: the command line "
                    "cannot rebuild a network from its weights",
                    received=f"{path!r}, a state dict (torch.save(net.state_dict()))",
                    fix="in Python, load the weights into the network and save it whole: "
                    f"net.load_state_dict(torch.load({path!r})); then "
                    "torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: "
                    "torch.export.Dim('batch')},)), 'net.pt2') or "
                    "torch.jit.save(torch.jit.script(net), 'net.pt')",
                )
            ) from None
        if isinstance(err, TilewiseError):
            raise
        raise CliError(
            _message(
                "MODEL",
                expected="a torch.export (.pt2) or TorchScript (.pt) model file",
                received=f"{path!r}, which failed to load ({type(err).__name__}: "
                f"{_one_line(str(err))[:200]})",
                fix="save it with torch.export.save(torch.export.export(net, (x,)), 'net.pt2')",
            )
        ) from None


def _is_state_dict(path: str) -> bool:
    """Whether a file holds weights only: a dict of tensors (``torch.save(net.state_dict())``),
    or a checkpoint dict holding one."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch.save file, or one holding more than weights
        return False

    def tensors(d: Mapping[Any, Any]) -> bool:
        return any(isinstance(v, torch.Tensor) for v in d.values())

    return isinstance(obj, Mapping) and (
        tensors(obj) or any(isinstance(v, Mapping) and tensors(v) for v in obj.values())
    )


def _connect(address: str) -> Any:
    try:
        import distributed
    except ImportError:
        raise SetupError(
            "--dask-scheduler needs dask.distributed: pip install 'tilewise[dask]'"
        ) from None
    try:
        return distributed.Client(address)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as err:
        raise CliError(
            _message(
                "--dask-scheduler",
                expected="the address of a running dask scheduler",
                received=f"{address!r}, which could not be reached ({_one_line(str(err))})",
                fix="start one with 'dask scheduler' and pass its tcp://host:8786 address, or "
                "use --workers N for a local cluster",
            )
        ) from None


@cli.command(
    short_help="Keep the training windows whose core holds labels.",
    epilog=_epilog(
        """Examples:
  # the paper's Table 2 setting: 64^3 windows, step 32, a 4-voxel border
  tilewise sample image.zarr labels.zarr train.zarr --window 64 --step 32 --border 4

  # float targets with NaN as "not labelled"; keep windows with >= 1% labelled core
  tilewise sample image.h5:/raw target.h5:/dist train.zarr --window 48 --step 24 \\
      --ignore nan --min-labeled 0.01

The output group holds image (K, C, *window), labels (K, [C_l,] *window) with border labels set to
the ignore value, starts (K, ndim) int64, images (K,) int64 (which image n) and indices (K,)
int64, and the report's numbers as attributes."""
    ),
)
@click.argument("image_path", metavar="IMAGE")
@click.argument("labels_path", metavar="LABELS")
@click.argument("output")
@_tiling_options
@click.option(
    "--border",
    type=_Ints(minimum=0),
    default=(0,),
    show_default=True,
    help="Labels in this band inside each window become --ignore; only the core is counted.",
)
@click.option(
    "--ignore",
    default="auto",
    show_default=True,
    help="The 'not labelled' value, or nan; auto: -1 for integer labels, nan for float labels.",
)
@click.option(
    "--min-labeled",
    default="1",
    show_default=True,
    help="Keep a window with at least this many labelled core voxels (int) or this fraction "
    "of its core (float in (0, 1]).",
)
@_input_options
@click.option("--label-axes", default=None, help="Like --axes, for LABELS.")
@click.option("--label-dataset", default=None, help="Like --dataset, for LABELS.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_debug_option
def sample(
    image_path: str,
    labels_path: str,
    output: str,
    window: tuple[int, ...],
    step: tuple[int, ...],
    pad: str | None,
    border: tuple[int, ...],
    ignore: str,
    min_labeled: str,
    axes: str | None,
    level: int,
    dataset: str | None,
    label_axes: str | None,
    label_dataset: str | None,
    overwrite: bool,
) -> int:
    """Keep the training windows whose core holds labels; write them to the zarr group OUTPUT.

    IMAGE and LABELS are anything 'tilewise info' opens; LABELS covers the same voxels, with
    unlabelled voxels set to --ignore. Prints the report of the qlty paper's Table 2.

    \f
    Returns
    -------
    int
        The exit code.
    """
    ignore_value = None if ignore == "auto" else _number(ignore, "--ignore")
    min_value = _number(min_labeled, "--min-labeled")
    if not overwrite and not _is_url(output) and os.path.exists(output):
        raise CliError(
            _message(
                "OUTPUT",
                expected="a path that does not exist yet",
                received=f"{output!r}, which exists",
                fix="pass --overwrite to replace it, or choose another path",
            )
        )
    zarr = _zarr()
    image = _open(image_path, axes=axes, level=level, dataset=dataset, what="IMAGE")
    labels = _open(labels_path, axes=label_axes, level=level, dataset=label_dataset, what="LABELS")
    tiling = _tiling(image.shape[2:], window, step, pad)
    with _locations({"IMAGE": image_path, "LABELS": labels_path}):
        result = tw.clean(
            image,
            labels,
            tiling,
            border=_axis_value(border),
            ignore=ignore_value,
            min_labeled=min_value,
        )
    if ignore_value is None:  # auto: as clean resolved it
        ignore_value = math.nan if np.issubdtype(np.dtype(labels.dtype), np.floating) else -1
    lab = np.asarray(result.labels)
    if "c" not in labels.stored_axes and lab.ndim == tiling.ndim + 2 and lab.shape[1] == 1:
        lab = lab[:, 0]  # the file has no channel axis: neither do the windows
    img = np.asarray(result.image)
    report = result.report
    arrays = {
        "image": img,
        "labels": lab,
        "starts": np.asarray([w.start for w in result.windows], dtype=np.int64).reshape(
            -1, tiling.ndim
        ),
        "images": np.asarray(result.images, dtype=np.int64),
        "indices": np.asarray(result.indices, dtype=np.int64),
    }
    with _locations({"OUTPUT": output}):
        group = zarr.open_group(output, mode="w")
        for name, data in arrays.items():
            chunks = (1, *data.shape[1:]) if name in ("image", "labels") else data.shape
            arr = group.create_array(
                name, shape=data.shape, dtype=data.dtype, chunks=tuple(max(1, c) for c in chunks)
            )
            if data.size:
                arr[...] = data
        group.attrs.update(
            {
                "tilewise": "sample",
                "image": redact(image_path),
                "labels": redact(labels_path),
                "image_shape": list(report.image_shape),
                "window": list(report.window),
                "step": list(report.step),
                "border": list(report.border),
                "ignore": ignore_value if not math.isnan(ignore_value) else "nan",
                "min_labeled": min_value,
                "total": report.total,
                "kept": report.kept,
                "labeled": report.labeled,
                "labeled_in_cores": report.labeled_in_cores,
                "occurrences": report.occurrences,
                "duplication_rate": report.duplication_rate,
                "reduction": report.reduction if math.isfinite(report.reduction) else None,
                "classes": {_class_key(k): int(v) for k, v in report.classes.items()},
            }
        )
    click.echo(str(report))
    click.echo()
    parts = ", ".join(f"{k} {_shape_str(v.shape)} {v.dtype}" for k, v in arrays.items())
    click.echo(f"wrote {report.kept} windows to {redact(output)}: {parts}")
    return EXIT_OK


def _class_key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@cli.command(
    short_help="Count the windows of a tiling; estimate predict's memory.",
    epilog=_epilog(
        """Examples:
  # the paper's training setting: 7 x 22 x 15 = 2310 windows
  tilewise plan 236,720,510 --window 64 --step 32

  # an input's shape and channels; memory when writing 64^3 chunks, a batch for 8 GiB
  tilewise plan volume.ome.zarr --window 128 --step 108 --border 10 --chunks 64 \\
      --out-channels 2 --budget 8GiB --activation-bytes 400 --picture layout.png"""
    ),
)
@click.argument("shape_or_input", metavar="SHAPE_OR_INPUT")
@_tiling_options
@_blend_options
@click.option("--channels", type=click.IntRange(min=1), default=None, help="Input channels.")
@click.option(
    "--out-channels",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Channels of the model's output (for the memory estimate).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Windows per model call.",
)
@click.option(
    "--activation-bytes",
    type=click.FloatRange(min=0),
    default=0.0,
    help="The network's activation bytes per window voxel (device estimate; default 0).",
)
@click.option("--chunks", type=_Ints(minimum=1), default=None, help="Output chunks (zarr).")
@click.option("--block", type=_Ints(minimum=1), default=None, help="Output block (zarr).")
@click.option("--budget", type=_Bytes(), default=None, help="Device memory for a batch size.")
@click.option(
    "--picture",
    default=None,
    metavar="PATH",
    help="Save a picture of the windows over the middle slice (over the data for an input).",
)
@_input_options
@_debug_option
def plan(
    shape_or_input: str,
    window: tuple[int, ...],
    step: tuple[int, ...],
    pad: str | None,
    border: tuple[int, ...] | None,
    border_weight: float | None,
    blend_spec: Any,
    channels: int | None,
    out_channels: int,
    batch_size: int,
    activation_bytes: float,
    chunks: tuple[int, ...] | None,
    block: tuple[int, ...] | None,
    budget: int | None,
    picture: str | None,
    axes: str | None,
    level: int,
    dataset: str | None,
) -> int:
    """Count the windows of a tiling and estimate the memory of a predict run.

    SHAPE_OR_INPUT is a spatial shape such as 236,720,510 or an input file (its shape, batch
    and channels are used). With --chunks or --block the estimate is for writing zarr block by
    block (rows of blocks are swept along the first axis; windows reaching two rows run twice).

    \f
    Returns
    -------
    int
        The exit code.
    """
    if picture is not None:
        _check_picture(picture)
    n, src = 1, None
    text = shape_or_input.strip()
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        shape = tuple(int(p) for p in text.split(","))
        in_ch = 1
    elif re.fullmatch(r"[\d\sx,;*]+", text) and not os.path.exists(text):
        raise CliError(
            _message(
                "SHAPE_OR_INPUT",
                expected="a spatial shape of comma-separated ints, or an input file",
                received=repr(shape_or_input),
                fix="write the shape as 236,720,510",
            )
        )
    else:
        src = _open(shape_or_input, axes=axes, level=level, dataset=dataset)
        n, in_ch, shape = src.shape[0], src.shape[1], tuple(src.shape[2:])
    blend = _blend(blend_spec, border, border_weight)
    tiling = _tiling(shape, window, step, pad)
    if blend is not None:
        blend.check(tiling.window)
    ch = _per_axis(chunks, tiling.ndim, "--chunks")
    bl = _per_axis(block, tiling.ndim, "--block")
    out = ch is not None or bl is not None
    mp = tw.plan(
        tiling,
        n=n,
        channels=channels if channels is not None else in_ch,
        out_channels=out_channels,
        batch_size=batch_size,
        activation_bytes_per_voxel=activation_bytes,
        out=out,
        chunks=ch,
        block=bl,
        blend=blend,
        budget_bytes=budget,
    )
    dup = len(tiling) * math.prod(tiling.window) / math.prod(tiling.shape)
    rows = [
        ("shape", _shape_str(tiling.shape) + (f" x {n} images" if n > 1 else "")),
        ("window", _shape_str(tiling.window)),
        ("step", _shape_str(tiling.step)),
        ("windows per axis", _shape_str(tiling.counts)),
        ("windows", f"{mp.windows}"),
        ("duplication", f"{dup:.2f}x (sum of window volumes / array volume)"),
    ]
    if out:
        rows.append(
            ("windows run", f"{mp.windows_run} (windows reaching two rows of blocks run twice)")
        )
    rows += [
        ("batch size", f"{mp.batch_size}"),
        ("device memory", f"~{_fmt_bytes(mp.device_bytes)}"),
        ("host memory", f"~{_fmt_bytes(mp.host_bytes)}" + (" (one block)" if out else "")),
    ]
    if budget is not None:
        note = "" if activation_bytes else " (without activations: see --activation-bytes)"
        rows.append(
            ("suggested batch", f"{mp.suggested_batch_size} for {_fmt_bytes(budget)}{note}")
        )
    if picture is not None:
        with _locations({"--picture": picture}):
            _save_picture(tiling, picture, border, src)
        rows.append(("picture", picture))
    _rows(rows)
    return EXIT_OK


def _check_picture(path: str) -> None:
    """Refuse a --picture path that cannot be written, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        problem = "a folder"
    elif not os.path.isdir(folder):
        problem = f"a file in {folder!r}, which does not exist"
    elif not os.access(folder, os.W_OK):
        problem = f"a file in {folder!r}, which is not writable"
    else:
        return
    raise CliError(
        _message(
            "--picture",
            expected="an image file (e.g. layout.png) in an existing, writable folder",
            received=f"{path!r}, {problem}",
            fix="create the folder first, or choose another path",
        )
    )


def _save_picture(tiling: tw.Tiling, path: str, border: tuple[int, ...] | None, image: Any) -> None:
    """Draw the layout with :func:`tilewise.plot.layout` (matplotlib, imported only here)."""
    try:
        import matplotlib
    except ImportError:
        raise SetupError("--picture needs matplotlib: pip install 'tilewise[plot]'") from None
    matplotlib.use("Agg")  # files only: no window, no display needed
    try:
        plot = importlib.import_module("tilewise.plot")
    except ModuleNotFoundError as err:
        if err.name != "tilewise.plot":
            raise
        raise SetupError(
            "--picture needs tilewise.plot, which this installation of tilewise does not have: "
            "upgrade tilewise"
        ) from None
    border_arg = None if border is None else _axis_value(border)
    fig = plot.layout(tiling, image=image, border=border_arg, path=path)
    import matplotlib.pyplot as plt

    plt.close(fig)


@cli.command(
    short_help="Show an array's shape, dtype, chunks, axes and voxel size.",
    epilog=_epilog(
        """Examples:
  tilewise info volume.ome.zarr
  tilewise info volume.ome.zarr --level 2
  tilewise info stack.tif --axes zcyx
  tilewise info data.h5 --dataset /raw --json"""
    ),
)
@click.argument("input_path", metavar="INPUT")
@_input_options
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as a JSON object.")
@_debug_option
def info(input_path: str, axes: str | None, level: int, dataset: str | None, as_json: bool) -> int:
    """Show an array's shape, dtype, chunks, axes, voxel size, origin, units and format.

    The shape is shown as tilewise reads it, (N, C, *spatial): axes the file lacks are added as
    length-1 batch and channel axes.

    \f
    Returns
    -------
    int
        The exit code.
    """
    arr = _open(input_path, axes=axes, level=level, dataset=dataset)
    meta = arr.info
    size = math.prod(arr.shape) * arr.dtype.itemsize
    record: dict[str, Any] = {
        "source": redact(str(meta.source)),
        "format": meta.format,
        "shape": list(arr.shape),
        "axes": "".join(meta.axes),
        "stored_axes": arr.stored_axes,
        "dtype": str(arr.dtype),
        "bytes": size,
        "chunks": list(meta.chunks) if meta.chunks is not None else None,
        "voxel_size": list(meta.voxel_size) if meta.voxel_size is not None else None,
        "origin": list(meta.origin) if meta.origin is not None else None,
        "units": list(meta.units) if meta.units is not None else None,
        "level": meta.level,
    }
    if as_json:
        click.echo(json.dumps(record))
        return EXIT_OK

    def show(v: Any) -> str:
        return "-" if v is None else str(tuple(v)) if isinstance(v, list | tuple) else str(v)

    spatial = ", ".join(a.upper() for a in meta.axes)
    _rows(
        [
            ("source", meta.source),
            ("format", meta.format),
            ("shape", f"{_shape_str(arr.shape)}  ({spatial})"),
            ("axes", f"{record['axes']} (stored: {arr.stored_axes})"),
            ("dtype", f"{arr.dtype} ({_fmt_bytes(size)})"),
            ("chunks", show(record["chunks"])),
            ("voxel size", show(meta.voxel_size)),
            ("origin", show(meta.origin)),
            ("units", show(meta.units)),
            ("level", show(meta.level)),
        ]
    )
    return EXIT_OK


@cli.command(
    short_help="Run the worked example on built-in data (make demo).",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog=_epilog(
        """Examples:
  tilewise demo
  tilewise demo --size tiny
  tilewise demo --size paper --out demo-output"""
    ),
)
@click.option(
    "--size", type=click.Choice(["tiny", "default", "paper"]), default=None, help="Data size."
)
@click.option("--out", default=None, metavar="DIR", help="Where the example writes its files.")
@click.pass_context
def demo(ctx: click.Context, size: str | None, out: str | None) -> int:
    """Run the worked example on built-in data (what 'make demo' runs).

    Other options (such as --steps N or --seed N) are passed to the example unchanged.

    \f
    Returns
    -------
    int
        The example's exit code.
    """
    from tilewise import demo as example

    argv = [*(["--size", size] if size else []), *(["--out", out] if out else []), *ctx.args]
    code = example.main(argv)
    return int(code) if isinstance(code, int) else EXIT_OK


# -- the entry point -------------------------------------------------------------------------------
def _secrets(args: Sequence[str]) -> list[str]:
    """The credentials written into URLs among the arguments (longest first), to hide also where
    a library prints them without their URL (e.g. botocore's 'Invalid bucket name "K:S@b"').

    Examples
    --------
    >>> _secrets(["info", "s3://KEY:secret@bucket/x.zarr"])
    ['KEY:secret@', 'KEY:secret']
    """
    found: set[str] = set()
    for arg in args:
        for m in _USERINFO.finditer(arg):
            for userinfo in {m["userinfo"], urllib.parse.unquote(m["userinfo"])}:
                _, colon, secret = userinfo[:-1].partition(":")
                found.add(userinfo)
                if colon:
                    found.add(userinfo[:-1])
                if len(secret) >= 8:  # long enough not to stand for some other word
                    found.add(secret)
    return sorted(found, key=len, reverse=True)


def _hide(text: str, secrets: Sequence[str]) -> str:
    """The text without the credentials of URLs (:func:`tilewise._errors.redact`) or ``secrets``.

    Examples
    --------
    >>> _hide('Invalid bucket name "KEY:secret@bucket" in s3://KEY:secret@bucket/x', _secrets(
    ...     ["s3://KEY:secret@bucket/x"]))
    'Invalid bucket name "bucket" in s3://bucket/x'
    """
    text = redact(text)
    for secret in secrets:
        text = text.replace(secret, "" if secret.endswith("@") else "***")
    return text


def _error(text: str, args: Sequence[str]) -> None:
    """Print ``tilewise: error: <text>`` in one line on stderr, without credentials."""
    click.echo(f"{PROG}: error: {_one_line(_hide(text, _secrets(args)))}", err=True)


def _traceback(args: Sequence[str]) -> None:
    """Print the traceback being handled (``--debug``), without credentials."""
    click.echo(_hide(traceback.format_exc(), _secrets(args)).rstrip("\n"), err=True)


_KEYWORD = re.compile(
    r"\b(overwrite)=True\b"  # a flag
    r"|\b(pad|axes|dataset|on_nonfinite)=(?:'([^']*)'|(\.\.\.))"  # an option and its value
)


def _in_cli_words(text: str) -> str:
    """The library's advice in the options of this command line.

    Examples
    --------
    >>> _in_cli_words("use a window <= 20, or pass pad='reflect'; or pass overwrite=True")
    'use a window <= 20, or pass --pad reflect; or pass --overwrite'
    """

    def option(m: re.Match[str]) -> str:
        if m[1]:
            return f"--{m[1]}"
        return f"--{m[2].replace('_', '-')} {m[3] if m[3] is not None else m[4]}"

    return _KEYWORD.sub(option, text)


def _wants_debug(args: Sequence[str]) -> bool:
    head = list(args[: args.index("--")]) if "--" in args else list(args)
    return "--debug" in head or os.environ.get("TILEWISE_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tilewise`` command line and return its exit code.

    Parameters
    ----------
    argv
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for bad arguments or input (one line on stderr), 1 for an unexpected
        error (one line; ``--debug`` prints the traceback), 130 when interrupted.

    Examples
    --------
    >>> main(["plan", "236,720,510", "--window", "64", "--step", "32"])  # doctest: +ELLIPSIS
    shape ...
    windows per axis  (7, 22, 15)
    windows           2310
    ...
    0
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_debug(args)
    if not args:
        with click.Context(cli, info_name=PROG) as ctx:
            click.echo(cli.get_help(ctx))
        return EXIT_OK
    try:
        code = cli.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        _error("interrupted (a predict run resumes when rerun with the same arguments)", args)
        return EXIT_INTERRUPTED
    except click.ClickException as err:
        if debug:
            _traceback(args)
        text = err.format_message()
        where = getattr(err, "ctx", None)
        if isinstance(err, click.UsageError) and where is not None:
            text += f" (see '{where.command_path} --help')"
        _error(text, args)
        return err.exit_code
    except TilewiseError as err:
        if debug:
            _traceback(args)
        _error(_in_cli_words(str(err)), args)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted (a predict run resumes when rerun with the same arguments)", args)
        return EXIT_INTERRUPTED
    except SystemExit as err:  # e.g. argparse inside the demo, which printed its message
        if err.code is None or isinstance(err.code, int):
            return err.code or EXIT_OK
        _error(str(err.code), args)
        return EXIT_INTERNAL
    except ImportError as err:
        if debug:
            _traceback(args)
        _error(str(err), args)
        return EXIT_INTERNAL
    except Exception as err:
        if debug:
            _traceback(args)
        _error(
            f"{type(err).__name__}: {_one_line(str(err)) or '(no message)'} "
            f"(unexpected; rerun with --debug for the traceback)",
            args,
        )
        return EXIT_INTERNAL
    finally:
        sys.stdout.flush()
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
