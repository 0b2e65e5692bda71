"""One PySyncObj node on a segwal journal, driven over stdin/stdout (for
``tests/test_pysyncobj_cluster.py``; also usable by hand).

    python tests/pysyncobj_node.py --self 127.0.0.1:7001 --peers 127.0.0.1:7002,127.0.0.1:7003 --dir /tmp/n1

The replicated state is a ``ReplDict`` whose key ``k`` is always set to
``value_of(k)``.  The node first opens its journal alone and prints what it
recovered (one JSON line, ``"event": "recovered"``), then starts the SyncObj and
prints ``"event": "started"``.  After that every stdin line is a command and gets
exactly one JSON line back, carrying the request's ``id`` (first word):

    <id> status              state, leader, term, commit/applied indexes, journal first/last, keys, digest
    <id> put <start> <count> submit set(k, value_of(k)) for k in start..start+count-1; returns at once
    <id> acked               the keys whose set() was acknowledged (committed), failures, pending
    <id> keys                the sorted keys present in the local state
    <id> compact             force a log compaction
    <id> quit                destroy the SyncObj (closing the journal) and exit 0

Power-loss mode (``--volatile``): the journal and the dump go through a
``segwal.testing.volatile.VolatileFileSystem`` rooted at ``--dir`` (and the
SyncObj runs with ``useFork=False``), so ``kill -9`` of the node loses exactly
what a power cut would.  ``--unsafe`` breaks the journal on purpose, to show
that the tests catch it: ``ack-before-sync`` (the hooks' syncs do nothing: an
acknowledgement leaves before its entries are written) or ``skip-dump-fsync``
(the dump is never fsynced before a purge or a snapshot install).

    python tests/pysyncobj_node.py --inspect --dir /tmp/n1

prints (one JSON line) the keys the node's *disk* holds -- the dump's state
plus every ``set`` in the journal after it -- without starting anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time


def value_of(k: int) -> int:
    return k * 7919 + 13


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", dest="self_addr")
    ap.add_argument("--peers", help="comma-separated host:port of the other nodes")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--volatile", action="store_true", help="power-loss mode (see the module docstring)")
    ap.add_argument("--unsafe", default="none", choices=["none", "ack-before-sync", "skip-dump-fsync"])
    ap.add_argument("--inspect", action="store_true", help="print the keys on disk and exit")
    ap.add_argument("--segment-size", type=int, default=64 * 1024)
    ap.add_argument("--compact-min", type=int, default=500, help="logCompactionMinEntries")
    ap.add_argument("--sync", default="always", choices=["always", "flush"])
    args = ap.parse_args()
    if args.inspect:
        print(json.dumps(inspect(args.dir)))
        return 0

    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    from segwal.errors import LockedError
    from segwal.integrations.pysyncobj import SegwalJournal, segwal_journal

    counts = {"clears": 0, "purges": 0}
    clear0, purge0 = SegwalJournal.clear, SegwalJournal.deleteEntriesTo

    def counted_clear(self: SegwalJournal) -> None:
        counts["clears"] += 1
        clear0(self)

    def counted_purge(self: SegwalJournal, entryTo: int) -> None:
        counts["purges"] += 1
        purge0(self, entryTo)

    SegwalJournal.clear = counted_clear  # type: ignore[method-assign]
    SegwalJournal.deleteEntriesTo = counted_purge  # type: ignore[method-assign]
    if args.unsafe == "ack-before-sync":
        SegwalJournal.sync = lambda self: None  # type: ignore[method-assign]
        SegwalJournal.onOneSecondTimer = lambda self: None  # type: ignore[method-assign]
    elif args.unsafe == "skip-dump-fsync":
        SegwalJournal._sync_dump = lambda self: None  # type: ignore[method-assign]

    os.makedirs(args.dir, exist_ok=True)
    jdir = os.path.join(args.dir, "raft")

    def new_fs():
        if not args.volatile:
            return None
        from segwal.testing.volatile import VolatileFileSystem

        return VolatileFileSystem(args.dir)

    out_lock = threading.Lock()

    def emit(obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    # 1. What the journal recovers on its own (kill -9 leaves no clean close).
    #    A forked PySyncObj serializer child of a killed process may hold the
    #    directory lock for a moment: retry for a bounded time.
    deadline = time.monotonic() + 15
    while True:
        try:
            j = SegwalJournal(jdir, segment_size=args.segment_size, sync=args.sync, fs=new_fs())
            break
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    e = j.engine
    emit(
        {
            "event": "recovered",
            "journal_first": e.first_index(),
            "journal_last": e.last_index(),
            "journal_len": len(j),
            "last_entry": list(j[-1][1:]) if len(j) else None,
            "term": j.getCurrentTerm(),
            "voted_for": j.getVotedForNodeId(),
            "commit": j.getRaftCommitIndex(),
            "dump": os.path.exists(os.path.join(args.dir, "dump.bin")),
        }
    )
    j._destroy()

    # 2. The SyncObj, with its journal in segwal (the documented one-liner).
    conf = SyncObjConf(
        journalFile=segwal_journal(jdir, segment_size=args.segment_size, sync=args.sync, fs=new_fs()),
        fullDumpFile=os.path.join(args.dir, "dump.bin"),
        useFork=not args.volatile,
        logCompactionMinEntries=args.compact_min,
        connectionRetryTime=0.5,
        connectionTimeout=3.5,
        raftMinTimeout=0.4,
        raftMaxTimeout=1.4,
    )
    data = ReplDict()
    obj = SyncObj(args.self_addr, [p for p in args.peers.split(",") if p], conf, consumers=[data])
    journal = obj._SyncObj__raftLog  # the SegwalJournal SyncObj opened (for status only)
    emit({"event": "started", "journal_type": type(journal).__name__})

    acked: set[int] = set()
    failed: dict[int, int] = {}
    pending: set[int] = set()
    track = threading.Lock()

    def make_cb(k: int):
        def cb(res, err) -> None:
            with track:
                pending.discard(k)
                if err == FAIL_REASON.SUCCESS:
                    acked.add(k)
                    failed.pop(k, None)
                else:
                    failed[k] = err

        return cb

    def status() -> dict:
        st = obj.getStatus()
        raw = data.rawData()
        items = sorted(raw.items())
        digest = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
        ok = all(v == value_of(k) for k, v in items)
        leader = st["leader"]
        return {
            "state": st["state"],
            "leader": leader.id if leader is not None else None,
            "self": args.self_addr,
            "has_quorum": st["has_quorum"],
            "term": st["raft_term"],
            "commit_idx": st["commit_idx"],
            "last_applied": st["last_applied"],
            "log_len": st["log_len"],
            "journal_first": journal[0][1],
            "journal_last": journal[-1][1],
            "clears": counts["clears"],
            "purges": counts["purges"],
            "n_keys": len(items),
            "digest": digest,
            "values_ok": ok,
            "ready": obj.isReady(),
        }

    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        rid, cmd, rest = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
        try:
            if cmd == "status":
                emit({"id": rid, **status()})
            elif cmd == "put":
                start, count = int(rest[0]), int(rest[1])
                with track:
                    pending.update(range(start, start + count))
                for k in range(start, start + count):
                    data.set(k, value_of(k), callback=make_cb(k))
                emit({"id": rid, "submitted": count})
            elif cmd == "acked":
                with track:
                    emit({"id": rid, "ok": sorted(acked), "failed": len(failed), "pending": len(pending)})
            elif cmd == "keys":
                emit({"id": rid, "keys": sorted(data.rawData())})
            elif cmd == "compact":
                obj.forceLogCompaction()
                emit({"id": rid, "ok": True})
            elif cmd == "quit":
                obj.destroy_synchronous()
                emit({"id": rid, "ok": True})
                return 0
            else:
                emit({"id": rid, "error": f"unknown command {cmd!r}"})
        except Exception as ex:  # noqa: BLE001 - report it, keep serving
            emit({"id": rid, "error": repr(ex)})
    obj.destroy_synchronous()
    return 0


def inspect(d: str) -> dict:
    """The keys the node's disk holds: the dump's ReplDict plus the sets logged after it."""
    import gzip

    from pysyncobj import pickle as pspickle

    from segwal.integrations.pysyncobj import SegwalJournal

    keys: set[int] = set()
    dump_idx = 0
    dump = os.path.join(d, "dump.bin")
    if os.path.exists(dump):
        with gzip.open(dump, "rb") as g:
            data = pspickle.load(g)
        dump_idx = data[1][1]
        for part in data[0][1:]:
            for v in part.values():
                if isinstance(v, dict):
                    keys |= {k for k, x in v.items() if x == value_of(k)}
    j = SegwalJournal(os.path.join(d, "raft"))
    try:
        first = j[0][1] if len(j) else None
        for cmd, idx, _term in j:
            if idx <= dump_idx or not cmd or cmd[0] != 0:
                continue
            c = pspickle.loads(cmd[1:])
            if isinstance(c, tuple) and len(c) >= 2 and len(c[1]) == 2 and c[1][1] == value_of(c[1][0]):
                keys.add(c[1][0])
    finally:
        j._destroy()
    return {"keys": sorted(keys), "dump_index": dump_idx, "journal_first": first}


if __name__ == "__main__":
    sys.exit(main())
