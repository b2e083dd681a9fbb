"""Allocation of large host buffers.

First touch of freshly allocated memory, not arithmetic, is often the cost of stitching: on a
typical Linux host the kernel maps one 4 KiB page per fault (measured ~3 GB/s here against ~25 GB/s
for memory already touched). Large host buffers are therefore taken from an anonymous mapping
advised to use transparent huge pages (one fault per 2 MiB; measured 11-13 GB/s here). Such
memory is zero-filled by the kernel, so a zero accumulator costs no extra pass.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import mmap
import os
import sys
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import torch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = [
    "HUGE_THRESHOLD",
    "host_empty",
    "release_freed_memory",
    "reuse_freed_memory",
    "reusing_freed_memory",
]

HUGE_THRESHOLD = 8 << 20  # bytes; below this the default allocator is as fast


def host_empty(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device | None = None
) -> tuple[torch.Tensor, bool]:
    """An uninitialised tensor; the flag says whether it is already zero-filled.

    On the CPU, buffers of at least :data:`HUGE_THRESHOLD` bytes come from an anonymous mapping
    with ``MADV_HUGEPAGE`` (zero-filled); elsewhere this is ``torch.empty``. Inside
    :func:`reuse_freed_memory` a mapping no tensor uses any more is lent again (not
    zero-filled then): touching fresh pages costs far more than writing ones already mapped,
    above all in a virtual machine, and a run frees and takes buffers of the same sizes over
    and over (a block's accumulators, a row's input slab).

    >>> t, zero = host_empty((1024, 1024, 4), torch.float32)
    >>> tuple(t.shape), zero, float(t.abs().max())
    ((1024, 1024, 4), True, 0.0)
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = math.prod(shape)
    nbytes = count * itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if device.type != "cpu" or nbytes < HUGE_THRESHOLD or advise is None:
        return torch.empty(tuple(shape), dtype=dtype, device=device), False
    buf = _POOL.take(nbytes)
    zeroed = buf is None
    if buf is None:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        with contextlib.suppress(OSError):  # kernels without THP: still a valid, zeroed mapping
            buf.madvise(advise)
        _POOL.keep(buf)
    return torch.frombuffer(buf, dtype=dtype, count=count).view(tuple(shape)), zeroed


class _MappingPool:
    """Anonymous mappings made by :func:`host_empty` while a run goes on, lent again once no
    tensor uses them: a tensor made with ``torch.frombuffer`` holds a reference to its mapping
    for as long as its memory lives (views included), so a mapping only this pool refers to is
    free. At most :attr:`spare` bytes of free mappings are kept, checked whenever one is lent
    or made; the largest go first. (Reference counts are CPython 3.11-3.13's: on later
    versions nothing is lent again.)"""

    spare = 128 << 20

    def __init__(self) -> None:
        self.maps: list[mmap.mmap] = []
        self.active = False
        self.lock = threading.Lock()

    def _free(self) -> list[mmap.mmap]:
        # references: the list, the loop variable, getrefcount's argument
        return [m for m in self.maps if sys.getrefcount(m) <= 3]

    def _trim(self, lent: mmap.mmap | None = None) -> None:
        free = sorted((m for m in self._free() if m is not lent), key=len)
        extra = sum(len(m) for m in free) - self.spare
        while extra > 0 and free:
            m = free.pop()
            extra -= len(m)
            self.maps.remove(m)  # unmapped with its last reference

    def take(self, nbytes: int) -> mmap.mmap | None:
        """A free mapping of ``nbytes`` to ``1.25 * nbytes`` bytes (the smallest), or None."""
        with self.lock:
            if not self.active:
                return None
            fits = [m for m in self._free() if nbytes <= len(m) <= nbytes + nbytes // 4]
            lent = min(fits, key=len) if fits else None
            del fits
            self._trim(lent)
            return lent

    def keep(self, buf: mmap.mmap) -> None:
        """Lend ``buf`` again once it is free."""
        with self.lock:
            if not self.active:
                return
            self._trim()
            self.maps.append(buf)

    def start(self) -> None:
        with self.lock:
            self.active = sys.version_info < (3, 14)

    def stop(self) -> None:
        """Stop lending; mappings still in use are unmapped when their tensors go."""
        with self.lock:
            self.active = False
            self.maps.clear()


_POOL = _MappingPool()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_KEEP = (512 << 20, 256 << 20, 1)  # trim, mmap, arenas while a tiled run goes on
# where glibc's adaptive thresholds end up, and its arena limit (8 per core on 64-bit systems)
_DEFAULTS = (64 << 20, 32 << 20, 8 * (os.cpu_count() or 1))
_lock = threading.Lock()
_depth = 0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only: musl and others have no mallopt
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _tuned_by_user() -> bool:
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(
        k in os.environ
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
    )


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Reuse freed memory instead of mapping fresh pages while a tiled run goes on (glibc).

    glibc hands every freed block above 32 MiB back to the kernel, so a model whose batches
    allocate such tensors maps, faults in and zeroes fresh pages for every batch: on this
    project's 2-core machine ``torch.cat([2 * x, 2 * x], 1)`` on four 128^3 windows took 64 ms
    that way and 10 ms with its memory reused. Inside this context blocks up to 256 MiB come
    from the heap, one arena serves every thread (so freed memory is found again instead of
    piling up per thread), and up to 512 MiB stays free at its top (a batch's tensors are
    freed together, and a lower limit handed them back after every batch); runs call
    :func:`release_freed_memory` after each written block, so resident memory stays bounded.
    On leaving, the settings become those glibc's adaptive ones end up at (mmap 32 MiB, trim
    64 MiB, arenas per core) and the free heap is returned to the system. Nothing is changed
    when ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_ARENA_MAX`` or a
    ``glibc.malloc`` tunable is set (the user's own tuning) or the C library is not glibc.
    Whatever the C library, :func:`host_empty` lends its freed mappings again meanwhile.

    >>> with reuse_freed_memory():
    ...     x = torch.ones(1 << 20).sum()
    >>> float(x)
    1048576.0
    """
    global _depth
    libc = _libc()
    tune = libc is not None and not _tuned_by_user()
    with _lock:
        _depth += 1
        if _depth == 1:
            _POOL.start()
            if libc is not None and tune:
                for param, value in zip(
                    (_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX), _KEEP, strict=True
                ):
                    libc.mallopt(param, value)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _POOL.stop()
                if libc is not None and tune:
                    for param, value in zip(
                        (_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX),
                        _DEFAULTS,
                        strict=True,
                    ):
                        libc.mallopt(param, value)
                    libc.malloc_trim(0)


def release_freed_memory() -> None:
    """Return the heap's free memory to the system now (glibc; elsewhere nothing happens)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def reusing_freed_memory(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` inside :func:`reuse_freed_memory` (a decorator for whole runs, so that the
    threads a run starts, its readers and writers, share the heap from their first use)."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with reuse_freed_memory():
            return fn(*args, **kwargs)

    return run
