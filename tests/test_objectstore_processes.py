"""Processes on SeaweedFS: kill -9 of a writer under load loses nothing acknowledged, and a
read-only engine beside a writer that purges and compacts never reports its work as damage.

``tests/objectstore_child.py`` is the writer: it prints each acknowledged call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from segwal.errors import StaleViewError
from segwal.types import Entry

pytest.importorskip("obstore")
from segwal.storage.objectstore import ObjectStoreEngine  # noqa: E402

CHILD = Path(__file__).with_name("objectstore_child.py")


def payload(index: int) -> bytes:
    return f"entry {index} ".encode() * (1 + index % 7)


def start_writer(server: Any, prefix: str) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(CHILD), server.endpoint, server.bucket, prefix],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=root)


def read_acks(proc: subprocess.Popen[str], until: int, timeout: float = 30.0) -> dict[str, str]:
    """Read ack lines until ``until`` entries lines were seen; the last value of each kind."""
    assert proc.stdout is not None
    seen: dict[str, str] = {}
    keys: list[str] = []
    count = 0
    deadline = time.monotonic() + timeout
    while count < until and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        kind, value = line.split()
        seen[kind] = value
        if kind == "kv":
            keys.append(value)
        count += kind == "entries"
    seen["keys"] = ",".join(keys)
    return seen


@pytest.mark.parametrize("round_", range(2))
def test_kill9_of_a_writer_under_load_loses_nothing_acknowledged(seaweedfs: Any, round_: int) -> None:
    prefix = f"kill9/{uuid.uuid4().hex[:12]}"
    for _ in range(2):  # kill, reopen in a new writer, kill again
        proc = start_writer(seaweedfs, prefix)
        try:
            acks = read_acks(proc, until=40 + 17 * round_)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert "entries" in acks, "the writer acknowledged nothing"
        last = int(acks["entries"])
        with ObjectStoreEngine(seaweedfs.store(), prefix) as engine:
            assert engine.last_index() >= last
            boundary = engine.purge_boundary()
            lo = (boundary.index + 1) if boundary else 1
            assert engine.get_entries_range(lo, last) == [Entry(i, 1, payload(i)) for i in range(lo, last + 1)]
            if "hard" in acks:
                hs = engine.load_hard_state()
                assert hs is not None and hs.current_term >= int(acks["hard"])
            for key in filter(None, acks["keys"].split(",")):
                assert engine.get(key.encode()) == b"v"
            if "purge" in acks:
                assert boundary is not None and boundary.index >= int(acks["purge"])


def test_readonly_beside_a_purging_compacting_writer(seaweedfs: Any) -> None:
    """The reader re-reads when the writer's compaction deleted what it indexed (StaleViewError,
    then refresh()); every entry it returns is right; nothing is reported as damage."""
    prefix = f"readonly/{uuid.uuid4().hex[:12]}"
    proc = start_writer(seaweedfs, prefix)
    seen_last: list[int] = []
    stale = reads = 0
    try:
        read_acks(proc, until=5)
        assert proc.stdout is not None
        drain = threading.Thread(target=proc.stdout.read, daemon=True)  # keep the writer unblocked
        drain.start()
        reader = ObjectStoreEngine(seaweedfs.store(), prefix, readonly=True, cache_bytes=0)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                first, last = reader.first_index(), reader.last_index()
                got = reader.get_entries_range(first, last)
                assert got == [Entry(i, 1, payload(i)) for i in range(first, first + len(got))]
                seen_last.append(last)
                reads += 1
            except StaleViewError:
                stale += 1
            reader.refresh()
        reader.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert reads > 0 and seen_last[-1] > seen_last[0], (reads, stale, seen_last[:3], seen_last[-3:])
    with ObjectStoreEngine(seaweedfs.store(), prefix, readonly=True) as after:
        assert after.last_index() >= seen_last[-1]
