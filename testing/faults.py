"""Fault injection on the file-system seam: fail the Nth call of an operation.

Strategy: :class:`FaultyFS` wraps any :class:`~segwal.fs.FileSystem` (the real
one, or a :class:`~segwal.testing.recording.RecordingFS`) and counts calls per
*operation class*:

======== =====================================================
class    calls counted
======== =====================================================
open     ``FileSystem.open``
pread    ``File.pread``
write    ``File.pwrite`` and ``File.pwritev``
truncate ``File.truncate``
sync     ``File.fdatasync`` and ``File.fsync``
rename   ``FileSystem.rename``
unlink   ``FileSystem.unlink``
mkdir    ``FileSystem.mkdir``
rmdir    ``FileSystem.rmdir``
fsync_dir ``FileSystem.fsync_dir``
listdir  ``FileSystem.listdir``
======== =====================================================

A :class:`Fault` fires on the ``nth`` call of its class (1-based, counting only
calls on paths containing ``path_contains`` when given), once, or on every call
from then on (``persistent=True``).  It raises ``OSError(error)`` *instead of*
doing the call, except:

* a *short write* (``short=n``) first writes the first ``n`` bytes of the data
  through the inner file system, then raises ``ENOSPC``;
* a failed *sync* under **Linux semantics** (``linux_fsync=True``, the default)
  models what Linux does after a failed writeback (the "fsyncgate" behaviour):
  the written data stays in the page cache, so reads still return it, but its
  pages are marked clean, so a later successful fsync does **not** write it.
  Concretely, the data already written through the inner file system is left
  as it is (visible to reads), and, when the inner file is a recording file,
  a ``sync_failed`` op is logged so the crash model never makes those writes
  durable.  With ``linux_fsync=False`` a failed sync only raises; the data stays
  dirty and a later sync makes it durable (a lenient model, for comparison).

What is *not* modelled: errors reported asynchronously on ``close``, partial
durability inside a failed sync, and read errors through ``File.map`` (an mmap
read of a bad page would be SIGBUS, which Python cannot catch).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segwal.fs import Buffer, File, FileSystem, Lock

__all__ = ["OP_CLASSES", "Fault", "FaultyFS", "FaultyFile", "InjectedFault"]

#: Operation classes a :class:`Fault` may target.
OP_CLASSES = frozenset(
    {"open", "pread", "write", "truncate", "sync", "rename", "unlink", "mkdir", "rmdir", "fsync_dir", "listdir"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One planned failure.

    Attributes:
        op: the operation class (see :data:`OP_CLASSES`).
        nth: fire on the nth counted call (1-based).
        error: errno to raise (``errno.EIO`` by default; ``errno.ENOSPC`` ...).
        persistent: also fail every later call of that class.
        short: for ``write`` only: write this many bytes first, then raise
            ENOSPC (``error`` is ignored).
        path_contains: count only calls whose path contains this text.
    """

    op: str
    nth: int = 1
    error: int = errno.EIO
    persistent: bool = False
    short: int | None = None
    path_contains: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OP_CLASSES:
            raise ValueError(f"op must be one of {sorted(OP_CLASSES)}, not {self.op!r}")
        if self.nth < 1:
            raise ValueError(f"nth is 1-based, got {self.nth}")
        if self.short is not None and (self.op != "write" or self.short < 0):
            raise ValueError("short applies to op='write' only and must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectedFault:
    """A fault that fired: which, on which call, on which path."""

    fault: Fault
    call: int
    path: str


@dataclass(slots=True)
class _Plan:
    fault: Fault
    seen: int = 0
    fired: bool = False


class FaultyFile:
    """A :class:`~segwal.fs.File` that consults its :class:`FaultyFS` before each call."""

    __slots__ = ("path", "_inner", "_fs")

    def __init__(self, inner: File, fs: FaultyFS) -> None:
        self.path = inner.path
        self._inner = inner
        self._fs = fs

    def pread(self, size: int, offset: int) -> bytes:
        """Delegate unless a ``pread`` fault fires."""
        self._fs._check("pread", self.path)
        return self._inner.pread(size, offset)

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Delegate unless a ``write`` fault fires (a short write writes a prefix first)."""
        self._fs._check("write", self.path, lambda n: self._inner.pwrite(memoryview(data)[:n], offset))
        self._inner.pwrite(data, offset)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Delegate unless a ``write`` fault fires (a short write writes a prefix first)."""
        self._fs._check("write", self.path, lambda n: self._inner.pwrite(b"".join(buffers)[:n], offset))
        self._inner.pwritev(buffers, offset)

    def truncate(self, size: int) -> None:
        """Delegate unless a ``truncate`` fault fires."""
        self._fs._check("truncate", self.path)
        self._inner.truncate(size)

    def fdatasync(self) -> None:
        """Delegate unless a ``sync`` fault fires (see Linux semantics in the module doc)."""
        self._sync_check()
        self._inner.fdatasync()

    def fsync(self) -> None:
        """Delegate unless a ``sync`` fault fires."""
        self._sync_check()
        self._inner.fsync()

    def _sync_check(self) -> None:
        try:
            self._fs._check("sync", self.path)
        except OSError:
            if self._fs.linux_fsync:
                note = getattr(self._inner, "sync_failed", None)
                if note is not None:
                    note()
            raise

    def size(self) -> int:
        """Delegate."""
        return self._inner.size()

    def map(self) -> Any:
        """Delegate."""
        return self._inner.map()

    def close(self) -> None:
        """Delegate."""
        self._inner.close()


class FaultyFS:
    """A :class:`~segwal.fs.FileSystem` that injects planned faults (module docstring).

    Args:
        inner: the file system that does the work.
        faults: faults planned from the start; add more with :meth:`fail`.
        linux_fsync: model a failed sync as Linux does (default True).

    Attributes:
        counts: calls seen so far per operation class (all paths).
        injected: the faults that fired, in order.
    """

    def __init__(self, inner: FileSystem, faults: Sequence[Fault] = (), *, linux_fsync: bool = True) -> None:
        self.inner = inner
        self.linux_fsync = linux_fsync
        self.counts: dict[str, int] = {k: 0 for k in OP_CLASSES}
        self.injected: list[InjectedFault] = []
        self._plans: list[_Plan] = [_Plan(f) for f in faults]
        self._lock = threading.Lock()

    def fail(
        self,
        op: str,
        nth: int = 1,
        *,
        error: int = errno.EIO,
        persistent: bool = False,
        short: int | None = None,
        path_contains: str | None = None,
    ) -> Fault:
        """Plan a fault on the ``nth`` call of ``op`` counted *from now*. O(1).

        Example: ``fs.fail("sync")`` fails the next fdatasync/fsync with EIO;
        ``fs.fail("write", 3, short=100)`` makes the third write from now short.
        """
        fault = Fault(op=op, nth=nth, error=error, persistent=persistent, short=short, path_contains=path_contains)
        with self._lock:
            self._plans.append(_Plan(fault))
        return fault

    def clear(self) -> None:
        """Drop every planned fault (the disk has space again, the device is back). O(1)."""
        with self._lock:
            self._plans.clear()

    def _check(self, op: str, path: str, short_write: Any = None) -> None:
        path = os.fspath(path)
        with self._lock:
            self.counts[op] += 1
            firing: _Plan | None = None
            for plan in self._plans:
                f = plan.fault
                if f.op != op or (f.path_contains is not None and f.path_contains not in path):
                    continue
                plan.seen += 1
                if firing is None and (plan.seen == f.nth or (f.persistent and plan.seen > f.nth)):
                    firing = plan
            if firing is None:
                return
            firing.fired = True
            self.injected.append(InjectedFault(fault=firing.fault, call=firing.seen, path=path))
            f = firing.fault
        if f.short is not None:
            if f.short > 0 and short_write is not None:
                short_write(f.short)
            raise OSError(errno.ENOSPC, f"injected short write ({f.short} bytes written)", path)
        raise OSError(f.error, f"injected {os.strerror(f.error)} on {op}", path)

    # -- FileSystem ------------------------------------------------------------

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> FaultyFile:
        """Delegate unless an ``open`` fault fires."""
        self._check("open", path)
        return FaultyFile(self.inner.open(path, create=create, readonly=readonly), self)

    def listdir(self, path: str) -> list[str]:
        """Delegate unless a ``listdir`` fault fires."""
        self._check("listdir", path)
        return self.inner.listdir(path)

    def exists(self, path: str) -> bool:
        """Delegate."""
        return self.inner.exists(path)

    def isdir(self, path: str) -> bool:
        """Delegate."""
        return self.inner.isdir(path)

    def mkdir(self, path: str) -> None:
        """Delegate unless a ``mkdir`` fault fires."""
        self._check("mkdir", path)
        self.inner.mkdir(path)

    def rename(self, src: str, dst: str) -> None:
        """Delegate unless a ``rename`` fault fires (counted on ``src``)."""
        self._check("rename", src)
        self.inner.rename(src, dst)

    def unlink(self, path: str) -> None:
        """Delegate unless an ``unlink`` fault fires."""
        self._check("unlink", path)
        self.inner.unlink(path)

    def rmdir(self, path: str) -> None:
        """Delegate unless an ``rmdir`` fault fires."""
        self._check("rmdir", path)
        self.inner.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        """Delegate unless an ``fsync_dir`` fault fires."""
        self._check("fsync_dir", path)
        self.inner.fsync_dir(path)

    def lock(self, path: str) -> Lock:
        """Delegate (locks are not faulted)."""
        return self.inner.lock(path)
