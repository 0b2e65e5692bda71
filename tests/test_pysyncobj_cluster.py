"""A 3-node PySyncObj cluster on segwal journals, as real processes on 127.0.0.1.

Each node (``tests/pysyncobj_node.py``) runs a SyncObj with a replicated dict
on its own segwal directory with 64 KiB segments.  Two families of tests:

* ``test_cluster_survives_repeated_kill9`` (both journal modes): under load,
  ``kill -9`` the leader and a follower in turn, 10 kills per mode (50 with
  ``pytest --long``); every restarted node recovers at least what was
  committed, no acknowledged command is lost, all nodes converge, and log
  compaction runs inside the test.  A killed process keeps what reached the OS,
  so this holds for ``sync="flush"`` too; the series fails on a journal that
  acknowledges before writing.
* Power loss (durable mode): the journal's and the dump's I/O go through
  ``segwal.testing.volatile.VolatileFileSystem`` (``--volatile``), so that
  ``kill -9`` loses what a power cut would.  The scenario includes a snapshot
  install (a follower misses what compaction removed) and compactions on every
  node, then cuts power to all three nodes, or to the leader and a follower,
  right after commands were acknowledged and under load.  Every committed key
  must be on the disks of a majority (of the victims for two victims), and the
  restarted cluster must hold every one.  The same scenario on two
  deliberately broken journals (``--unsafe ack-before-sync``: acknowledge
  before writing; ``--unsafe skip-dump-fsync``: purge and install snapshots
  without fsyncing the dump) loses committed keys every time: the test can fail.

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
# the node processes import segwal from this checkout (its root first on sys.path), as the test does
ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
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

    def __init__(self, addr: str, peers: list[str], directory: Path, extra: list[str] | None = None) -> None:
        self.extra = list(extra or [])
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
                 "--dir", str(self.dir), *self.extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
                env=ENV,
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

    def disk_keys(self) -> set[int]:
        """The keys this (stopped) node's disk holds: dump plus journal (``--inspect``)."""
        out = subprocess.run([sys.executable, str(NODE_SCRIPT), "--inspect", "--dir", str(self.dir)],
                             capture_output=True, text=True, timeout=DEADLINE, env=ENV)
        assert out.returncode == 0, out.stderr[-3000:]
        return set(json.loads(out.stdout.splitlines()[-1])["keys"])

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



def kill_all_at_once(nodes: list[Node]) -> None:
    """SIGKILL every node in ``nodes`` before waiting for any (a power cut of them)."""
    for n in nodes:
        assert n.proc is not None
        os.kill(n.proc.pid, signal.SIGKILL)
    for n in nodes:
        assert n.proc is not None
        n.proc.wait(timeout=DEADLINE)
        n.proc = None


@pytest.fixture
def make_cluster(tmp_path):
    made: list[Node] = []

    def make(*extra: str) -> list[Node]:
        addrs = [f"127.0.0.1:{p}" for p in _free_ports(3)]
        nodes = [Node(a, [b for b in addrs if b != a], tmp_path / f"node{i}", list(extra))
                 for i, a in enumerate(addrs)]
        made.extend(nodes)
        for n in nodes:
            n.start()
        return nodes

    try:
        yield make
    finally:
        for n in made:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()


def check_final_state(nodes: list[Node], committed: set[int]) -> list[dict]:
    sts = wait_for(lambda: converged(nodes, committed), "all nodes to converge")
    for n in nodes:
        keys = set(n.cmd("keys")["keys"])
        assert committed <= keys, f"{n.addr} lost committed keys: {sorted(committed - keys)[:20]}"
    return sts


def run_kill_series(make_cluster, sync: str, kills: int, unsafe: str = "none", compact_min: int = 300) -> None:
    """kill -9 the leader and a follower in turn, under load, ``kills`` times;
    asserts what the test below promises."""
    nodes = make_cluster("--sync", sync, "--compact-min", str(compact_min), "--unsafe", unsafe)
    committed: set[int] = set()
    key = 0
    for r in range(kills):
        leader = wait_for(lambda: leader_of(nodes), f"a leader (round {r})")
        victim = leader if r % 2 == 0 else next(n for n in nodes if n is not leader)
        client = next(n for n in nodes if n is not victim)
        client.cmd("put", key, 400)
        batch = set(range(key, key + 400))
        key += 400
        wait_for(lambda: len(acked(client)[0] & batch) >= 100, f"acks before kill {r}")
        before = victim.cmd("status")
        committed |= acked(client)[0]
        victim.kill9()
        if victim is leader:
            wait_for(lambda: leader_of(nodes), f"a new leader after killing the leader (round {r})")
        victim.start()
        rec = victim.recovered
        assert rec is not None and rec["journal_last"] >= before["commit_idx"], (rec, before)
        assert rec["term"] >= before["term"]
        # the cluster makes progress again; commands acknowledged meanwhile count as committed
        # (PySyncObj may never call back a forwarded command whose entry a snapshot install
        # skipped, so the test does not wait for every outstanding callback)
        leader = wait_for(lambda: leader_of(nodes), f"a leader after restart {r}")
        leader.cmd("put", key, 10)
        fresh = set(range(key, key + 10))
        key += 10
        wait_for(lambda: fresh <= acked(leader)[0], f"10 acks through the leader after restart {r}")
        committed |= acked(client)[0] | acked(leader)[0]
    sts = check_final_state(nodes, committed)
    assert len(committed) >= kills * 100
    assert any(s["purges"] > 0 for s in sts), sts  # log compaction ran inside the test
    for n in nodes:  # a clean stop closes each journal; each directory reopens with its committed entries
        n.quit()
    from segwal.integrations.pysyncobj import SegwalJournal

    for n, st in zip(nodes, sts):
        j = SegwalJournal(n.dir / "raft", segment_size=64 * 1024)
        try:
            assert len(j) >= 1 and j[-1][1] >= st["commit_idx"] and j.engine.last_index() == j[-1][1]
        finally:
            j._destroy()


@pytest.mark.parametrize("sync", ["always", "flush"])
def test_cluster_survives_repeated_kill9(make_cluster, request, sync):
    """kill -9 the leader and a follower in turn, under load, repeatedly (10 kills
    per mode, 50 with ``--long``): no acknowledged command is lost, every restarted
    node recovers at least what was committed, and all nodes converge."""
    run_kill_series(make_cluster, sync, 50 if request.config.getoption("--long") else 10)


def test_kill9_series_catches_a_journal_that_acknowledges_before_writing(make_cluster):
    """The same series on a journal whose acknowledgements leave before its entries
    are written fails at the first kill: the restarted node lacks entries it had
    committed.  (Without log compaction here, which would write the buffered
    entries by chance before some kills.)"""
    with pytest.raises(AssertionError, match="journal_last"):
        run_kill_series(make_cluster, "flush", 10, unsafe="ack-before-sync", compact_min=100000)


def _compact_all(nodes: list[Node]) -> None:
    before = {n.addr: n.cmd("status")["purges"] for n in nodes}
    for n in nodes:
        n.cmd("compact")
    wait_for(lambda: all(n.cmd("status")["purges"] > before[n.addr] for n in nodes), "a compaction on every node")


def run_power_loss(
    make_cluster, variant: str, victims: str, mode: tuple[str, ...] = ("--volatile",)
) -> tuple[list[Node], set[int], set[int]]:
    """Power-loss scenario on journals whose I/O goes through a VolatileFileSystem
    (``mode`` ``--volatile``; or ``--sync flush`` on the real file system, where
    the kill is a plain ``kill -9``): a snapshot install, log compactions, then a
    cut of ``victims`` ("all" or "leader+follower") right after commands were acknowledged.
    Returns the nodes, the committed keys, and the committed keys the victims'
    disks do not hold often enough (a majority for "all", one for two victims)."""
    # compactions only when forced (compact-min far above what is written), so each is awaited
    nodes = make_cluster(*mode, "--unsafe", variant, "--compact-min", "100000")
    committed: set[int] = set()
    leader = wait_for(lambda: leader_of(nodes), "a leader")
    leader.cmd("put", 0, 100)
    wait_for(lambda: len(acked(leader)[0]) == 100, "100 acks")
    # 1. a snapshot install: a follower misses what log compaction removes from the leader
    lagging = next(n for n in nodes if n is not leader)
    lagging.kill9()
    leader.cmd("put", 100, 300)
    wait_for(lambda: set(range(100, 400)) <= acked(leader)[0], "300 acks with a follower down")
    _compact_all([n for n in nodes if n.alive])
    lagging.start()
    wait_for(lambda: lagging.cmd("status")["clears"] >= 1, "the restarted follower to install a snapshot")
    committed |= acked(leader)[0]
    check_final_state(nodes, committed)
    # 2. compaction everywhere, then commands acknowledged after it, then the power cut
    leader.cmd("put", 2000, 20)
    wait_for(lambda: all(n.cmd("status")["n_keys"] >= 420 for n in nodes), "20 more keys applied everywhere")
    _compact_all(nodes)
    leader.cmd("put", 400, 50)
    wait_for(lambda: set(range(400, 450)) <= acked(leader)[0], "50 acks after the compaction")
    committed |= acked(leader)[0]
    leader.cmd("put", 450, 1000)  # under load at the instant of the cut
    wait_for(lambda: len(acked(leader)[0] & set(range(450, 1450))) >= 50, "acks under load")
    committed |= acked(leader)[0]
    down = nodes if victims == "all" else [leader, next(n for n in nodes if n is not leader)]
    kill_all_at_once(down)
    need = 2 if victims == "all" else 1  # committed = durable on 2 of 3 nodes
    holders: dict[int, int] = {k: 0 for k in committed}
    for n in down:
        for k in n.disk_keys() & committed:
            holders[k] += 1
    lost = {k for k, c in holders.items() if c < need}
    return nodes, committed, lost


@pytest.mark.parametrize("victims", ["all", "leader+follower"])
def test_power_loss_loses_no_committed_command(make_cluster, victims):
    nodes, committed, lost = run_power_loss(make_cluster, "none", victims)
    assert not lost, f"committed keys durable on too few nodes: {sorted(lost)[:20]} ({len(lost)})"
    for n in nodes:
        if not n.alive:
            n.start()
    wait_for(lambda: leader_of(nodes), "a leader after the power cut")
    check_final_state(nodes, committed)


@pytest.mark.parametrize("variant", ["ack-before-sync", "skip-dump-fsync"])
def test_power_loss_test_catches_an_unsafe_journal(make_cluster, variant):
    """The same scenario on a deliberately broken journal loses committed commands
    every time: the power-loss test can fail."""
    _nodes, committed, lost = run_power_loss(make_cluster, variant, "all")
    assert lost, f"{variant}: expected committed keys to be lost, all {len(committed)} survived"


def test_flush_mode_survives_kill9_of_all_nodes_at_once(make_cluster):
    """``sync="flush"`` promises to survive ``kill -9`` of any number of nodes: the
    same scenario, all three killed at once on the real file system."""
    nodes, committed, lost = run_power_loss(make_cluster, "none", "all", ("--sync", "flush"))
    assert not lost, f"committed keys on too few disks: {sorted(lost)[:20]} ({len(lost)})"
    for n in nodes:
        n.start()
    wait_for(lambda: leader_of(nodes), "a leader after killing every node")
    check_final_state(nodes, committed)


def test_kill_all_test_catches_a_journal_that_acknowledges_before_writing(make_cluster):
    _nodes, committed, lost = run_power_loss(make_cluster, "ack-before-sync", "all", ("--sync", "flush"))
    assert lost, f"expected committed keys to be lost, all {len(committed)} survived"
