"""The key/value workload: durable batches of 100 changes, then gets after a reopen, checked against a model."""

from __future__ import annotations

import gc
import shutil
import time

from ..peers import Change
from ..peers.memory import DictPeer
from .context import Ctx, close_quietly, guard, rotate

# --------------------------------------------------------------------------- 6. key/value


def run_kv(ctx: Ctx) -> None:
    """Changes/s of durable 100-change batches, then ns per get after a reopen (answers checked against a model)."""
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
                    close_quietly(p)
                    shutil.rmtree(d, ignore_errors=True)
                    DictPeer.forget(d)

            guard(ctx, dead, "kv", name, one)
