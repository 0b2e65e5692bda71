"""Command line of the benchmark: ``python -m bench`` / ``segwal bench``.

``main(argv)`` parses the options, checks which stores can run here (a store
whose package is missing is skipped with a note, never an error), records the
machine, runs the chosen workloads with the stores interleaved, prints one
table per figure with ratios to the raw limit and to the best peer, checks the
issue's targets, and writes ``<out>/bench-<stamp>.json`` (and ``latest.json``)
plus PNG plots when matplotlib is installed.

Exit status: 0 when the run completed (even with skipped stores or missed
targets: timing is never asserted); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from .machine import machine_info
from .peers import ALL_PEERS, make_peer
from .report import Results, evaluate_targets, format_summary, format_tables, format_targets
from .workloads import SIZES, WORKLOADS, Config, Ctx

__all__ = ["build_parser", "main"]

HERE = os.path.dirname(os.path.abspath(__file__))
# In a source checkout results go to bench/results; an installed copy writes to ./bench-results.
DEFAULT_OUT = (
    os.path.join(HERE, "results")
    if os.path.exists(os.path.join(os.path.dirname(HERE), "pyproject.toml"))
    else os.path.join(os.getcwd(), "bench-results")
)
ALIASES = {"point": "read", "range": "read", "purge": "delete", "truncate": "delete", "segment": "sweep"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="segwal bench",
        description="Benchmark segwal against the raw disk limit and the stores a Python Raft user would pick.",
    )
    ap.add_argument("--quick", action="store_true", help="reduced sizes, well under a minute (CI smoke test)")
    ap.add_argument("--cloud", action="store_true", help="the object-store benchmark instead (`segwal bench --cloud -h`)")
    ap.add_argument(
        "--archive", action="store_true",
        help="the archiver and `segwal restore` against Litestream instead (`segwal bench --archive -h`)",
    )
    ap.add_argument(
        "--cluster", action="store_true", help="the 3-node PySyncObj cluster benchmark instead (see bench/cluster.py)"
    )
    ap.add_argument(
        "--workloads",
        default="all",
        help=f"comma-separated subset of {','.join(WORKLOADS)} (aliases: point, range, purge, truncate); default all",
    )
    ap.add_argument("--peers", default="all", help=f"comma-separated subset of {','.join(ALL_PEERS)}; default all")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per figure; the median is reported (default 3)")
    ap.add_argument("--seed", type=int, default=20240501, help="seed of payloads and access patterns")
    ap.add_argument("--out", default=DEFAULT_OUT, help="directory for the JSON (default bench/results in a checkout)")
    ap.add_argument("--plots", default=None, help="directory for PNG plots (default: the --out directory)")
    ap.add_argument("--no-plots", action="store_true", help="do not draw plots")
    ap.add_argument("--data-dir", default=None, help="where the stores are created (default: a temp dir under --out)")
    ap.add_argument(
        "--segment-size", type=int, default=None, help="segwal segment size in bytes (default: the engine's)"
    )
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for docs/benchmarks.md)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--label", default="", help="free text stored in the JSON (e.g. the segwal commit measured)")
    ap.add_argument("--kv-scale", action="store_true",
                    help="instead: the key/value scale section (open, memory, get at 1M/10M keys; "
                    "`segwal bench --kv-scale --help`)")
    return ap


def _select(spec: str, known: list[str], aliases: dict[str, str], what: str) -> list[str]:
    if spec == "all":
        return list(known)
    out: list[str] = []
    for raw in spec.split(","):
        name = aliases.get(raw.strip(), raw.strip())
        if name not in known:
            raise SystemExit(f"unknown {what} {raw!r}; choose from {', '.join(known)}")
        if name not in out:
            out.append(name)
    return [n for n in known if n in out]


def _segwal_location() -> str:
    try:
        import segwal.engine

        return os.path.dirname(os.path.abspath(segwal.engine.__file__ or ""))
    except Exception as exc:
        return f"not importable: {exc}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--kv-scale" in argv:  # the key/value scale section: its own options
        from .kv_scale import main as kv_scale_main

        return kv_scale_main(argv)
    if "--cloud" in argv:  # the object-store benchmark: its own options
        from .cloud import main as cloud_main

        return cloud_main(argv)
    if "--archive" in argv:  # the archive/restore benchmark against Litestream: its own options
        from .archive import main as archive_main

        return archive_main(argv)
    if "--cluster" in argv:  # the 3-node PySyncObj cluster benchmark has its own options
        from .cluster import main as cluster_main

        return cluster_main(argv)
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        print("--repeat must be >= 1", file=sys.stderr)
        return 2
    # A polite kill (SIGTERM) still runs the ``finally`` that removes the data directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workloads = _select(args.workloads, list(WORKLOADS), ALIASES, "workload")
    wanted = _select(args.peers, list(ALL_PEERS), {}, "peer")

    notes: list[str] = []
    peers: list[str] = []
    versions: dict[str, str] = {}
    for name in wanted:
        p = make_peer(name)
        why = p.unavailable()
        if why:
            notes.append(f"{name} skipped: {why}")
            continue
        peers.append(name)
        try:
            versions[p.module or name] = p.version()
        except Exception as exc:  # a version lookup never stops a run
            versions[p.module or name] = f"? ({exc})"
    for mod in ("numpy", "crc32c", "xxhash", "matplotlib"):
        try:
            from importlib.metadata import version

            versions.setdefault(mod, version(mod))
        except Exception:
            pass

    os.makedirs(args.out, exist_ok=True)
    own_data = args.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="tmp-data-", dir=args.out) if own_data else args.data_dir
    os.makedirs(data_dir, exist_ok=True)

    cfg = Config(
        peers=peers,
        workloads=workloads,
        repeat=args.repeat,
        seed=args.seed,
        data_dir=data_dir,
        sizes=SIZES["quick" if args.quick else "full"],
        segwal_segment_size=args.segment_size,
        verbose=not args.quiet,
    )
    res = Results()
    ctx = Ctx(cfg, res)
    for n in notes:
        ctx.note(n)
    started = time.time()
    t0 = time.perf_counter()
    try:
        ctx.log(f"stores: {', '.join(peers)}; workloads: {', '.join(workloads)}; repeat {args.repeat}")
        machine = machine_info(data_dir, versions, 50 if args.quick else 300)
        ctx.log(
            "fdatasync 4 KiB: append {append_median_us:.0f} µs, overwrite {overwrite_median_us:.0f} µs".format(
                **machine["fdatasync"]
            )
        )
        timings: dict[str, float] = {}
        for w in workloads:
            tw = time.perf_counter()
            WORKLOADS[w](ctx)
            timings[w] = time.perf_counter() - tw
            ctx.log(f"{w} done in {timings[w]:.1f} s")
    finally:
        if own_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    elapsed = time.perf_counter() - t0

    targets = evaluate_targets(res)
    print(format_tables(res, markdown=args.markdown))
    summary = format_summary(res, markdown=args.markdown)
    if summary:
        print("Summary (medians; ratios paired, > 1 = segwal better):\n" + summary + "\n")
    print("Targets of issue 4 (ratios from this run):" if not args.markdown else "#### Targets of issue 4\n")
    print(format_targets(targets, markdown=args.markdown))
    if args.quick:
        print("\n(--quick: reduced sizes; ratios are indicative only, the targets refer to a full run.)")
    if ctx.notes:
        print("\nNotes:")
        for n in ctx.notes:
            print(f"- {n}")

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    doc: dict[str, Any] = {
        "schema": 1,
        "command": "segwal bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": elapsed,
        "workload_s": timings,
        "repeat": args.repeat,
        "seed": args.seed,
        "stores": peers,
        "label": args.label,
        "segwal_location": _segwal_location(),
        "machine": machine,
        "figures": res.to_json(),
        "targets": targets,
        "notes": ctx.notes,
    }
    path = os.path.join(args.out, f"bench-{doc['mode']}-{stamp}.json")
    for dest in (path, os.path.join(args.out, f"latest-{doc['mode']}.json")):
        with open(dest, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, default=str)
    print(f"\nwrote {path} ({elapsed:.0f} s)")

    if not args.no_plots:
        try:
            from .plot import plot_all

            made = plot_all(doc, args.plots or args.out)
            if made:
                print("plots: " + ", ".join(made))
        except ImportError as exc:
            print(f"plots skipped: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
