"""The key/value scale benchmark (``segwal bench --kv-scale``): open time, memory and reads at millions of keys, side by side.

For each size (default 1M and 10M keys ``b"user:%010d"`` with 100-byte values,
written in batches of 10,000 with ``apply(..., applied=LogId(...))`` and closed
cleanly) and each store (segwal's ``WalEngine``, lmdb, rocksdict), a fresh
child process measures: the open (constructor to first answer), the resident
memory above the child's baseline (the interpreter with segwal, numpy and the
peer's module imported, before the open) after 1,000 random ``get``s, and
the warm ``get`` latency over 1,004 keys spread over the range.  Children run
interleaved, ``--repeat`` rounds, and the median is reported.  Then, in the
parent, ``apply`` of 100 changes durable (segwal ``sync="always"``, rocksdict
``sync=True`` write batch, lmdb ``sync=True`` transaction) on a fresh store,
interleaved, and a compaction run (dead data reclaimed; the longest ``apply``
waited while it ran).

Stores are built once under ``--data-dir`` (default ``/tmp/segwal-kv-scale``)
and reused by later runs (a ``built`` marker per store); ``--rebuild`` starts
over.  Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["main"]

PEERS = ("segwal", "lmdb", "rocksdict")
VALUE = bytes(range(100))
BATCH = 10_000


def _key(i: int) -> bytes:
    return b"user:%010d" % i


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _du(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


# -- the stores ------------------------------------------------------------------


class _Store:
    """One store behind a common face: open, get, apply a batch durably, close."""

    def __init__(self, peer: str, path: str, *, readonly: bool = False) -> None:
        self.peer = peer
        if peer == "segwal":
            from segwal.engine import WalEngine

            self.db: Any = WalEngine(path)
            self.get = self.db.get
        elif peer == "lmdb":
            import lmdb

            self.db = lmdb.open(path, map_size=1 << 36, readonly=readonly, lock=not readonly, sync=True,
                                metasync=True, readahead=False)
            self._txn = self.db.begin(buffers=False)
            self.get = self._txn.get
        else:
            from rocksdict import Options, Rdict, WriteOptions

            self.db = Rdict(path, Options(raw_mode=True))
            self._wo = WriteOptions()
            self._wo.sync = True
            self.db.set_write_options(self._wo)
            self.get = self.db.get

    def apply(self, changes: list[tuple[bytes, bytes]], n: int) -> None:
        if self.peer == "segwal":
            from segwal.types import LogId

            self.db.apply(changes, applied=LogId(1, n))
        elif self.peer == "lmdb":
            self._txn.abort()
            with self.db.begin(write=True) as txn:
                for k, v in changes:
                    txn.put(k, v)
            self._txn = self.db.begin(buffers=False)
            self.get = self._txn.get
        else:
            from rocksdict import WriteBatch

            wb = WriteBatch(raw_mode=True)
            for k, v in changes:
                wb.put(k, v)
            self.db.write(wb)

    def close(self) -> None:
        if self.peer == "lmdb":
            self._txn.abort()
        self.db.close()


def build(peer: str, path: str, n: int, quiet: bool) -> None:
    """Create ``peer``'s store of ``n`` keys at ``path`` (once; a marker says it is complete)."""
    marker = path + ".built"
    if os.path.exists(marker):
        return
    shutil.rmtree(path, ignore_errors=True)
    if peer != "segwal":
        os.makedirs(path, exist_ok=True)
    t0 = time.perf_counter()
    s = _Store(peer, path)
    for b, start in enumerate(range(0, n, BATCH)):
        s.apply([(_key(i), VALUE) for i in range(start, min(n, start + BATCH))], b + 1)
    s.close()
    with open(marker, "w") as f:
        f.write(f"{n}\n")
    if not quiet:
        print(f"  built {peer} {n:,} keys in {time.perf_counter() - t0:.1f} s ({_du(path) / 1e6:.0f} MB)",
              file=sys.stderr)


# -- one measurement, in a fresh child process -----------------------------------------


def child(peer: str, path: str, n: int, seed: int) -> dict[str, float]:
    """Open, 1,000 random gets, RSS above the baseline, warm get latency (run in a fresh process)."""
    import numpy  # noqa: F401 - part of the baseline for every store

    import segwal.engine  # noqa: F401
    if peer == "lmdb":
        import lmdb  # noqa: F401
    elif peer == "rocksdict":
        import rocksdict  # noqa: F401
    base = _rss()
    t0 = time.perf_counter()
    s = _Store(peer, path, readonly=peer == "lmdb")
    assert s.get(_key(n - 1)) == VALUE
    t_open = time.perf_counter() - t0
    r = random.Random(seed)
    get = s.get
    for _ in range(1000):
        assert get(_key(r.randrange(n))) == VALUE
    rss = _rss() - base
    spread = [_key(i * n // 1004) for i in range(1004)]
    for k in spread:
        get(k)
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        for k in spread:
            get(k)
        runs.append((time.perf_counter() - t) / len(spread))
    s.close()
    return {"open_s": t_open, "rss_mb": rss / 1e6, "base_mb": base / 1e6, "get_us": statistics.median(runs) * 1e6}


def _run_child(peer: str, path: str, n: int, seed: int) -> dict[str, float]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.exists(os.path.join(root, "pyproject.toml")):
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-m", "segwal.bench.kv_scale", "--child", peer, path, str(n), str(seed)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{peer} child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- writes ------------------------------------------------------------------------


def apply_rate(peers: list[str], root: str, batches: int, rounds: int) -> dict[str, list[float]]:
    """Durable ``apply`` of 100 changes per second, peers interleaved: each peer's rate in each of ``rounds``."""
    stores = {}
    for p in peers:
        path = os.path.join(root, f"apply-{p}")
        shutil.rmtree(path, ignore_errors=True)
        if p != "segwal":
            os.makedirs(path)
        stores[p] = _Store(p, path)
    rates: dict[str, list[float]] = {p: [] for p in peers}
    r = random.Random(1)
    n = 0
    for _ in range(rounds):
        for p in peers:
            s = stores[p]
            t0 = time.perf_counter()
            for _b in range(batches):
                n += 1
                s.apply([(_key(r.randrange(1_000_000)), VALUE) for _ in range(100)], n)
            rates[p].append(batches / (time.perf_counter() - t0))
    for s in stores.values():
        s.close()
    return rates


class _TimedLock:
    """The store's write lock, recording how long each acquisition waited (the benchmark's probe)."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.waits: list[tuple[float, float, str]] = []  # (waited, when acquired, thread name)

    def __enter__(self) -> _TimedLock:  # noqa: PYI034
        t = time.perf_counter()
        self.lock.acquire()
        now = time.perf_counter()
        self.waits.append((now - t, now, threading.current_thread().name))
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return bool(self.lock.locked())


def compaction_run(root: str, n: int) -> dict[str, float]:
    """segwal: ``n`` keys, each overwritten once, then ``compact()`` while a thread applies
    batches of 100 durably: seconds of compaction, bytes before and after, and, over the
    applies that overlapped it, the longest apply, the median apply, and the longest wait
    of the writer for the engine's or the store's write lock (what the compaction blocked)."""
    from segwal.engine import WalEngine
    from segwal.types import LogId

    path = os.path.join(root, "compact-segwal")
    shutil.rmtree(path, ignore_errors=True)
    eng = WalEngine(path)
    c = 0
    for _round in range(2):
        for start in range(0, n, BATCH):
            c += 1
            eng.apply([(_key(i), VALUE) for i in range(start, min(n, start + BATCH))], applied=LogId(1, c))
    before = _du(path)
    kv = eng._kv  # type: ignore[union-attr]
    probe = _TimedLock(kv._wlock)
    kv._wlock = probe
    outer = _TimedLock(eng._wlock)  # the engine's lock: a compaction commits under it too
    eng._wlock = outer  # type: ignore[assignment]
    stop = threading.Event()
    waits: list[tuple[float, float]] = []

    def writer() -> None:
        k = 0
        while not stop.is_set():
            t = time.perf_counter()
            eng.apply([(_key(k + j), VALUE) for j in range(100)])
            waits.append((t, time.perf_counter()))
            k = (k + 100) % n

    th = threading.Thread(target=writer, name="writer")
    th.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    kv.compact()
    t1 = time.perf_counter()
    time.sleep(0.2)
    stop.set()
    th.join()
    eng.close()
    after = _du(path)
    shutil.rmtree(path, ignore_errors=True)
    during = [e - s for s, e in waits if e >= t0 and s <= t1]
    lock = [w for w, at, name in probe.waits + outer.waits if name == "writer" and t0 <= at and at - w <= t1]
    return {"compact_s": t1 - t0, "max_apply_wait_s": max(during), "median_apply_s": statistics.median(during),
            "applies_during": len(during), "max_lock_wait_s": max(lock, default=0.0),
            "mb_before": before / 1e6, "mb_after": after / 1e6}


# -- the command -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="segwal bench --kv-scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kv-scale", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated key counts (default 1M,10M)")
    ap.add_argument("--quick", action="store_true", help="20k and 200k keys, one round (smoke test)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)}")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of children (median reported)")
    ap.add_argument("--data-dir", default="/tmp/segwal-kv-scale", help="where the stores are built and kept")
    ap.add_argument("--rebuild", action="store_true", help="build the stores again")
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--only", choices=["all", "apply"], default="all",
                    help="apply: only the durable apply(100) figure (no store built, no open or compaction run)")
    ap.add_argument("--apply-batches", type=int, default=None, help="applies per peer per round (default 200)")
    a = ap.parse_args(argv)
    if a.child:
        peer, path, n, seed = a.child
        print(json.dumps(child(peer, path, int(n), int(seed))))
        return 0
    sizes = [20_000, 200_000] if a.quick else [int(x) for x in a.sizes.split(",")]
    rounds = 1 if a.quick else a.repeat
    peers = []
    for p in a.peers.split(","):
        try:
            if p != "segwal":
                __import__(p)
            peers.append(p)
        except ImportError:
            print(f"  {p}: not installed, skipped", file=sys.stderr)
    root = os.path.join(a.data_dir, "quick") if a.quick else a.data_dir
    os.makedirs(root, exist_ok=True)
    if a.only == "apply":
        sizes = []
    for n in sizes:
        for p in peers:
            path = os.path.join(root, f"{p}-{n}")
            if a.rebuild and os.path.exists(path + ".built"):
                os.unlink(path + ".built")
            build(p, path, n, a.quiet)
    res: dict[str, Any] = {"sizes": sizes, "peers": peers, "open": {}}
    for n in sizes:
        got: dict[str, list[dict[str, float]]] = {p: [] for p in peers}
        for rnd in range(rounds):
            for p in peers:
                got[p].append(_run_child(p, os.path.join(root, f"{p}-{n}"), n, rnd))
        res["open"][str(n)] = {
            p: {k: statistics.median(m[k] for m in got[p]) for k in got[p][0]} | {"disk_mb": _du(
                os.path.join(root, f"{p}-{n}")) / 1e6} for p in peers}
    rates = apply_rate(peers, root, a.apply_batches or (30 if a.quick else 200), rounds)
    res["apply100"] = {p: statistics.median(v) for p, v in rates.items()}
    res["apply100_rounds"] = rates
    if "segwal" in peers and a.only == "all":
        res["compaction"] = compaction_run(root, 20_000 if a.quick else 300_000)
    print(report(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def report(res: dict[str, Any]) -> str:
    """The results as markdown tables, with the issue's targets checked."""
    out = []
    peers = res["peers"]
    if res["open"]:
        out.append("| keys | store | open (ms) | RSS above baseline (MB) | baseline (MB) | get (µs) | on disk (MB) |")
        out.append("|---:|---|---:|---:|---:|---:|---:|")
    for n, row in res["open"].items():
        for p in peers:
            m = row[p]
            out.append(f"| {int(n):,} | {p} | {m['open_s'] * 1e3:.1f} | {m['rss_mb']:.1f} | {m['base_mb']:.0f} | "
                       f"{m['get_us']:.2f} | {m['disk_mb']:.0f} |")
    if res["open"]:
        out.append("")
    out.append("| store | apply(100 changes) durable /s, median | min | max |")
    out.append("|---|---:|---:|---:|")
    rounds = res.get("apply100_rounds", {})
    for p, v in res["apply100"].items():
        rr = rounds.get(p, [v])
        out.append(f"| {p} | {v:.0f} | {min(rr):.0f} | {max(rr):.0f} |")
    if "segwal" in rounds and "rocksdict" in rounds:
        ratios = [a / b for a, b in zip(rounds["segwal"], rounds["rocksdict"])]
        out.append("")
        out.append(f"segwal / rocksdict per round (interleaved): {', '.join(f'{r:.2f}' for r in ratios)}; "
                   f"median {statistics.median(ratios):.2f}")
    if "compaction" in res:
        c = res["compaction"]
        out.append("")
        out.append(f"compaction: {c['compact_s']:.2f} s, {c['mb_before']:.0f} MB -> {c['mb_after']:.0f} MB; "
                   f"{c['applies_during']} applies(100) overlapped it: longest {c['max_apply_wait_s'] * 1e3:.0f} ms, "
                   f"median {c['median_apply_s'] * 1e3:.1f} ms; longest wait for the write lock "
                   f"{c['max_lock_wait_s'] * 1e3:.1f} ms")
    out.append("")
    out.append("targets:")
    sizes = [str(n) for n in res["sizes"]]
    op = res["open"]
    if "segwal" in peers and sizes:
        small, big = sizes[0], sizes[-1]
        sw = op[small]["segwal"]
        if "rocksdict" in peers:
            out.append(f"- open({int(small):,}) segwal {sw['open_s'] * 1e3:.1f} ms <= rocksdict "
                       f"{op[small]['rocksdict']['open_s'] * 1e3:.1f} ms: "
                       f"{'met' if sw['open_s'] <= op[small]['rocksdict']['open_s'] else 'NOT met'}")
        ratio = op[big]["segwal"]["open_s"] / sw["open_s"]
        out.append(f"- open({int(big):,}) / open({int(small):,}) = {ratio:.2f} <= 2: {'met' if ratio <= 2 else 'NOT met'}")
        rss = op[big]["segwal"]["rss_mb"]
        out.append(f"- RSS at {int(big):,} keys {rss:.0f} MB above baseline <= 100: {'met' if rss <= 100 else 'NOT met'}")
        if "lmdb" in peers:
            for n in sizes:
                g, lg = op[n]["segwal"]["get_us"], op[n]["lmdb"]["get_us"]
                out.append(f"- get at {int(n):,}: segwal {g:.2f} µs <= lmdb {lg:.2f} µs: {'met' if g <= lg else 'NOT met'}")
    if "segwal" in peers and "rocksdict" in peers:
        r = res["apply100"]["segwal"] / res["apply100"]["rocksdict"]
        out.append(f"- apply(100) durable segwal / rocksdict = {r:.2f} >= 1.5: {'met' if r >= 1.5 else 'NOT met'}")
    if "segwal" in peers and "compaction" in res:
        c = res["compaction"]
        out.append(f"- compaction: writers waited at most {c['max_lock_wait_s'] * 1e3:.1f} ms for a write lock "
                   f"({c['max_lock_wait_s'] / c['median_apply_s']:.1f}x a median apply; the rewrite took "
                   f"{c['compact_s']:.2f} s), reclaimed {c['mb_before']:.0f} -> {c['mb_after']:.0f} MB")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
