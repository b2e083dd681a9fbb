"""Chunk-owned output: blocks aligned with the output's chunks, a journal of finished blocks, a
lock against a second writer, and the conversion of finished blocks to the stored dtype.

A block is written once, when every window touching it has been added, then freed (DESIGN.md,
idea 3). The journal is one small marker file per finished block under ``<out>/.tilewise/``,
written after the block's data, so an interrupted run rerun with the same arguments skips the
finished blocks and rewrites at most the blocks that were in flight, with identical values.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from tilewise._errors import ParameterError, TilewiseError, message

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "Block",
    "ConcurrentWriterError",
    "Journal",
    "OutDtype",
    "ResumeMismatchError",
    "blocks",
    "convert_block",
    "stored_dtype",
]

OutDtype = Literal["float32", "float16", "argmax", "threshold", "uint8"]


class ConcurrentWriterError(TilewiseError, RuntimeError):
    """Another live process is writing the same output."""


class ResumeMismatchError(TilewiseError):
    """An existing output was started with other settings than this run."""


@dataclass(frozen=True, slots=True)
class Block:
    """One chunk-aligned output block: image ``n`` and a box ``region`` of the output."""

    n: int
    region: tuple[tuple[int, int], ...]

    @property
    def key(self) -> str:
        """A stable name for the journal."""
        return f"{self.n}_" + "_".join(f"{a}-{b}" for a, b in self.region)

    @property
    def shape(self) -> tuple[int, ...]:
        """The block's spatial shape."""
        return tuple(b - a for a, b in self.region)


def blocks(
    n: int, shape: Sequence[int], block: Sequence[int], chunks: Sequence[int]
) -> list[Block]:
    """Blocks of ``block`` voxels (rounded up to whole ``chunks``) over ``shape``, C order.

    >>> [b.region for b in blocks(1, (10,), (4,), (3,))]
    [((0, 6),), ((6, 10),)]
    """
    sizes = [max(c, math.ceil(b / c) * c) for b, c in zip(block, chunks, strict=True)]
    axes = [
        [(a, min(a + sz, s)) for a in range(0, s, sz)] for s, sz in zip(shape, sizes, strict=True)
    ]
    return [Block(i, tuple(r)) for i in range(n) for r in itertools.product(*axes)]


def stored_dtype(out_dtype: str, channels: int) -> np.dtype:
    """The dtype a block is stored in."""
    if out_dtype not in get_args(OutDtype):
        raise ParameterError(
            message(
                "out_dtype",
                expected=f"one of {get_args(OutDtype)}",
                received=repr(out_dtype),
                fix="use 'float32', 'float16', 'argmax' (class labels), 'threshold' "
                "(0/1 masks) or 'uint8' (probabilities quantised to 0..255)",
            )
        )
    if out_dtype == "argmax":
        return np.dtype(np.uint8 if channels <= 256 else np.uint16)
    if out_dtype in ("threshold", "uint8"):
        return np.dtype(np.uint8)
    return np.dtype(out_dtype)


def stored_channels(out_dtype: str, channels: int) -> int:
    """Channels stored: one label channel for argmax, else as produced."""
    return 1 if out_dtype == "argmax" else channels


def convert_block(acc: torch.Tensor, out_dtype: str, threshold: float) -> np.ndarray:
    """Reduce a finished float block ``(N, C, *spatial)`` to what is stored.

    >>> import torch
    >>> p = torch.tensor([[[0.2, 0.9], [0.8, 0.1]]])
    >>> convert_block(p, "argmax", 0.5).tolist(), convert_block(p, "uint8", 0.5).tolist()
    ([[[1, 0]]], [[[51, 230], [204, 26]]])
    """
    if out_dtype == "float32":
        res = acc.to(torch.float32)
    elif out_dtype == "float16":
        res = acc.to(torch.float16)
    elif out_dtype == "argmax":
        dt = torch.uint8 if acc.shape[1] <= 256 else torch.int32
        res = acc.argmax(dim=1, keepdim=True).to(dt)
    elif out_dtype == "threshold":
        res = (acc > threshold).to(torch.uint8)
    else:  # uint8: probabilities in [0, 1] quantised to 0..255
        res = (acc.clamp(0, 1) * 255).round().to(torch.uint8)
    arr = res.cpu().numpy()
    return arr.astype(np.uint16) if arr.dtype == np.int32 else arr


class Journal:
    """Finished-block markers and the writer lock, under ``<root>/.tilewise``.

    ``settings`` are stored on first use; a later run with different settings is refused
    (rerun with ``overwrite=True`` to start again).
    """

    def __init__(self, root: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        self.dir = Path(root) / ".tilewise"
        self.done_dir = self.dir / "done"
        self.settings = json.loads(json.dumps(settings, default=str))
        self._locked = False

    def open(self) -> None:
        """Take the lock and check (or record) the run's settings."""
        self.done_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        run = self.dir / "run.json"
        if run.exists():
            old = json.loads(run.read_text())
            if old != self.settings:
                diff = sorted(
                    k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k)
                )
                self.close()
                raise ResumeMismatchError(
                    message(
                        "out",
                        expected="the settings the existing output was started with",
                        received=f"different {', '.join(diff)}",
                        fix="rerun with the same arguments to resume, or pass overwrite=True "
                        "(or a new output path) to start again",
                    )
                )
        else:
            tmp = run.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.settings, sort_keys=True, indent=1))
            tmp.replace(run)

    def _lock(self) -> None:
        lock = self.dir / "lock"
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    other = json.loads(lock.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                if _alive(other):
                    raise ConcurrentWriterError(
                        message(
                            "out",
                            expected="no other process writing this output",
                            received=f"process {other.get('pid')} on {other.get('host')} holds "
                            f"{lock}",
                            fix="wait for it to finish (or stop it); if it is gone, delete the "
                            "lock file",
                        )
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its writer died (e.g. kill -9)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            return

    def close(self) -> None:
        """Release the lock."""
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "lock").unlink()
            self._locked = False

    def done(self) -> set[str]:
        """Keys of the finished blocks."""
        return {p.name for p in self.done_dir.iterdir()} if self.done_dir.exists() else set()

    def mark(self, block: Block) -> None:
        """Record a block as finished (after its data are written)."""
        (self.done_dir / block.key).touch()

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.done()))


def _alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    if info.get("host") != socket.gethostname():
        return True  # another host: cannot check, assume it is running
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
