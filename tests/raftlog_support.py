"""Shared helpers of the ``BufferedRaftLog`` tests: an engine wrapper that gates
and records persist and flush calls, entry shorthand and the log's contents."""

from __future__ import annotations

import threading
from typing import Any

from segwal.engine import Entry
from segwal.raft.log import BufferedRaftLog

WAIT = 30.0  # generous bound on event waits; only hit when a test is failing


class GatedEngine:
    """Wraps an engine; records persist/flush calls; can block them on events.

    Attributes:
        persisted: the index lists of every ``persist_entries`` call, in order.
        synced: the highest index known to be durable in the inner engine
            (advanced after a successful flush, or a persist on a sync engine).
        flush_gate / persist_gate: when set to an unset Event, the call waits
            for it (after setting ``flush_entered`` / ``persist_entered``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.persisted: list[list[int]] = []
        self.flushes = 0
        self.synced = 0
        self._written = 0  # last index handed to the inner engine
        self.flush_gate: threading.Event | None = None
        self.persist_gate: threading.Event | None = None
        self.flush_entered = threading.Event()
        self.persist_entered = threading.Event()
        self.flushed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def persist_entries(self, entries: Any) -> None:
        batch = list(entries)
        self.persist_entered.set()
        if self.persist_gate is not None:
            assert self.persist_gate.wait(WAIT)
        self.inner.persist_entries(batch)
        self.persisted.append([e.index for e in batch])
        if batch:
            self._written = batch[-1].index
            if self.inner.is_write_durable():
                self.synced = self._written

    def flush(self) -> None:
        self.flush_entered.set()
        if self.flush_gate is not None:
            assert self.flush_gate.wait(WAIT)
        self.inner.flush()
        self.flushes += 1
        self.synced = self._written
        self.flushed.set()




def E(index: int, term: int, payload: bytes | None = None) -> Entry:
    return Entry(index, term, payload if payload is not None else b"p%d.%d" % (index, term))



def contents(log: BufferedRaftLog) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in log.get_entries_range(0, log.last_index())]
