"""Figures 2 and 3 of ``segwal bench --archive`` (archive lag, writer CPU) and what every figure shares.

:class:`Env` carries the S3 server, a store on its bucket, scratch space and
the options; :func:`start_litestream` starts ``litestream replicate`` beside a
fresh :class:`~segwal.storage.sqlite.SqliteEngine` and waits for its start
snapshot.  The method of each figure is in :mod:`.archive`'s docstring and in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .archive_load import (
    Commit,
    LitestreamPoller,
    PositionPoller,
    cpu_per_call,
    lags,
    make_batches,
    percentiles,
    steady_appends,
    summary,
)
from .peers.litestream import SNAPSHOT_LEVEL, Litestream

__all__ = ["Env", "fig_cpu", "fig_lag", "start_litestream", "status"]


@dataclass
class Env:
    """What every figure needs: the S3 server, a store on its bucket, scratch space, options."""

    server: Any
    store: Any
    work: str
    args: argparse.Namespace
    rng: random.Random

    def url(self, prefix: str) -> str:
        return f"s3://{self.server.bucket}/{prefix}"

    def store_options(self) -> list[str]:
        out: list[str] = []
        for key, value in self.server.url_options().items():
            out += ["--store-option", f"{key}={value}"]
        return out

    def scratch(self, name: str) -> str:
        return os.path.join(self.work, f"{name}-{uuid.uuid4().hex[:8]}")

    def log(self, msg: str) -> None:
        print(f"[archive bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def status(arch: Any) -> dict[str, float]:
    """The archiver's counters as floats (from its ``status()``)."""
    st = arch.status()
    get = st.get if isinstance(st, dict) else (lambda k, d=None: getattr(st, k, d))
    return {
        k: float(get(k, 0) or 0) for k in ("shipped_index", "lag_seconds", "bytes_uploaded", "bytes_written_by_node")
    }


def start_litestream(env: Env, path: str) -> tuple[Any, Litestream]:
    """A fresh SqliteEngine and ``litestream replicate`` of it to ``path``, once its start snapshot is in the bucket."""
    from segwal.storage.sqlite import DB_NAME, SqliteEngine

    d = env.scratch("sqlite")
    eng = SqliteEngine(d)
    ls = Litestream(os.path.join(d, DB_NAME), env.server.endpoint, env.server.bucket, path, env.scratch("ls"))
    ls.start()
    deadline = time.monotonic() + 60
    while not ls.objects(env.store, SNAPSHOT_LEVEL):  # its start snapshot: replication is running
        ls.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(f"litestream took no start snapshot within 60 s: {ls.log_tail()}")
        time.sleep(0.2)
    return eng, ls


# ---------------------------------------------------------------- figure 2: lag


def _lag_result(commits: list[Commit], poller: Any, caught_up: bool) -> dict[str, Any]:
    """The lag figures every lag run reports: per-commit lags against what ``poller`` saw."""
    xs, missing = lags(commits, poller.seen)
    return {
        "lag": summary(xs).to_json(),
        "percentiles": percentiles(xs),
        "missing": missing,
        "caught_up": caught_up,
        "polls": poller.polls,
        "poll_errors": poller.errors[:5],
        "load_s": commits[-1].at - commits[0].at,
    }


def _lag_segwal(env: Env, batches: list[list[Any]]) -> dict[str, Any]:
    """The in-process ``Archiver`` (a thread of the writing process)."""
    from segwal.engine import WalEngine
    from segwal.storage.archive import Archiver

    a = env.args
    prefix = f"bench-archive-lag/{uuid.uuid4().hex[:10]}"
    d = env.scratch("wal-lag")
    with WalEngine(d) as eng, Archiver(eng, env.store, prefix, tail_interval=a.tail_interval) as arch:
        arch.sync_now()
        poller = PositionPoller(env.store, prefix, a.poll)
        poller.start()
        try:
            commits = steady_appends(eng.persist_entries, batches, a.rate)
            caught_up = poller.wait_for(commits[-1].index, a.tail_interval + 30)
        finally:
            poller.stop()
        st = status(arch)
    shutil.rmtree(d, ignore_errors=True)
    payload = sum(len(b) for b in batches) * a.payload
    return {
        **_lag_result(commits, poller, caught_up),
        **st,
        "uploaded_per_written": st["bytes_uploaded"] / max(1.0, st["bytes_written_by_node"]),
        "uploaded_per_payload": st["bytes_uploaded"] / payload,
    }


def _lag_sidecar(env: Env, batches: list[list[Any]]) -> dict[str, Any]:
    """``segwal archive run DIR URL`` (a separate process over a read-only view, like Litestream)."""
    from segwal.engine import WalEngine

    a = env.args
    prefix = f"bench-archive-sidecar/{uuid.uuid4().hex[:10]}"
    d = env.scratch("wal-sidecar")
    log_path = os.path.join(env.work, f"sidecar-{uuid.uuid4().hex[:6]}.log")
    with WalEngine(d) as eng:
        eng.persist_entries(batches[0][:1])  # something to archive, so the start is visible
        first = batches[0][0].index
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "segwal",
                    "archive",
                    "run",
                    d,
                    env.url(prefix),
                    "--tail-interval",
                    str(a.tail_interval),
                    *env.store_options(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poller = PositionPoller(env.store, prefix, a.poll)
        poller.start()
        try:
            if not poller.wait_for(first, 60):
                raise RuntimeError(f"segwal archive run shipped nothing within 60 s: {_tail(log_path)}")
            rest = [batches[0][1:], *batches[1:]] if len(batches[0]) > 1 else batches[1:]
            commits = steady_appends(eng.persist_entries, rest, a.rate)
            caught_up = poller.wait_for(commits[-1].index, a.tail_interval + 30)
        finally:
            poller.stop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    shutil.rmtree(d, ignore_errors=True)
    return {
        **_lag_result(commits, poller, caught_up),
        "exit_status": proc.returncode,
        "status_line": _tail(log_path, 300).strip().splitlines()[-1:],
    }


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _lag_litestream(env: Env, batches: list[list[Any]]) -> dict[str, Any]:
    a = env.args
    eng, ls = start_litestream(env, f"bench-litestream-lag/{uuid.uuid4().hex[:10]}")
    commits: list[Commit] = []
    poller = LitestreamPoller(ls, env.store, commits, a.poll)
    try:
        poller.start()

        def persist(b: list[Any]) -> None:
            eng.persist_entries(b)

        period = 1.0 / a.rate
        t0 = time.monotonic()
        for k, b in enumerate(batches):  # the same schedule as steady_appends, into the list the poller reads
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            persist(b)
            commits.append(Commit(b[-1].index, time.time()))
        caught_up = poller.wait_for(commits[-1].index, 30)
    finally:
        poller.stop()
        ls.stop()
        eng.close()
    payload = sum(len(b) for b in batches) * a.payload
    return {
        **_lag_result(commits, poller, caught_up),
        "l0_uploaded_per_payload": poller.bytes_listed / payload,
    }


def fig_lag(env: Env, out: dict[str, Any]) -> None:
    """Figure 2 (see the module docs); fills ``out['lag']``."""
    a = env.args
    seconds = a.lag_seconds or (2.0 if a.quick else 30.0)
    calls = max(2, int(seconds * a.rate))
    batches = make_batches(1, calls * a.per_call, a.per_call, a.payload, env.rng)
    env.log(f"lag: segwal, {calls} calls of {a.per_call} entries at {a.rate:g}/s")
    seg = _lag_segwal(env, batches)
    env.log(f"lag: litestream, the same load; segwal p99 was {seg['lag']['p99']:.3f} s")
    lit = _lag_litestream(env, batches)
    out["lag"] = {
        "rate": a.rate,
        "per_call": a.per_call,
        "seconds": seconds,
        "poll_s": a.poll,
        "tail_interval": a.tail_interval,
        "segwal": seg,
        "litestream": lit,
    }
    if not a.quick and not a.no_sidecar:
        env.log(f"lag: segwal archive run (sidecar), the same load; litestream p99 was {lit['lag']['p99']:.3f} s")
        out["lag"]["segwal_sidecar"] = _lag_sidecar(env, batches)


# ---------------------------------------------------------------- figure 3: CPU pairs


def _cpu_run(env: Env, with_archiver: bool, batches: list[list[Any]], warmup: int) -> float:
    from segwal.engine import WalEngine

    d = env.scratch("wal-cpu")
    with WalEngine(d) as eng:
        if with_archiver:
            from segwal.storage.archive import Archiver

            prefix = f"bench-archive-cpu/{uuid.uuid4().hex[:10]}"
            with Archiver(eng, env.store, prefix, tail_interval=env.args.tail_interval) as arch:
                arch.sync_now()
                x = cpu_per_call(eng.persist_entries, batches, warmup)
        else:
            x = cpu_per_call(eng.persist_entries, batches, warmup)
    shutil.rmtree(d, ignore_errors=True)
    return x


def fig_cpu(env: Env, out: dict[str, Any]) -> None:
    """Figure 3 (see the module docs); fills ``out['cpu']``."""
    a = env.args
    pairs = a.pairs or (2 if a.quick else 10)
    n = a.cpu_appends or (300 if a.quick else 5000)
    warmup = max(50, n // 10)
    batches = make_batches(1, n + warmup, 1, a.payload, env.rng)
    without: list[float] = []
    with_: list[float] = []
    for k in range(pairs):
        for arch in (False, True) if k % 2 == 0 else (True, False):
            (with_ if arch else without).append(_cpu_run(env, arch, batches, warmup))
        env.log(f"cpu pair {k + 1}/{pairs}: without {without[-1] * 1e6:.1f} us, with {with_[-1] * 1e6:.1f} us")
    ratios = [w / o for w, o in zip(with_, without, strict=True)]
    out["cpu"] = {
        "pairs": pairs,
        "appends_per_run": n,
        "warmup": warmup,
        "per_call": 1,
        "without_us": [x * 1e6 for x in without],
        "with_us": [x * 1e6 for x in with_],
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "without_median_us": statistics.median(without) * 1e6,
        "with_median_us": statistics.median(with_) * 1e6,
    }
