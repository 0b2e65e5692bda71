"""The seven workloads of issue 4.

Strategy: each workload is a function ``run_<name>(ctx)`` that, for every
repetition, visits the stores in a rotated order (peers interleaved, so a noisy
minute hurts everyone alike), times only the operation under test, and adds one
sample per store to ``ctx.res``.  Building the data and opening stores are never
timed unless the open *is* the measurement (reopen).  A store that raises is
dropped from that workload with a note; the run goes on.

Entries are the same for every store: index ``1..N``, term ``1 + index // 10000``,
a 256-byte payload drawn from a seeded pool of incompressible bytes.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .machine import allocated_bytes
from .peers import BasePeer, Change, DictPeer, Entry, make_peer, term_of
from .report import Results

__all__ = ["Config", "Ctx", "WORKLOADS", "SIZES"]

T = TypeVar("T")

PAYLOAD = 256
RECORD = 280  # raw record size: 24-byte header + payload
BUILD_BATCH = 10_000


@dataclass(frozen=True)
class Sizes:
    append: tuple[tuple[int, int], ...]  # (batch, N)
    read_n: int
    point_reads: int
    ranges: int
    reopen: tuple[int, ...]
    reopen_big_peers: tuple[str, ...]  # stores taken to the sizes above 1M
    delete_n: int
    kv_batches: int
    kv_keys: int
    kv_gets: int
    sweep_mib: tuple[int, ...]
    sweep_append_n: int
    sweep_reopen_n: int


SIZES = {
    "full": Sizes(
        append=((1, 5_000), (64, 200_000), (1024, 200_000)),
        read_n=200_000,
        point_reads=100_000,
        ranges=200,
        reopen=(10_000, 100_000, 1_000_000, 10_000_000),
        reopen_big_peers=("segwal", "lmdb", "rocksdict"),
        delete_n=200_000,
        kv_batches=300,
        kv_keys=20_000,
        kv_gets=100_000,
        sweep_mib=(1, 4, 16, 64, 256),
        sweep_append_n=200_000,
        sweep_reopen_n=1_000_000,
    ),
    "quick": Sizes(
        append=((1, 300), (64, 6_400), (1024, 30_720)),
        read_n=20_000,
        point_reads=10_000,
        ranges=20,
        reopen=(10_000, 100_000),
        reopen_big_peers=(),
        delete_n=20_000,
        kv_batches=30,
        kv_keys=2_000,
        kv_gets=10_000,
        sweep_mib=(1, 16),
        sweep_append_n=20_480,
        sweep_reopen_n=50_000,
    ),
}


@dataclass
class Config:
    peers: list[str]
    workloads: list[str]
    repeat: int
    seed: int
    data_dir: str
    sizes: Sizes
    segwal_segment_size: int | None = None
    verbose: bool = True


@dataclass
class Ctx:
    cfg: Config
    res: Results
    notes: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.cfg.seed)
        pool = rng.randbytes(PAYLOAD * 4096)
        self.payloads = [pool[i * PAYLOAD : (i + 1) * PAYLOAD] for i in range(4096)]

    # -- helpers -----------------------------------------------------------------

    def log(self, msg: str) -> None:
        if self.cfg.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log("NOTE " + msg)

    def rng(self, tag: str) -> random.Random:
        return random.Random(f"{self.cfg.seed}:{tag}")

    def peer(self, name: str) -> BasePeer:
        if name == "segwal" and self.cfg.segwal_segment_size:
            return make_peer(name, segment_size=self.cfg.segwal_segment_size)
        if name == "segwal_16m":
            p = make_peer("segwal", segment_size=16 << 20)
            p.name = "segwal_16m"  # type: ignore[misc]
            p.label = "segwal, 16 MiB segments"  # type: ignore[misc]
            return p
        return make_peer(name)

    def peers_with(self, cap: str) -> list[str]:
        out = []
        for n in self.cfg.peers:
            base = "segwal" if n == "segwal_16m" else n
            p = make_peer(base)
            if cap in p.caps:
                out.append(n)
        return out

    def tmpdir(self, tag: str) -> str:
        return tempfile.mkdtemp(prefix=f"{tag}-", dir=self.cfg.data_dir)

    def entries(self, start: int, n: int) -> list[Entry]:
        pl = self.payloads
        new = tuple.__new__
        return [new(Entry, (i, 1 + i // 10000, pl[i % 4096])) for i in range(start, start + n)]

    def batches(self, start: int, n: int, size: int) -> Iterator[list[Entry]]:
        end = start + n
        for a in range(start, end, size):
            yield self.entries(a, min(size, end - a))

    def build(self, peer: BasePeer, start: int, n: int) -> float:
        """Append ``n`` entries from ``start`` in 10,000-entry batches; returns seconds."""
        t0 = time.perf_counter()
        for b in self.batches(start, n, BUILD_BATCH):
            peer.append(peer.prepare(b))
        return time.perf_counter() - t0

    def expect(self, e: Entry | None, i: int) -> None:
        if e is None or e[0] != i or e[1] != term_of(i) or bytes(e[2]) != self.payloads[i % 4096]:
            raise AssertionError(f"entry({i}) returned {None if e is None else (e[0], e[1], bytes(e[2][:8]))}")

    def probe(self, name: str, path: str, segment_size: int | None = None) -> dict[str, Any]:
        """Reopen ``path`` in a fresh interpreter (see :mod:`bench.probe`)."""
        if name == "segwal" and segment_size is None:
            segment_size = self.cfg.segwal_segment_size
        cmd = [sys.executable, "-m", f"{__package__}.probe", "--peer", name, "--path", path]
        if segment_size:
            cmd += ["--segment-size", str(segment_size)]
        env = dict(os.environ)
        if __package__ == "bench":  # run from a source checkout: make ``bench`` importable
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-4:])
            raise RuntimeError(f"probe of {name} failed (exit {proc.returncode}): {tail[-600:]}")
        data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return data


def rotate(names: list[T], rep: int) -> list[T]:
    if not names:
        return names
    k = rep % len(names)
    return names[k:] + names[:k]


def _guard(ctx: Ctx, dead: set[str], workload: str, name: str, fn: Callable[[], None]) -> None:
    """Run one store's part of a repetition; on error, note it and drop the store."""
    if name in dead:
        return
    try:
        fn()
    except Exception as exc:
        dead.add(name)
        tb = traceback.format_exc(limit=3).strip().splitlines()
        ctx.note(f"{workload}: {name} failed and was dropped: {type(exc).__name__}: {exc} ({' | '.join(tb[-3:])})")


def _close(p: BasePeer) -> None:
    try:
        p.close()
    except Exception:
        pass


# --------------------------------------------------------------------------- 1. append


def run_append(ctx: Ctx) -> None:
    names = ctx.peers_with("append")
    dead: set[str] = set()
    for batch, n in ctx.cfg.sizes.append:
        case = f"B={batch}"
        ctx.log(f"append {case}, N={n}: {', '.join(names)}")
        batches = list(ctx.batches(1, n, batch))
        for rep in range(ctx.cfg.repeat):
            for name in rotate(names, rep):

                def one(name: str = name, n: int = n, case: str = case, batches: list[list[Entry]] = batches) -> None:
                    p = ctx.peer(name)
                    d = ctx.tmpdir(f"append-{name}")
                    try:
                        p.open(d)
                        p.reserve(n * RECORD)
                        prepared = [p.prepare(b) for b in batches]
                        gc.collect()
                        gc.disable()
                        try:
                            t0 = time.perf_counter()
                            for pb in prepared:
                                p.append(pb)
                            dt = time.perf_counter() - t0
                        finally:
                            gc.enable()
                        p.close()
                        ctx.res.add(
                            "append",
                            case,
                            "entries_per_s",
                            p,
                            n / dt,
                            unit="entries/s",
                            higher_is_better=True,
                            us_per_batch=dt / len(prepared) * 1e6,
                            disk_bytes=allocated_bytes(d),
                        )
                    finally:
                        _close(p)
                        shutil.rmtree(d, ignore_errors=True)

                _guard(ctx, dead, f"append {case}", name, one)


# --------------------------------------------------------------------------- 2-3. reads


def run_read(ctx: Ctx) -> None:
    s = ctx.cfg.sizes
    names = ctx.peers_with("read")
    dead: set[str] = set()
    dirs: dict[str, str] = {}
    ctx.log(f"read: building {s.read_n:,} entries in {', '.join(names)}")
    for name in names:

        def build(name: str = name) -> None:
            p = ctx.peer(name)
            d = ctx.tmpdir(f"read-{name}")
            dirs[name] = d
            p.open(d)
            ctx.build(p, 1, s.read_n)
            p.close()

        _guard(ctx, dead, "read (build)", name, build)
    rng = ctx.rng("read")
    points = [rng.randint(1, s.read_n) for _ in range(s.point_reads)]
    starts = [rng.randint(1, s.read_n - 999) for _ in range(s.ranges)]
    try:
        for rep in range(ctx.cfg.repeat):
            for name in rotate(names, rep):

                def one(name: str = name) -> None:
                    p = ctx.peer(name)
                    # pysyncobj answers reads from the Python list it loads at open
                    # (the whole log in RAM): a ceiling here, not a peer.
                    ram = {"kind": "ceiling", "label": "pysyncobj FileJournal (reads from its in-RAM list)"}
                    kw: dict[str, Any] = ram if name.startswith("pysyncobj") else {}
                    p.open(dirs[name])
                    try:
                        for i in points[:3] + [1, s.read_n]:
                            ctx.expect(p.entry(i), i)
                        if p.entry(s.read_n + 1) is not None:
                            raise AssertionError("entry past the end is not None")
                        get = p.entry
                        gc.collect()
                        gc.disable()
                        try:
                            t0 = time.perf_counter()
                            for i in points:
                                get(i)
                            dt = time.perf_counter() - t0
                        finally:
                            gc.enable()
                        ctx.res.add(
                            "read",
                            "point",
                            "ns_per_read",
                            p,
                            dt / len(points) * 1e9,
                            unit="ns",
                            higher_is_better=False,
                            **kw,
                        )
                        rg = p.range(starts[0], starts[0] + 999)
                        if len(rg) != 1000:
                            raise AssertionError(f"range of 1000 returned {len(rg)} entries")
                        ctx.expect(rg[0], starts[0])
                        ctx.expect(rg[-1], starts[0] + 999)
                        rfn = p.range
                        gc.collect()
                        gc.disable()
                        try:
                            t0 = time.perf_counter()
                            for a in starts:
                                rfn(a, a + 999)
                            dt = time.perf_counter() - t0
                        finally:
                            gc.enable()
                        ctx.res.add(
                            "read",
                            "range1000",
                            "entries_per_s",
                            p,
                            len(starts) * 1000 / dt,
                            unit="entries/s",
                            higher_is_better=True,
                            **kw,
                        )
                    finally:
                        _close(p)

                _guard(ctx, dead, "read", name, one)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
            DictPeer.forget(d)


# --------------------------------------------------------------------------- 4. reopen + RSS


def run_reopen(ctx: Ctx) -> None:
    s = ctx.cfg.sizes
    names = [n for n in ctx.peers_with("reopen")]
    dead: set[str] = set()
    dirs: dict[str, str] = {}
    built: dict[str, int] = {}
    try:
        for size in s.reopen:
            here = [n for n in names if size <= 1_000_000 or n in s.reopen_big_peers]
            if size > 1_000_000:
                left = [n for n in names if n not in here]
                if left:
                    ctx.note(
                        f"reopen N={size:,}: only {', '.join(here)} are built this large (time budget); not {', '.join(left)}"
                    )
            if size > 1_000_000 and "pysyncobj" in here:
                here.remove("pysyncobj")
            ctx.log(f"reopen N={size:,}: building {', '.join(n for n in here if n not in dead)}")
            for name in here:

                def grow(name: str = name, size: int = size) -> None:
                    d = dirs.get(name) or ctx.tmpdir(f"reopen-{name}")
                    dirs[name] = d
                    p = ctx.peer(name)
                    p.open(d)
                    try:
                        have = built.get(name, 0)
                        secs = ctx.build(p, have + 1, size - have)
                        built[name] = size
                    finally:
                        p.close()
                    ctx.res.add(
                        "reopen",
                        f"N={size}",
                        "build_s",
                        p,
                        secs,
                        unit="s",
                        higher_is_better=False,
                        entries_built=size - have,
                    )
                    first = ctx.probe(name, d)
                    if first["first"] != 1 or first["last"] != size:
                        raise AssertionError(f"reopen saw bounds {first['first']}..{first['last']}, expected 1..{size}")
                    ctx.res.add(
                        "reopen",
                        f"N={size}",
                        "first_open_ms",
                        p,
                        first["open_s"] * 1e3,
                        unit="ms",
                        higher_is_better=False,
                    )

                _guard(ctx, dead, f"reopen N={size:,} (build)", name, grow)
            for rep in range(ctx.cfg.repeat):
                for name in rotate(here, rep):

                    def one(name: str = name, size: int = size) -> None:
                        p = ctx.peer(name)
                        r = ctx.probe(name, dirs[name])
                        case = f"N={size}"
                        ctx.res.add("reopen", case, "open_ms", p, r["open_s"] * 1e3, unit="ms", higher_is_better=False)
                        ctx.res.add(
                            "reopen",
                            case,
                            "rss_mb",
                            p,
                            (r["rss_open"] - r["rss_python"]) / 1e6,
                            unit="MB",
                            higher_is_better=False,
                            rss_over_imported_mb=(r["rss_open"] - r["rss_imported"]) / 1e6,
                            first_read_us=r["first_read_s"] * 1e6,
                            open_read_bytes=r["open_read_bytes"],
                            open_minor_faults=r["open_minor_faults"],
                            disk_bytes=allocated_bytes(dirs[name]),
                        )

                    _guard(ctx, dead, f"reopen N={size:,}", name, one)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- 5. purge / truncate


def run_delete(ctx: Ctx) -> None:
    n = ctx.cfg.sizes.delete_n
    names = ctx.peers_with("delete")
    if "segwal" in names and "segwal_16m" not in names and ctx.cfg.segwal_segment_size is None:
        names.insert(names.index("segwal") + 1, "segwal_16m")
    dead: set[str] = set()
    half, cut = n // 2, n - n // 10 + 1
    ctx.log(f"delete: purge ≤{half:,} and truncate ≥{cut:,} of {n:,}: {', '.join(names)}")
    for rep in range(ctx.cfg.repeat):
        for name in rotate(names, rep):

            def one(name: str = name) -> None:
                p = ctx.peer(name)
                d = ctx.tmpdir(f"delete-{name}")
                try:
                    p.open(d)
                    ctx.build(p, 1, n)
                    p.close()
                    p.open(d)
                    before = allocated_bytes(d)
                    gc.collect()
                    t0 = time.perf_counter()
                    p.purge(half)
                    t1 = time.perf_counter()
                    p.truncate(cut)
                    t2 = time.perf_counter()
                    after = allocated_bytes(d)
                    p.close()
                    p.open(d)
                    lo, hi = p.bounds()
                    if (lo, hi) != (half + 1, cut - 1):
                        raise AssertionError(f"after reopen bounds are {lo}..{hi}, expected {half + 1}..{cut - 1}")
                    p.close()
                    reopened = allocated_bytes(d)
                    ctx.res.add("delete", "purge50", "ms", p, (t1 - t0) * 1e3, unit="ms", higher_is_better=False)
                    ctx.res.add("delete", "truncate10", "ms", p, (t2 - t1) * 1e3, unit="ms", higher_is_better=False)
                    ctx.res.add(
                        "delete",
                        "disk",
                        "freed_pct",
                        p,
                        100.0 * (before - after) / before if before else 0.0,
                        unit="%",
                        higher_is_better=True,
                        before_mb=before / 1e6,
                        after_mb=after / 1e6,
                        after_reopen_mb=reopened / 1e6,
                    )
                finally:
                    _close(p)
                    shutil.rmtree(d, ignore_errors=True)

            _guard(ctx, dead, "delete", name, one)


# --------------------------------------------------------------------------- 6. key/value


def run_kv(ctx: Ctx) -> None:
    s = ctx.cfg.sizes
    names = ctx.peers_with("kv") + [n for n in ctx.peers_with("kv_get") if n not in ctx.peers_with("kv")]
    dead: set[str] = set()
    rng = ctx.rng("kv")
    keys = [k.to_bytes(8, "big") for k in rng.sample(range(1 << 40), s.kv_keys)]
    work: list[list[Change]] = []
    for _b in range(s.kv_batches):
        changes: list[Change] = []
        for _ in range(100):
            k = keys[rng.randrange(s.kv_keys)]
            changes.append((k, None if rng.random() < 0.05 else ctx.payloads[rng.randrange(4096)]))
        work.append(changes)
    gets = [keys[rng.randrange(s.kv_keys)] for _ in range(s.kv_gets)]
    model: dict[bytes, bytes] = {}
    for changes in work:
        for k, v in changes:
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
    ctx.log(
        f"kv: {s.kv_batches} durable batches of 100 changes over {s.kv_keys:,} keys, {s.kv_gets:,} gets: {', '.join(names)}"
    )
    for rep in range(ctx.cfg.repeat):
        for name in rotate(names, rep):

            def one(name: str = name) -> None:
                p = ctx.peer(name)
                d = ctx.tmpdir(f"kv-{name}")
                try:
                    p.open(d)
                    prepared = [p.kv_prepare(c) for c in work]
                    gc.collect()
                    gc.disable()
                    try:
                        t0 = time.perf_counter()
                        for pc in prepared:
                            p.kv_apply(pc)
                        dt = time.perf_counter() - t0
                    finally:
                        gc.enable()
                    if p.durable:
                        ctx.res.add(
                            "kv",
                            "apply100",
                            "changes_per_s",
                            p,
                            len(work) * 100 / dt,
                            unit="changes/s",
                            higher_is_better=True,
                            us_per_batch=dt / len(work) * 1e6,
                        )
                    if "kv_get" not in p.caps:
                        return
                    p.close()
                    p.open(d)
                    for k in gets[:50]:
                        got = p.kv_get(k)
                        if (None if got is None else bytes(got)) != model.get(k):
                            raise AssertionError(f"get({k.hex()}) disagrees with the model")
                    get = p.kv_get
                    gc.collect()
                    gc.disable()
                    try:
                        t0 = time.perf_counter()
                        for k in gets:
                            get(k)
                        dt = time.perf_counter() - t0
                    finally:
                        gc.enable()
                    ctx.res.add("kv", "get", "ns_per_get", p, dt / len(gets) * 1e9, unit="ns", higher_is_better=False)
                finally:
                    _close(p)
                    shutil.rmtree(d, ignore_errors=True)
                    DictPeer.forget(d)

            _guard(ctx, dead, "kv", name, one)


# --------------------------------------------------------------------------- 7. segment-size sweep


def run_sweep(ctx: Ctx) -> None:
    s = ctx.cfg.sizes
    if "segwal" not in ctx.cfg.peers:
        ctx.note("sweep: segwal is not available, skipped")
        return
    dead: set[str] = set()
    batches = list(ctx.batches(1, s.sweep_append_n, 1024))
    ctx.log(
        f"sweep: segment sizes {s.sweep_mib} MiB, append {s.sweep_append_n:,} (B=1024), reopen at {s.sweep_reopen_n:,}"
    )
    for rep in range(ctx.cfg.repeat):
        for mib in rotate(list(s.sweep_mib), rep):
            tag = f"segwal_{mib}mib"

            def one(mib: int = mib, tag: str = tag) -> None:
                p = make_peer("segwal", segment_size=mib << 20)
                p.name = tag  # type: ignore[misc]
                p.label = f"segwal, {mib} MiB segments"  # type: ignore[misc]
                d = ctx.tmpdir(f"sweep-{mib}")
                try:
                    p.open(d)
                    gc.collect()
                    gc.disable()
                    try:
                        t0 = time.perf_counter()
                        for b in batches:
                            p.append(b)
                        dt = time.perf_counter() - t0
                    finally:
                        gc.enable()
                    ctx.build(p, s.sweep_append_n + 1, s.sweep_reopen_n - s.sweep_append_n)
                    p.close()
                    r = ctx.probe("segwal", d, segment_size=mib << 20)
                    if r["last"] != s.sweep_reopen_n:
                        raise AssertionError(f"reopen saw last={r['last']}")
                    ctx.res.add(
                        "sweep",
                        "segment size",
                        "append_entries_per_s",
                        p,
                        s.sweep_append_n / dt,
                        unit="entries/s",
                        higher_is_better=True,
                        segment_mib=mib,
                    )
                    ctx.res.add(
                        "sweep",
                        "segment size",
                        "reopen_ms",
                        p,
                        r["open_s"] * 1e3,
                        unit="ms",
                        higher_is_better=False,
                        files=len(os.listdir(d)),
                        segment_mib=mib,
                    )
                finally:
                    _close(p)
                    shutil.rmtree(d, ignore_errors=True)

            _guard(ctx, dead, f"sweep {mib} MiB", tag, one)


WORKLOADS: dict[str, Callable[[Ctx], None]] = {
    "append": run_append,
    "read": run_read,
    "reopen": run_reopen,
    "delete": run_delete,
    "kv": run_kv,
    "sweep": run_sweep,
}
