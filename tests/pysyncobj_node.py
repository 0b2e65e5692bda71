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
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--peers", required=True, help="comma-separated host:port of the other nodes")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--segment-size", type=int, default=64 * 1024)
    ap.add_argument("--compact-min", type=int, default=500, help="logCompactionMinEntries")
    ap.add_argument("--sync", default="always", choices=["always", "flush"])
    args = ap.parse_args()

    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    from segwal.errors import LockedError
    from segwal.integrations.pysyncobj import SegwalJournal, segwal_journal

    os.makedirs(args.dir, exist_ok=True)
    jdir = os.path.join(args.dir, "raft")
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
            j = SegwalJournal(jdir, segment_size=args.segment_size, sync=args.sync)
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
        journalFile=segwal_journal(jdir, segment_size=args.segment_size, sync=args.sync),
        fullDumpFile=os.path.join(args.dir, "dump.bin"),
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
        eng = journal.engine
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
            "journal_first": eng.first_index(),
            "journal_last": eng.last_index(),
            "segments": len(eng.segments()),
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


if __name__ == "__main__":
    sys.exit(main())
