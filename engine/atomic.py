"""Small files replaced atomically: write a temporary, fsync, rename, fsync the directory.

Used for the manifest and the hard state.  A crash at any instant leaves either
the old file or the new one, never a mix: the temporary name is never read
(stray ``*.tmp`` files are removed at open), and the rename is the commit point,
durable once the directory is fsynced.
"""

from __future__ import annotations

import errno
import os

from segwal.errors import OutOfSpaceError, StorageIOError, SyncError
from segwal.fs import FileSystem

__all__ = ["replace_file", "read_file", "TMP_SUFFIX"]

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
