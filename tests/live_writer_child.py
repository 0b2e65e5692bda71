"""Writer process for ``tests/test_live_readers.py``: a seeded Raft-like workload on a
directory that read-only views read at the same time.

Usage: ``python tests/live_writer_child.py DIR SEED OPS FINAL``.  Runs ``OPS``
operations (``-1``: until killed), then closes the engine and writes its final
state as JSON to ``FINAL`` (``-``: nowhere).  Prints ``READY`` once open.

Operations: appends, conflict overwrites, truncations, purges, hard-state saves,
key/value batches (recording ``last_applied``) and key/value compactions, on
small segments and key/value files so that rotations, seals and file
replacements are frequent.  A Raft node's rules hold throughout: nothing at or
below the commit index is truncated or overwritten, the commit index never
passes the last index, terms never decrease, purges stay at or below the commit
index.

Each key/value batch is written to ``DIR.kv.jsonl`` before it is applied.
Each payload is ``index:term:version:prev`` where ``prev`` is the version of
entry ``index - 1`` when the entry was written, so every state of the log is a
chain; a reader that mixed two states would see a broken link.
"""

from __future__ import annotations

import json
import random
import sys

from segwal.engine import Entry, HardState, LogId, VotedFor, WalEngine

SEGMENT_SIZE = 4096
KEYS = [b"k%02d" % i for i in range(16)]


def parse(payload: bytes) -> tuple[int, int, int, int]:
    """``(index, term, version, prev)`` from a payload."""
    i, t, v, p = payload.split(b":")[:4]
    return int(i), int(t), int(v), int(p)


def main(path: str, seed: int, ops: int, final: str) -> None:
    rng = random.Random(seed)
    e = WalEngine(path, segment_size=SEGMENT_SIZE, sync="always")
    ver: dict[int, int] = {}
    logm: dict[int, tuple[int, bytes]] = {}  # the model: index -> (term, payload)
    for x in e.get_entries_range(e.first_index(), e.last_index()):
        ver[x.index] = parse(x.payload)[2]
        logm[x.index] = (x.term, x.payload)
    kvm = {k: v for k in [*KEYS, b"seq"] if (v := e.get(k)) is not None}
    applied = e.last_applied()
    hs = e.load_hard_state()
    term = max(hs.current_term if hs else 1, e.term_of(e.last_index()) or 1)
    commit = hs.commit_index if hs else 0
    version = 10**6 * (1 + seed % 1000) + max(ver.values(), default=0) % 10**6
    seq_v = e.get(b"seq")
    n = int(seq_v) if seq_v is not None else 0
    # Every key/value batch goes to a journal before it is applied, so a reader can
    # rebuild the exact state after batch n (a batch the writer did not live to
    # apply is written again, under the same n, by the next writer: the last wins).
    journal = open(path + ".kv.jsonl", "a+")
    journal.seek(0)
    if journal.read()[-1:] not in ("", "\n"):
        journal.write("\n")  # a line cut short by a kill
    print("READY", flush=True)

    def batch(start: int, count: int) -> None:
        nonlocal version
        out = []
        for i in range(start, start + count):
            version += 1
            prev = ver.get(i - 1, 0)
            out.append(Entry(i, term, b"%d:%d:%d:%d:" % (i, term, version, prev) + b"x" * rng.randint(0, 300)))
            ver[i] = version
        e.persist_entries(out)
        cut(start + count)
        logm.update((x.index, (x.term, x.payload)) for x in out)

    def cut(k: int) -> None:
        for i in [i for i in ver if i >= k]:
            del ver[i]
        for i in [i for i in logm if i >= k]:
            del logm[i]

    done = 0
    while ops < 0 or done < ops:
        done += 1
        first, last = e.first_index(), e.last_index()
        r = rng.random()
        if r < 0.45 or last < first:
            batch(last + 1, rng.randint(1, 8))
        elif r < 0.52 and last > commit:
            term += 1
            batch(rng.randint(max(commit + 1, first), last), rng.randint(1, 5))
        elif r < 0.57 and last > commit:
            k = rng.randint(max(commit + 1, first), last)
            e.truncate(k)
            cut(k)
        elif r < 0.64 and commit >= first:
            upto = rng.randint(first, commit)
            t = e.term_of(upto)
            assert t is not None
            e.purge_logs(LogId(t, upto))
        elif r < 0.72:
            commit = rng.randint(commit, last)
            hs = HardState(term, VotedFor(1, term), commit)
            e.save_hard_state(hs)
        elif r < 0.97:
            n += 1
            changes: list[tuple[bytes, bytes | None]] = [
                (k, None if rng.random() < 0.15 else b"%d:" % n + b"v" * rng.randint(0, 200))
                for k in rng.sample(KEYS, rng.randint(1, 4))
            ]
            changes.append((b"seq", b"%d" % n))
            journal.write(json.dumps([n, [[k.decode(), None if v is None else v.decode()] for k, v in changes]]) + "\n")
            journal.flush()
            ct = e.term_of(commit) if commit else None
            la = LogId(ct, commit) if ct is not None else None
            e.apply(changes, la)
            for k, v in changes:
                if v is None:
                    kvm.pop(k, None)
                else:
                    kvm[k] = v
            applied = la or applied
        else:
            kv = e._kv
            assert kv is not None
            with e._wlock:
                kv.compact()
    first = e.first_index()
    e.close()
    if final != "-":
        state = {
            "entries": [[i, t, p.decode()] for i, (t, p) in sorted(logm.items()) if i >= first],
            "kv": {k.decode(): v.decode() for k, v in sorted(kvm.items())},
            "hard": None if hs is None else [hs.current_term, hs.commit_index],
            "applied": None if applied is None else [applied.term, applied.index],
        }
        with open(final, "w") as f:
            json.dump(state, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
