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
    "check_writable",
    "convert_block",
    "is_url",
    "rows",
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


def rows(blist: Sequence[Block]) -> list[tuple[Block, ...]]:
    """Blocks grouped in rows: those of one image sharing their box on every axis but the
    first, in order along it (a row is swept along the first axis).

    >>> [[b.region for b in r] for r in rows(blocks(1, (4, 6), (2, 3), (1, 1)))]
    [[((0, 2), (0, 3)), ((2, 4), (0, 3))], [((0, 2), (3, 6)), ((2, 4), (3, 6))]]
    """
    groups: dict[tuple[Any, ...], list[Block]] = {}
    for b in blist:
        groups.setdefault((b.n, b.region[1:]), []).append(b)
    return [tuple(sorted(g, key=lambda b: b.region[0])) for g in groups.values()]


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
        lo, hi = (float(v) for v in torch.aminmax(acc)) if acc.numel() else (0.0, 0.0)
        if lo < -1e-3 or hi > 1 + 1e-3:  # beyond float rounding: not probabilities
            raise ParameterError(
                message(
                    "out_dtype",
                    expected="probabilities in [0, 1] for out_dtype='uint8' (quantised to 0..255)",
                    received=f"model outputs from {lo:.4g} to {hi:.4g}",
                    fix="end the model with a softmax or sigmoid, or store out_dtype='float16'",
                )
            )
        res = (acc.clamp(0, 1) * 255).round().to(torch.uint8)
    arr = res.cpu().numpy()
    return arr.astype(np.uint16) if arr.dtype == np.int32 else arr


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote store (``s3://``, ``http://``...), not a local path."""
    return "://" in path and not path.startswith("file://")


class _Files:
    """The few file operations the journal needs, on a local directory or through fsspec."""

    def __init__(self, root: str) -> None:
        self.remote = is_url(root)
        if self.remote:
            import fsspec  # remote stores need fsspec (installed with zarr's remote support)

            self.fs, self.base = fsspec.core.url_to_fs(root)
        else:
            self.base = root.removeprefix("file://")

    def path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def makedirs(self, path: str) -> None:
        if self.remote:
            self.fs.makedirs(path, exist_ok=True)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path)) if self.remote else os.path.exists(path)

    def read(self, path: str) -> str:
        if self.remote:
            return str(self.fs.cat_file(path).decode())
        return Path(path).read_text()

    def write(self, path: str, text: str) -> None:
        if self.remote:
            self.fs.pipe_file(path, text.encode())
            return
        tmp = path + ".tmp"
        Path(tmp).write_text(text)
        os.replace(tmp, path)

    def create(self, path: str, text: str) -> bool:
        """Create ``path`` only if it does not exist; False if it does."""
        if self.remote:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, text.encode())
            return True
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.remote:
                self.fs.rm_file(path)
            else:
                os.unlink(path)

    def clear(self, keep: str) -> None:
        """Delete everything under the root except the file ``keep`` (the lock)."""
        if self.remote:
            for p in self.fs.find(self.base):
                if p.rstrip("/") != keep.split("://")[-1].rstrip("/") and p != keep:
                    self.fs.rm_file(p)
            return
        for dirpath, dirnames, filenames in os.walk(self.base, topdown=False):
            for name in filenames:
                full = os.path.join(dirpath, name)
                if os.path.abspath(full) != os.path.abspath(keep):
                    os.unlink(full)
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    os.unlink(full)
                elif not os.listdir(full):
                    os.rmdir(full)

    def names(self, path: str) -> set[str]:
        if self.remote:
            if not self.fs.exists(path):
                return set()
            return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)}
        return set(os.listdir(path)) if os.path.isdir(path) else set()


def check_writable(root: str) -> None:
    """Refuse, before anything is computed, an output location that cannot be written."""
    if not is_url(root):
        parent = Path(root.removeprefix("file://")).resolve().parent
        if not parent.exists():
            raise ParameterError(
                message(
                    "out",
                    expected="a path whose parent directory exists",
                    received=f"{root!r} ({parent} does not exist)",
                    fix="create the directory first, or choose another output path",
                )
            )
        return
    try:
        files = _Files(root)
    except (ValueError, ImportError) as err:
        raise ParameterError(
            message(
                "out",
                expected="a URL with a protocol fsspec knows (s3://, gs://, file://...)",
                received=f"{root!r}: {err}",
                fix="check the URL, or install the protocol's package (s3fs for s3://)",
            )
        ) from None
    probe = files.path(".tilewise", "probe")
    try:
        files.fs.pipe_file(probe, b"")
        files.remove(probe)
    except FileNotFoundError:
        raise ParameterError(
            message(
                "out",
                expected="an existing bucket or container",
                received=f"{root!r}: the bucket does not exist",
                fix="create the bucket first, or check its name",
            )
        ) from None
    except Exception as err:  # every store fails in its own way; all of them mean "no"
        kind = "permission denied" if isinstance(err, PermissionError) else type(err).__name__
        raise ParameterError(
            message(
                "out",
                expected="a location these credentials may write (http(s):// is read-only)",
                received=f"{root!r}: {kind}",
                fix="check the credentials in your fsspec/boto configuration, or write elsewhere",
            )
        ) from None


class Journal:
    """Finished-block markers and the writer lock, under ``<root>/.tilewise``.

    ``root`` is a local path or a URL (``s3://...``). ``settings`` are stored on first use; a
    later run with different settings is refused (rerun with ``overwrite=True`` to start again).
    """

    def __init__(self, root: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        self.files = _Files(os.fspath(root))
        self.dir = self.files.path(".tilewise")
        self.done_dir = self.files.path(".tilewise", "done")
        self.settings = json.loads(json.dumps(settings, default=str))
        self._locked = False
        self._fd: int | None = None
        self.resumed = False  # whether open() found a run's record: resuming, not starting

    def open(self, *, fresh: bool = False) -> None:
        """Take the lock, then check (or record) the run's settings.

        ``fresh=True`` (``overwrite``) empties the output, under the lock, before recording.
        Without it, an existing output that no run recorded (not written by tilewise, or by
        something else) is refused: nothing there is overwritten by accident.
        """
        run = self.files.path(".tilewise", "run.json")
        if not self.files.remote and os.path.isfile(self.files.base):
            raise ParameterError(
                message(
                    "out",
                    expected="a directory for the zarr output (new, or one to resume)",
                    received=f"{self.files.base!r}, which is a file",
                    fix="delete the file or write to another path",
                )
            )
        if not fresh and not self.files.exists(run):
            found = sorted(self.files.names(self.files.base) - {".tilewise"})
            if found:
                shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
                raise ParameterError(
                    message(
                        "out",
                        expected="a new output, or one a tilewise run started (to resume it)",
                        received=f"{self.files.base!r}, which holds data no tilewise run "
                        f"recorded ({shown})",
                        fix="pass overwrite=True to replace it, or write to a new path",
                    )
                )
        self.files.makedirs(self.done_dir)
        self._lock()
        try:
            self.resumed = not fresh and self.files.exists(run)
            self._record(run, fresh)
        except BaseException:
            self.close()  # whatever went wrong, the lock is not left held
            raise

    def _record(self, run: str, fresh: bool) -> None:
        """Under the lock: empty the output if asked, then check or record the settings."""
        if fresh:
            self.files.clear(keep=self.files.path(".tilewise", "lock"))
            self.files.makedirs(self.done_dir)
        marker = self.files.path(".tilewise", "zarr.json")
        if not self.files.exists(marker):  # a zarr group, so that listing the output's members
            self.files.write(marker, _JOURNAL_NODE)  # finds a node here, not stray files
        if not self.files.exists(run):
            self.files.write(run, json.dumps(self.settings, sort_keys=True, indent=1))
            return
        try:
            old = json.loads(self.files.read(run))
        except ValueError:
            old = None
        if not isinstance(old, dict):
            raise ResumeMismatchError(
                message(
                    "out",
                    expected="the record of the run that started this output",
                    received=f"an unreadable {run}",
                    fix="pass overwrite=True (or a new output path) to start again",
                )
            )
        if old != self.settings:
            diff = sorted(
                k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k)
            )
            raise ResumeMismatchError(
                message(
                    "out",
                    expected="the settings the existing output was started with",
                    received=f"different {', '.join(diff)}",
                    fix="rerun with the same arguments to resume, or pass overwrite=True "
                    "(or a new output path) to start again",
                )
            )

    def _lock(self) -> None:
        if self.files.remote:
            self._lock_by_record()
        else:
            self._lock_local()

    def _refuse(self, other: dict[str, Any], lock: str) -> ConcurrentWriterError:
        return ConcurrentWriterError(
            message(
                "out",
                expected="no other process writing this output",
                received=f"process {other.get('pid')} on {other.get('host')} holds {lock}",
                fix="wait for it to finish (or stop it); if it is gone, delete the lock file",
            )
        )

    def _race(self, lock: str, what: str) -> ConcurrentWriterError:
        return ConcurrentWriterError(
            message(
                "out",
                expected="to take the writer lock",
                received=f"{lock} {what}: several writers are starting at once",
                fix="run one writer per output",
            )
        )

    def _lock_local(self) -> None:
        """An exclusive ``flock`` on the lock file, held until :meth:`close`: the kernel drops
        it when its process dies (kill -9 included), so a dead writer's lock is never stale."""
        import fcntl  # POSIX only; imported here so the module still imports elsewhere

        lock = self.files.path(".tilewise", "lock")
        for _ in range(5):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _record(os.pread(fd, 4096, 0))
                os.close(fd)
                raise self._refuse(other, lock) from None
            try:  # the file may have been replaced between open and flock: lock the live one
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            other = _record(os.pread(fd, 4096, 0))
            if other.get("host") not in (None, socket.gethostname()):
                os.close(fd)  # a writer on another host sharing this file system: cannot tell
                raise self._refuse(other, lock)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, _me().encode(), 0)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
            self._locked = True
            return
        raise self._race(lock, "kept being replaced")

    def _lock_by_record(self) -> None:
        """A lock object on a remote store (no kernel locks there): created only if absent,
        naming its writer; a recorded writer that is gone is taken over."""
        lock = self.files.path(".tilewise", "lock")
        for _ in range(5):
            if self.files.create(lock, _me()):
                self._locked = True
                return
            try:
                other = json.loads(self.files.read(lock) or "{}")
            except (OSError, ValueError):
                other = {}
            if not other:  # being written by another writer right now, or left empty
                time.sleep(0.2)
                try:
                    other = json.loads(self.files.read(lock) or "{}")
                except (OSError, ValueError):
                    other = {}
            if _alive(other):
                raise self._refuse(other, lock)
            self.files.remove(lock)  # stale: its writer died (e.g. kill -9)
        raise self._race(lock, "kept reappearing")

    def close(self) -> None:
        """Release the lock."""
        if self._locked:
            self.files.remove(self.files.path(".tilewise", "lock"))
            if self._fd is not None:
                os.close(self._fd)  # unlinked first: a waiting writer locks a fresh file
                self._fd = None
            self._locked = False

    def done(self) -> set[str]:
        """Keys of the finished blocks."""
        return self.files.names(self.done_dir)

    def mark(self, block: Block) -> None:
        """Record a block as finished (after its data are written)."""
        self.files.write(self.files.path(".tilewise", "done", block.key), "")

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.done()))


_JOURNAL_NODE = json.dumps(
    {"zarr_format": 3, "node_type": "group", "attributes": {"tilewise": "journal of a run"}}
)


def _me() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})


def _record(raw: bytes) -> dict[str, Any]:
    """The writer named in a lock file (empty if unreadable)."""
    try:
        info = json.loads(raw.decode() or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    if info.get("host") != socket.gethostname():
        return True  # another host: cannot check, assume it is running
    if pid == os.getpid():
        return True  # another predict call of this very process is writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
