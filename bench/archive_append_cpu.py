"""The writer's CPU per one-entry append with an in-process Archiver running against without, interleaved in fresh processes.

``python -m bench.archive_append_cpu [--n 60000] [--rounds 20] [--tail-interval 1.0]``
runs, in child processes taking turns, ``n`` one-entry appends of 100 bytes
with ``sync="always"`` into a tmpfs directory, once with an ``Archiver``
(a local obstore store beside it, on tmpfs too) and once without, and prints
the calling thread's CPU time per append (``time.thread_time``) of each, the
paired ratios and the ratio of the medians.  Each run with the archiver checks
that everything was shipped.
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
d = tempfile.mkdtemp(dir=sys.argv[1]); n = int(sys.argv[2]); arch = sys.argv[3] == "1"
entries = [Entry(i, 1, b"x" * 100) for i in range(1, n + 1)]
with WalEngine(d + "/e", sync="always") as eng:
    a = None
    if arch:
        from obstore.store import LocalStore
        from segwal.storage.archive import Archiver
        a = Archiver(eng, LocalStore(d + "/bucket", mkdir=True), "p", tail_interval=float(sys.argv[4])).start()
    for e in entries[:1000]:
        eng.persist_entries([e])
    t = time.thread_time()
    for e in entries[1000:]:
        eng.persist_entries([e])
    dt = (time.thread_time() - t) / (n - 1000) * 1e6
    if a is not None:
        a.stop()
        assert a.status().shipped_index == n, a.status()
    print(dt)
"""


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; prints the table and returns 0."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(prog="python -m bench.archive_append_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=60000, help="appends per run (default 60,000)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved pairs (default 20)")
    p.add_argument("--tail-interval", type=float, default=1.0, help="the archiver's tail interval (default 1 s)")
    args = p.parse_args(argv)
    scratch = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    env = {**os.environ, "PYTHONPATH": here}
    runs: dict[str, list[float]] = {"0": [], "1": []}
    for _ in range(args.rounds):
        for arch in ("0", "1"):
            out = subprocess.run([sys.executable, "-c", _CHILD, scratch, str(args.n), arch, str(args.tail_interval)],
                                 env=env, capture_output=True, text=True, check=True)
            runs[arch].append(float(out.stdout.strip()))
    wo, w = runs["0"], runs["1"]
    ratios = [a / b for a, b in zip(w, wo)]
    print(f"without archiver: {' '.join(f'{x:.2f}' for x in wo)} us/append, median {statistics.median(wo):.2f}")
    print(f"with archiver:    {' '.join(f'{x:.2f}' for x in w)} us/append, median {statistics.median(w):.2f}")
    print(f"paired ratios: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"ratio of medians {statistics.median(w) / statistics.median(wo):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
