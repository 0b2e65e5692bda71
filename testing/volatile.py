"""VolatileFileSystem: a file system whose unsynced writes and directory changes live only in this process's memory.

It stands in for the operating system's page cache, inside the process: every
``pwrite``, ``truncate``, create, rename and unlink changes only an in-memory
image (file contents in ``memfd`` files, names in dictionaries); a file's data
reaches the real disk when it is ``fdatasync``'d/``fsync``'d, and a directory's
creates, renames and unlinks when that directory is ``fsync_dir``'d.  So
``kill -9`` of a process using it loses exactly what a power cut would lose on
a POSIX file system, while the real disk (and the real page cache) keeps what
was synced -- which makes it a power-loss test for real processes, e.g. a
PySyncObj cluster whose journals get it through
``segwal_journal(path, fs=VolatileFileSystem(root))``.

Semantics:

* All paths must lie under ``root`` (the process's own directory); the image
  of a directory is loaded from the real disk at its first use, so a process
  restarted on the same ``root`` sees what survived.
* Reads, ``size()`` and ``listdir`` see the in-memory image (the process's
  own unsynced writes included, as with a real page cache); ``map()`` maps the
  ``memfd``, so a map sees later writes within its length, as a real one does.
* ``fdatasync``/``fsync`` copy the bytes written since the last sync into every
  real file that holds a synced name of this file (a file whose name is not
  synced yet keeps its synced bytes in a second ``memfd``).  ``fsync_dir``
  makes the real directory list exactly the in-memory names, each with its
  file's synced content (a new name is written to a temporary file and renamed,
  a renamed file is renamed).  The real disk is never fsynced: the real page
  cache outlives the process, which is all a kill-based test needs.
* Locks are real ``flock`` locks on the real path.

Cost: a sync copies the bytes written since the previous one; a new name costs
a copy of its synced content.  Linux only (``os.memfd_create``).  Not a
general-purpose file system: hard links, rename over a directory and
cross-directory renames of directories are not supported.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Sequence

from segwal.fs import Buffer, OsFileSystem, _OsLock

__all__ = ["VolatileFile", "VolatileFileSystem"]

_TMP_PREFIX = ".volatile-"  # temporary names on the real disk; never shown, removed at load
_CHUNK = 1 << 20


def _copy(src: int, dst: int, lo: int, hi: int) -> None:
    """Copy bytes ``lo..hi`` of ``src`` to the same offsets of ``dst`` (descriptors)."""
    while lo < hi:
        data = os.pread(src, min(_CHUNK, hi - lo), lo)
        if not data:
            break
        os.pwrite(dst, data, lo)
        lo += len(data)


class _Inode:
    """A file: its current content (``fd``) and where its synced content is."""

    __slots__ = ("fd", "lo", "hi", "disk", "synced_fd", "size")

    def __init__(self, fd: int) -> None:
        self.fd = fd  # memfd: the content as this process sees it
        self.size = os.fstat(fd).st_size
        self.lo, self.hi = self.size, 0  # bytes changed since the last sync: lo..hi
        self.disk: set[str] = set()  # real files holding the synced content
        self.synced_fd: int | None = None  # synced content while no real file holds it

    def sync(self) -> None:
        size, lo, hi = self.size, self.lo, min(self.hi, self.size)
        if self.disk:
            for real in self.disk:
                fd = os.open(real, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    _copy(self.fd, fd, lo, hi)
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
        else:
            if self.synced_fd is None:
                self.synced_fd = os.memfd_create("synced", os.MFD_CLOEXEC)
            _copy(self.fd, self.synced_fd, lo, hi)
            os.ftruncate(self.synced_fd, size)
        self.lo, self.hi = size, 0

    def write_synced_to(self, real: str) -> None:
        """Create the real file ``real`` with the synced content (temporary file + rename)."""
        d, name = os.path.split(real)
        tmp = os.path.join(d, f"{_TMP_PREFIX}{name}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if self.disk:
                src = os.open(next(iter(self.disk)), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _copy(src, fd, 0, os.fstat(src).st_size)
                finally:
                    os.close(src)
            elif self.synced_fd is not None:
                _copy(self.synced_fd, fd, 0, os.fstat(self.synced_fd).st_size)
        finally:
            os.close(fd)
        os.replace(tmp, real)


class _Dir:
    """A directory: its names now, and the names the real directory holds."""

    __slots__ = ("real", "names", "synced")

    def __init__(self, real: str) -> None:
        self.real = real
        self.names: dict[str, _Inode | _Dir] = {}
        self.synced: dict[str, _Inode | _Dir] = {}


class VolatileFile:
    """An open file of a :class:`VolatileFileSystem` (the :class:`~segwal.fs.File` protocol)."""

    __slots__ = ("path", "_ino", "_fs", "_ro")

    def __init__(self, path: str, ino: _Inode, fs: VolatileFileSystem, readonly: bool) -> None:
        self.path = path
        self._ino = ino
        self._fs = fs
        self._ro = readonly

    def pread(self, size: int, offset: int) -> bytes:
        """Read from the in-memory content.  O(size)."""
        return os.pread(self._ino.fd, size, offset)

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Write into memory only; lost on kill until synced.  O(len)."""
        if self._ro:
            raise OSError(errno.EBADF, "file opened read-only", self.path)
        ino = self._ino
        n = len(data)
        if n:
            with self._fs._lock:
                os.pwrite(ino.fd, data, offset)
                ino.lo = min(ino.lo, offset)
                ino.hi = max(ino.hi, offset + n)
                ino.size = max(ino.size, offset + n)

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Write the buffers back to back, into memory only.  O(total length)."""
        self.pwrite(b"".join(buffers), offset)

    def truncate(self, size: int) -> None:
        """Set the in-memory size; lost on kill until synced.  O(1)."""
        if self._ro:
            raise OSError(errno.EBADF, "file opened read-only", self.path)
        ino = self._ino
        with self._fs._lock:
            os.ftruncate(ino.fd, size)
            ino.lo = min(ino.lo, size)
            ino.hi = max(ino.hi, size)
            ino.size = size

    def fdatasync(self) -> None:
        """Copy what changed since the last sync to the real file(s).  O(changed bytes)."""
        with self._fs._lock:
            self._ino.sync()

    fsync = fdatasync

    def size(self) -> int:
        """The in-memory size.  O(1)."""
        return self._ino.size

    def map(self) -> mmap.mmap | None:
        """A read-only shared map of the in-memory content (sees later writes), or None when empty."""
        n = self._ino.size
        if n == 0:
            return None
        return mmap.mmap(self._ino.fd, n, mmap.MAP_SHARED, mmap.PROT_READ)

    def close(self) -> None:
        """Nothing to release (the content stays in memory).  Does not sync."""


class VolatileFileSystem:
    """The :class:`~segwal.fs.FileSystem` protocol with a process-local page cache (see the module docstring).

    Args:
        root: the real directory this file system owns; every path used must be under it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "VolatileFileSystem root must be an existing directory", self.root)
        self._lock = threading.RLock()
        self._top = self._load(self.root)

    # ---------------------------------------------------------------- images

    def _load(self, real: str) -> _Dir:
        d = _Dir(real)
        for name in os.listdir(real):
            p = os.path.join(real, name)
            if name.startswith(_TMP_PREFIX):
                os.unlink(p)
                continue
            node: _Inode | _Dir
            if os.path.isdir(p):
                node = self._load(p)
            else:
                fd = os.memfd_create(name, os.MFD_CLOEXEC)
                src = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _copy(src, fd, 0, os.fstat(src).st_size)
                finally:
                    os.close(src)
                node = _Inode(fd)
                node.lo, node.hi = node.size, 0
                node.disk.add(p)
            d.names[name] = node
            d.synced[name] = node
        return d

    def _parts(self, path: str) -> list[str]:
        p = os.path.abspath(path)
        if p == self.root:
            return []
        if not p.startswith(self.root + os.sep):
            raise ValueError(f"VolatileFileSystem: {p} is outside its root {self.root}")
        return p[len(self.root) + 1 :].split(os.sep)

    def _dir(self, path: str) -> _Dir:
        d = self._top
        for part in self._parts(path):
            node = d.names.get(part)
            if not isinstance(node, _Dir):
                raise (NotADirectoryError if node is not None else FileNotFoundError)(
                    errno.ENOTDIR if node is not None else errno.ENOENT, "no such directory", path
                )
            d = node
        return d

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "is the root", path)
        return self._dir(os.path.dirname(os.path.abspath(path))), parts[-1]

    # ---------------------------------------------------------- the protocol

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> VolatileFile:
        """Open ``path`` (a create lives in memory until :meth:`fsync_dir`).  O(depth)."""
        with self._lock:
            d, name = self._parent(path)
            node = d.names.get(name)
            if node is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such file", path)
                node = d.names[name] = _Inode(os.memfd_create(name, os.MFD_CLOEXEC))
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            return VolatileFile(os.path.abspath(path), node, self, readonly)

    def listdir(self, path: str) -> list[str]:
        """The in-memory names.  O(entries)."""
        with self._lock:
            return list(self._dir(path).names)

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the in-memory image.  O(depth)."""
        with self._lock:
            try:
                if not self._parts(path):
                    return True
                d, name = self._parent(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return name in d.names

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a directory in the in-memory image.  O(depth)."""
        with self._lock:
            try:
                self._dir(path)
                return True
            except (FileNotFoundError, NotADirectoryError):
                return False

    def mkdir(self, path: str) -> None:
        """Create a directory in memory (on disk at :meth:`fsync_dir` of the parent)."""
        with self._lock:
            d, name = self._parent(path)
            if name in d.names:
                raise FileExistsError(errno.EEXIST, "exists", path)
            d.names[name] = _Dir(os.path.join(d.real, name))

    def rename(self, src: str, dst: str) -> None:
        """Rename in memory (on disk at :meth:`fsync_dir`)."""
        with self._lock:
            sd, sname = self._parent(src)
            dd, dname = self._parent(dst)
            node = sd.names.get(sname)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            if isinstance(node, _Dir) or isinstance(dd.names.get(dname), _Dir):
                raise IsADirectoryError(errno.EISDIR, "renaming directories is not supported", src)
            del sd.names[sname]
            dd.names[dname] = node

    def unlink(self, path: str) -> None:
        """Remove a name in memory (on disk at :meth:`fsync_dir`)."""
        with self._lock:
            d, name = self._parent(path)
            node = d.names.get(name)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            del d.names[name]

    def rmdir(self, path: str) -> None:
        """Remove an empty directory in memory (on disk at :meth:`fsync_dir` of the parent)."""
        with self._lock:
            d, name = self._parent(path)
            node = d.names.get(name)
            if not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            if node.names:
                raise OSError(errno.ENOTEMPTY, "directory not empty", path)
            del d.names[name]

    def fsync_dir(self, path: str) -> None:
        """Make the real directory list exactly the in-memory names.  O(changed names + their synced bytes)."""
        with self._lock:
            d = self._dir(path)
            os.makedirs(d.real, exist_ok=True)
            gone = {n: node for n, node in d.synced.items() if d.names.get(n) is not node}
            for name, node in d.names.items():
                if d.synced.get(name) is node:
                    continue
                real = os.path.join(d.real, name)
                if isinstance(node, _Dir):
                    if os.path.exists(real) and not os.path.isdir(real):
                        os.unlink(real)
                    os.makedirs(real, exist_ok=True)
                    continue
                moved = next((n for n, x in gone.items() if x is node and n != name), None)
                if moved is not None:  # a rename inside this directory: rename the real file
                    old = os.path.join(d.real, moved)
                    os.replace(old, real)
                    node.disk.discard(old)
                    del gone[moved]
                else:
                    node.write_synced_to(real)
                old_node = d.synced.get(name)
                if isinstance(old_node, _Inode):
                    self._lose(old_node, real)
                    gone.pop(name, None)
                node.disk.add(real)
                node.synced_fd = None if node.synced_fd is None else self._close(node.synced_fd)
            for name, node in gone.items():
                real = os.path.join(d.real, name)
                if isinstance(node, _Dir):
                    if os.path.isdir(real) and not os.listdir(real):
                        os.rmdir(real)
                    continue
                if os.path.exists(real):
                    os.unlink(real)
                self._lose(node, real)
            d.synced = dict(d.names)

    @staticmethod
    def _close(fd: int) -> None:
        os.close(fd)

    @staticmethod
    def _lose(node: _Inode, real: str) -> None:
        """``real`` no longer holds ``node``; with no real file left, its content counts as unsynced."""
        node.disk.discard(real)
        if not node.disk and node.synced_fd is None:
            node.lo, node.hi = 0, node.size

    def lock(self, path: str) -> _OsLock:
        """A real ``flock`` on the real path (created if missing)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return OsFileSystem().lock(path)
