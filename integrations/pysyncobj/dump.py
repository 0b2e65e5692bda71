"""PySyncObj's full dump (its snapshot file) written and read through segwal's file-system seam.

``FsSerializer`` stands in for ``pysyncobj.serializer.Serializer`` in a SyncObj
whose journal was given ``fs=`` (see :func:`segwal_journal`).  It keeps
PySyncObj's file format (a gzip-compressed pickle of ``(state, last entry,
entry before it, cluster)``) and its protocol (``checkSerializing``,
``serialize``, ``deserialize``, ``getTransmissionData``,
``setTransmissionData``, ``cancelTransmisstion``), but every file operation
goes through the given :class:`~segwal.fs.FileSystem`, so that a test file
system (:class:`segwal.testing.volatile.VolatileFileSystem`) sees the dump as
it sees the log.  It never forks: the dump is written in the tick thread (which
is why such a SyncObj must run with ``useFork=False``).  Like PySyncObj's, it
does not fsync the dump; the journal does before it relies on it.
"""

from __future__ import annotations

import gzip
import io
import logging
from typing import Any

from segwal.fs import FileSystem

__all__ = ["FsSerializer"]

_log = logging.getLogger(__name__)

# pysyncobj.config.SERIALIZER_STATE
_NOT_SERIALIZING, _SERIALIZING, _SUCCESS, _FAILED = 0, 1, 2, 3


def _write(fs: FileSystem, tmp: str, final: str, data: bytes) -> None:
    f = fs.open(tmp, create=True)
    try:
        f.truncate(0)
        f.pwrite(data, 0)
    finally:
        f.close()
    fs.rename(tmp, final)


def _read(fs: FileSystem, path: str) -> bytes:
    f = fs.open(path, readonly=True)
    try:
        return f.pread(f.size(), 0)
    finally:
        f.close()


class FsSerializer:
    """PySyncObj's ``Serializer`` protocol on a :class:`~segwal.fs.FileSystem`.

    Args:
        fs: the file system.
        file_name: ``SyncObjConf.fullDumpFile``.
        batch_size: ``SyncObjConf.logCompactionBatchSize`` (bytes per transmission chunk).
    """

    def __init__(self, fs: FileSystem, file_name: str, batch_size: int) -> None:
        self._fs = fs
        self._name = file_name
        self._batch = batch_size
        self._outcome = _NOT_SERIALIZING
        self._id: Any = None
        self._outgoing: dict[Any, list[Any]] = {}  # node -> [dump bytes, bytes sent]
        self._incoming: bytearray | None = None

    def checkSerializing(self) -> tuple[int, Any]:
        """The outcome of the last :meth:`serialize`, reported once.  O(1)."""
        outcome, self._outcome = self._outcome, _NOT_SERIALIZING
        if outcome == _NOT_SERIALIZING:
            return outcome, None
        return outcome, self._id

    def serialize(self, data: Any, id: Any) -> None:
        """Write ``data`` as the dump (temporary file, then rename; not fsynced).
        Synchronous.  O(size of the state)."""
        from pysyncobj import pickle as pspickle

        self._id = id
        try:
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb") as g:
                pspickle.dump(data, g)
            _write(self._fs, self._name + ".tmp", self._name, buf.getvalue())
            self._outgoing.clear()
            self._outcome = _SUCCESS
        except Exception:
            _log.exception("writing the full dump failed")
            self._outcome = _FAILED

    def deserialize(self) -> Any:
        """The dump's content.  O(size of the dump)."""
        from pysyncobj import pickle as pspickle

        with gzip.GzipFile(fileobj=io.BytesIO(_read(self._fs, self._name))) as g:
            return pspickle.load(g)

    def getTransmissionData(self, transmissionID: Any) -> Any:
        """The next chunk of the dump for a follower: ``(bytes, is_first, is_last)``,
        or ``None`` when there is no dump to send.  O(chunk)."""
        t = self._outgoing.get(transmissionID)
        if t is None:
            try:
                t = self._outgoing[transmissionID] = [_read(self._fs, self._name), 0]
            except OSError:
                _log.exception("reading the full dump for transmission failed")
                return None
        data, sent = t
        chunk = data[sent : sent + self._batch]
        t[1] = sent + len(chunk)
        if not chunk:
            del self._outgoing[transmissionID]
        return chunk, sent == 0, not chunk

    def setTransmissionData(self, data: Any) -> bool:
        """Take one chunk from the leader; on the last one, replace the dump file
        (temporary file, then rename; not fsynced) and return ``True``.  O(chunk)."""
        if data is None:
            return False
        chunk, is_first, is_last = data
        if is_first:
            self._incoming = bytearray()
        elif self._incoming is None:
            return False
        self._incoming += chunk
        if not is_last:
            return False
        blob, self._incoming = bytes(self._incoming), None
        try:
            _write(self._fs, self._name + ".1.tmp", self._name, blob)
        except OSError:
            _log.exception("writing the received full dump failed")
            return False
        return True

    def cancelTransmisstion(self, id: Any) -> None:  # PySyncObj's spelling
        """Forget the transmission to ``id``.  O(1)."""
        self._outgoing.pop(id, None)
