"""The file-system seam: every file operation segwal performs goes through here.

Strategy: the engine, the WAL and the index never call ``os``, ``open`` or
``mmap`` themselves.  They receive a :class:`FileSystem` (default
:class:`OsFileSystem`) and use the :class:`File` handles it opens.  A test can
then hand in a recording or fault-injecting implementation (``segwal.testing``)
and see, or break, every write, sync, rename and unlink.

Durability rules the callers rely on (POSIX, not one file system's leniency):

* data written with :meth:`File.pwrite` is durable after :meth:`File.fdatasync`
  (or :meth:`File.fsync`) on that file returns;
* a create, rename or unlink is durable after :meth:`FileSystem.fsync_dir` of
  the directory holding the name returns.

Every method raises :class:`OSError` (or a subclass) on failure; mapping that to
segwal's error tree is the caller's job, since only the caller knows whether a
failure poisons the engine.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from segwal.errors import OutOfSpaceError, StorageIOError, SyncError

__all__ = ["File", "FileSystem", "OsFile", "OsFileSystem", "Lock", "Buffer", "replace_file", "read_file", "make_dirs", "TMP_SUFFIX",
           "DEFAULT_FILE_MODE", "DEFAULT_DIR_MODE", "lock_held"]

Buffer = bytes | bytearray | memoryview


@runtime_checkable
class File(Protocol):
    """An open file.  Not safe for concurrent writers; reads may run concurrently."""

    path: str

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (fewer only at end of file). O(size)."""
        ...

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Write all of ``data`` at ``offset``, or raise.  Not durable until a sync. O(len)."""
        ...

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Write the buffers back to back at ``offset``, all or raise.  Not durable until a sync."""
        ...

    def truncate(self, size: int) -> None:
        """Set the file's size.  Not durable until a sync."""
        ...

    def fdatasync(self) -> None:
        """Make this file's data (and the size needed to read it) durable."""
        ...

    def fsync(self) -> None:
        """Make this file's data and all its metadata durable."""
        ...

    def size(self) -> int:
        """Current size in bytes (including writes not yet synced). O(1)."""
        ...

    def map(self) -> mmap.mmap | None:
        """A read-only shared map of the file's current size, or None when the file is empty.

        The map sees later writes within its length (same page cache).  The caller
        closes it.  Reads through it never write, so it needs no flush.
        """
        ...

    def close(self) -> None:
        """Release the handle.  Does not sync."""
        ...


class Lock(Protocol):
    """An exclusive lock on a directory; released by :meth:`release`."""

    def release(self) -> None:
        """Release the lock (idempotent)."""
        ...


@runtime_checkable
class FileSystem(Protocol):
    """The operations segwal performs on directories and names."""

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> File:
        """Open ``path`` (creating an empty file if ``create``).  The creation is not
        durable until :meth:`fsync_dir` of the parent."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path`` (unsorted)."""
        ...

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        ...

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a directory."""
        ...

    def mkdir(self, path: str) -> None:
        """Create directory ``path`` (parent must exist).  Durable after fsync_dir(parent)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src``.  Durable after fsync_dir of the directory."""
        ...

    def unlink(self, path: str) -> None:
        """Remove the name ``path``.  Durable after fsync_dir of the directory."""
        ...

    def rmdir(self, path: str) -> None:
        """Remove the empty directory ``path``."""
        ...

    def fsync_dir(self, path: str) -> None:
        """Make creates, renames and unlinks inside directory ``path`` durable."""
        ...

    def lock(self, path: str) -> Lock:
        """Take an exclusive, non-blocking lock on file ``path`` (created if missing).

        Raises:
            BlockingIOError: the lock is held elsewhere.
        """
        ...


class OsFile:
    """A :class:`File` backed by an OS file descriptor."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``."""
        chunks: list[bytes] = []
        while size > 0:
            chunk = os.pread(self.fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
            offset += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Write all of ``data`` at ``offset``; a write that makes no progress raises ENOSPC."""
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            if n <= 0:
                raise OSError(errno.ENOSPC, "short write made no progress", self.path)
            view = view[n:]
            offset += n

    def pwritev(self, buffers: Sequence[Buffer], offset: int) -> None:
        """Write the buffers back to back at ``offset``."""
        total = sum(map(len, buffers))
        if len(buffers) <= 512:
            n = os.pwritev(self.fd, buffers, offset)
            if n == total:
                return
        else:
            n = 0
        # Rare: a short vectored write, or more buffers than IOV_MAX.  Finish plainly.
        joined = b"".join(buffers)
        self.pwrite(memoryview(joined)[n:], offset + n)

    def truncate(self, size: int) -> None:
        """Set the file size."""
        os.ftruncate(self.fd, size)

    def fdatasync(self) -> None:
        """os.fdatasync."""
        os.fdatasync(self.fd)

    def fsync(self) -> None:
        """os.fsync."""
        os.fsync(self.fd)

    def size(self) -> int:
        """Current size."""
        return os.fstat(self.fd).st_size

    def map(self) -> mmap.mmap | None:
        """A read-only shared map of the current size, or None for an empty file."""
        while True:
            n = self.size()
            if n == 0:
                return None
            try:
                return mmap.mmap(self.fd, n, mmap.MAP_SHARED, mmap.PROT_READ)
            except ValueError:
                if self.size() >= n:
                    raise
                # another process cut the file between fstat and mmap: map what is left

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _OsLock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


#: Who may read what segwal creates, by default: the owner only, as etcd's WAL does
#: (a Raft log holds the application's commands, often secrets).
DEFAULT_FILE_MODE = 0o600
DEFAULT_DIR_MODE = 0o700


def _check_mode(name: str, mode: object) -> int:
    if type(mode) is not int or not 0 <= mode <= 0o777:
        raise ValueError(f"{name} must be a permission mode from 0o000 to 0o777, got {mode!r}")
    if name == "file_mode" and not mode & 0o600 == 0o600:
        raise ValueError(f"file_mode must let the owner read and write (0o600), got {oct(mode)}")
    if name == "dir_mode" and not mode & 0o700 == 0o700:
        raise ValueError(f"dir_mode must let the owner list, enter and write (0o700), got {oct(mode)}")
    return mode


class OsFileSystem:
    """The real operating system: a thin wrapper over :mod:`os`.

    Files are created with ``file_mode`` (default ``0o600``) and directories with
    ``dir_mode`` (default ``0o700``), both narrowed by the process umask as usual.
    Existing files and directories keep their modes.
    """

    file_mode: int = DEFAULT_FILE_MODE  # class defaults: a subclass that skips __init__ still works
    dir_mode: int = DEFAULT_DIR_MODE

    def __init__(self, *, file_mode: int = DEFAULT_FILE_MODE, dir_mode: int = DEFAULT_DIR_MODE) -> None:
        self.file_mode = _check_mode("file_mode", file_mode)
        self.dir_mode = _check_mode("dir_mode", dir_mode)

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> OsFile:
        """Open ``path`` read-write (or read-only), creating it with ``file_mode`` if ``create``."""
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if create:
            flags |= os.O_CREAT
        return OsFile(path, os.open(path, flags | os.O_CLOEXEC, self.file_mode))

    def listdir(self, path: str) -> list[str]:
        """os.listdir."""
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        """os.path.exists."""
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        """os.path.isdir."""
        return os.path.isdir(path)

    def mkdir(self, path: str) -> None:
        """os.mkdir with ``dir_mode``."""
        os.mkdir(path, self.dir_mode)

    def rename(self, src: str, dst: str) -> None:
        """os.replace."""
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        """os.unlink."""
        os.unlink(path)

    def rmdir(self, path: str) -> None:
        """os.rmdir."""
        os.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        """Open the directory and fsync it."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> _OsLock:
        """flock(LOCK_EX | LOCK_NB) on ``path``."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return _OsLock(fd)


def lock_held(fs: FileSystem, path: str) -> bool | None:
    """Whether a process holds an ``flock`` on ``path`` (a writer has the engine open),
    told without taking or waiting for the lock, from ``/proc/locks`` (Linux).

    ``False`` when ``path`` does not exist; ``None`` when it cannot be told (no
    ``/proc/locks``, or ``fs`` is not the real file system).  O(locks on the host).
    """
    if not isinstance(fs, OsFileSystem):
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        with open("/proc/locks") as f:
            text = f.read()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; a waiter's line has "->" after the id
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        dev = parts[5].split(":")
        try:
            if (int(dev[0], 16), int(dev[1], 16), int(dev[2])) == want:
                return True
        except (ValueError, IndexError):
            continue
    return False


# ---------------------------------------------------------------------------
# Small files replaced atomically, and directories created durably.
#
# Used for the manifest and the hard state.  A crash at any instant leaves either
# the old file or the new one, never a mix: the temporary name is never read
# (stray ``*.tmp`` files are removed at open), and the rename is the commit point,
# durable once the directory is fsynced.

TMP_SUFFIX = ".tmp"


def replace_file(fs: FileSystem, directory: str, name: str, data: bytes) -> None:
    """Atomically replace ``directory/name`` with ``data``.  Durable on return.

    Cost: one write, two syncs (file, directory) and a rename.

    Raises:
        SyncError: a sync failed (the new content may or may not survive a crash).
        StorageIOError: another I/O step failed; the old file is untouched.
    """
    final = os.path.join(directory, name)
    tmp = final + TMP_SUFFIX
    try:
        f = fs.open(tmp, create=True)
        try:
            f.truncate(0)
            f.pwrite(data, 0)
            try:
                f.fsync()
            except OSError as e:
                raise SyncError(e.errno or errno.EIO, f"fsync failed: {e.strerror or e}", tmp) from e
        finally:
            f.close()
        fs.rename(tmp, final)
    except SyncError:
        raise
    except OSError as e:
        cls = OutOfSpaceError if e.errno in (errno.ENOSPC, errno.EDQUOT) else StorageIOError
        try:
            fs.unlink(tmp)
        except OSError:
            pass
        raise cls(e.errno or errno.EIO, f"writing {name} failed: {e.strerror or e}", final) from e
    try:
        fs.fsync_dir(directory)
    except OSError as e:
        raise SyncError(e.errno or errno.EIO, f"directory fsync failed: {e.strerror or e}", directory) from e


def read_file(fs: FileSystem, path: str) -> bytes | None:
    """The whole content of ``path``, or ``None`` if it does not exist.

    Raises:
        StorageIOError: the read failed (never treated as a missing file).
    """
    try:
        if not fs.exists(path):
            return None
        f = fs.open(path, readonly=True)
    except OSError as e:
        raise StorageIOError(e.errno or errno.EIO, f"opening failed: {e.strerror or e}", path) from e
    try:
        return f.pread(f.size(), 0)
    except OSError as e:
        raise StorageIOError(e.errno or errno.EIO, f"reading failed: {e.strerror or e}", path) from e
    finally:
        f.close()


def make_dirs(fs: FileSystem, path: str) -> None:
    """Create ``path`` and missing parents one level at a time, fsyncing each parent.

    Durable on return (each new name is fsynced in its parent).  Cost: one
    ``exists`` per missing level plus a mkdir and a directory fsync each.

    Raises:
        NotADirectoryError: an existing ancestor of ``path`` is not a directory.
    """
    missing: list[str] = []
    p = path
    while not fs.exists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if not fs.isdir(p):
        raise NotADirectoryError(errno.ENOTDIR, "engine path is not a directory", p)
    for d in reversed(missing):
        fs.mkdir(d)
        fs.fsync_dir(os.path.dirname(d))
