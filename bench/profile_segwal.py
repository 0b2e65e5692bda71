"""Where segwal spends its time: cProfile of each hot path, top frames by own time.

``python -m bench.profile_segwal [--top 12] [--only append1024,open,...]``

Each section runs one operation the benchmark times (same data shapes), under
:mod:`cProfile`, and prints the functions with the most *own* time.  cProfile
adds overhead per Python call, so read the shares, not the absolute times; for
a sampling view without that bias use ``py-spy record -o out.svg -- python -m
bench.profile_segwal --only append1024`` instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .peers import Entry, term_of


def _entries(start: int, n: int, payloads: list[bytes]) -> list[Entry]:
    new = tuple.__new__
    return [new(Entry, (i, term_of(i), payloads[i % len(payloads)])) for i in range(start, start + n)]


def _profile(title: str, fn: Callable[[], Any], top: int) -> None:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    print(f"\n=== {title}  (wall {wall * 1e3:.0f} ms under cProfile)")
    print("\n".join(lines[start : start + top + 1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_segwal")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--only", default="", help="comma-separated sections")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    from segwal.engine import LogId, WalEngine

    only = set(filter(None, args.only.split(",")))
    rng = random.Random(1)
    payloads = [rng.randbytes(256) for _ in range(4096)]
    root = tempfile.mkdtemp(prefix="tmp-prof-", dir=args.dir)
    try:

        def want(name: str) -> bool:
            return not only or name in only

        for b, n in ((1, 3000), (64, 100_000), (1024, 200_000)):
            if not want(f"append{b}"):
                continue
            d = tempfile.mkdtemp(dir=root)
            eng = WalEngine(d, sync="always")
            batches = [_entries(a, min(b, n + 1 - a), payloads) for a in range(1, n + 1, b)]

            def run(eng: Any = eng, batches: list[list[Entry]] = batches) -> None:
                for bt in batches:
                    eng.persist_entries(bt)

            _profile(f"append B={b}, {n:,} entries", run, args.top)
            eng.close()
            shutil.rmtree(d)

        d = tempfile.mkdtemp(dir=root)
        eng = WalEngine(d, sync="always")
        for a in range(1, 200_001, 10_000):
            eng.persist_entries(_entries(a, 10_000, payloads))
        eng.close()
        eng = WalEngine(d, sync="always")
        pts = [rng.randint(1, 200_000) for _ in range(100_000)]
        if want("point"):
            _profile("entry(i) x 100,000", lambda: [eng.entry(i) for i in pts], args.top)
        if want("range"):
            starts = [rng.randint(1, 199_000) for _ in range(200)]
            _profile(
                "get_entries_range(a, a+999) x 200",
                lambda: [eng.get_entries_range(a, a + 999) for a in starts],
                args.top,
            )
        eng.close()
        if want("open"):
            code = (
                "import cProfile,pstats,sys; from segwal.engine import WalEngine;"
                f"p=cProfile.Profile(); p.enable(); e=WalEngine({d!r}); e.first_index(); e.last_index(); p.disable();"
                f"e.close(); pstats.Stats(p).sort_stats('tottime').print_stats({args.top})"
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
            lines = [ln for ln in out.splitlines() if ln.strip()]
            start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
            head = next((ln for ln in lines if "function calls" in ln), "")
            print(f"\n=== open 200k entries, fresh process ({head.strip()})")
            print("\n".join(lines[start : start + args.top + 1]))
        if want("delete"):
            eng = WalEngine(d, sync="always")

            def dele() -> None:
                eng.purge_logs(LogId(term_of(100_000), 100_000))
                eng.truncate(180_001)

            _profile("purge_logs(100,000) + truncate(180,001)", dele, args.top)
            eng.close()
        if want("kv"):
            d2 = tempfile.mkdtemp(dir=root)
            eng = WalEngine(d2, sync="always")
            keys = [rng.randrange(1 << 40).to_bytes(8, "big") for _ in range(20_000)]
            work = [
                [(keys[rng.randrange(20_000)], payloads[rng.randrange(4096)]) for _ in range(100)] for _ in range(300)
            ]
            _profile("apply(100 changes) x 300", lambda: [eng.apply(w) for w in work], args.top)
            _profile("get x 100,000", lambda: [eng.get(keys[i % 20_000]) for i in range(100_000)], args.top)
            eng.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
