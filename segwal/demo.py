"""A short tour of segwal, run by ``segwal demo`` (the README's Quick start).

Writes a log across several segments, reads it back, overwrites a conflicting
suffix, purges a prefix, truncates, saves hard state and key/value data, closes,
reopens and shows that everything came back.  Prints what it did.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

from segwal.engine import Entry, HardState, LogId, VotedFor, WalEngine


def run(directory: str | None = None, *, out: Callable[[str], object] = print) -> int:
    """Run the demo in ``directory`` (a fresh temporary one by default).  Returns 0
    when everything came back after the reopen, 1 otherwise."""
    say = out
    own = directory is None
    base = tempfile.mkdtemp(prefix="segwal-demo-") if own else str(directory)
    path = os.path.join(base, "node1")
    say(f"engine directory: {path}")
    t0 = time.perf_counter()
    with WalEngine(path, segment_size=64 << 10) as eng:
        n = 0
        for b in range(20):
            batch = [Entry(n + i + 1, 1 + b // 10, f"cmd-{n + i + 1}".encode() * 8) for i in range(100)]
            eng.persist_entries(batch)
            n += len(batch)
        segs = sorted(x for x in os.listdir(path) if x.endswith(".wal"))
        say(f"appended {n} entries in 20 durable batches -> {len(segs)} segment files")
        e1234 = eng.entry(1234)
        assert e1234 is not None
        say(f"entry(1234) = index {e1234.index}, term {e1234.term}")
        rng = eng.get_entries_range(995, 1004)
        say(f"get_entries_range(995, 1004) -> {len(rng)} entries, terms {[e.term for e in rng]}")
        eng.persist_entries([Entry(1999, 3, b"new-leader-a"), Entry(2000, 3, b"new-leader-b"), Entry(2001, 3, b"x")])
        say(f"conflict overwrite from 1999 in term 3 -> last_index {eng.last_index()}, entry(2000) {eng.entry(2000)}")
        eng.purge_logs(LogId(1, 900))
        left = sorted(x for x in os.listdir(path) if x.endswith(".wal"))
        say(
            f"purge_logs(LogId(1, 900)) -> first_index {eng.first_index()}, entry(900) {eng.entry(900)}, "
            f"segment files {len(segs)} -> {len(left)}"
        )
        eng.truncate(1990)
        say(f"truncate(1990) -> last_index {eng.last_index()}")
        eng.save_hard_state(HardState(3, VotedFor(2, 3), commit_index=1900))
        eng.apply([(b"x", b"1"), (b"y", b"2")], applied=LogId(1, 1900))
        say(f"hard state saved; kv x={eng.get(b'x')!r} y={eng.get(b'y')!r}, last_applied {eng.last_applied()}")
    with WalEngine(path, segment_size=64 << 10) as eng:
        say(
            f"reopened: first {eng.first_index()}, last {eng.last_index()}, boundary {eng.purge_boundary()}, "
            f"hard state {eng.load_hard_state()}, kv x={eng.get(b'x')!r}, last_applied {eng.last_applied()}"
        )
        ok = (
            eng.first_index() == 901
            and eng.last_index() == 1989
            and eng.entry(1989) is not None
            and eng.get(b"y") == b"2"
            and eng.load_hard_state() == HardState(3, VotedFor(2, 3), 1900)
        )
    say(f"{'everything came back' if ok else 'MISMATCH after reopen'} ({(time.perf_counter() - t0) * 1e3:.0f} ms)")
    return 0 if ok else 1
