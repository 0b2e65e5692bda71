"""The CPU cost of a one-entry ``persist_entries``, this tree against another checkout, interleaved.

``python -m bench.small_append --other /path/to/older/checkout [--rounds 7]``
runs, in fresh child processes taking turns, 20,000 appends of one 100-byte
entry with ``sync="flush"`` into a tmpfs directory (no fdatasync: the figure is
the Python cost of the call) and prints the CPU time of the calling thread per
call (``time.thread_time``: the background preallocator's zero-filling is not
the call's cost) of each side, their medians and the ratio.  ``--profile`` prints this tree's cProfile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

_CHILD = r"""
import sys, time, tempfile
from segwal.engine import WalEngine, Entry
d = tempfile.mkdtemp(dir=sys.argv[1])
n = int(sys.argv[2])
entries = [Entry(i, 1, b"x" * 100) for i in range(1, n + 1)]
with WalEngine(d + "/e", sync="flush", preallocate=sys.argv[3] == "1") as eng:
    for e in entries[:1000]:
        eng.persist_entries([e])
    t = time.thread_time()
    for e in entries[1000:]:
        eng.persist_entries([e])
    print((time.thread_time() - t) / (n - 1000) * 1e6)
"""


def _one(tree: str, scratch: str, n: int, prealloc: bool) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", _CHILD, scratch, str(n), "1" if prealloc else "0"], env=env,
                         capture_output=True, text=True, cwd=scratch, check=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; prints a table and returns 0."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(prog="python -m bench.small_append", description=__doc__.split("\n\n")[0])
    p.add_argument("--other", required=True, help="a checkout of segwal to compare with (e.g. the code before a change)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved pairs of runs (default 7)")
    p.add_argument("--n", type=int, default=20000, help="appends per run (default 20,000)")
    p.add_argument("--profile", action="store_true", help="print this tree's cProfile of the loop")
    p.add_argument("--no-prealloc", action="store_true",
                   help="without the background preallocator (whose thread competes for the GIL)")
    args = p.parse_args(argv)
    scratch = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    mine: list[float] = []
    other: list[float] = []
    for _ in range(args.rounds):
        other.append(_one(os.path.abspath(args.other), scratch, args.n, not args.no_prealloc))
        mine.append(_one(here, scratch, args.n, not args.no_prealloc))
    mo, mm = statistics.median(other), statistics.median(mine)
    print(f"other tree: {' '.join(f'{x:.2f}' for x in other)} us/call, median {mo:.2f}")
    print(f"this tree:  {' '.join(f'{x:.2f}' for x in mine)} us/call, median {mm:.2f}")
    print(f"ratio this/other: {mm / mo:.3f} (paired: {statistics.median(a / b for a, b in zip(mine, other)):.3f})")
    if args.profile:
        code = _CHILD.replace("t = time.thread_time()", "import cProfile, pstats; pr = cProfile.Profile(); "
                              "pr.enable(); t = time.thread_time()").replace(
            "    print((time.thread_time()", "    pr.disable(); pstats.Stats(pr).sort_stats('tottime').print_stats(12)\n"
            "    print((time.thread_time()")
        subprocess.run([sys.executable, "-c", code, scratch, str(args.n), "0" if args.no_prealloc else "1"], env={**os.environ, "PYTHONPATH": here},
                       cwd=scratch, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
