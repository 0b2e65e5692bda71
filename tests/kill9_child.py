"""Writer process for ``tests/test_kill9.py``: a seeded random Raft-like workload
with ``sync="always"``, run until it is killed.

Usage: ``python tests/kill9_child.py DIR SEED``.  Protocol on stdout, one
flushed line per event (a single ``write``, so a line is never torn):

* ``READY`` once the engine is open;
* ``DO <op> <args>`` before each call;
* ``ACK`` after the call returned (it is then acknowledged).

Ops and their arguments: ``P first last term`` (persist entries first..last,
every one with ``term``, payloads from :func:`payload`), ``T k`` (truncate from
k), ``G index term`` (purge up to index), ``H term vote commit`` (hard state),
``K key value index`` (apply one key/value change, recording last_applied =
(term, index) with the term of the entry at ``index``).

Rules the workload keeps, as a Raft node would: entries at or below the
commit index are never truncated or overwritten, the commit index never passes
the last index, terms never decrease.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from segwal.engine import Entry, HardState, LogId, VotedFor, WalEngine
from segwal.kv import store as kvstore

SEGMENT_SIZE = 2048


def payload(index: int, term: int) -> bytes:
    """The payload of entry ``index`` written in ``term`` (8..~400 bytes)."""
    return (b"%d.%d|" % (index, term)) * (1 + (index * 7 + term * 13) % 40)


def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    out = sys.stdout
    e = WalEngine(path, segment_size=SEGMENT_SIZE, sync="always")
    hs = e.load_hard_state()
    term = max(hs.current_term if hs else 1, e.term_of(e.last_index()) or 1, 1)
    commit = hs.commit_index if hs else 0
    out.write("READY\n")
    out.flush()
    n = 0
    while True:
        n += 1
        first, last = e.first_index(), e.last_index()
        r = rng.random()
        if r < 0.55 or last == 0:
            if rng.random() < 0.1:
                term += 1
            k = rng.randint(1, 6)
            line, call = f"P {last + 1} {last + k} {term}", ("P", last + 1, last + k, term)
        elif r < 0.65 and last > commit and last >= first:
            term += 1
            lo = max(commit + 1, first, last - 4)
            start = rng.randint(lo, last)
            k = rng.randint(1, 4)
            line, call = f"P {start} {start + k - 1} {term}", ("P", start, start + k - 1, term)
        elif r < 0.72 and last > commit and last >= first:
            lo = max(commit + 1, first)
            start = rng.randint(lo, last)
            line, call = f"T {start}", ("T", start)
        elif r < 0.77 and commit - first > 20:
            idx = rng.randint(first, commit - 10)
            t = e.term_of(idx)
            line, call = f"G {idx} {t}", ("G", idx, t)
        elif r < 0.9:
            commit = rng.randint(commit, last)
            vote = rng.randint(0, 3)
            line, call = f"H {term} {vote} {commit}", ("H", term, vote, commit)
        else:
            idx = rng.randint(max(first, 1), max(last, 1)) if last >= first else 0
            t = e.term_of(idx) if idx else 0
            key, value = f"k{rng.randint(0, 4)}", f"v{n}"
            line, call = f"K {key} {value} {idx} {t}", ("K", key, value, idx, t)
        out.write(f"DO {line}\n")
        out.flush()
        op = call[0]
        if op == "P":
            _, a, b, t = call
            e.persist_entries([Entry(i, t, payload(i, t)) for i in range(a, b + 1)])
        elif op == "T":
            e.truncate(call[1])
        elif op == "G":
            e.purge_logs(LogId(call[2], call[1]))
        elif op == "H":
            _, t, vote, c = call
            e.save_hard_state(HardState(t, VotedFor(vote, t) if vote else None, c))
        else:
            _, key, value, idx, t = call
            e.apply([(key.encode(), value.encode())], LogId(t, idx) if idx else None)
        out.write("ACK\n")
        out.flush()


if __name__ == "__main__":
    # The key index (kv-G.index) is checkpointed every few changes, so kills land in its writes too.
    # (Here, not at import: tests/test_kill9.py imports this module for its helpers.)
    kvstore.INDEX_EVERY = 3
    kvstore.INDEX_MIN_KEYS = 0
    # ... and the store compacts (in the background) every few dozen changes, so kills land there too.
    _open = kvstore.KVStore.open.__func__  # type: ignore[attr-defined]

    def _open_compacting(cls: Any, *a: Any, **kw: Any) -> Any:
        kw.setdefault("compact_min_dead", 512)
        return _open(cls, *a, **kw)

    kvstore.KVStore.open = classmethod(_open_compacting)  # type: ignore[assignment,method-assign]
    main(sys.argv[1], int(sys.argv[2]))
