"""The PySyncObj peers: its ``FileJournal`` flushed per batch, and as SyncObj itself uses it (never flushed)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from .base import BasePeer, Entry, new_entry


class PysyncobjPeer(BasePeer):
    """PySyncObj's ``FileJournal`` with ``flush()`` (msync of the mapping) per batch."""

    name = "pysyncobj"
    label = "pysyncobj FileJournal + flush()/batch"
    caps = frozenset({"append", "read", "reopen", "delete"})
    module = "pysyncobj"
    flush_each_batch: ClassVar[bool] = True

    def __init__(self) -> None:
        self.j: Any = None

    def open(self, path: str) -> None:
        from pysyncobj.journal import FileJournal

        self.j = FileJournal(os.path.join(path, "journal.bin"))

    def close(self) -> None:
        if self.j is not None:
            self.j._destroy()  # flush + close; despite the name it deletes nothing
            self.j = None

    def append(self, prepared: list[Entry]) -> None:
        add = self.j.add
        for e in prepared:
            add(e.payload, e.index, e.term)
        if self.flush_each_batch:
            self.j.flush()

    def _first(self) -> int:
        return self.j[0][1] if len(self.j) else 0

    def entry(self, index: int) -> Entry | None:
        pos = index - self._first()
        if pos < 0 or pos >= len(self.j) or not len(self.j):
            return None
        cmd, idx, term = self.j[pos]
        return new_entry(idx, term, cmd)

    def range(self, start: int, end: int) -> list[Entry]:
        first = self._first()
        a = max(start - first, 0)
        b = min(end - first + 1, len(self.j))
        new = tuple.__new__
        out: list[Entry] = []
        for pos in range(a, b):
            cmd, idx, term = self.j[pos]
            out.append(new(Entry, (idx, term, cmd)))
        return out

    def bounds(self) -> tuple[int, int]:
        if not len(self.j):
            return (0, 0)
        return self.j[0][1], self.j[len(self.j) - 1][1]

    def purge(self, upto: int) -> None:
        self.j.deleteEntriesTo(upto - self._first() + 1)
        self.j.flush()

    def truncate(self, from_index: int) -> None:
        self.j.deleteEntriesFrom(from_index - self._first())
        self.j.flush()


class PysyncobjNoSyncPeer(PysyncobjPeer):
    """``FileJournal`` as SyncObj itself uses it: never flushed, so not durable."""

    name = "pysyncobj_nosync"
    label = "pysyncobj FileJournal, no sync (as SyncObj uses it; NOT durable)"
    kind = "ceiling"
    durable = False
    caps = frozenset({"append"})
    flush_each_batch = False
