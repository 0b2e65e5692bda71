"""The ``segwal`` command line (also ``python -m segwal``).

Subcommands: ``demo``, ``inspect``, ``verify``, ``dump``, ``repair``,
``crashtest``, ``bench``.  Expected errors (missing or locked directory,
corrupt files) are printed to stderr as one line, with a non-zero exit status
and no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

from segwal.errors import CorruptionError, SegwalError

__all__ = ["main", "build_parser"]


def _need_dir(path: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(2, "no such engine directory", path)
    if not os.path.exists(os.path.join(path, "MANIFEST")):
        raise CorruptionError("not a segwal directory (no MANIFEST)", path=os.path.join(path, "MANIFEST"))
    return path


def _cmd_demo(args: argparse.Namespace) -> int:
    from segwal.demo import run

    return run(args.dir)


def _store_url(args: argparse.Namespace) -> tuple[str, dict[str, str]] | None:
    """``(url, store options)`` when the target is an object-store URL, else ``None`` (a directory)."""
    from segwal.storage.objectstore.urls import has_scheme, parse_store_options

    if not has_scheme(args.dir):
        if args.store_option:
            raise ValueError("--store-option applies only to an object-store URL (s3://, gs://, az://, file://)")
        return None
    return args.dir, parse_store_options(args.store_option or [])


def _cmd_inspect(args: argparse.Namespace) -> int:
    from segwal.tools.inspect import format_inspection, inspect_dir

    target = _store_url(args)
    if target is not None:
        from segwal.tools.objectstore import format_prefix_inspection, inspect_prefix

        found = inspect_prefix(*target)
        print(json.dumps(found, indent=2) if args.json else "\n".join(format_prefix_inspection(found)))
        return 0
    info = inspect_dir(_need_dir(args.dir))
    print(json.dumps(info, indent=2) if args.json else "\n".join(format_inspection(info)))
    return 0


def _progress(done: int, total: int) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    frac = done / total if total else 1.0
    bar = "#" * int(frac * width)
    print(f"\rverifying [{bar:<{width}}] {frac * 100:5.1f}%", end="" if done < total else "\n", file=sys.stderr)


def _cmd_verify(args: argparse.Namespace) -> int:
    from segwal.fs import OsFileSystem
    from segwal.tools.verify import verify

    target = _store_url(args)
    if target is not None:
        from segwal.tools.objectstore import verify_prefix

        rep = verify_prefix(*target)
        if args.json:
            print(json.dumps(dataclasses.asdict(rep), indent=2))
        else:
            for line in rep.findings:
                print(line)
            verdict = "clean" if rep.exit_status == 0 else "CORRUPTION"
            print(f"{rep.objects} objects, {rep.entries} entries, {rep.bytes_scanned} bytes checked: {verdict}")
        return rep.exit_status
    path = _need_dir(args.dir)
    # No lock: a running node's directory is verified as it is (tools/verify.py).
    report = verify(path, fs=OsFileSystem(), progress=None if args.json else _progress, live=True if args.live else None)
    if args.json:
        print(json.dumps({
            "exit_status": report.exit_status,
            "segments": report.segments,
            "entries": report.entries,
            "bytes": report.bytes_scanned,
            "live": report.live,
            "live_notes": list(report.live_notes),
            "findings": [dataclasses.asdict(f) for f in report.findings],
        }, indent=2))
    else:
        for f in report.findings:
            print(str(f))
        for n in report.live_notes:
            print(f"live: {n}")
        verdict = {0: "clean", 1: "recoverable findings only", 2: "CORRUPTION"}[report.exit_status]
        when = " (live: read beside a writer at work)" if report.live else ""
        print(f"{report.segments} segments, {report.entries} entries, {report.bytes_scanned} bytes checked{when}: {verdict}")
    return report.exit_status


def _cmd_dump(args: argparse.Namespace) -> int:
    from segwal.tools.dump import dump_lines

    out = sys.stdout
    target = _store_url(args)
    if target is not None:
        from segwal.tools.objectstore import dump_prefix_lines

        for line in dump_prefix_lines(*target, args.from_index, args.to_index, args.encoding):
            out.write(line + "\n")
        return 0
    for line in dump_lines(_need_dir(args.dir), args.from_index, args.to_index, args.encoding):
        out.write(line + "\n")
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from segwal.tools.repair import repair

    result = repair(_need_dir(args.dir), force=args.force)
    for line in result.lines:
        print(line)
    return result.exit_status


def _cmd_crashtest(args: argparse.Namespace) -> int:
    from segwal.tools.crashtest import run_crashtest

    return run_crashtest(states=args.states, seed=args.seed, out=print)


def _bench(argv: list[str]) -> int:
    from segwal.bench.runner import main as bench_main

    return int(bench_main(argv))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="segwal", description="segwal: a segmented WAL engine for Raft nodes")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="write, read, purge, truncate, reopen a small log and print what happened")
    d.add_argument("dir", nargs="?", default=None, help="directory to use (default: a new temporary one)")
    d.set_defaults(func=_cmd_demo)
    i = sub.add_parser("inspect", help="segments, first/last index, purge boundary, hard state, key/value stats")
    i.add_argument("dir", help="engine directory, or object-store URL (s3://bucket/prefix ...), opened read-only")
    i.add_argument("--store-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object-store URL only: store option (endpoint=..., client.allow_http=true)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_inspect)
    v = sub.add_parser("verify", help="full checksum scan of every file (exit 0 clean, 1 recoverable, 2 corruption)")
    v.add_argument("dir", help="engine directory, or object-store URL, opened read-only")
    v.add_argument("--store-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object-store URL only: store option (endpoint=..., client.allow_http=true)")
    v.add_argument("--json", action="store_true")
    v.add_argument("--live", action="store_true",
                   help="a writer may be at work (default: told from /proc/locks; assumed when it cannot be told)")
    v.set_defaults(func=_cmd_verify)
    du = sub.add_parser("dump", help="entries as JSON lines")
    du.add_argument("dir", help="engine directory, or object-store URL, opened read-only")
    du.add_argument("--store-option", action="append", default=[], metavar="KEY=VALUE",
                   help="object-store URL only: store option (endpoint=..., client.allow_http=true)")
    du.add_argument("--from", dest="from_index", type=int, default=None)
    du.add_argument("--to", dest="to_index", type=int, default=None)
    du.add_argument("--encoding", choices=("base64", "hex"), default="base64", help="payload encoding")
    du.set_defaults(func=_cmd_dump)
    r = sub.add_parser("repair", help="cut a torn tail (keeping a .broken copy), rebuild indexes, remove strays")
    r.add_argument("dir")
    r.add_argument("--force", action="store_true", help="also cut at mid-log corruption, reporting lost indexes")
    r.set_defaults(func=_cmd_repair)
    c = sub.add_parser("crashtest", help="run the crash simulator over a built-in workload")
    c.add_argument("--states", type=int, default=2000, help="crash states to explore (budget)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_cmd_crashtest)
    sub.add_parser("bench", help="the side-by-side benchmark; `segwal bench --help` for its options")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own option parser
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CorruptionError as e:
        print(f"segwal: corruption: {e}", file=sys.stderr)
        return 2
    except (SegwalError, OSError, ValueError) as e:
        print(f"segwal: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
