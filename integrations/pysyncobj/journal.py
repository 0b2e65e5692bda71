"""SegwalJournal: PySyncObj's journal interface on a segwal storage engine, the recent tail in memory.

``add`` only appends to an in-memory list; the entries reach the engine, in one
``persist_entries`` call per batch, when :meth:`SegwalJournal.sync` runs.  The
hooks (:mod:`.hooks`) call it where Raft needs it -- before a follower's
acknowledgement, before the leader counts itself toward a commit -- and the
journal calls it itself before a term or vote is saved, before log compaction,
and on flush and close.  Reads index the in-memory tail (like ``FileJournal``)
and go to the engine only for older entries.  The mapping of positions, the
differences from PySyncObj's journals and the durability of each mode are
documented in the package docstring (``segwal.integrations.pysyncobj``).
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any, Literal

from segwal.engine import DEFAULT_SEGMENT_SIZE, Entry, HardState, LogId, VotedFor, WalEngine
from segwal.fs import FileSystem, OsFileSystem
from segwal.types import StorageEngine

from .nodeids import decode_node_id, encode_node_id, node_key

__all__ = ["DEFAULT_CACHE_ENTRIES", "SegwalJournal"]

Item = tuple[bytes, int, int]
"""One journal item as PySyncObj sees it: ``(command, idx, term)``."""

DEFAULT_CACHE_ENTRIES = 65536
"""Entries kept in memory (the newest); more are dropped from memory (never
from the log) once twice as many have accumulated.  SyncObj's default
compaction threshold is 5,000 entries, so normally every entry since the last
compaction is read from memory."""


class SegwalJournal:
    """PySyncObj's journal interface on a segwal :class:`~segwal.types.StorageEngine`.

    Args:
        path: the engine directory of a :class:`~segwal.engine.WalEngine` (created if missing).
        segment_size: segment size of that engine (log compaction deletes whole
            segments, so smaller segments free space sooner).
        sync: ``"always"`` (durable: :meth:`sync` returns once the entries are on
            stable storage) or ``"flush"`` (:meth:`sync` returns once they are
            written to the operating system; fsynced by :meth:`flush` and the
            one-second timer).
        engine: an open engine to use instead of opening ``path`` (the journal
            then owns it and closes it in ``_destroy``).  Only the
            ``StorageEngine`` protocol is used.
        fs: the file system of the engine opened at ``path`` and of the dump
            file (default: the real one).
        dump_file: PySyncObj's ``fullDumpFile``; in ``"always"`` mode it and its
            directory are fsynced before a purge and before a ``clear()``.
        cache_entries: how many of the newest entries to keep in memory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync: Literal["always", "flush"] = "always",
        engine: StorageEngine | None = None,
        fs: FileSystem | None = None,
        dump_file: str | None = None,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        if sync not in ("always", "flush"):
            raise ValueError(f"sync must be 'always' or 'flush', got {sync!r}")
        if type(cache_entries) is not int or cache_entries < 1:
            raise ValueError(f"cache_entries must be an int >= 1, got {cache_entries!r}")
        if engine is None:
            if path is None:
                raise TypeError("SegwalJournal needs a path or an engine")
            engine = WalEngine(path, segment_size=segment_size, sync=sync, fs=fs)
        self._e: StorageEngine = engine
        self.durable = sync == "always"
        self._engine_durable = engine.is_write_durable()
        self._fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.dump_file = dump_file
        self._cap = cache_entries
        self._lock = threading.RLock()
        hs = engine.load_hard_state()
        self._term = hs.current_term if hs is not None else 0
        self._voted: Any = None
        self._voted_code: int | None = None
        if hs is not None and hs.voted_for is not None:
            self._voted_code = hs.voted_for.voted_for_id
            self._voted = decode_node_id(self._voted_code, engine.get(node_key(self._voted_code)))
        self._commit = hs.commit_index if hs is not None and hs.commit_index >= 1 else 1
        self._saved: HardState | None = hs
        self._meta_dirty = False
        self._load_tail()

    def _load_tail(self) -> None:
        """Read the engine's bounds and its newest entries into memory."""
        e = self._e
        first, last = e.first_index(), e.last_index()
        if last < first:
            last = first - 1
        start = max(first, last - self._cap + 1)
        mem = [(x.payload, x.index, x.term) for x in e.get_entries_range(start, last)] if last >= start else []
        # Invariants: the log is _first.._last (empty when _last < _first); memory
        # holds _tail[0].._last; entries from _pending on are not in the engine yet.
        self._tail: tuple[int, list[Item]] = (start, mem)
        self._first = first
        self._last = last
        self._pending = last + 1

    # ------------------------------------------------------------- helpers

    @property
    def engine(self) -> StorageEngine:
        """The underlying engine (for inspection; do not write to it directly).  O(1)."""
        return self._e

    def pending(self) -> int:
        """How many appended entries are not yet handed to the engine.  O(1)."""
        return max(0, self._last - self._pending + 1)

    def _read(self, index: int) -> Item:
        e = self._e.entry(index)
        if e is None:  # pragma: no cover - positions are checked against first/last
            raise IndexError(f"journal entry {index} is missing")
        return (e.payload, e.index, e.term)

    # ----------------------------------------------------------- durability

    def sync(self) -> None:
        """Hand every buffered entry to the engine in one ``persist_entries`` call.

        Durability: ``"always"`` -- on stable storage on return (one fdatasync for
        the whole batch); ``"flush"`` -- written to the operating system on
        return (survives a killed process, not a power cut).  Complexity:
        O(entries written); O(1) when nothing is buffered.
        """
        if self._pending > self._last:
            return
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        p, last = self._pending, self._last
        if p > last:
            return
        start, mem = self._tail
        batch = [Entry(i, t, c) for c, i, t in mem[p - start : last - start + 1]]
        self._e.persist_entries(batch)
        if self.durable and not self._engine_durable:
            self._e.flush()
        self._pending = last + 1

    def _sync_dump(self) -> None:
        """Fsync the dump file and its directory (durable mode), so that a purge or
        a snapshot install never leaves a state that only an unsynced dump holds."""
        path = self.dump_file
        if path is None:
            return
        fs = self._fs
        if not fs.exists(path):
            return
        f = fs.open(path)
        try:
            f.fsync()
        finally:
            f.close()
        fs.fsync_dir(os.path.dirname(os.path.abspath(path)))

    # ------------------------------------------------------ journal interface

    def add(self, command: bytes | str, idx: int, term: int) -> None:
        """Append ``(command, idx, term)`` in memory; ``idx`` must follow the last
        entry (any ``idx`` on an empty journal).  Durable after the next :meth:`sync`.
        O(1) (amortised; every ``cache_entries`` adds, O(cache_entries) to drop old ones)."""
        if type(command) is not bytes:
            command = command.encode("utf-8") if isinstance(command, str) else bytes(command)
        last = self._last
        if idx != last + 1 or last < self._first:
            self._add_first_or_fail(idx, term)
        mem = self._tail[1]
        mem.append((command, idx, term))
        self._last = idx
        if len(mem) > 2 * self._cap:
            self._trim()

    def _add_first_or_fail(self, idx: int, term: int) -> None:
        if self._last >= self._first:
            raise ValueError(f"add({idx}): the next journal index is {self._last + 1}")
        with self._lock:  # empty journal: any idx, like PySyncObj's journals
            e = self._e
            boundary = e.purge_boundary()
            if boundary is not None and (idx != e.last_index() + 1 or term < boundary.term):
                self._reset()
            self._tail = (idx, [])
            self._first = idx
            self._last = idx - 1
            self._pending = idx

    def _trim(self) -> None:
        start, mem = self._tail
        cut = min(len(mem) - self._cap, self._pending - start)  # only entries the engine has
        if cut > 0:
            self._tail = (start + cut, mem[cut:])

    def clear(self) -> None:
        """Remove every entry (the engine's ``reset``; the hard state is kept).  In
        ``"always"`` mode the dump file is fsynced first: SyncObj clears its journal
        to install a snapshot.  Durable on return in ``"always"`` mode.  O(files)."""
        with self._lock:
            if self.durable:
                self._sync_dump()
            self._reset()

    def _reset(self) -> None:
        e = self._e
        e.reset()
        # reset() empties the key/value store: write back the current vote's name.
        if self._voted is not None and self._voted_code is not None:
            code, blob = encode_node_id(self._voted)
            if blob is not None and code == self._voted_code:
                e.insert(node_key(code), blob)
        if self.durable and not self._engine_durable:
            e.flush()
        self._load_tail()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Remove the entries at positions ``entryFrom`` and after (``del journal[entryFrom:]``).
        Entries the engine holds are truncated there at once (durable in
        ``"always"`` mode).  O(removed entries in memory)."""
        with self._lock:
            n = len(self)
            start = slice(entryFrom, None).indices(n)[0]
            if start >= n:
                return
            index = self._first + start
            if index < self._pending:
                saved = self._saved
                if saved is not None and saved.commit_index >= index:
                    # Never leave a saved commit index above the log (the engine would refuse to open).
                    self._save_meta(commit_override=index - 1)
                self._e.truncate(index)
                if self.durable and not self._engine_durable:
                    self._e.flush()
                self._pending = index
            mstart, mem = self._tail
            if index >= mstart:
                del mem[index - mstart :]
            else:
                self._tail = (index, [])
            self._last = index - 1

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Remove the entries before position ``entryTo`` (``journal = journal[entryTo:]``):
        log compaction, done with ``purge_logs`` (whole segment files are
        unlinked).  In ``"always"`` mode the dump file and its directory are
        fsynced first.  O(removed segments + kept entries in memory)."""
        with self._lock:
            n = len(self)
            stop = slice(None, entryTo).indices(n)[1]
            if stop <= 0:
                return
            index = self._first + stop - 1
            if self.durable:
                self._sync_dump()
            self._sync_locked()
            term = self[stop - 1][2]
            self._e.purge_logs(LogId(term, index))
            mstart, mem = self._tail
            if index >= mstart:
                self._tail = (index + 1, mem[index + 1 - mstart :])
            self._first = index + 1

    def __getitem__(self, item: int | slice) -> Any:
        if type(item) is int:
            first, last = self._first, self._last
            i = last + 1 + item if item < 0 else first + item
            if first <= i <= last:
                start, mem = self._tail
                if i >= start:
                    return mem[i - start]
                return self._read(i)
            raise IndexError("journal index out of range")
        if isinstance(item, slice):
            return self._slice(item)
        return self[item.__index__()]

    def _slice(self, item: slice) -> list[Item]:
        first = self._first
        lo, hi, step = item.indices(len(self))
        if step != 1:
            return [self[i] for i in range(lo, hi, step)]
        if lo >= hi:
            return []
        i0, i1 = first + lo, first + hi  # indexes, i1 exclusive
        start, mem = self._tail
        if i0 >= start:
            return mem[i0 - start : i1 - start]
        older = [(x.payload, x.index, x.term) for x in self._e.get_entries_range(i0, min(i1, start) - 1)]
        return older + mem[: max(0, i1 - start)]

    def entries_from(self, index: int | None, max_bytes: int) -> list[Item]:
        """What SyncObj's ``__getEntries(index, None, max_bytes)`` returns -- the
        entries from log index ``index`` on, up to and including the one at which
        their commands reach ``max_bytes`` in total ([] below the first entry) --
        without first building the list to the end of the log.
        O(entries returned); reads older than the memory tail go to the engine in chunks."""
        first, last = self._first, self._last
        if index is None or index < first or index > last:
            return []
        out: list[Item] = []
        total = 0
        i = index
        while i <= last:
            start, mem = self._tail
            if i >= start:
                chunk: list[Item] = mem[i - start : i - start + 256]
            else:
                end = min(i + 255, start - 1, last)
                chunk = [(x.payload, x.index, x.term) for x in self._e.get_entries_range(i, end)]
            if not chunk:
                break
            for item in chunk:
                out.append(item)
                total += len(item[0])
                if total >= max_bytes:
                    return out
            i += len(chunk)
        return out

    def __len__(self) -> int:
        n = self._last - self._first + 1
        return n if n > 0 else 0

    def __iter__(self) -> Iterator[Item]:
        # Without this, iteration would go through __getitem__ until IndexError.
        i, last = self._first, self._last
        start = self._tail[0]
        while i < min(start, last + 1):
            end = min(i + 4095, start - 1, last)
            for x in self._e.get_entries_range(i, end):
                yield (x.payload, x.index, x.term)
            i = end + 1
        yield from self._tail[1][i - self._tail[0] :]

    def _destroy(self) -> None:
        """Write the buffered entries and the pending commit index, then close the
        engine (SyncObj calls it on destroy).  Durable on return in both modes."""
        with self._lock:
            try:
                self._sync_locked()
                if not self._engine_durable:
                    self._e.flush()
                if self._meta_dirty:
                    self._save_meta()
            finally:
                self._e.close()

    def flush(self) -> None:
        """Make everything durable: the buffered entries (fdatasync) and a pending
        commit index.  Durable on return.  O(buffered entries)."""
        with self._lock:
            self._sync_locked()
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
        """Write the buffered entries, then durably save the term and the vote
        before returning, in both modes (Raft requires it before any message
        reflecting them -- a granted vote, a request for votes -- is sent).
        Cost: one hard-state replace (two fsyncs) plus the log sync."""
        with self._lock:
            code: int | None = None
            if votedForNodeId is not None:
                code, blob = encode_node_id(votedForNodeId)
                if blob is not None:
                    key = node_key(code)
                    old = self._e.get(key)
                    if old is None:
                        self._e.insert(key, blob)
                        if not self._engine_durable:
                            self._e.flush()
                    elif old != blob:  # pragma: no cover - a 56-bit hash collision
                        raise ValueError(f"node id {votedForNodeId!r} collides with {pickle.loads(old)!r}")
            self._term = term
            self._voted = votedForNodeId
            self._voted_code = code
            self._save_meta(force=True)

    def getCurrentTerm(self) -> int:
        """The current term (from the engine's hard state).  O(1)."""
        return self._term

    def getVotedForNodeId(self) -> Any:
        """The node voted for in the current term, or ``None``.  O(1)."""
        return self._voted

    def onOneSecondTimer(self) -> None:
        """Once a second (SyncObj's timer): in ``"flush"`` mode make the log durable
        (one fdatasync); in both modes save a changed commit index."""
        if self.durable and not self._meta_dirty:
            return
        with self._lock:
            if not self.durable:
                self._sync_locked()
                self._e.flush()
            if self._meta_dirty:
                self._save_meta()

    # -------------------------------------------------------------- hard state

    def _save_meta(self, commit_override: int | None = None, force: bool = False) -> None:
        e = self._e
        self._sync_locked()
        if not self._engine_durable:
            e.flush()  # the saved commit index must never be ahead of the durable log
        commit = self._commit if commit_override is None else commit_override
        commit = max(0, min(commit, self._pending - 1))
        vote = VotedFor(self._voted_code, self._term) if self._voted_code is not None else None
        hs = HardState(self._term, vote, commit)
        if hs != self._saved or force:
            e.save_hard_state(hs)
            self._saved = hs
        if commit_override is None:
            self._meta_dirty = False
