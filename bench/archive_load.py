"""The measuring parts of ``segwal bench --archive``: a steady appender, archive pollers, lag from the two, CPU pairs.

* :func:`steady_appends` calls ``persist_entries`` on a fixed schedule and
  records, per call, the last index it made durable and the wall-clock time
  the call returned (``time.time()``, so it compares with timestamps other
  processes write).
* A poller thread asks "what is visible in the archive now?" every
  ``poll_s`` seconds and records each advance with the time it saw it:
  :class:`PositionPoller` for segwal (``read_archived_position``), and
  :class:`LitestreamPoller`, which lists Litestream's level-0 LTX objects and
  reads each new one's header timestamp (a commit that returned before that
  timestamp is in the object; see :mod:`.peers.litestream`).
* :func:`lags` turns both records into one lag per append call: the first
  time the poller saw the call's entries minus the time the call returned.
  The poll period is part of every lag (on average half of it).
* :func:`cpu_per_call` measures a writer's CPU per call with
  ``time.thread_time`` (the calling thread only), for the interleaved pairs.
"""

from __future__ import annotations

import bisect
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from segwal.types import Entry

__all__ = [
    "Commit",
    "LitestreamPoller",
    "PositionPoller",
    "cpu_per_call",
    "lags",
    "make_batches",
    "quantile",
    "steady_appends",
    "summary",
]


@dataclass(frozen=True)
class Commit:
    """One append call: the last index it made durable and when it returned (Unix seconds)."""

    index: int
    at: float


def make_batches(first: int, n: int, per_call: int, payload: int, rng: random.Random) -> list[list[Entry]]:
    """``n`` entries from ``first`` (term 1, ``payload`` random bytes each) in calls of ``per_call``.  O(n)."""
    data = rng.randbytes(payload * min(n, 4096) + payload)
    out: list[list[Entry]] = []
    for start in range(first, first + n, per_call):
        end = min(start + per_call, first + n)
        out.append([Entry(i, 1, data[(i % 4096) * payload : (i % 4096 + 1) * payload]) for i in range(start, end)])
    return out


def steady_appends(
    persist: Callable[[list[Entry]], object], batches: Sequence[list[Entry]], calls_per_s: float
) -> list[Commit]:
    """Call ``persist`` once per batch on a fixed schedule (``calls_per_s``; a late call does not make the next
    one early, the schedule is absolute); return when each returned.  Durability is ``persist``'s."""
    period = 1.0 / calls_per_s
    out: list[Commit] = []
    t0 = time.monotonic()
    for k, batch in enumerate(batches):
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        persist(batch)
        out.append(Commit(batch[-1].index, time.time()))
    return out


class _Poller:
    """A thread calling :meth:`probe` every ``poll_s`` s; ``seen`` is ``(time, visible index)`` per advance."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.seen: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archive-lag-poller", daemon=True)

    def probe(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        best = -1
        while not self._stop.is_set():
            t_next = time.monotonic() + self.poll_s
            try:
                pos = self.probe()
            except Exception as exc:  # noqa: BLE001 - a failed poll is recorded, the next one retries
                self.errors.append(repr(exc))
                pos = best
            self.polls += 1
            if pos > best:
                best = pos
                self.seen.append((time.time(), pos))
            self._stop.wait(max(0.0, t_next - time.monotonic()))

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def visible(self) -> int:
        """The highest index seen so far (-1 before the first)."""
        return self.seen[-1][1] if self.seen else -1

    def wait_for(self, index: int, timeout: float) -> bool:
        """Wait until ``index`` is seen or ``timeout`` seconds pass; whether it was."""
        deadline = time.monotonic() + timeout
        while self.visible() < index and time.monotonic() < deadline:
            time.sleep(self.poll_s / 2)
        return self.visible() >= index

    def stop(self) -> None:
        """Stop the thread (after the poll in progress)."""
        self._stop.set()
        self._thread.join(timeout=30)


class PositionPoller(_Poller):
    """segwal: ``read_archived_position(store, prefix)`` per poll (the highest index the archive holds)."""

    def __init__(self, store: Any, prefix: str, poll_s: float) -> None:
        super().__init__(poll_s)
        from segwal.storage.archive import read_archived_position

        self._read = read_archived_position
        self.store, self.prefix = store, prefix

    def probe(self) -> int:
        return int(self._read(self.store, self.prefix))


class LitestreamPoller(_Poller):
    """Litestream: list level 0 per poll; each new LTX object's header timestamp says which commits it holds.

    ``commits`` is the appender's list (appended to while this runs); a new object
    with timestamp ``ts`` makes visible every commit that returned before ``ts``.
    """

    def __init__(self, litestream: Any, store: Any, commits: list[Commit], poll_s: float) -> None:
        super().__init__(poll_s)
        self.ls, self.store, self.commits = litestream, store, commits
        self.known: set[str] = set()
        self.newest_ms = 0
        self.bytes_listed = 0

    def probe(self) -> int:
        for obj in self.ls.objects(self.store, 0):
            if obj.key in self.known:
                continue
            self.known.add(obj.key)
            self.bytes_listed += obj.size
            self.newest_ms = max(self.newest_ms, self.ls.header_timestamp_ms(self.store, obj))
        # commits are appended in time order; those strictly before the newest timestamp are in the archive
        cut = self.newest_ms / 1000.0
        times = [c.at for c in list(self.commits)]
        k = bisect.bisect_left(times, cut)
        return self.commits[k - 1].index if k > 0 else -1


def lags(commits: Sequence[Commit], seen: Sequence[tuple[float, int]]) -> tuple[list[float], int]:
    """Per commit, first time ``seen`` covers its index minus when it returned; and how many were never seen.

    An archiver may ship synced frames before ``persist_entries`` has returned to
    its caller: such a lag counts as 0.  O(C log S).
    """
    positions = [p for _, p in seen]
    out: list[float] = []
    missing = 0
    for c in commits:
        k = bisect.bisect_left(positions, c.index)  # the first observation that covers the commit
        if k >= len(seen):
            missing += 1
            continue
        out.append(max(0.0, seen[k][0] - c.at))
    return out, missing


def cpu_per_call(persist: Callable[[list[Entry]], object], batches: Sequence[list[Entry]], warmup: int) -> float:
    """Mean CPU seconds of the calling thread per ``persist`` call, after ``warmup`` untimed calls."""
    for b in batches[:warmup]:
        persist(b)
    timed = batches[warmup:]
    t = time.thread_time()
    for b in timed:
        persist(b)
    return (time.thread_time() - t) / max(1, len(timed))


def quantile(xs: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank, 0 <= q <= 1) of ``xs``; NaN when empty.  O(n log n)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@dataclass
class Summary:
    """Median, p50/p90/p99/max and count of a sample."""

    n: int
    median: float
    p90: float
    p99: float
    max: float
    min: float
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, float]:
        return {
            "n": self.n,
            "median": self.median,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "min": self.min,
            **self.extra,
        }


def summary(xs: Sequence[float]) -> Summary:
    """:class:`Summary` of ``xs``.  O(n log n)."""
    if not xs:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan)
    return Summary(len(xs), statistics.median(xs), quantile(xs, 0.9), quantile(xs, 0.99), max(xs), min(xs))


def percentiles(xs: Sequence[float]) -> list[float]:
    """The 0th..100th percentiles of ``xs`` (101 values; empty for an empty sample).  O(n log n)."""
    return [quantile(xs, q / 100) for q in range(101)] if xs else []
