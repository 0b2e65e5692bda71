"""Cost of building ``Entry`` objects: NamedTuple vs frozen slotted dataclass.

Range reads build thousands of entries, so the engine picks the cheaper type
(issue 2).  Run ``python -m bench.micro_entry [--n 1024] [--repeat 7]``; it prints
ns per entry (median of the repetitions, each building ``n`` entries ``loops``
times) for:

- ``tuple.__new__(Entry, (i, t, p))`` on a ``typing.NamedTuple`` (skips the
  generated ``__new__``'s argument handling);
- ``Entry(i, t, p)``, the NamedTuple's normal constructor;
- ``Entry._make(...)``;
- a ``@dataclass(frozen=True, slots=True)`` with the same fields (frozen
  dataclasses assign through ``object.__setattr__``, which is what costs);
- a plain ``tuple`` (the floor).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


class NTEntry(NamedTuple):
    index: int  # type: ignore[assignment]
    term: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class DCEntry:
    index: int
    term: int
    payload: bytes = b""


def _cases(rows: list[tuple[int, int, bytes]]) -> dict[str, Callable[[], object]]:
    new = tuple.__new__

    def nt_tuple_new() -> object:
        return [new(NTEntry, r) for r in rows]

    def nt_call() -> object:
        return [NTEntry(i, t, p) for i, t, p in rows]

    def nt_make() -> object:
        make = NTEntry._make
        return [make(r) for r in rows]

    def dataclass_frozen_slots() -> object:
        return [DCEntry(i, t, p) for i, t, p in rows]

    def plain_tuple() -> object:
        return [(i, t, p) for i, t, p in rows]

    return {
        "NamedTuple via tuple.__new__": nt_tuple_new,
        "NamedTuple Entry(i, t, p)": nt_call,
        "NamedTuple Entry._make(row)": nt_make,
        "frozen slotted dataclass": dataclass_frozen_slots,
        "plain tuple (floor)": plain_tuple,
    }


def measure(n: int = 1024, repeat: int = 7, loops: int = 50) -> dict[str, float]:
    """Median ns per entry of each construction, cases interleaved per repetition."""
    payload = bytes(256)
    rows = [(i, 1 + i // 10000, payload) for i in range(1, n + 1)]
    cases = _cases(rows)
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            samples[name].append((time.perf_counter() - t0) / (loops * n) * 1e9)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.micro_entry", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="entries per build (default 1024)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--loops", type=int, default=50)
    args = ap.parse_args(argv)
    res = measure(args.n, args.repeat, args.loops)
    width = max(map(len, res))
    base = res["NamedTuple via tuple.__new__"]
    print(f"building {args.n} entries; median of {args.repeat} x {args.loops} builds")
    for name, ns in res.items():
        print(f"{name.ljust(width)}  {ns:7.1f} ns/entry  ({ns / base:.2f}x tuple.__new__)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
