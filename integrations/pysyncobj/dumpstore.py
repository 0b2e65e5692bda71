"""PySyncObj's full dump kept durable in the object store of an object-store journal, beside the log it goes with.

Why: a node on an ephemeral machine loses its local disk -- and with it
PySyncObj's ``fullDumpFile`` -- while its Raft log, in an
:class:`~segwal.storage.objectstore.ObjectStoreEngine`, survives *purged*: log
compaction deleted the entries the dump replaced.  The state machine would
restart empty and apply only the entries after the purge.  So with an
object-store journal the dump lives in the same store, under the engine's
prefix, in the companion folder ``pysyncobj/``
(:func:`~segwal.storage.objectstore.sidecar`)::

    <prefix>/pysyncobj/<first:020d>-<u:016x>.dump

``first`` is the journal's first log index this dump goes with: the index
PySyncObj keeps as the first entry after the purge (its ``serializeID``, the
entry before the last applied one; the dump holds that entry and the next).
``<u>`` is a random u64, so every upload has a name of its own.  Format
(version 1, little-endian, ``docs/format-objectstore.md`` §10)::

     0  magic        8s  b"SGWPYDMP"
     8  version      u16 1
    10  flags        u16 0
    12  first        u64 the journal first index above
    20  payload_len  u64 bytes of the payload
    28  payload_crc  u32 CRC32C of the payload
    32  header_crc   u32 CRC32C of bytes 0..31
    36  payload          the fullDumpFile bytes, unchanged (PySyncObj's gzip'd pickle)

Safety argument (the ordering the journal keeps)
-----------------------------------------------
Invariant: *whenever the store holds a log that starts after index 1 (or has a
purge boundary), it holds a dump object whose ``first`` is the log's first
index* -- so a node that has only the store can always rebuild its state.

1. **Purge** (``deleteEntriesTo``, after PySyncObj wrote a new dump): the dump
   object is uploaded first (its PUT is acknowledged), then ``purge_logs``
   moves the log's first index to ``first``; only after the purge are dump
   objects with a smaller ``first`` deleted.  A crash before the purge leaves
   the old log and its old dump (still there: nothing was deleted), plus an
   unused new one.  A failed upload raises and nothing is purged.
2. **Snapshot install** (a follower receives a dump): the received dump is
   uploaded in ``setTransmissionData``, before PySyncObj loads it, clears the
   journal or acknowledges it; a failed upload reports the transmission as
   incomplete (no load, no acknowledgement; the leader sends it again).  Then
   ``clear()`` resets the engine -- and refuses to unless the local dump file
   is one known to be in the store.  After the reset the log restarts at the
   dump's ``first``; a crash between reset and the next entries leaves an
   empty log, for which the newest dump is restored (below).
3. **Open** (every start, before PySyncObj reads ``fullDumpFile``): the log
   decides which dump goes with it -- the one whose ``first`` is the log's
   first index; for a log that starts at 1 with no boundary, none (the whole
   history is in the log: a local dump newer than the log's start is removed,
   because PySyncObj would clear the journal to match it); for an empty log,
   the newest.  That dump replaces the local file (unless it is the same
   bytes).  A log that needs a dump the store does not hold is
   ``CorruptionError`` -- never a silent start from an empty state.

Fencing: dump objects are immutable under unique names, so a stale (fenced)
writer can add dump objects but never change one.  Which dump counts is
decided by the log, whose every write is fenced; dumps are garbage collected
only after this writer's purge succeeded (a fenced writer's purge raises first)
and only below the log's first index after that purge: never the dump the log
needs, and every later log start uploads its own dump before it exists.
Every dump is the state machine at a committed index of the same node, so
even a stale writer's dump is a correct state where it is chosen.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from segwal.errors import CorruptionError, FormatVersionError, StorageIOError
from segwal.fs import FileSystem
from segwal.storage.objectstore.io import retry_io
from segwal.storage.objectstore.seam import ObjectStoreSeam
from segwal.types import StorageEngine
from segwal.wal.format import crc32c

from .dump import read_file, replace_file

__all__ = [
    "DUMP_FOLDER",
    "DUMP_MAGIC",
    "DUMP_VERSION",
    "HEADER_SIZE",
    "DumpKeeper",
    "DumpRef",
    "DumpStore",
    "UploadingSerializer",
    "choose_dump",
    "decode_dump",
    "dump_first_index",
    "encode_dump",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DUMP_FOLDER = "pysyncobj"
DUMP_MAGIC = b"SGWPYDMP"
DUMP_VERSION = 1
_HEAD = struct.Struct("<8sHHQQI")
HEADER_SIZE = _HEAD.size + 4  # 36
_NAME = re.compile(r"(\d{20})-([0-9a-f]{16})\.dump")


class DumpRef(NamedTuple):
    """One dump object: the journal first index it goes with, its full name and size."""

    first: int
    name: str
    size: int


def encode_dump(first: int, payload: bytes) -> bytes:
    """The object bytes of a dump (header + payload).  Pure; O(len(payload))."""
    head = _HEAD.pack(DUMP_MAGIC, DUMP_VERSION, 0, first, len(payload), crc32c(payload))
    return head + crc32c(head).to_bytes(4, "little") + payload


def _header(data: bytes, name: str) -> tuple[int, int, int]:
    """``(first, payload_len, payload_crc)`` of a dump object's first HEADER_SIZE bytes."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError(f"dump object is {len(data)} bytes, shorter than its header", path=name, offset=0)
    magic, version, _flags, first, plen, pcrc = _HEAD.unpack_from(data, 0)
    if magic != DUMP_MAGIC:
        raise CorruptionError(f"bad dump magic {magic!r}", path=name, offset=0)
    if crc32c(data[: _HEAD.size]) != int.from_bytes(data[_HEAD.size : HEADER_SIZE], "little"):
        raise CorruptionError("dump header checksum mismatch", path=name, offset=_HEAD.size)
    if version > DUMP_VERSION:
        raise FormatVersionError(f"dump version {version} is newer than {DUMP_VERSION}", path=name, offset=8)
    return first, plen, pcrc


def decode_dump(data: bytes, name: str) -> tuple[int, bytes]:
    """``(first, payload)`` of a dump object, every check passed.

    Raises CorruptionError naming the object and offset (short, bad magic or
    checksum, wrong length); FormatVersionError for a newer version.  O(len).
    """
    first, plen, pcrc = _header(data, name)
    payload = data[HEADER_SIZE:]
    if len(payload) != plen:
        raise CorruptionError(f"dump payload is {len(payload)} bytes, header says {plen}", path=name, offset=20)
    if crc32c(payload) != pcrc:
        raise CorruptionError("dump payload checksum mismatch", path=name, offset=HEADER_SIZE)
    return first, payload


def choose_dump(dumps: list[DumpRef], *, first: int, last: int, purged: bool, where: str) -> DumpRef | None:
    """The dump that goes with a log (rule 3 of the module docstring), or ``None`` when it needs none.

    ``first``/``last``: the log's bounds (``last < first``: empty);
    ``purged``: whether the log has a purge boundary.  Pure; O(len(dumps)).

    Raises:
        CorruptionError: the log starts after what it can replay from and no
            dump goes with it (``where`` names the store folder).
    """
    if last < first:  # an empty log: the newest dump (or a new node)
        return max(dumps, default=None)
    matching = [d for d in dumps if d.first == first]
    if matching:
        return max(matching)
    if not purged and first <= 1:
        return None  # the whole history is in the log
    raise CorruptionError(
        f"the journal's log starts at index {first} but no PySyncObj dump object with first={first} "
        f"is in the store (found: {[d.first for d in dumps]}): the state before it is lost",
        path=where,
        index=first,
    )


class DumpStore:
    """The dump objects in one companion folder of a store (names, upload, download, garbage collection).

    Args:
        seam: the store.
        folder: ``<prefix>pysyncobj/`` (ending in ``/``).
        retries, retry_delay: extra attempts after a failed request, first pause (doubling).
    """

    def __init__(self, seam: ObjectStoreSeam, folder: str, *, retries: int = 3, retry_delay: float = 0.05) -> None:
        if not folder.endswith("/"):
            raise ValueError(f"folder must end with '/', got {folder!r}")
        self.seam = seam
        self.folder = folder
        self.retries = retries
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"DumpStore({self.seam!r}, {self.folder!r})"

    def _retry(self, call: Callable[[], T]) -> T:
        return retry_io(call, self.retries, self.retry_delay)

    def dumps(self) -> list[DumpRef]:
        """Every dump object, by name (objects of other names in the folder are ignored).  One LIST."""
        out = []
        for info in self._retry(lambda: self.seam.list(self.folder)):
            m = _NAME.fullmatch(info.name[len(self.folder) :])
            if m is not None:
                out.append(DumpRef(int(m.group(1)), info.name, info.size))
        return out

    def put(self, first: int, payload: bytes) -> DumpRef:
        """Upload a dump under a new unique name.  Durable on return (the store acknowledged
        the PUT).  Plain PUT, retried: nobody else writes that name.  O(len(payload)), one PUT."""
        name = f"{self.folder}{first:020d}-{os.urandom(8).hex()}.dump"
        data = encode_dump(first, payload)
        self._retry(lambda: self.seam.put(name, data))
        return DumpRef(first, name, len(data))

    def fetch(self, ref: DumpRef) -> bytes:
        """The payload of ``ref``, checked (CorruptionError on damage or when it is gone).  One GET."""
        got = self._retry(lambda: self.seam.get(ref.name))
        if got is None:
            raise CorruptionError("dump object listed a moment ago is missing", path=ref.name, index=ref.first)
        first, payload = decode_dump(got.data, ref.name)
        if first != ref.first:
            raise CorruptionError(f"dump object says first={first}, its name {ref.first}", path=ref.name, offset=12)
        return payload

    def payload_id(self, ref: DumpRef) -> tuple[int, int]:
        """``(payload length, payload CRC32C)`` from the header: one ranged GET."""
        got = self._retry(lambda: self.seam.get_range(ref.name, 0, HEADER_SIZE))
        if got is None:
            raise CorruptionError("dump object listed a moment ago is missing", path=ref.name, index=ref.first)
        _first, plen, pcrc = _header(got, ref.name)
        return plen, pcrc

    def collect(self, below: int) -> int:
        """Delete the dump objects whose ``first`` is below ``below``; how many.  Garbage only
        (call after the purge to ``below``).  One LIST and one DELETE request."""
        old = [d.name for d in self.dumps() if d.first < below]
        if old:
            self._retry(lambda: self.seam.delete(old))
        return len(old)


class DumpKeeper:
    """What a journal does with its dump when its engine is in an object store (module docstring).

    Args:
        store: the dump objects.
        fs: the file system of ``path``.
        path: PySyncObj's ``fullDumpFile``.
    """

    def __init__(self, store: DumpStore, fs: FileSystem, path: str) -> None:
        self.store = store
        self.fs = fs
        self.path = path
        #: (payload length, CRC32C) -> first, of every dump known to be in the store
        self._stored: dict[tuple[int, int], int] = {}

    def _local(self) -> bytes | None:
        return read_file(self.fs, self.path) if self.fs.exists(self.path) else None

    def restore(self, engine: StorageEngine) -> DumpRef | None:
        """Make the local dump file the one the engine's log goes with (rule 3), before
        PySyncObj reads it.  Durable: the file is a cache of the store (not fsynced).
        Costs one LIST, plus one ranged GET and at most one GET.  Raises CorruptionError."""
        first, last = engine.first_index(), engine.last_index()
        purged = engine.purge_boundary() is not None
        chosen = choose_dump(self.store.dumps(), first=first, last=last, purged=purged, where=self.store.folder)
        local = self._local()
        if chosen is None:
            if local is not None:
                log.warning(
                    "removing %s: the journal's log holds the whole history and no dump goes with it", self.path
                )
                self.fs.unlink(self.path)
            return None
        ident = self.store.payload_id(chosen)
        if local is None or (len(local), crc32c(local)) != ident:
            payload = self.store.fetch(chosen)
            replace_file(self.fs, self.path + ".store.tmp", self.path, payload)
            ident = (len(payload), crc32c(payload))
        self._stored[ident] = chosen.first
        return chosen

    def save(self, first: int) -> None:
        """Upload the local dump file as the dump for ``first`` (skipped when exactly that is
        stored already).  Durable on return.  Raises FileNotFoundError without a dump file,
        StorageIOError when the store keeps failing.  O(dump size), one PUT."""
        payload = self._local()
        if payload is None:
            raise FileNotFoundError(f"no PySyncObj dump at {self.path}: refusing to purge the journal")
        self.save_payload(first, payload)

    def save_payload(self, first: int, payload: bytes) -> None:
        """Upload ``payload`` as the dump for ``first`` unless already stored.  Durable on return."""
        ident = (len(payload), crc32c(payload))
        if self._stored.get(ident) == first:
            return
        self.store.put(first, payload)
        self._stored[ident] = first

    def check_local_stored(self) -> None:
        """Raise RuntimeError unless the local dump file is a dump known to be in the store
        (``clear()`` must not discard the log otherwise).  O(dump size)."""
        payload = self._local()
        if payload is None or (len(payload), crc32c(payload)) not in self._stored:
            raise RuntimeError(
                f"refusing to clear the journal: the dump at {self.path} is not in the object store "
                f"({self.store.folder}); clearing would leave the store without the node's state"
            )

    def collect(self, below: int) -> None:
        """Delete dump objects below ``below`` (after the purge to it); failures are only logged."""
        try:
            self.store.collect(below)
        except StorageIOError as e:
            log.warning("deleting old dump objects in %s failed (garbage only): %s", self.store.folder, e)


def dump_first_index(payload: bytes) -> int:
    """The journal first index a dump in PySyncObj's own file format goes with: the
    index of the entry before the last applied one (``data[2][1]`` of the gzip'd pickle
    of ``(state, last applied entry, the entry before it, cluster)``).  Runs no
    application code but PySyncObj's unpickler.  Pure; O(dump size).

    Raises:
        ValueError: ``payload`` is not such a dump (e.g. written by a custom serializer).
    """
    import gzip
    import io

    from pysyncobj import pickle as pspickle

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as g:
            data = pspickle.load(g)
        return int(data[2][1])
    except Exception as e:
        raise ValueError(
            f"dump of {len(payload)} bytes is not in PySyncObj's format (gzip'd pickle of (state, last entry, "
            f"entry before it, cluster)): {type(e).__name__}: {e}"
        ) from e


class UploadingSerializer:
    """PySyncObj's serializer protocol around another serializer: a dump received from the
    leader is uploaded to the store (rule 2) before ``setTransmissionData`` reports it complete.

    Every other call goes to the wrapped serializer unchanged.
    """

    def __init__(self, inner: Any, keeper: DumpKeeper) -> None:
        self._inner = inner
        self._keeper = keeper

    def setTransmissionData(self, data: Any) -> bool:
        """The wrapped call; on the last chunk, upload the received dump first.  A failed
        upload reports the transmission as incomplete (PySyncObj neither loads nor
        acknowledges it).  Durable on a ``True`` return.  O(dump size) on the last chunk."""
        if not self._inner.setTransmissionData(data):
            return False
        keeper = self._keeper
        try:
            # the index is read from the bytes, never through the wrapped deserialize(): with a
            # custom SyncObjConf(deserializer=) that would load the state into the application
            # before the upload (which may fail) and again when PySyncObj installs it
            payload = read_file(keeper.fs, keeper.path)
            keeper.save_payload(dump_first_index(payload), payload)
        except Exception:  # any failure: not stored, so not complete
            log.exception("storing the received dump in %s failed; the snapshot is not installed", keeper.store.folder)
            return False
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
