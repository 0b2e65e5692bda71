"""Durable appends per second: ``MemFirst`` group commit against ``DiskFirst``.

Issue 5 asks that ``MemFirst`` with 8 concurrent appenders do at least 4x the
durable appends per second of ``DiskFirst`` with one fsync per append.

Method: for each strategy and run, a fresh ``WalEngine`` directory, a
``BufferedRaftLog`` over it, and ``--threads`` appender threads released
together by a barrier.  Each thread loops ``--appends`` times: append one entry
(``append_payloads(term, [payload])``, the leader path) and wait until it is
durable (``wait_durable``).  The rate is all appends divided by the wall time
from the barrier to the last thread's end.  The figure reported is the median
of ``--runs`` runs, after one untimed warm-up run of each kind.  These are
closed-loop appenders: each has one append in flight, so a group commit can
carry at most 8 entries and 8x is the ceiling of the ratio.

* ``MemFirst``: the writer thread persists every entry that arrived during the
  previous fsync in one ``persist_entries`` call (one write + one fdatasync).
* ``DiskFirst``: each append is its own write and fdatasync, appends
  serialised (the same 8 threads drive it).

Both use a ``sync="always"`` engine: ``persist_entries`` is durable with one
fdatasync.  (With ``sync="flush"``, ``WalEngine.flush()`` also checkpoints the
tail index every time, a second fdatasync, so persist + flush costs about two
syncs per batch.)  The machine's load matters: the group commit is bounded by
how fast 8 woken threads are scheduled, fsync by the disk; runs are interleaved
so drift hits both strategies alike.

Where the time goes: one MemFirst round is the engine write and its fdatasync
plus waking the 8 appenders and the writer (the "wake chain").  Each wake-up of
a sleeping thread costs what the machine charges for it: the benchmark prints
that price, measured by a two-thread lock ping-pong, and the mean entries per
engine write (``BufferedRaftLog.write_stats``).  On a VM whose idle vCPUs halt
(``guest_halt_poll_ns=0``) a wake-up costs ~20 us and eight of them in a row
weigh as much as the fsync; see docs/benchmarks.md.

What if the disk were slower: ``--sync-delay-us N`` sleeps N microseconds after
every fdatasync (a simulated slower disk; both strategies pay it per sync).

Run ``python -m bench.raftlog_bench [--quick] [--dir DIR] [--json PATH] [--sync-delay-us N]``.
The directory must be on the disk you want to measure (tmpfs fsyncs are free).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from segwal.engine import WalEngine
from segwal.fs import FileSystem, OsFile, OsFileSystem
from segwal.raft.log import BufferedRaftLog
from segwal.raft.strategy import DiskFirst, MemFirst, PersistenceStrategy


class _SlowSyncFile(OsFile):
    """An OS file whose fdatasync takes ``delay`` seconds longer."""

    __slots__ = ("delay",)

    def __init__(self, path: str, fd: int, delay: float) -> None:
        super().__init__(path, fd)
        self.delay = delay

    def fdatasync(self) -> None:
        """The real fdatasync, then the simulated extra latency."""
        super().fdatasync()
        time.sleep(self.delay)


class SlowSyncFS(OsFileSystem):
    """The real file system with every fdatasync ``delay`` seconds slower (``--sync-delay-us``)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def open(self, path: str, *, create: bool = False, readonly: bool = False) -> OsFile:
        """Open as :class:`OsFileSystem` does, with the slow fdatasync."""
        f = super().open(path, create=create, readonly=readonly)
        return _SlowSyncFile(f.path, f.fd, self.delay)


_FS: FileSystem | None = None  # set by --sync-delay-us; None: the real file system


Run = tuple[float, float]
"""(durable appends per second, mean entries per engine write) of one run."""


def thread_wake_us(rounds: int = 2000) -> float:
    """Median one-way cost, in microseconds, of waking a thread blocked on a lock
    (half the round trip of a two-thread lock ping-pong)."""
    a, b = threading.Lock(), threading.Lock()
    a.acquire()
    b.acquire()

    def other() -> None:
        for _ in range(rounds):
            a.acquire()
            b.release()

    t = threading.Thread(target=other)
    t.start()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a.release()
        b.acquire()
        samples.append(time.perf_counter() - t0)
    t.join()
    return statistics.median(samples) / 2 * 1e6


def _batch(log: BufferedRaftLog) -> float:
    st = log.write_stats()
    return st.entries / st.writes if st.writes else 0.0


def one_run(
    root: str, strategy: PersistenceStrategy, threads: int, appends: int, payload: bytes, wait_each: bool = True
) -> Run:
    """One timed run in a fresh directory under ``root``: (durable appends per second,
    mean entries per engine write).  ``wait_each=False``: the threads append
    without waiting and each waits once, for its last entry, at the end."""
    path = tempfile.mkdtemp(prefix="raftlog-", dir=root)
    try:
        log = BufferedRaftLog(WalEngine(path, sync="always", fs=_FS, preallocate=True), strategy)
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def appender() -> None:
            try:
                barrier.wait()
                lid = None
                for _ in range(appends):
                    lid = log.append_payloads(1, [payload])
                    assert lid is not None
                    if wait_each:
                        log.wait_durable(lid.index)  # no timeout: the waiter may lead the group
                if lid is not None:
                    log.wait_durable(lid.index)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        workers = [threading.Thread(target=appender, daemon=True) for _ in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join(120)
            if w.is_alive():
                raise TimeoutError("an appender still waits for durability after 120 s")
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        total = threads * appends
        if log.durable_index() != total:
            raise AssertionError(f"durable_index {log.durable_index()} != {total}")
        batch = _batch(log)
        log.close()
        return total / elapsed, batch
    finally:
        shutil.rmtree(path, ignore_errors=True)


def one_run_unblocked(root: str, strategy: PersistenceStrategy, threads: int, appends: int, payload: bytes) -> Run:
    """Like :func:`one_run`, with appenders that do not wait after each append
    (what ``MemFirst`` allows): each waits once, at the end.  Not issue 5's
    measure, which has every append waited for; shown for what the writer can
    sustain when the appenders do not block."""
    return one_run(root, strategy, threads, appends, payload, wait_each=False)


def one_run_async(root: str, strategy: PersistenceStrategy, tasks: int, appends: int, payload: bytes) -> Run:
    """Like :func:`one_run`, with ``tasks`` asyncio coroutines on one event loop as the
    appenders (an asyncio Raft node): each appends one entry and awaits its
    durability (``wait_durable_async``).  Under DiskFirst every append blocks the
    loop for its own fsync, so appends are serial with one fsync each."""
    import asyncio

    path = tempfile.mkdtemp(prefix="raftlog-", dir=root)
    try:
        log = BufferedRaftLog(WalEngine(path, sync="always", fs=_FS, preallocate=True), strategy)

        async def appender() -> None:
            for _ in range(appends):
                lid = log.append_payloads(1, [payload])
                assert lid is not None
                await log.wait_durable_async(lid.index)

        async def run_all() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(appender() for _ in range(tasks)))
            return time.perf_counter() - t0

        elapsed = asyncio.run(run_all())
        total = tasks * appends
        if log.durable_index() != total:
            raise AssertionError(f"durable_index {log.durable_index()} != {total}")
        batch = _batch(log)
        log.close()
        return total / elapsed, batch
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run both strategies ``--runs`` times, print medians and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer appends per thread (a smoke run)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--appends", type=int, default=None, help="appends per thread (default 1000, 50 with --quick)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--payload", type=int, default=128, help="payload bytes per entry")
    ap.add_argument("--dir", default=None, help="where to create the engine directories (default: system temp)")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument(
        "--sync-delay-us", type=float, default=0.0, help="simulate a slower disk: sleep this long after every fdatasync"
    )
    args = ap.parse_args(argv)
    global _FS
    _FS = SlowSyncFS(args.sync_delay_us / 1e6) if args.sync_delay_us > 0 else None
    appends = args.appends if args.appends is not None else (50 if args.quick else 1000)
    payload = os.urandom(args.payload)
    root = args.dir or tempfile.gettempdir()
    strategies: dict[str, PersistenceStrategy] = {"MemFirst": MemFirst(), "DiskFirst": DiskFirst()}
    modes = {"threads": one_run, "asyncio": one_run_async, "unblocked": one_run_unblocked}
    rates: dict[str, list[float]] = {f"{m}/{name}": [] for m in modes for name in strategies}
    batches: dict[str, list[float]] = {key: [] for key in rates}
    wake = thread_wake_us()
    if not args.quick:  # a warm-up of each kind: first runs in a process are slower
        for fn in modes.values():
            for strategy in strategies.values():
                fn(root, strategy, args.threads, min(appends, 200), payload)
    for _ in range(args.runs):  # interleave the strategies so drift hits both alike
        for m, fn in modes.items():
            for name, strategy in strategies.items():
                rate, batch = fn(root, strategy, args.threads, appends, payload)
                rates[f"{m}/{name}"].append(rate)
                batches[f"{m}/{name}"].append(batch)
    med = {name: statistics.median(r) for name, r in rates.items()}
    ratios = {m: med[f"{m}/MemFirst"] / med[f"{m}/DiskFirst"] for m in modes}
    titles = {
        "threads": "appenders as OS threads, each waiting for every append:",
        "asyncio": "appenders as asyncio tasks on one event loop, each awaiting every append:",
        "unblocked": "appenders as OS threads that wait only once, at the end (not the issue's measure):",
    }
    ratio = ratios["threads"]
    print(
        f"{args.threads} appenders x {appends} appends, {args.payload}-byte payloads, median of {args.runs} runs, "
        f"dir {root}"
    )
    print(f"thread wake-up on this machine: {wake:.1f} us (median, lock ping-pong)")
    if args.sync_delay_us > 0:
        print(f"simulated slower disk: every fdatasync + {args.sync_delay_us:g} us")
    for m in modes:
        print(titles[m])
        for name in strategies:
            runs = ", ".join(f"{r:,.0f}" for r in rates[f"{m}/{name}"])
            mean_batch = statistics.mean(batches[f"{m}/{name}"])
            print(
                f"  {name:<9} {med[f'{m}/{name}']:>10,.0f} durable appends/s   "
                f"{mean_batch:4.1f} entries/write   (runs: {runs})"
            )
        target = " (issue 5 target: >= 4x)" if m != "unblocked" else ""
        print(f"  ratio MemFirst/DiskFirst: {ratios[m]:.1f}x{target}")
    if args.json:
        out: dict[str, Any] = {
            "bench": "raftlog",
            "threads": args.threads,
            "appends_per_thread": appends,
            "payload_bytes": args.payload,
            "runs": args.runs,
            "rates": rates,
            "entries_per_write": batches,
            "thread_wake_us": wake,
            "median": med,
            "ratio": ratio,
            "ratios": ratios,
            "python": sys.version.split()[0],
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "dir": root,
            "sync_delay_us": args.sync_delay_us,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
