"""``segwal bench --archive``: segwal's archiver and ``segwal restore`` against Litestream 0.5, on one SeaweedFS bucket.

Three figures (the targets are issue 14's):

1. **Restore** of an N-entry log (default 1,000,000 entries of 100 random
   bytes, written in calls of 1,000): ``segwal restore URL DIR`` of the
   archive an in-process :class:`~segwal.storage.archive.Archiver` made while
   a ``WalEngine`` was written, against ``litestream restore`` of a
   :class:`~segwal.storage.sqlite.SqliteEngine` database holding the same
   entries, replicated by ``litestream replicate`` while it was written.
   Litestream's restore is timed after its own level-1 compaction has covered
   every level-0 file (it runs at each 30 s wall-clock boundary with the
   defaults; the bench waits for it, bounded), so it restores its start
   snapshot plus the L1 files.  Both are child processes timed wall-clock,
   interleaved, ``--restores`` rounds; each result is checked afterwards.
   Target: segwal's median no slower than Litestream's.
2. **Archive lag**: a steady load (``--rate`` calls/s of ``--per-call``
   entries, ``--lag-seconds`` long); lag = when a poller (every ``--poll``
   s) first sees the call's last index in the bucket minus when the durable
   call returned.  segwal: ``read_archived_position``; Litestream: its level-0
   LTX objects' header timestamps (:mod:`.archive_load`).  Target: segwal's
   p99 <= tail interval + 1 s.
3. **Writer CPU**: CPU time of the appending thread per one-entry
   ``persist_entries`` (``time.thread_time``), a ``WalEngine`` with an
   in-process ``Archiver`` running against one without, ``--pairs``
   interleaved pairs (order alternating).  Target: median ratio <= 1.05.

Also reported: bytes uploaded per byte the node wrote (the archiver's own
status) and uploaded bytes per payload byte for both.  ``--quick`` shrinks
every size (a smoke run: the targets refer to a full run).  Timing is never
asserted; the exit status is 0 when the run completed, 1 when a part failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from .archive_figures import Env, fig_cpu, fig_lag, start_litestream, status
from .archive_load import make_batches
from .archive_report import format_table, plot, targets

__all__ = ["build_parser", "main"]

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = (
    os.path.join(HERE, "results")
    if os.path.exists(os.path.join(os.path.dirname(HERE), "pyproject.toml"))
    else os.path.join(os.getcwd(), "bench-results")
)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``segwal bench --archive``."""
    ap = argparse.ArgumentParser(prog="segwal bench --archive", description=__doc__.split("\n")[0])
    ap.add_argument("--archive", action="store_true", help="(selects this benchmark)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    ap.add_argument("--figures", default="restore,lag,cpu", help="comma-separated subset of restore,lag,cpu")
    ap.add_argument("--entries", type=int, default=None, help="log size of the restore figure (default 1,000,000)")
    ap.add_argument("--payload", type=int, default=100, help="payload bytes per entry (default 100)")
    ap.add_argument("--restores", type=int, default=None, help="interleaved restore rounds (default 3)")
    ap.add_argument("--rate", type=float, default=100.0, help="append calls per second of the lag load (default 100)")
    ap.add_argument("--per-call", type=int, default=10, help="entries per call of the lag load (default 10)")
    ap.add_argument("--lag-seconds", type=float, default=None, help="length of each lag run (default 30 s)")
    ap.add_argument("--poll", type=float, default=0.05, help="archive poll period of the lag figure (default 0.05 s)")
    ap.add_argument(
        "--no-sidecar",
        action="store_true",
        help="lag figure: skip the `segwal archive run` sidecar (--quick always does)",
    )
    ap.add_argument("--tail-interval", type=float, default=1.0, help="the archiver's tail interval (default 1 s)")
    ap.add_argument("--pairs", type=int, default=None, help="interleaved pairs of the CPU figure (default 10)")
    ap.add_argument("--cpu-appends", type=int, default=None, help="timed one-entry appends per CPU run (default 5,000)")
    ap.add_argument(
        "--litestream-wait",
        choices=("l1", "none"),
        default=None,
        help="before timing Litestream's restore, wait for its L1 compaction (default; <= 30 s) or not "
        "(--quick's default: it restores its start snapshot plus the L0 files)",
    )
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint on 127.0.0.1 (default: start SeaweedFS)")
    ap.add_argument("--bucket", default="segwal-test", help="the bucket at --endpoint")
    ap.add_argument("--data-dir", default=None, help="where the engines are written (default: a temp dir)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="directory for the JSON (default bench/results in a checkout)")
    ap.add_argument("--no-json", action="store_true", help="write no JSON")
    ap.add_argument("--plot", default=None, help="also draw a PNG (lag percentiles, restore times) at this path")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs/benchmarks.md)")
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--label", default="", help="free text stored in the JSON")
    return ap


# ---------------------------------------------------------------- figure 1: restore


def _fill_segwal(env: Env, batches: list[list[Any]], prefix: str) -> dict[str, float]:
    from segwal.engine import WalEngine
    from segwal.storage.archive import Archiver, read_archived_position

    d = env.scratch("wal")
    last = batches[-1][-1].index
    t = time.perf_counter()
    with WalEngine(d) as eng, Archiver(eng, env.store, prefix, tail_interval=env.args.tail_interval) as arch:
        for b in batches:
            eng.persist_entries(b)
        written = time.perf_counter() - t
        arch.sync_now()
        st = status(arch)
    pos = int(read_archived_position(env.store, prefix))
    if pos < last:
        raise RuntimeError(f"segwal archive at {prefix} holds up to {pos}, expected {last}")
    shutil.rmtree(d, ignore_errors=True)
    return {"write_s": written, "archived_s": time.perf_counter() - t, **st}


def _bytecode_env() -> dict[str, str]:
    """The environment without ``PYTHONDONTWRITEBYTECODE``: a pip-installed segwal is byte-compiled, so its
    ``segwal restore`` does not compile its modules at every start (Litestream is a compiled binary)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _warm_segwal_cli() -> None:
    """Byte-compile what ``segwal restore`` imports (untimed), as ``pip install`` would have."""
    subprocess.run(
        [sys.executable, "-c", "import segwal.cli, segwal.tools.archive"],
        env=_bytecode_env(),
        check=True,
        capture_output=True,
    )


def _restore_segwal(env: Env, prefix: str, dest: str) -> float:
    cmd = [sys.executable, "-m", "segwal", "restore", env.url(prefix), dest, *env.store_options()]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_bytecode_env())
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"segwal restore failed ({r.returncode}): {r.stderr[-2000:]}")
    return dt


def _check_wal(dest: str, batches: list[list[Any]], rng: random.Random) -> None:
    from segwal.engine import WalEngine

    last = batches[-1][-1].index
    with WalEngine(dest, readonly=True) as eng:
        if eng.last_index() != last or eng.first_index() != batches[0][0].index:
            raise RuntimeError(
                f"segwal restore of {dest}: [{eng.first_index()}, {eng.last_index()}], expected "
                f"[{batches[0][0].index}, {last}]"
            )
        for b in rng.sample(batches, min(20, len(batches))):
            e = b[rng.randrange(len(b))]
            if eng.entry(e.index) != e:
                raise RuntimeError(f"segwal restore of {dest}: entry {e.index} differs")


def _check_sqlite(db: str, batches: list[list[Any]], rng: random.Random) -> None:
    from segwal.storage.sqlite import SqliteEngine

    d = tempfile.mkdtemp(dir=os.path.dirname(db))
    os.replace(db, os.path.join(d, "segwal.sqlite3"))
    with SqliteEngine(d) as eng:
        last = batches[-1][-1].index
        if eng.last_index() != last:
            raise RuntimeError(f"litestream restore of {db}: last index {eng.last_index()}, expected {last}")
        for b in rng.sample(batches, min(20, len(batches))):
            e = b[rng.randrange(len(b))]
            if eng.entry(e.index) != e:
                raise RuntimeError(f"litestream restore of {db}: entry {e.index} differs")
    shutil.rmtree(d, ignore_errors=True)


def fig_restore(env: Env, out: dict[str, Any]) -> None:
    """Figure 1 (see the module docs); fills ``out['restore']``."""
    a = env.args
    n = a.entries or (20_000 if a.quick else 1_000_000)
    rounds = a.restores or (1 if a.quick else 3)
    batches = make_batches(1, n, 1000, a.payload, env.rng)
    seg_prefix = f"bench-archive/{uuid.uuid4().hex[:10]}"
    env.log(f"restore: writing {n} entries into a WalEngine with the Archiver running")
    seg_fill = _fill_segwal(env, batches, seg_prefix)
    env.log(f"restore: writing {n} entries into SqliteEngine with litestream replicate running")
    ls_path = f"bench-litestream/{uuid.uuid4().hex[:10]}"
    eng, ls = start_litestream(env, ls_path)
    try:
        t = time.perf_counter()
        for b in batches:  # the engine stays open: its close() checkpoints, which Litestream's read lock blocks
            eng.persist_entries(b)
        ls_write = time.perf_counter() - t
        txid = ls.wait_synced(env.store, time.time(), timeout=60)
        wait = a.litestream_wait or ("none" if a.quick else "l1")
        waited = 0.0
        if wait == "l1":
            env.log(f"restore: waiting for Litestream's level-1 compaction to reach TXID {txid:x}")
            waited = ls.wait_compacted(env.store, 1, txid, timeout=120)
        plan = sorted({(o.level, o.min_txid, o.max_txid) for o in ls.objects(env.store)})
        ls_bytes = sum(o.size for o in ls.objects(env.store))
        _warm_segwal_cli()
        seg_times: list[float] = []
        ls_times: list[float] = []
        for k in range(rounds):
            for who in ("segwal", "litestream") if k % 2 == 0 else ("litestream", "segwal"):
                if who == "segwal":
                    dest = env.scratch("restored-wal")
                    seg_times.append(_restore_segwal(env, seg_prefix, dest))
                    _check_wal(dest, batches, env.rng)
                    shutil.rmtree(dest, ignore_errors=True)
                else:
                    dest = env.scratch("restored-sqlite")
                    os.makedirs(dest)
                    db = os.path.join(dest, "out.db")
                    ls_times.append(ls.restore(db))
                    _check_sqlite(db, batches, env.rng)
                    shutil.rmtree(dest, ignore_errors=True)
            env.log(f"restore round {k + 1}/{rounds}: segwal {seg_times[-1]:.2f} s, litestream {ls_times[-1]:.2f} s")
    finally:
        ls.stop()
        eng.close()
    payload = n * a.payload
    out["restore"] = {
        "entries": n,
        "payload": a.payload,
        "per_call": 1000,
        "rounds": rounds,
        "segwal_s": seg_times,
        "litestream_s": ls_times,
        "segwal_median_s": statistics.median(seg_times),
        "litestream_median_s": statistics.median(ls_times),
        "paired_ratio_median": statistics.median(s / t for s, t in zip(seg_times, ls_times, strict=True)),
        "segwal_fill": seg_fill,
        "litestream_write_s": ls_write,
        "litestream_wait": wait,
        "litestream_compaction_wait_s": waited,
        "litestream_objects": [list(p) for p in plan],
        "segwal_uploaded_per_written": seg_fill["bytes_uploaded"] / max(1.0, seg_fill["bytes_written_by_node"]),
        "segwal_uploaded_per_payload": seg_fill["bytes_uploaded"] / payload,
        "litestream_bucket_per_payload": ls_bytes / payload,
    }


FIGURES = {"restore": fig_restore, "lag": fig_lag, "cpu": fig_cpu}


def main(argv: list[str] | None = None) -> int:
    """Run the archive benchmark; print a table, write the JSON; 0 when it completed (timing is never asserted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    for f in figures:
        if f not in FIGURES:
            print(
                f"segwal bench --archive: --figures: unknown figure {f!r} (choose from {', '.join(FIGURES)})",
                file=sys.stderr,
            )
            return 2
    for name in ("entries", "restores", "pairs", "cpu-appends"):
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value < 1:
            print(f"segwal bench --archive: --{name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.rate <= 0 or args.poll <= 0 or args.tail_interval <= 0 or args.per_call < 1 or args.payload < 1:
        print(
            "segwal bench --archive: --rate, --poll, --tail-interval must be > 0; --per-call, --payload >= 1",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="segwal-bench-archive-", dir=args.data_dir)
    server: Any = None
    res: dict[str, Any] = {}
    started = time.time()
    load_start = os.getloadavg()
    status = 0
    try:
        from segwal.testing.seaweedfs import SeaweedServer, start_seaweedfs

        if args.endpoint is None:
            server = start_seaweedfs(work)
        else:
            server = SeaweedServer(args.endpoint, args.bucket, None, work, [])  # type: ignore[arg-type]
        env = Env(server, server.store(), work, args, random.Random(args.seed))
        for f in figures:
            t = time.perf_counter()
            FIGURES[f](env, res)
            env.log(f"{f} done in {time.perf_counter() - t:.0f} s")
    except (RuntimeError, ImportError) as e:
        print(f"segwal bench --archive: {e}", file=sys.stderr)
        status = 1
    finally:
        if server is not None and server.proc is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(f"segwal bench --archive ({mode}; SeaweedFS S3 on 127.0.0.1; litestream {_litestream_version()})")
    print(format_table(res, args.markdown))
    for name, value, ok in targets(res):
        print(f"{'- ' if args.markdown else '  '}target: {name}: {value}: {'met' if ok else 'MISSED'}")
    if args.quick:
        print("(--quick: reduced sizes; the targets refer to a full run.)")
    if not args.no_json and res:
        doc = {
            "schema": 1,
            "command": "segwal bench " + " ".join(argv),
            "mode": mode,
            "label": args.label,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "elapsed_s": time.time() - started,
            "litestream": _litestream_version(),
            "figures": res,
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
                "python": sys.version.split()[0],
            },
            "targets": [{"name": n, "value": v, "met": ok} for n, v, ok in targets(res)],
            "complete": status == 0,
        }
        os.makedirs(args.out, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        path = os.path.join(args.out, f"archive-{mode}-{stamp}.json")
        for dest in (path, os.path.join(args.out, f"archive-latest-{mode}.json")):
            with open(dest, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1, default=str)
        print(f"wrote {path}")
    if args.plot and res:
        try:
            plot(res, args.plot)
            print(f"plot: {args.plot}")
        except ImportError as exc:
            print(f"plot skipped: {exc}")
    return status


def _litestream_version() -> str:
    from .peers.litestream import litestream_binary

    binary = litestream_binary()
    if binary is None:
        return "missing"
    try:
        return subprocess.run(
            [binary, "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"? ({e})"


if __name__ == "__main__":
    raise SystemExit(main())
