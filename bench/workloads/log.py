"""The log workloads: durable append throughput per batch size, and point and range reads of a built log."""

from __future__ import annotations

import gc
import shutil
import time
from typing import Any

from ..machine import allocated_bytes
from ..peers import Entry
from ..peers.memory import DictPeer
from .context import RECORD, Ctx, close_quietly, guard, rotate

# --------------------------------------------------------------------------- 1. append


def run_append(ctx: Ctx) -> None:
    """Entries/s of durable appends for each (batch size, N), fresh store per sample; only the append loop is timed."""
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
                        close_quietly(p)
                        shutil.rmtree(d, ignore_errors=True)

                guard(ctx, dead, f"append {case}", name, one)


# --------------------------------------------------------------------------- 2-3. reads


def run_read(ctx: Ctx) -> None:
    """ns per point read and entries/s of 1000-entry range reads, on a log built once per store."""
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

        guard(ctx, dead, "read (build)", name, build)
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
                        close_quietly(p)

                guard(ctx, dead, "read", name, one)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
            DictPeer.forget(d)
