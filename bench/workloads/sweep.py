"""The segment-size sweep: segwal's append throughput and reopen time for each segment size."""

from __future__ import annotations

import gc
import os
import shutil
import time

from ..peers import make_peer
from .context import Ctx, close_quietly, guard, rotate

# --------------------------------------------------------------------------- 7. segment-size sweep


def run_sweep(ctx: Ctx) -> None:
    """segwal's append entries/s and reopen time for each segment size of the sweep."""
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
                    close_quietly(p)
                    shutil.rmtree(d, ignore_errors=True)

            guard(ctx, dead, f"sweep {mib} MiB", tag, one)
