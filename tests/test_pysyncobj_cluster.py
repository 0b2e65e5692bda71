"""A 3-node PySyncObj cluster on segwal journals, as real processes on 127.0.0.1.

Each node (``tests/pysyncobj_node.py``) runs a SyncObj with a replicated dict
on its own segwal directory, with log compaction every 500 entries and 64 KiB
segments, so compaction purges whole segments while the test runs.  The test:

1. starts the three nodes and writes 1,000 keys through the leader;
2. writes 1,500 more through a follower and, once some are acknowledged,
   ``kill -9``s the **leader**; restarts it on the same directory and checks
   that its journal recovered at least every entry it held before the kill,
   that a new leader took over, and that the restarted node catches up;
3. writes 1,500 more through the (new) leader and ``kill -9``s a **follower**
   part-way; restarts it and checks the same;
4. checks that every node holds every acknowledged (committed) key with the
   right value and the same state, then stops the nodes cleanly and reopens
   each directory in this process.

Every wait polls a condition with a bounded deadline; nothing sleeps a fixed
time.  Outcome is deterministic: only the moment of each kill varies.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pysyncobj")

NODE_SCRIPT = Path(__file__).with_name("pysyncobj_node.py")
DEADLINE = 40.0  # seconds, for any single wait


def value_of(k: int) -> int:
    return k * 7919 + 13


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    """A node process and its stdin/stdout JSON-lines protocol."""

    def __init__(self, addr: str, peers: list[str], directory: Path) -> None:
        self.addr = addr
        self.peers = peers
        self.dir = directory
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[dict] = queue.Queue()
        self.recovered: dict | None = None
        self._rid = 0
        self.starts = 0

    # -- process control

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.dir / f"stderr.{self.starts}.log", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(NODE_SCRIPT), "--self", self.addr, "--peers", ",".join(self.peers),
                 "--dir", str(self.dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, args=(self.proc, self.lines), daemon=True).start()
        self.recovered = self._next(lambda m: m.get("event") == "recovered", DEADLINE)
        self._next(lambda m: m.get("event") == "started", DEADLINE)

    @staticmethod
    def _reader(proc: subprocess.Popen[str], q: queue.Queue[dict]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                q.put(json.loads(line))
            except ValueError:
                q.put({"raw": line})
        q.put({"eof": True})

    def _next(self, pred, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.addr}: no answer in {timeout}s\n{self.stderr_tail()}")
            try:
                m = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if m.get("eof"):
                raise AssertionError(f"{self.addr}: process exited ({self.proc.poll()})\n{self.stderr_tail()}")
            if pred(m):
                return m

    def stderr_tail(self) -> str:
        p = self.dir / f"stderr.{self.starts}.log"
        return p.read_text()[-3000:] if p.exists() else ""

    def cmd(self, *words: object, timeout: float = DEADLINE) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self._rid += 1
        rid = str(self._rid)
        self.proc.stdin.write(" ".join([rid, *map(str, words)]) + "\n")
        self.proc.stdin.flush()
        m = self._next(lambda m: m.get("id") == rid, timeout)
        assert "error" not in m, m
        return m

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)
        self.proc = None

    def quit(self) -> None:
        if self.proc is None:
            return
        try:
            self.cmd("quit")
            self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None


def wait_for(cond, what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = cond()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def leader_of(nodes: list[Node]) -> Node | None:
    """The node all live nodes agree is the leader (and which says it leads)."""
    live = [n for n in nodes if n.alive]
    st = {n.addr: n.cmd("status") for n in live}
    leaders = {s["leader"] for s in st.values()}
    if len(leaders) != 1 or None in leaders:
        return None
    (addr,) = leaders
    node = next((n for n in live if n.addr == addr), None)
    if node is None or st[addr]["state"] != 2 or not st[addr]["has_quorum"]:  # 2 = _RAFT_STATE.LEADER
        return None
    return node


def converged(nodes: list[Node], must_have: set[int]) -> list[dict] | None:
    sts = [n.cmd("status") for n in nodes]
    if len({(s["digest"], s["n_keys"], s["last_applied"]) for s in sts}) != 1:
        return None
    if sts[0]["n_keys"] < len(must_have) or not all(s["values_ok"] for s in sts):
        return None
    return sts


def acked(node: Node) -> tuple[set[int], int, int]:
    m = node.cmd("acked")
    return set(m["ok"]), m["failed"], m["pending"]


@pytest.fixture
def cluster(tmp_path):
    ports = _free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    nodes = [Node(a, [b for b in addrs if b != a], tmp_path / f"node{i}") for i, a in enumerate(addrs)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()


def test_cluster_survives_kill9_of_leader_and_follower(cluster):
    nodes = cluster
    t0 = time.monotonic()
    committed: set[int] = set()  # keys acknowledged as committed by some client node

    # --- round 0: elect, write 1,000 keys through the leader
    leader = wait_for(lambda: leader_of(nodes), "a leader")
    leader.cmd("put", 0, 1000)
    wait_for(lambda: len(acked(leader)[0]) == 1000, "1000 acks from the leader")
    ok = acked(leader)[0]
    committed |= ok
    wait_for(lambda: converged(nodes, committed), "convergence after round 0")

    # --- round 1: kill -9 the leader while a follower is writing through it
    client = next(n for n in nodes if n is not leader)
    client.cmd("put", 1000, 1500)
    wait_for(lambda: len(acked(client)[0]) >= 300, "some acks before killing the leader")
    before = leader.cmd("status")
    leader.kill9()
    new_leader = wait_for(lambda: leader_of(nodes), "a new leader after the leader's kill -9")
    assert new_leader is not leader and new_leader.cmd("status")["term"] > before["term"]
    leader.start()
    rec = leader.recovered
    assert rec is not None
    # sync="always": everything the leader had appended before the kill is there
    assert rec["journal_last"] >= before["journal_last"] >= before["commit_idx"], (rec, before)
    assert rec["term"] >= before["term"] and rec["voted_for"] is not None
    # more writes through the new leader settle every outstanding callback
    new_leader.cmd("put", 2500, 500)
    wait_for(lambda: set(range(2500, 3000)) <= acked(new_leader)[0], "500 acks from the new leader")
    wait_for(lambda: acked(client)[2] == 0, "the client's pending callbacks to settle")
    committed |= acked(client)[0] | acked(new_leader)[0]
    assert len(acked(client)[0]) >= 300
    sts = wait_for(lambda: converged(nodes, committed), "the restarted leader to catch up")
    keys = set(nodes[0].cmd("keys")["keys"])
    assert committed <= keys, f"lost committed keys: {sorted(committed - keys)[:20]}"

    # --- round 2: kill -9 a follower while the leader is writing
    leader = wait_for(lambda: leader_of(nodes), "a leader")
    victim = next(n for n in nodes if n is not leader)
    leader.cmd("put", 3000, 1500)
    wait_for(lambda: len(acked(leader)[0] & set(range(3000, 4500))) >= 300, "some acks before killing a follower")
    before = victim.cmd("status")
    victim.kill9()
    wait_for(lambda: set(range(3000, 4500)) <= acked(leader)[0], "all 1500 acks with one follower down")
    victim.start()
    rec = victim.recovered
    assert rec is not None
    assert rec["journal_last"] >= before["commit_idx"], (rec, before)
    committed |= acked(leader)[0]
    sts = wait_for(lambda: converged(nodes, committed), "the restarted follower to catch up")

    # --- final checks: no committed key lost anywhere, same state, compaction happened
    for n in nodes:
        keys = set(n.cmd("keys")["keys"])
        assert committed <= keys, f"{n.addr} lost committed keys: {sorted(committed - keys)[:20]}"
    assert len(committed) >= 1000 + 300 + 500 + 1500
    for s in sts:
        assert s["journal_first"] > 1, s  # the journal was compacted (purge_logs)
        assert s["log_len"] < 2000, s
    states = [n.cmd("status") for n in nodes]
    for n in nodes:
        n.quit()
    from segwal.integrations.pysyncobj import SegwalJournal

    for n, s in zip(nodes, states):
        j = SegwalJournal(n.dir / "raft", segment_size=64 * 1024)
        try:
            assert j.engine.last_index() >= s["commit_idx"]
            assert len(j) >= 1 and j[-1][1] == j.engine.last_index()
        finally:
            j._destroy()
    elapsed = time.monotonic() - t0
    print(f"cluster test: {len(committed)} committed keys, {elapsed:.1f}s")
