"""Readers under fire: reader threads against one writer that appends, overwrites, truncates,
purges, resets, compacts the key/value store and installs snapshots.

The engine is healthy, so readers must get no exception at all, and every
value they return must be one the model allows at that moment: a value that
was live at some instant between the read's start and its end.  The writer
records, for every log entry and key/value pair it ever made visible, the
interval in which it may have been visible (from the start of the call that
wrote it to the end of the call that replaced or removed it); each reader
records its own call's interval.  Payloads name their index, term and version,
so an entry is recognised wherever it is read.  250 writer calls per run; ``--long``: 5,000.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from segwal.engine import Entry, LogId, WalEngine

INF = float("inf")
_now = time.monotonic


@dataclass
class History:
    """When each value may have been visible: ``(start, end)`` intervals, ``end`` = INF while live."""

    entries: dict[tuple[int, bytes], list[list[float]]] = field(default_factory=dict)
    values: dict[tuple[bytes, bytes | None], list[list[float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allowed(self, table: dict, key: object, t0: float, t1: float) -> bool:  # type: ignore[type-arg]
        with self.lock:
            return any(s <= t1 and e >= t0 for s, e in table.get(key, ()))


class Writer:
    """A single writer keeping a model of the log and the key/value data, and the history."""

    def __init__(self, eng: WalEngine, hist: History, rng: random.Random, snap: Path) -> None:
        self.eng, self.hist, self.rng, self.snap = eng, hist, rng, snap
        self.log: dict[int, bytes] = {}     # index -> payload (the model)
        self.kv: dict[bytes, bytes] = {}
        self.first, self.last, self.term, self.version = 1, 0, 1, 0
        self.keys = [b"key%02d" % i for i in range(24)]
        self.snap_kv: dict[bytes, bytes] | None = None
        self.snap_applied: LogId | None = None
        self.applied: LogId | None = None
        t = _now()
        for k in self.keys:
            hist.values[(k, None)] = [[t, INF]]

    # -- bookkeeping: new values are recorded as live from before the call starts (a reader
    # may see them before it returns), old ones end when it has returned
    def _log_added(self, added: dict[int, bytes]) -> float:
        t0 = _now()
        with self.hist.lock:
            for i, p in added.items():
                self.hist.entries.setdefault((i, p), []).append([t0, INF])
        return t0

    def _log_change(self, t0: float, t1: float, removed: dict[int, bytes], added: dict[int, bytes]) -> None:
        with self.hist.lock:
            for i, p in removed.items():
                self.hist.entries[(i, p)][-1][1] = t1

    def _kv_added(self, new: dict[bytes, bytes]) -> float:
        t0 = _now()
        with self.hist.lock:
            for k in self.keys:
                old, cur = self.kv.get(k), new.get(k)
                if old != cur:
                    self.hist.values.setdefault((k, cur), []).append([t0, INF])
        return t0

    def _kv_change(self, t0: float, t1: float, new: dict[bytes, bytes]) -> None:
        with self.hist.lock:
            for k in self.keys:
                old, cur = self.kv.get(k), new.get(k)
                if old != cur:
                    self.hist.values[(k, old)][-1][1] = t1
        self.kv = new

    def payload(self, i: int) -> bytes:
        self.version += 1
        return b"%d:%d:%d" % (i, self.term, self.version)

    # -- operations
    def append(self) -> None:
        start = self.last + 1
        new = {i: self.payload(i) for i in range(start, start + self.rng.randint(1, 12))}
        t0 = self._log_added(new)
        self.eng.persist_entries([Entry(i, self.term, p) for i, p in new.items()])
        self._log_change(t0, _now(), {}, new)
        self.log.update(new)
        self.last = max(new)

    def overwrite(self) -> None:
        if self.last < self.first:
            return self.append()
        k = self.rng.randint(self.first, self.last)
        self.term += 1
        new = {i: self.payload(i) for i in range(k, k + self.rng.randint(1, 6))}
        removed = {i: self.log.pop(i) for i in range(k, self.last + 1)}
        t0 = self._log_added(new)
        self.eng.persist_entries([Entry(i, self.term, p) for i, p in new.items()])
        self._log_change(t0, _now(), removed, new)
        self.log.update(new)
        self.last = max(new)

    def truncate(self) -> None:
        if self.last < self.first:
            return
        k = self.rng.randint(self.first, self.last)
        removed = {i: self.log.pop(i) for i in range(k, self.last + 1)}
        t0 = _now()
        self.eng.truncate(k)
        self._log_change(t0, _now(), removed, {})
        self.last = k - 1

    def purge(self) -> None:
        if self.last - self.first < 20:
            return
        k = self.rng.randint(self.first, self.last - 10)
        term = int(self.log[k].split(b":")[1])
        t0 = _now()
        self.eng.purge_logs(LogId(term, k))
        t1 = _now()
        # Whole segments go: entries at or below k may stay readable, so they end only when
        # a later reset removes them; first_index() says what is guaranteed.
        self.first = max(self.first, self.eng.first_index())
        del t0, t1

    def reset(self) -> None:
        removed = dict(self.log)
        t0 = self._kv_added({})
        self.eng.reset()
        t1 = _now()
        self._log_change(t0, t1, removed, {})
        self.log.clear()
        self.first, self.last = 1, 0
        self._kv_change(t0, t1, {})
        self.applied = None

    def apply(self) -> None:
        changes: list[tuple[bytes, bytes | None]] = []
        new = dict(self.kv)
        for k in self.rng.sample(self.keys, self.rng.randint(1, 6)):
            if self.rng.random() < 0.2:
                changes.append((k, None))
                new.pop(k, None)
            else:
                self.version += 1
                v = b"%s=%d" % (k, self.version) * self.rng.randint(1, 40)
                changes.append((k, v))
                new[k] = v
        applied = LogId(self.term, max(self.last, 1))
        t0 = self._kv_added(new)
        self.eng.apply(changes, applied=applied)
        self._kv_change(t0, _now(), new)
        self.applied = applied

    def compact(self) -> None:
        self.eng._kv.compact()  # type: ignore[union-attr]  # the store's own compaction

    def snapshot(self) -> None:
        if self.applied is None:
            return
        self.eng.snapshot(str(self.snap))
        self.snap_kv, self.snap_applied = dict(self.kv), self.applied

    def install(self) -> None:
        if self.snap_kv is None:
            return self.snapshot()
        removed = dict(self.log)
        t0 = self._kv_added(dict(self.snap_kv))
        self.eng.install_snapshot(str(self.snap))  # the log is emptied, the boundary is the snapshot's
        t1 = _now()
        self._log_change(t0, t1, removed, {})
        self._kv_change(t0, t1, dict(self.snap_kv))
        self.log.clear()
        assert self.snap_applied is not None
        self.first, self.last = self.snap_applied.index + 1, self.snap_applied.index
        self.applied = self.snap_applied

    OPS = (("append", 30), ("overwrite", 6), ("truncate", 4), ("purge", 4), ("reset", 1), ("apply", 20),
           ("compact", 2), ("snapshot", 2), ("install", 2))

    def run(self, stop: threading.Event, ops: int) -> int:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for _ in range(ops):
            getattr(self, self.rng.choices(names, weights)[0])()
        stop.set()
        return ops


def reader(eng: WalEngine, hist: History, keys: list[bytes], seed: int, stop: threading.Event,
           errors: list[str], counts: list[int]) -> None:
    rng = random.Random(seed)
    n = 0
    try:
        while not stop.is_set():
            op = rng.random()
            t0 = _now()
            if op < 0.35:
                i = rng.randint(1, max(eng.last_index(), 1) + 2)
                t0 = _now()
                e = eng.entry(i)
                t1 = _now()
                if e is not None and (e.index != i or not hist.allowed(hist.entries, (i, e.payload), t0, t1)):
                    errors.append(f"entry({i}) returned {e} that was not live in [{t0}, {t1}]")
            elif op < 0.6:
                lo = rng.randint(1, max(eng.last_index(), 1))
                t0 = _now()
                got = eng.get_entries_range(lo, lo + rng.randint(0, 40))
                t1 = _now()
                if [e.index for e in got] != list(range(lo, lo + len(got)))[: len(got)] and got:
                    if [e.index for e in got] != list(range(got[0].index, got[0].index + len(got))):
                        errors.append(f"range from {lo} not contiguous: {[e.index for e in got]}")
                for e in got:
                    if not hist.allowed(hist.entries, (e.index, e.payload), t0, t1):
                        errors.append(f"range returned {e} that was not live in [{t0}, {t1}]")
                if any(a.term > b.term for a, b in zip(got, got[1:])):
                    errors.append(f"range terms decrease: {[e.term for e in got]}")
            elif op < 0.9:
                k = rng.choice(keys)
                v = eng.get(k)
                t1 = _now()
                if not hist.allowed(hist.values, (k, v), t0, t1):
                    errors.append(f"get({k!r}) returned {v!r:.40} that was not live in [{t0}, {t1}]")
            else:
                first, last = eng.first_index(), eng.last_index()
                if first > last + 1:
                    errors.append(f"first_index {first} > last_index {last} + 1")
            n += 1
            if len(errors) > 5:
                return
    except BaseException as e:  # the engine is healthy: no exception at all
        errors.append(f"reader raised {type(e).__name__}: {e}")
    finally:
        counts.append(n)


@pytest.mark.parametrize("seed", [1, 2])
def test_readers_see_only_values_the_model_allows(tmp_path: Path, request: pytest.FixtureRequest, seed: int) -> None:
    ops = 5000 if request.config.getoption("--long") else 250
    hist = History()
    with WalEngine(str(tmp_path / "e"), segment_size=2048) as eng:
        w = Writer(eng, hist, random.Random(seed), tmp_path / "kv.snap")
        stop = threading.Event()
        errors: list[str] = []
        counts: list[int] = []
        threads = [threading.Thread(target=reader, args=(eng, hist, w.keys, seed * 10 + r, stop, errors, counts))
                   for r in range(3)]
        for t in threads:
            t.start()
        try:
            w.run(stop, ops)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a reader hung"
        assert not errors, "\n".join(errors[:6])
        assert sum(counts) > 1000, counts
        # and the final state is the model's
        assert eng.get_entries_range(w.first, w.last) == [Entry(i, int(w.log[i].split(b":")[1]), w.log[i])
                                                         for i in range(w.first, w.last + 1)]
        assert {k: eng.get(k) for k in w.keys} == {k: w.kv.get(k) for k in w.keys}


def test_a_range_read_never_mixes_two_histories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A range read made while an overwrite below the tail's base is switching
    segments (the manifest committed, old segments cut and removed, the new view
    not yet published) returns the old log or the new one: never a mix, never an
    error.  Without the read-again rule it raised CorruptionError here."""
    from segwal.engine import writer

    old = [Entry(i, 1, b"old %d" % i * 10) for i in range(1, 41)]
    new = [Entry(i, 2, b"new %d" % i) for i in range(6, 8)]
    got: list[object] = []
    with WalEngine(str(tmp_path / "e"), segment_size=1024) as eng:
        for i in range(0, 40, 4):
            eng.persist_entries(old[i : i + 4])
        assert len(eng.segments()) >= 3
        real = writer.LogWriter._delete_files

        def read() -> None:
            try:
                got.append(eng.get_entries_range(1, 40))
            except Exception as e:  # noqa: BLE001 - the engine is healthy: any error fails the test
                got.append(e)

        def delete_files(self: writer.LogWriter, segs: list[object]) -> None:
            real(self, segs)  # type: ignore[arg-type]
            t = threading.Thread(target=read)
            t.start()
            t.join(0.3)  # the reader runs meanwhile (and waits for the change to be published)

        monkeypatch.setattr(writer.LogWriter, "_delete_files", delete_files)
        eng.persist_entries(new)
        monkeypatch.undo()
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
    assert got, "the reader never finished"
    assert got[0] in (old, old[:5] + new), got[0]
