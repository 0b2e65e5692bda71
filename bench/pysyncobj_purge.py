"""Log compaction (``deleteEntriesTo``) cost vs log size: segwal's PySyncObj journal
against PySyncObj's own ``FileJournal``.

    python -m bench.pysyncobj_purge            # 10k, 100k, 1M entries
    python -m bench.pysyncobj_purge --quick    # 10k, 100k

For each size N a journal of N entries (64-byte commands, 8 terms) is built
once; every repetition works on a fresh copy of it (warm page cache) and times
one ``deleteEntriesTo(N // 2)`` -- what SyncObj calls after a snapshot -- on:

* ``FileJournal`` as SyncObj uses it (no sync: the rewrite is not durable);
* ``FileJournal`` followed by its ``flush()`` (msync of the mapping);
* ``SegwalJournal`` with ``sync="always"`` (the purge boundary is durable on
  return: manifest rename + directory fsync, then whole segments unlinked),
  with the default 64 MiB segments and with 4 MiB segments.

``FileJournal.deleteEntriesTo`` clears its file and re-adds every kept entry,
so its cost grows with the entries kept (and its file never shrinks); segwal's
writes one small manifest (the commit point, ~1 ms with its fsyncs) and unlinks
the segment files wholly below the cut: its cost is constant in the number of
entries and grows only with the number of segment files deleted (each unlink of
a 4 MiB file costs ~1 ms on the project VM, whose ext4 is mounted with
``discard``).  Each copy is written back (``os.sync()``) before the timed call.
Reported: the median of the repetitions, disk usage before/after, and each
time relative to the smallest size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

PAYLOAD = 64
TERMS = 8


def _du(path: str) -> int:
    """Bytes allocated on disk under ``path`` (file or directory)."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _command(i: int) -> bytes:
    head = b"\x02cmd-%d-" % i
    return head + b"x" * (PAYLOAD - len(head))


def _term(i: int, n: int) -> int:
    return 1 + (i - 1) * TERMS // n


def build_file_journal(path: str, n: int) -> None:
    from pysyncobj.journal import FileJournal

    j = FileJournal(path)
    for i in range(1, n + 1):
        j.add(_command(i), i, _term(i, n))
    j.flush()
    j._destroy()


def build_segwal(path: str, n: int, segment_size: int) -> None:
    from segwal.engine import Entry, WalEngine

    with WalEngine(path, segment_size=segment_size, sync="flush") as e:
        batch = 10_000
        for start in range(1, n + 1, batch):
            stop = min(n, start + batch - 1)
            e.persist_entries([Entry(i, _term(i, n), _command(i)) for i in range(start, stop + 1)])
        e.flush()


def _copy(src: str, dst: str) -> None:
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
        if os.path.exists(src + ".meta"):
            shutil.copyfile(src + ".meta", dst + ".meta")
    # Write the copy back now: otherwise the first fsync in the timed purge (ext4
    # data=ordered journal commit) would also pay for the copy's dirty pages.
    os.sync()


def time_file_journal(src: str, work: str, n: int, flush: bool) -> tuple[float, int, int, int]:
    from pysyncobj.journal import FileJournal

    _copy(src, work)
    j = FileJournal(work)
    assert len(j) == n
    before = _du(work)
    t = time.perf_counter()
    j.deleteEntriesTo(n // 2)
    if flush:
        j.flush()
    dt = time.perf_counter() - t
    assert len(j) == n - n // 2 and j[0][1] == n // 2 + 1
    j._destroy()
    after = _du(work)
    os.unlink(work)
    if os.path.exists(work + ".meta"):
        os.unlink(work + ".meta")
    return dt, before, after, -1


def time_segwal(src: str, work: str, n: int, segment_size: int) -> tuple[float, int, int, int]:
    from segwal.integrations.pysyncobj import SegwalJournal

    _copy(src, work)
    j = SegwalJournal(work, segment_size=segment_size, sync="always")
    assert len(j) == n
    before = _du(work)
    segs = len(j.engine.segments())
    t = time.perf_counter()
    j.deleteEntriesTo(n // 2)
    dt = time.perf_counter() - t
    assert len(j) == n - n // 2 and j[0][1] == n // 2 + 1
    after = _du(work)
    deleted = segs - len(j.engine.segments())
    j._destroy()
    shutil.rmtree(work)
    return dt, before, after, deleted


def _fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:,.2f}" if ms < 10 else f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def _fmt_mb(b: int) -> str:
    return f"{b / 1e6:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pysyncobj_purge", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k and 100k entries only")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="comma-separated entry counts")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per size (median reported)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        print("pysyncobj is not installed (pip install 'segwal[pysyncobj]')", file=sys.stderr)
        return 2
    from segwal.engine import DEFAULT_SEGMENT_SIZE

    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    small_seg = 4 << 20
    peers: list[tuple[str, Callable[[str, str, int], tuple[float, int, int, int]], str]] = [
        ("FileJournal (no sync, as SyncObj uses it)", lambda s, w, n: time_file_journal(s, w, n, False), "file"),
        ("FileJournal + flush() (msync)", lambda s, w, n: time_file_journal(s, w, n, True), "file"),
        (
            "SegwalJournal, 64 MiB segments (durable)",
            lambda s, w, n: time_segwal(s, w, n, DEFAULT_SEGMENT_SIZE),
            "seg64",
        ),
        ("SegwalJournal, 4 MiB segments (durable)", lambda s, w, n: time_segwal(s, w, n, small_seg), "seg4"),
    ]
    root = tempfile.mkdtemp(prefix="segwal-purge-", dir=args.dir)
    results: dict[tuple[str, int], list[tuple[float, int, int, int]]] = {}
    try:
        for n in sizes:
            t = time.perf_counter()
            srcs = {
                "file": os.path.join(root, f"file-{n}.journal"),
                "seg64": os.path.join(root, f"seg64-{n}"),
                "seg4": os.path.join(root, f"seg4-{n}"),
            }
            build_file_journal(srcs["file"], n)
            build_segwal(srcs["seg64"], n, DEFAULT_SEGMENT_SIZE)
            build_segwal(srcs["seg4"], n, small_seg)
            print(f"built {n:,} entries in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
            for rep in range(args.reps):
                for name, fn, key in peers:
                    work = os.path.join(root, f"work-{key}-{n}-{rep}")
                    results.setdefault((name, n), []).append(fn(srcs[key], work, n))
            for key in srcs.values():
                if os.path.isdir(key):
                    shutil.rmtree(key)
                else:
                    os.unlink(key)
                    if os.path.exists(key + ".meta"):
                        os.unlink(key + ".meta")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"deleteEntriesTo(N/2): median of {args.reps} runs, {PAYLOAD}-byte commands, warm page cache")
    print()
    hdr = [
        "journal",
        *[f"N = {n:,}" for n in sizes],
        f"growth {sizes[0]:,} -> {sizes[-1]:,}",
        "disk before -> after (MB), largest N",
    ]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, _fn, _key in peers:
        meds, cells = [], [name]
        for n in sizes:
            m = statistics.median(r[0] for r in results[(name, n)])
            meds.append(m)
            deleted = results[(name, n)][0][3]
            cells.append(_fmt_ms(m) + " ms" + (f" ({deleted} seg. deleted)" if deleted >= 0 else ""))
        _dt, before, after, _d = results[(name, sizes[-1])][0]
        growth = meds[-1] / meds[0] if meds[0] > 0 else float("inf")
        cells += [f"{growth:,.1f}x", f"{_fmt_mb(before)} -> {_fmt_mb(after)}"]
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"(log size grows {sizes[-1] / sizes[0]:,.0f}x from the first to the last column)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
