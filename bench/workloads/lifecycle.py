"""The workloads of a log's lifetime on disk: reopen (open time and resident memory by size) and purge/truncate."""

from __future__ import annotations

import gc
import shutil
import time

from ..machine import allocated_bytes
from .context import Ctx, close_quietly, guard, rotate

# --------------------------------------------------------------------------- 4. reopen + RSS


def run_reopen(ctx: Ctx) -> None:
    """Open time and resident memory of a reopened log at each size, measured in a fresh interpreter (the probe)."""
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

                guard(ctx, dead, f"reopen N={size:,} (build)", name, grow)
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

                    guard(ctx, dead, f"reopen N={size:,}", name, one)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- 5. purge / truncate


def run_delete(ctx: Ctx) -> None:
    """Time of a purge of the first half and a truncate of the last tenth, and the disk space they free."""
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
                    close_quietly(p)
                    shutil.rmtree(d, ignore_errors=True)

            guard(ctx, dead, "delete", name, one)
