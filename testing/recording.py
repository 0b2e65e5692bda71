"""A pass-through file system that records every mutating operation.

Strategy: :class:`RecordingFS` sits on the :class:`~segwal.fs.FileSystem` seam
in front of a real directory (through :class:`~segwal.fs.OsFileSystem`, or any
other inner file system).  Every call really happens, so the code under test
behaves exactly as it would in production, and every *mutating* call is also
appended to an in-memory log, with its data, in the order it was issued:

* ``create`` (an :meth:`open` with ``create=True`` that made a new file, or a
  :meth:`lock` that created its lock file), ``write`` (``pwrite`` and
  ``pwritev``, with offset and bytes), ``truncate``, ``fdatasync``, ``fsync``;
* ``mkdir``, ``rename``, ``unlink``, ``rmdir``, ``fsync_dir``;
* ``sync_failed``: written only by :class:`~segwal.testing.faults.FaultyFS`
  when it fails a sync under Linux semantics (see that module).

Reads (``pread``, ``map``, ``listdir``...) are not logged.  Files are followed
by identity (an *inode* number the recorder assigns), not by name, so a handle
that keeps writing after its file was renamed or unlinked is modelled right.

The recorder also snapshots the *start image* of its root (every file and
directory present when it was built), so :mod:`segwal.testing.crash` can
rebuild any state from scratch, and it keeps *marks*: ``fs.mark("persist",
entries=...)`` notes that the code under test acknowledged something, at a
position in the log.  Paths in the log are relative to the root, with ``"."``
for the root itself.

By default the recorder does not pass syncs to the inner file system
(``real_sync=False``): the recorded directory is scratch, durability is what the
crash model simulates, and skipping real syncs keeps tests fast.
"""

from __future__ import annotations

import enum
import os
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from segwal.fs import Buffer, File, FileSystem, Lock, OsFileSystem

__all__ = ["OpKind", "Op", "Mark", "StartImage", "Recording", "RecordingFS", "RecordingFile"]


class OpKind(enum.Enum):
    """Kinds of logged operations."""

    CREATE = "create"
    WRITE = "write"
    TRUNCATE = "truncate"
    FDATASYNC = "fdatasync"
    FSYNC = "fsync"
    SYNC_FAILED = "sync_failed"
    MKDIR = "mkdir"
    RENAME = "rename"
    UNLINK = "unlink"
    RMDIR = "rmdir"
    FSYNC_DIR = "fsync_dir"


#: Operations after which something becomes durable (crash points of interest).
SYNC_KINDS = frozenset({OpKind.FDATASYNC, OpKind.FSYNC, OpKind.FSYNC_DIR})


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One logged mutating operation.

    Attributes:
        seq: position in the log (0-based).
        kind: what was done.
        path: path relative to the recorder's root (``"."`` is the root); for a
            file operation, the name the file was opened under.
        ino: the file's identity for file operations and creates/renames/
            unlinks of files; ``-1`` for directory operations.
        offset: byte offset of a ``write``.
        data: bytes of a ``write``.
        size: new size of a ``truncate``.
        dst: destination of a ``rename``.
    """

    seq: int
    kind: OpKind
    path: str
    ino: int = -1
    offset: int = 0
    data: bytes = b""
    size: int = 0
    dst: str = ""

    def describe(self) -> str:
        """A short human-readable form, e.g. ``#12 write 00001.seg @4096+512``. O(1)."""
        k = self.kind
        if k is OpKind.WRITE:
            return f"#{self.seq} write {self.path} @{self.offset}+{len(self.data)}"
        if k is OpKind.TRUNCATE:
            return f"#{self.seq} truncate {self.path} to {self.size}"
        if k is OpKind.RENAME:
            return f"#{self.seq} rename {self.path} -> {self.dst}"
        return f"#{self.seq} {k.value} {self.path}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """A note from the code under test: "this was acknowledged".

    Attributes:
        position: number of operations logged before the mark; a crash at point
            ``k`` (after ``ops[:k]``) happened after the mark iff ``position <= k``.
        label: what was acknowledged (see :mod:`segwal.testing.logmodel` for the
            vocabulary its default invariants understand).
        facts: keyword arguments given to :meth:`RecordingFS.mark` (read-only).
    """

    position: int
    label: str
    facts: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __getstate__(self) -> tuple[int, str, dict[str, Any]]:
        return (self.position, self.label, dict(self.facts))

    def __setstate__(self, state: tuple[int, str, dict[str, Any]]) -> None:
        object.__setattr__(self, "position", state[0])
        object.__setattr__(self, "label", state[1])
        object.__setattr__(self, "facts", MappingProxyType(state[2]))


@dataclass(frozen=True, slots=True, kw_only=True)
class StartImage:
    """The content of the root when recording started (all of it durable).

    Attributes:
        files: relative path -> content.
        dirs: relative paths of the directories below the root (root excluded).
        inodes: relative path -> the inode number the recorder gave that file.
    """

    files: Mapping[str, bytes]
    dirs: frozenset[str]
    inodes: Mapping[str, int]

    def __getstate__(self) -> tuple[dict[str, bytes], frozenset[str], dict[str, int]]:
        return (dict(self.files), self.dirs, dict(self.inodes))

    def __setstate__(self, state: tuple[dict[str, bytes], frozenset[str], dict[str, int]]) -> None:
        object.__setattr__(self, "files", MappingProxyType(state[0]))
        object.__setattr__(self, "dirs", state[1])
        object.__setattr__(self, "inodes", MappingProxyType(state[2]))


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """A finished (or in-progress, copied) recording: start image, ops, marks.

    Save one with :meth:`save` to replay a failure elsewhere.
    """

    start: StartImage
    ops: tuple[Op, ...]
    marks: tuple[Mark, ...]

    def marks_until(self, point: int) -> tuple[Mark, ...]:
        """Marks made at or before crash point ``point`` (acknowledged). O(marks)."""
        return tuple(m for m in self.marks if m.position <= point)

    def marks_after(self, point: int) -> tuple[Mark, ...]:
        """Marks made after crash point ``point`` (not yet acknowledged). O(marks)."""
        return tuple(m for m in self.marks if m.position > point)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recording to ``path`` (pickle; trusted use only). O(size)."""
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: str | os.PathLike[str]) -> Recording:
        """Read a recording written by :meth:`save` (pickle: only load your own files). O(size)."""
        with open(path, "rb") as f:
            rec = pickle.load(f)
        if not isinstance(rec, Recording):
            raise TypeError(f"{path}: not a segwal recording")
        return rec


def _snapshot(root: str, next_ino: list[int]) -> StartImage:
    files: dict[str, bytes] = {}
    inodes: dict[str, int] = {}
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel_dir, d)))
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            with open(os.path.join(dirpath, name), "rb") as f:
                files[rel] = f.read()
            inodes[rel] = next_ino[0]
            next_ino[0] += 1
    return StartImage(files=MappingProxyType(files), dirs=frozenset(dirs), inodes=MappingProxyType(inodes))


class RecordingFile:
    """A :class:`~segwal.fs.File` that logs writes, truncates and syncs, then delegates."""

    __slots__ = ("path", "_inner", "_fs", "_rel", "_ino")

    def __init__(self, inner: File, fs: RecordingFS, rel: str, ino: int) -> None:
        self.path = inner.path
        self._inner = inner
        self._fs = fs
        self._rel = rel
        self._ino = ino

    @property
    def ino(self) -> int:
        """The identity the recorder gave this file."""
        return self._ino

    def pread(self, size: int, offset: int) -> bytes:
        """Delegate. O(size)."""
        return self._inner.pread(size, offset)

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Delegate, then log the write with a copy of its bytes. O(len)."""
        self._inner.pwrite(data, offset)
        self._fs._log(OpKind.WRITE, self._rel, ino=self._ino, offset=offset, data=bytes(data))

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Delegate, then log it as one write of the joined bytes. O(total length)."""
        self._inner.pwritev(buffers, offset)
        self._fs._log(OpKind.WRITE, self._rel, ino=self._ino, offset=offset, data=b"".join(buffers))

    def truncate(self, size: int) -> None:
        """Delegate, then log. O(1)."""
        self._inner.truncate(size)
        self._fs._log(OpKind.TRUNCATE, self._rel, ino=self._ino, size=size)

    def fdatasync(self) -> None:
        """Log (and delegate when ``real_sync``). O(1) without real syncs."""
        if self._fs.real_sync:
            self._inner.fdatasync()
        self._fs._log(OpKind.FDATASYNC, self._rel, ino=self._ino)

    def fsync(self) -> None:
        """Log (and delegate when ``real_sync``). O(1) without real syncs."""
        if self._fs.real_sync:
            self._inner.fsync()
        self._fs._log(OpKind.FSYNC, self._rel, ino=self._ino)

    def sync_failed(self) -> None:
        """Log that a sync of this file failed under Linux semantics: its unsynced
        writes stay readable but will never become durable.  Called by FaultyFS."""
        self._fs._log(OpKind.SYNC_FAILED, self._rel, ino=self._ino)

    def size(self) -> int:
        """Delegate. O(1)."""
        return self._inner.size()

    def map(self) -> Any:
        """The inner file's map (a real mmap over a real file). O(1)."""
        return self._inner.map()

    def close(self) -> None:
        """Delegate (closing is not logged: it syncs nothing)."""
        self._inner.close()


class RecordingFS:
    """A :class:`~segwal.fs.FileSystem` over directory ``root`` that logs every
    mutating operation (see the module docstring).

    Args:
        root: the directory to record; created if missing (that creation is
            not recorded: the root counts as durable).  Every path the code
            under test uses must lie inside it.
        inner: the file system doing the work (default :class:`OsFileSystem`).
        real_sync: pass fdatasync/fsync/fsync_dir through to ``inner``.

    Thread safety: operations may come from several threads; the log is
    appended under a lock, in the order the calls completed.
    """

    def __init__(self, root: str | os.PathLike[str], *, inner: FileSystem | None = None, real_sync: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)
        self.inner: FileSystem = inner if inner is not None else OsFileSystem()
        self.real_sync = real_sync
        self._lock = threading.Lock()
        self._next_ino = [1]
        self.start = _snapshot(self.root, self._next_ino)
        self._inodes: dict[str, int] = dict(self.start.inodes)
        self._ops: list[Op] = []
        self._marks: list[Mark] = []

    # -- the log ---------------------------------------------------------------

    @property
    def ops(self) -> tuple[Op, ...]:
        """The operations logged so far. O(n) copy."""
        with self._lock:
            return tuple(self._ops)

    @property
    def marks(self) -> tuple[Mark, ...]:
        """The marks made so far. O(n) copy."""
        with self._lock:
            return tuple(self._marks)

    def recording(self) -> Recording:
        """A frozen copy of the start image, log and marks so far. O(ops)."""
        with self._lock:
            return Recording(start=self.start, ops=tuple(self._ops), marks=tuple(self._marks))

    def mark(self, label: str, **facts: Any) -> Mark:
        """Record that ``label`` was acknowledged now (after every op logged so far). O(1).

        Example: ``fs.mark("hard_state", hard_state=hs)`` right after
        ``save_hard_state(hs)`` returned.
        """
        with self._lock:
            m = Mark(position=len(self._ops), label=label, facts=MappingProxyType(dict(facts)))
            self._marks.append(m)
            return m

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the root (``"."`` for the root). O(len(path)).

        Raises:
            ValueError: the path lies outside the root.
        """
        rel = os.path.relpath(os.path.abspath(os.fspath(path)), self.root)
        if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            raise ValueError(f"{path!s} is outside the recorded root {self.root}")
        return rel

    def _log(self, kind: OpKind, rel: str, **kw: Any) -> None:
        with self._lock:
            self._ops.append(Op(seq=len(self._ops), kind=kind, path=rel, **kw))

    def _new_ino(self) -> int:
        with self._lock:
            ino = self._next_ino[0]
            self._next_ino[0] += 1
            return ino

    def _ino_for_existing(self, rel: str) -> int:
        ino = self._inodes.get(rel)
        if ino is None:
            raise ValueError(
                f"{rel} exists in {self.root} but was not created through this file system "
                "(the recording cannot model it)"
            )
        return ino

    # -- FileSystem ------------------------------------------------------------

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> RecordingFile:
        """Open through ``inner``; log a ``create`` if a new file was made. O(1)."""
        rel = self.rel(path)
        existed = self.inner.exists(path)
        f = self.inner.open(path, create=create, readonly=readonly)
        if existed:
            try:
                ino = self._ino_for_existing(rel)
            except ValueError:
                f.close()
                raise
        else:
            ino = self._new_ino()
            self._inodes[rel] = ino
            self._log(OpKind.CREATE, rel, ino=ino)
        return RecordingFile(f, self, rel, ino)

    def listdir(self, path: str) -> list[str]:
        """Delegate."""
        return self.inner.listdir(path)

    def exists(self, path: str) -> bool:
        """Delegate."""
        return self.inner.exists(path)

    def isdir(self, path: str) -> bool:
        """Delegate."""
        return self.inner.isdir(path)

    def mkdir(self, path: str) -> None:
        """Delegate, then log. O(1)."""
        self.inner.mkdir(path)
        self._log(OpKind.MKDIR, self.rel(path))

    def rename(self, src: str, dst: str) -> None:
        """Delegate, then log with the moved file's identity. O(1).

        Raises:
            NotImplementedError: ``src`` is a directory (not modelled).
        """
        rs, rd = self.rel(src), self.rel(dst)
        if self.inner.isdir(src):
            raise NotImplementedError(f"RecordingFS does not model directory renames ({rs} -> {rd})")
        ino = self._ino_for_existing(rs)
        self.inner.rename(src, dst)
        self._inodes.pop(rs, None)
        self._inodes[rd] = ino
        self._log(OpKind.RENAME, rs, ino=ino, dst=rd)

    def unlink(self, path: str) -> None:
        """Delegate, then log. O(1)."""
        rel = self.rel(path)
        ino = self._inodes.get(rel, -1)
        self.inner.unlink(path)
        self._inodes.pop(rel, None)
        self._log(OpKind.UNLINK, rel, ino=ino)

    def rmdir(self, path: str) -> None:
        """Delegate, then log. O(1)."""
        self.inner.rmdir(path)
        self._log(OpKind.RMDIR, self.rel(path))

    def fsync_dir(self, path: str) -> None:
        """Log (and delegate when ``real_sync``). O(1) without real syncs."""
        if self.real_sync:
            self.inner.fsync_dir(path)
        self._log(OpKind.FSYNC_DIR, self.rel(path))

    def lock(self, path: str) -> Lock:
        """Delegate; log a ``create`` if the lock file was new. O(1)."""
        rel = self.rel(path)
        existed = self.inner.exists(path)
        lk = self.inner.lock(path)
        if not existed:
            ino = self._new_ino()
            self._inodes[rel] = ino
            self._log(OpKind.CREATE, rel, ino=ino)
        return lk
