"""A PySyncObj journal backed by segwal's :class:`~segwal.engine.WalEngine`.

`PySyncObj <https://github.com/bakwc/PySyncObj>`_ keeps its Raft log in a
*journal*: ``pysyncobj.journal.FileJournal`` holds every entry in memory, appends
unchecksummed records to one mmap'd file that SyncObj never syncs, and rewrites
the whole file on every log compaction.  :class:`SegwalJournal` has the same
interface (written against pysyncobj 0.3.17, ``pysyncobj/journal.py``) and keeps
the log in a segwal engine directory instead: checksummed records, durable
appends, O(1) reads that never load the log into memory, and log compaction
that deletes whole segment files.

Usage -- one line in the configuration (importing this module is enough)::

    from segwal.integrations.pysyncobj import segwal_journal
    conf = SyncObjConf(journalFile=segwal_journal("/var/lib/node1/raft"), fullDumpFile="/var/lib/node1/dump")

How it is plugged in.  SyncObj builds its journal with
``pysyncobj.syncobj.createJournal(conf.journalFile)`` and has no option or
factory for a custom journal.  Importing this module therefore wraps that one
module-level function (:func:`install`, idempotent) with a dispatcher that
returns a :class:`SegwalJournal` when ``journalFile`` is a
:class:`SegwalJournalFile` (what :func:`segwal_journal` returns) and calls the
original ``createJournal`` for anything else, so other SyncObjs in the process
are unaffected.  If the hook is missing, a ``SegwalJournalFile`` makes
``FileJournal`` fail loudly (it is not a path), never silently fall back.

Mapping of PySyncObj's journal onto the engine
----------------------------------------------
* Positions: PySyncObj addresses its journal by *position* (``journal[0]`` is
  the oldest entry still kept, ``journal[-1]`` the newest), with list
  semantics: negative indexes, slices (also with steps), ``IndexError`` out of
  range.  Position ``i`` is engine index ``first_index() + i``; an item is the
  tuple ``(command: bytes, idx, term)``, slices are lists of them.
* ``add(command, idx, term)``: one ``persist_entries`` call; ``idx`` must be
  ``last idx + 1`` (what SyncObj always does).  On an empty journal any
  ``idx`` is accepted, as in PySyncObj's journals (the engine is reset first
  when ``idx`` would not follow the purge boundary).  ``str`` commands are
  stored UTF-8 encoded, like ``FileJournal`` (``to_bytes``).
* ``deleteEntriesFrom(k)``: ``truncate(first_index() + k)``.
* ``deleteEntriesTo(k)`` (log compaction): ``purge_logs`` up to position
  ``k-1``; whole segment files below it are unlinked, so the cost does not grow
  with the entries kept (``FileJournal`` rewrites all of them).
* ``clear()``: the engine's ``reset()`` (the hard state is kept).
* ``setCurrentTerm(term, votedForNodeId)``: saved at once and durably in the
  engine's hard state (``save_hard_state``: fsync + rename + directory fsync),
  whatever ``sync`` is.  ``FileJournal`` renames a temporary file without any
  fsync.
* ``setRaftCommitIndex``: kept in memory and saved in the hard state by
  ``onOneSecondTimer`` / ``flush`` / ``_destroy`` / the next ``setCurrentTerm``,
  like ``FileJournal`` does.  The saved value is clamped to the last log index
  (the engine refuses to open a directory whose hard state claims entries it
  does not have), and the log is flushed before it is saved.  A journal that
  never saved one returns 1, like PySyncObj's journals.
* Node ids: ``VotedFor.voted_for_id`` is a u64.  An id of the form
  ``"a.b.c.d:port"`` (a canonical IPv4 address and a port -- what TCPNode ids
  look like) is encoded reversibly in it: ``1 << 56 | ipv4 << 16 | port``.
  Any other (picklable) id is stored in the engine's key/value store under
  ``b"segwal.pysyncobj.node." + code`` (pickled), with ``code = 2 << 56 |``
  56 bits of its xxh64; the mapping is written durably before the hard state
  that refers to it and written again after a ``clear()`` (whose reset empties
  the key/value store).  If a crash in that window ever loses the mapping,
  ``getVotedForNodeId()`` returns a placeholder string rather than ``None``:
  SyncObj only tests the vote for ``is not None``, so the vote is never lost.

Durability (``sync=``): ``"always"`` (default) -- every ``add`` /
``deleteEntriesFrom`` / ``deleteEntriesTo`` / ``clear`` is on stable storage
when it returns, which is what Raft requires before a node acknowledges an
entry (one fdatasync per entry, since SyncObj adds entries one at a time).
``"flush"`` -- writes reach the OS at once (they survive a killed process, the
guarantee ``FileJournal`` gives as SyncObj uses it) and are fsynced by
``flush()`` and by the one-second timer.

Threading: SyncObj calls the journal from its tick thread only; ``len()`` and
reads from other threads are safe (the engine allows readers next to the
writer).
"""

from __future__ import annotations

import ipaddress
import os
import pickle
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

import xxhash

from segwal.engine import (
    DEFAULT_SEGMENT_SIZE,
    Entry,
    HardState,
    LogId,
    VotedFor,
    WalEngine,
)

__all__ = [
    "SegwalJournal",
    "SegwalJournalFile",
    "decode_node_id",
    "encode_node_id",
    "install",
    "segwal_journal",
]

_TAG_SHIFT = 56
_TAG_IPV4 = 1
_TAG_KV = 2
_LOW56 = (1 << _TAG_SHIFT) - 1
_NODE_KEY = b"segwal.pysyncobj.node."
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})")


# --------------------------------------------------------------------- node ids


def encode_node_id(node_id: Any) -> tuple[int, bytes | None]:
    """``(code, blob)``: the u64 stored in ``VotedFor.voted_for_id`` and, when the
    id is not a canonical ``"ipv4:port"`` string, the pickled id to keep in the
    key/value store under ``_NODE_KEY + code`` (``None`` otherwise).  Pure."""
    if type(node_id) is str:
        m = _IPV4_PORT.fullmatch(node_id)
        if m is not None:
            host, port_s = m.groups()
            try:
                addr = ipaddress.IPv4Address(host)
            except ValueError:
                addr = None
            port = int(port_s)
            if addr is not None and str(addr) == host and str(port) == port_s and port <= 0xFFFF:
                return (_TAG_IPV4 << _TAG_SHIFT) | (int(addr) << 16) | port, None
    blob = pickle.dumps(node_id, protocol=2)
    return (_TAG_KV << _TAG_SHIFT) | (xxhash.xxh64_intdigest(blob) & _LOW56), blob


def decode_node_id(code: int, blob: bytes | None) -> Any:
    """Inverse of :func:`encode_node_id`.  ``blob`` is the stored mapping (only
    needed for non-IPv4 ids); a missing mapping gives a non-``None`` placeholder."""
    tag = code >> _TAG_SHIFT
    if tag == _TAG_IPV4:
        return f"{ipaddress.IPv4Address((code >> 16) & 0xFFFFFFFF)}:{code & 0xFFFF}"
    if blob is not None:
        return pickle.loads(blob)
    return f"<segwal: unknown node id {code:#018x}>"


# ----------------------------------------------------------------------- journal


class SegwalJournal:
    """PySyncObj's journal interface on a segwal :class:`WalEngine` directory.

    Args:
        path: the engine directory (created if missing).
        segment_size: segment size of the engine (log compaction deletes whole
            segments, so smaller segments free space sooner).
        sync: ``"always"`` or ``"flush"`` (see the module documentation).
        engine: an already open engine to use instead of opening ``path``
            (the journal then owns it and closes it in ``_destroy``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync: Literal["always", "flush"] = "always",
        engine: WalEngine | None = None,
    ) -> None:
        if engine is None:
            if path is None:
                raise TypeError("SegwalJournal needs a path or an engine")
            engine = WalEngine(path, segment_size=segment_size, sync=sync)
        self._e = engine
        self._lock = threading.RLock()
        hs = engine.load_hard_state()
        self._term = hs.current_term if hs is not None else 0
        self._voted: Any = None
        self._voted_code: int | None = None
        if hs is not None and hs.voted_for is not None:
            self._voted_code = hs.voted_for.voted_for_id
            blob = engine.get(_NODE_KEY + self._voted_code.to_bytes(8, "big"))
            self._voted = decode_node_id(self._voted_code, blob)
        self._commit = hs.commit_index if hs is not None and hs.commit_index >= 1 else 1
        self._saved: HardState | None = hs
        self._meta_dirty = False
        self._first_cache: tuple[bytes, int, int] | None = None
        self._last_cache: tuple[bytes, int, int] | None = None

    # ------------------------------------------------------------- helpers

    @property
    def engine(self) -> WalEngine:
        """The underlying engine (for inspection; do not write to it directly)."""
        return self._e

    def _item(self, index: int) -> tuple[bytes, int, int]:
        e = self._e.entry(index)
        if e is None:  # pragma: no cover - positions are checked against first/last
            raise IndexError(f"journal entry {index} is missing")
        return (e.payload, e.index, e.term)

    def _invalidate(self) -> None:
        self._first_cache = None
        self._last_cache = None

    # ------------------------------------------------------ journal interface

    def add(self, command: bytes | str, idx: int, term: int) -> None:
        """Append ``(command, idx, term)``; ``idx`` must follow the last entry
        (any ``idx`` on an empty journal)."""
        payload = command if isinstance(command, bytes) else command.encode("utf-8")
        if type(payload) is not bytes:
            payload = bytes(payload)
        e = self._e
        with self._lock:
            first, last = e.first_index(), e.last_index()
            if first > last:  # empty journal: any idx, like PySyncObj's journals
                boundary = e.purge_boundary()
                if boundary is not None and (idx != last + 1 or term < boundary.term):
                    self._reset()
            elif idx != last + 1:
                raise ValueError(f"add({idx}): the next journal index is {last + 1}")
            e.persist_entries([Entry(idx, term, payload)])
            item = (payload, idx, term)
            self._last_cache = item
            if first > last:
                self._first_cache = item

    def clear(self) -> None:
        """Remove every entry (the engine's ``reset``; the hard state is kept)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._invalidate()
        self._e.reset()
        # reset() empties the key/value store: write back the current vote's name.
        if self._voted is not None and self._voted_code is not None:
            code, blob = encode_node_id(self._voted)
            if blob is not None and code == self._voted_code:
                self._e.insert(_NODE_KEY + code.to_bytes(8, "big"), blob)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Remove the entries at positions ``entryFrom`` and after (``del journal[entryFrom:]``)."""
        with self._lock:
            n = len(self)
            start = slice(entryFrom, None).indices(n)[0]
            if start >= n:
                return
            index = self._e.first_index() + start
            saved = self._saved
            if saved is not None and saved.commit_index >= index:
                # Never leave a saved commit index above the log (the engine would refuse to open).
                self._save_meta(commit_override=index - 1)
            self._invalidate()
            self._e.truncate(index)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Remove the entries before position ``entryTo`` (``journal = journal[entryTo:]``):
        log compaction, done with ``purge_logs`` (whole segment files are unlinked)."""
        with self._lock:
            n = len(self)
            stop = slice(None, entryTo).indices(n)[1]
            if stop <= 0:
                return
            index = self._e.first_index() + stop - 1
            term = self._e.term_of(index)
            assert term is not None
            self._invalidate()
            self._e.purge_logs(LogId(term, index))

    def __getitem__(self, item: int | slice) -> Any:
        e = self._e
        first, last = e.first_index(), e.last_index()
        n = last - first + 1 if last >= first else 0
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step == 1:
                if start >= stop:
                    return []
                return [(x.payload, x.index, x.term) for x in e.get_entries_range(first + start, first + stop - 1)]
            return [self._item(first + i) for i in range(start, stop, step)]
        i = item.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("journal index out of range")
        if i == n - 1:
            c = self._last_cache
            if c is None or c[1] != last:
                c = self._last_cache = self._item(last)
            return c
        if i == 0:
            c = self._first_cache
            if c is None or c[1] != first:
                c = self._first_cache = self._item(first)
            return c
        return self._item(first + i)

    def __len__(self) -> int:
        e = self._e
        first, last = e.first_index(), e.last_index()
        return last - first + 1 if last >= first else 0

    def __iter__(self) -> Any:
        # Without this, iteration would go through __getitem__ until IndexError.
        e = self._e
        step = 4096
        i, last = e.first_index(), e.last_index()
        while i <= last:
            for x in e.get_entries_range(i, min(i + step - 1, last)):
                yield (x.payload, x.index, x.term)
            i += step

    def _destroy(self) -> None:
        """Save the pending commit index and close the engine (SyncObj calls it on destroy)."""
        with self._lock:
            try:
                if self._meta_dirty:
                    self._save_meta()
            finally:
                self._e.close()

    def flush(self) -> None:
        """Make everything durable: the log (fdatasync) and a pending commit index."""
        with self._lock:
            self._e.flush()
            if self._meta_dirty:
                self._save_meta()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remember the commit index; saved on the one-second timer, flush and close
        (as FileJournal does).  O(1)."""
        self._commit = raftCommitIndex
        self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        """The commit index last set (or loaded at open).  O(1)."""
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Durably save the term and the vote before returning (Raft requires it
        before any message reflecting them is sent)."""
        with self._lock:
            code: int | None = None
            if votedForNodeId is not None:
                code, blob = encode_node_id(votedForNodeId)
                if blob is not None:
                    key = _NODE_KEY + code.to_bytes(8, "big")
                    old = self._e.get(key)
                    if old is None:
                        self._e.insert(key, blob)
                        if not self._e.is_write_durable():
                            self._e.flush()
                    elif old != blob:  # pragma: no cover - a 56-bit hash collision
                        raise ValueError(f"node id {votedForNodeId!r} collides with {pickle.loads(old)!r}")
            self._term = term
            self._voted = votedForNodeId
            self._voted_code = code
            self._save_meta()

    def getCurrentTerm(self) -> int:
        """The current term (from the engine's hard state).  O(1)."""
        return self._term

    def getVotedForNodeId(self) -> Any:
        """The node voted for in the current term, or ``None``.  O(1)."""
        return self._voted

    def onOneSecondTimer(self) -> None:
        """Save a changed commit index (after making the log durable in ``"flush"`` mode)."""
        if self._meta_dirty:
            with self._lock:
                self._save_meta()

    # -------------------------------------------------------------- hard state

    def _save_meta(self, commit_override: int | None = None) -> None:
        e = self._e
        if not e.is_write_durable():
            e.flush()  # the saved commit index must never be ahead of the durable log
        commit = self._commit if commit_override is None else commit_override
        commit = max(0, min(commit, e.last_index()))
        vote = VotedFor(self._voted_code, self._term) if self._voted_code is not None else None
        hs = HardState(self._term, vote, commit)
        if hs != self._saved:
            e.save_hard_state(hs)
            self._saved = hs
        if commit_override is None:
            self._meta_dirty = False


# ------------------------------------------------------------ SyncObj hook-up


@dataclass(frozen=True)
class SegwalJournalFile:
    """What to put in ``SyncObjConf.journalFile`` to get a :class:`SegwalJournal`
    (build it with :func:`segwal_journal`).  The journal is opened when SyncObj
    is constructed, so one configuration can serve successive SyncObj instances."""

    path: str
    segment_size: int = DEFAULT_SEGMENT_SIZE
    sync: Literal["always", "flush"] = "always"

    def open(self) -> SegwalJournal:
        """Open the journal this marker names (called by the patched createJournal)."""
        return SegwalJournal(self.path, segment_size=self.segment_size, sync=self.sync)


def segwal_journal(
    path: str | os.PathLike[str],
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    sync: Literal["always", "flush"] = "always",
) -> SegwalJournalFile:
    """The value for ``SyncObjConf(journalFile=...)`` that makes a SyncObj keep its
    Raft log in a segwal directory at ``path``.  Installs the hook (:func:`install`)."""
    install()
    return SegwalJournalFile(os.fspath(path), segment_size, sync)


_install_lock = threading.Lock()


def install() -> None:
    """Wrap ``pysyncobj.syncobj.createJournal`` so that a :class:`SegwalJournalFile`
    journalFile opens a :class:`SegwalJournal`; everything else goes to the
    original.  Idempotent; called on import of this module."""
    import pysyncobj.syncobj as so

    with _install_lock:
        current = so.createJournal
        if getattr(current, "_segwal_hook", False):
            return
        original = current

        def createJournal(journalFile: Any = None) -> Any:
            if isinstance(journalFile, SegwalJournalFile):
                return journalFile.open()
            return original(journalFile)

        createJournal._segwal_hook = True  # type: ignore[attr-defined]
        createJournal._segwal_original = original  # type: ignore[attr-defined]
        so.createJournal = createJournal


install()
