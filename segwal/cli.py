"""The ``segwal`` command line (also ``python -m segwal``).

Expected errors (missing or locked directory, corrupt files) are printed to
stderr as one line, with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from segwal.errors import CorruptionError, SegwalError

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from segwal.demo import run

    return run(args.dir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="segwal", description="segwal: a segmented WAL engine for Raft nodes")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="write, read, purge, truncate, reopen a small log and print what happened")
    d.add_argument("dir", nargs="?", default=None, help="directory to use (default: a new temporary one)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CorruptionError as e:
        print(f"segwal: corruption: {e}", file=sys.stderr)
        return 2
    except (SegwalError, OSError) as e:
        print(f"segwal: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
