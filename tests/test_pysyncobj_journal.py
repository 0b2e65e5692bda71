"""SegwalJournal against PySyncObj's own journals: the same calls give the same results.

Differential tests: every operation is applied to a ``SegwalJournal``, to
PySyncObj's ``FileJournal`` and to its ``MemoryJournal``, and everything
observable (length, every position, negative positions, slices, term, vote,
commit index) is compared after each step, including across close and reopen
(``MemoryJournal`` is left out of the reopen comparison, having nothing to
reopen, and of the commit index, which it does not keep).

Deliberate differences, documented in ``segwal.integrations.pysyncobj`` and
tested here: ``add`` refuses an index that does not follow the last entry of a
non-empty journal (PySyncObj's journals would store it and break their own
position arithmetic); the commit index is saved on ``_destroy`` too and is
clamped to the last log index when saved.
"""

from __future__ import annotations

import random
import socket
import time

import pytest

pysyncobj = pytest.importorskip("pysyncobj")

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.journal import FileJournal, MemoryJournal

from segwal.engine import HardState, LockedError, WalEngine
from segwal.integrations.pysyncobj import (
    SegwalJournal,
    SegwalJournalFile,
    decode_node_id,
    encode_node_id,
    segwal_journal,
)

SEG = 512  # tiny segments: every few entries start a new segment file


class Trio:
    """The three journals side by side, with the model state needed to drive them."""

    def __init__(self, tmp_path, sync="always", cache=65536):
        self.dir = tmp_path
        self.sync = sync
        self.cache = cache  # a small cache makes reads span the engine and memory
        self.seg = SegwalJournal(tmp_path / "seg", segment_size=SEG, sync=sync, cache_entries=cache)
        self.file = FileJournal(str(tmp_path / "file.journal"))
        self.mem = MemoryJournal()
        # False once the commit index set last was above the log (segwal clamps it when saving)
        self.commit_exact = True
        self.commit_set = 1

    def track_commit(self):
        if self.seg.engine.last_index() < self.commit_set:
            self.commit_exact = False

    def all(self):
        return (self.seg, self.file, self.mem)

    def do(self, name, *args):
        results = [getattr(j, name)(*args) for j in self.all()]
        assert results[0] == results[1] == results[2], (name, args, results)
        return results[0]

    def reopen(self):
        for j in (self.seg, self.file):
            j.onOneSecondTimer()  # FileJournal saves its meta only here
            j._destroy()
        self.seg = SegwalJournal(self.dir / "seg", segment_size=SEG, sync=self.sync, cache_entries=self.cache)
        self.file = FileJournal(str(self.dir / "file.journal"))

    def check(self, with_mem=True):
        js = self.all() if with_mem else (self.seg, self.file)
        ref = js[1]
        n = len(ref)
        for j in js:
            assert len(j) == n
        full = [ref[i] for i in range(n)]
        for j in js:
            assert [j[i] for i in range(n)] == full
            assert [j[-i] for i in range(1, n + 1)] == [full[-i] for i in range(1, n + 1)]
            assert j[:] == full
            for s in (slice(1, None), slice(None, -1), slice(2, 5), slice(-3, None), slice(5, 2), slice(0, n + 10)):
                assert j[s] == full[s], (type(j).__name__, s)
            assert j[::2] == full[::2]
            assert j[::-1] == full[::-1]
            for bad in (n, -n - 1):
                with pytest.raises(IndexError):
                    j[bad]
            assert j.getCurrentTerm() == ref.getCurrentTerm()
            assert j.getVotedForNodeId() == ref.getVotedForNodeId()
        if self.commit_exact:
            assert self.seg.getRaftCommitIndex() == self.file.getRaftCommitIndex()
        else:  # saved while above the log: clamped (documented difference)
            assert 1 <= self.seg.getRaftCommitIndex() <= self.file.getRaftCommitIndex()

    def close(self):
        self.seg._destroy()
        self.file._destroy()


def _cmd(rng: random.Random, i: int) -> bytes:
    return bytes([rng.randrange(256)]) + f"command-{i}-".encode() + rng.randbytes(rng.randrange(0, 40))


def test_fresh_journal_matches(tmp_path):
    t = Trio(tmp_path)
    t.check()
    assert t.seg.getRaftCommitIndex() == t.file.getRaftCommitIndex() == 1
    assert t.seg.getCurrentTerm() == 0 and t.seg.getVotedForNodeId() is None
    t.close()


def test_add_read_delete_sequence(tmp_path):
    t = Trio(tmp_path)
    rng = random.Random(1)
    for i in range(1, 41):
        t.do("add", _cmd(rng, i), i, 1 + i // 10)
    t.check()
    t.do("deleteEntriesFrom", 30)  # conflict truncation
    t.check()
    t.do("deleteEntriesTo", 12)  # log compaction
    t.check()
    assert t.seg[0][1] == 13 and t.seg[-1][1] == 30
    t.do("add", b"x", 31, 5)
    t.do("deleteEntriesFrom", 0)
    t.check()
    t.do("add", b"y", 13, 5)  # after emptying by truncation, the next position is re-filled
    t.check()
    t.do("deleteEntriesTo", 1)  # purge everything
    t.check()
    t.do("add", b"z", 14, 5)
    t.check()
    t.reopen()
    t.check(with_mem=False)
    t.close()


def test_str_command_stored_as_utf8(tmp_path):
    j = SegwalJournal(tmp_path / "j")
    f = FileJournal(str(tmp_path / "f"))
    for x in (j, f):
        x.add("héllo", 1, 1)
        x._destroy()
    j, f = SegwalJournal(tmp_path / "j"), FileJournal(str(tmp_path / "f"))
    assert j[0] == f[0] == ("héllo".encode(), 1, 1)
    j._destroy()
    f._destroy()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sync", ["always", "flush"])
def test_random_sequences_match_pysyncobj_journals(tmp_path, seed, sync):
    rng = random.Random(seed)
    t = Trio(tmp_path, sync=sync, cache=4 if seed % 2 else 65536)
    nxt, term, count = 1, 0, 0
    nodes = ["127.0.0.1:4321", "10.1.2.3:65535", "node-a", ("tuple", 7), "localhost:1234", "01.2.3.4:5"]
    for step in range(150):
        op = rng.random()
        n = len(t.file)
        if op < 0.45:
            k = rng.randrange(1, 6)
            for _ in range(k):
                count += 1
                term += rng.random() < 0.1
                t.do("add", _cmd(rng, count), nxt, term)
                nxt += 1
        elif op < 0.55:
            t.do("deleteEntriesFrom", rng.randrange(0, n + 2))
            if not len(t.file) and rng.random() < 0.5:
                nxt = rng.randrange(1, 500)  # an empty journal takes any next index
        elif op < 0.65:
            t.do("deleteEntriesTo", rng.randrange(0, n + 2))
        elif op < 0.68:
            t.do("clear")
            nxt = rng.randrange(1, 500)  # as after loading a snapshot: any index
            term = rng.randrange(0, term + 2)
        elif op < 0.75:
            term += rng.random() < 0.5
            voted = rng.choice(nodes + [None])
            for j in (t.seg, t.file, t.mem):
                j.setCurrentTerm(term, voted)
        elif op < 0.85:
            if len(t.file):
                c = rng.randrange(1, t.file[-1][1] + 1)
                for j in (t.seg, t.file):  # MemoryJournal does not keep a commit index
                    j.setRaftCommitIndex(c)
                t.commit_set, t.commit_exact = c, True
        elif op < 0.88:
            t.do("onOneSecondTimer")
        elif op < 0.90:
            t.seg.sync()  # what the hooks call before an acknowledgement
        elif op < 0.95:
            t.seg.flush()
            t.file.flush()
        else:
            t.reopen()
            t.mem = MemoryJournal()  # rebuild the in-memory reference from the file journal
            for item in t.file[:]:
                t.mem.add(*item)
            t.mem.setCurrentTerm(t.file.getCurrentTerm(), t.file.getVotedForNodeId())
        if len(t.file):
            nxt = t.file[-1][1] + 1
        t.track_commit()
        t.check()
    t.reopen()
    t.check(with_mem=False)
    t.close()


def test_negative_and_out_of_range_arguments_follow_list_semantics(tmp_path):
    t = Trio(tmp_path)
    for i in range(1, 11):
        t.do("add", b"c%d" % i, i, 1)
    t.do("deleteEntriesTo", -8)  # journal[-8:] keeps the last 8
    t.check()
    t.do("deleteEntriesTo", 0)
    t.do("deleteEntriesFrom", 100)
    t.check()
    t.do("deleteEntriesFrom", 6)
    t.check()
    t.close()


def test_add_must_follow_last_entry(tmp_path):
    j = SegwalJournal(tmp_path / "j", segment_size=SEG)
    j.add(b"a", 7, 1)  # an empty journal takes any first index
    with pytest.raises(ValueError):
        j.add(b"b", 9, 1)
    with pytest.raises(ValueError):
        j.add(b"b", 7, 1)
    assert len(j) == 1 and j[0] == (b"a", 7, 1)
    j._destroy()


def test_compaction_deletes_whole_segments_and_survives_reopen(tmp_path):
    j = SegwalJournal(tmp_path / "j", segment_size=4096, sync="flush")
    for i in range(1, 2001):
        j.add(b"p" * 50, i, 1 + i // 500)
        if i % 50 == 0:
            j.sync()  # add() buffers in memory; sync() writes one batch (as SyncObj does per message)
    segs_before = len(j.engine.segments())
    files_before = len(list((tmp_path / "j").rglob("*.wal")))
    assert segs_before > 10
    j.deleteEntriesTo(1500)  # keep entries 1501..2000
    assert len(j) == 500 and j[0] == (b"p" * 50, 1501, 4)
    segs_after = len(j.engine.segments())
    files_after = len(list((tmp_path / "j").rglob("*.wal")))
    assert segs_after < segs_before / 2
    assert files_after < files_before / 2
    j._destroy()
    j = SegwalJournal(tmp_path / "j", segment_size=4096)
    assert len(j) == 500 and j[0][1] == 1501 and j[-1][1] == 2000
    j._destroy()


def test_hard_state_durable_and_exact(tmp_path):
    j = SegwalJournal(tmp_path / "j")
    j.add(b"\x00", 1, 0)
    for i in range(2, 11):
        j.add(b"c", i, 3)
    j.setCurrentTerm(3, "127.0.0.1:4321")
    j.setRaftCommitIndex(8)
    assert j.getRaftCommitIndex() == 8
    e = j.engine
    hs = e.load_hard_state()
    assert hs.current_term == 3 and hs.commit_index == 1  # commit index: saved lazily, like FileJournal
    j.onOneSecondTimer()
    assert e.load_hard_state().commit_index == 8
    j.setRaftCommitIndex(10)
    j._destroy()  # also saves a pending commit index (FileJournal does not)
    j = SegwalJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (3, "127.0.0.1:4321", 10)
    j._destroy()


def test_truncating_below_saved_commit_index_keeps_directory_openable(tmp_path):
    j = SegwalJournal(tmp_path / "j")
    for i in range(1, 11):
        j.add(b"c", i, 1)
    j.setRaftCommitIndex(10)
    j.flush()
    j.deleteEntriesFrom(4)  # PySyncObj logs "truncating already-applied" but does it
    # simulate a crash: no _destroy, just drop the engine and reopen in a fresh one
    j.engine.close()
    j = SegwalJournal(tmp_path / "j")
    assert len(j) == 4 and j.getRaftCommitIndex() == 4
    j._destroy()


def test_clear_keeps_vote_and_term(tmp_path):
    j = SegwalJournal(tmp_path / "j")
    for i in range(1, 6):
        j.add(b"c", i, 2)
    j.setCurrentTerm(4, "some-node")  # a non-IPv4 id: kept in the key/value store
    j.clear()
    assert len(j) == 0
    j.add(b"s", 100, 3)  # as PySyncObj does after loading a full dump
    j.add(b"t", 101, 3)
    j._destroy()
    j = SegwalJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (4, "some-node")
    assert j[:] == [(b"s", 100, 3), (b"t", 101, 3)]
    j._destroy()


@pytest.mark.parametrize(
    "node_id",
    ["127.0.0.1:4321", "0.0.0.0:0", "255.255.255.255:65535", "localhost:4321", "01.2.3.4:5", "1.2.3.4:05",
     "1.2.3.4:70000", "[::1]:80", ("a", 1), 42, "ünïcode"],
)
def test_node_id_encoding_roundtrip(node_id):
    code, blob = encode_node_id(node_id)
    assert 0 < code < 1 << 64
    assert decode_node_id(code, blob) == node_id
    canonical = node_id in ("127.0.0.1:4321", "0.0.0.0:0", "255.255.255.255:65535")
    assert (blob is None) == canonical  # canonical IPv4:port ids need no key/value entry


def test_lost_mapping_still_counts_as_a_vote():
    code, _ = encode_node_id("some-node")
    v = decode_node_id(code, None)
    assert v is not None and v != "some-node"


def test_refuses_a_second_open(tmp_path):
    j = SegwalJournal(tmp_path / "j")
    with pytest.raises(LockedError):
        SegwalJournal(tmp_path / "j")
    j._destroy()


def test_saved_commit_index_never_ahead_of_log(tmp_path):
    j = SegwalJournal(tmp_path / "j", sync="flush")
    j.add(b"a", 1, 1)
    j.setRaftCommitIndex(5)  # ahead of the log (PySyncObj clamps later)
    j.onOneSecondTimer()
    assert j.engine.load_hard_state() == HardState(0, None, 1)
    j._destroy()
    assert WalEngine(tmp_path / "j").last_index() == 1


# ------------------------------------------------------------------- SyncObj


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Counter(SyncObj):
    def __init__(self, addr, conf):
        super().__init__(addr, [], conf)
        self.value = 0

    @replicated
    def incr(self, by):
        self.value += by
        return self.value


def _wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_segwal_journal_hook_plugs_into_syncobj(tmp_path):
    spec = segwal_journal(tmp_path / "raft", segment_size=4096)
    assert isinstance(spec, SegwalJournalFile)
    addr = f"127.0.0.1:{_free_port()}"
    conf = SyncObjConf(journalFile=spec, autoTickPeriod=0.01, fullDumpFile=str(tmp_path / "dump"))
    o = _Counter(addr, conf)
    try:
        assert _wait(lambda: o._isLeader())
        for i in range(1, 51):
            assert o.incr(1, sync=True, timeout=10) == i
        assert o.getStatus()["log_len"] >= 51
    finally:
        o.destroy_synchronous()
    # a new SyncObj on the same configuration replays the journal
    conf = SyncObjConf(journalFile=spec, autoTickPeriod=0.01, fullDumpFile=str(tmp_path / "dump"))
    o = _Counter(addr, conf)
    try:
        assert _wait(lambda: o._isLeader() and o.value == 50)
        assert o.incr(5, sync=True, timeout=10) == 55
        assert o.getStatus()["raft_term"] >= 2
    finally:
        o.destroy_synchronous()
    # the file journal is untouched by the hook: an ordinary path still gives FileJournal
    import pysyncobj.syncobj as so

    fj = so.createJournal(str(tmp_path / "plain"))
    assert isinstance(fj, FileJournal)
    fj._destroy()
    assert isinstance(so.createJournal(None), MemoryJournal)


# ------------------------------------------------------- buffering and hooks


def test_add_is_buffered_until_sync_and_reads_span_engine_and_memory(tmp_path):
    j = SegwalJournal(tmp_path / "j", cache_entries=3)
    for i in range(1, 11):
        j.add(b"c%d" % i, i, 1)
        if i % 4 == 0:
            j.sync()
    assert j.pending() == 2 and j.engine.last_index() == 8
    assert [x[1] for x in j] == list(range(1, 11)) and j[:][0] == (b"c1", 1, 1)
    j.sync()
    assert j.pending() == 0 and j.engine.last_index() == 10
    for i in range(11, 31):  # past 2x the cache: old entries leave memory, not the log
        j.add(b"c%d" % i, i, 1)
        j.sync()
    assert [x[1] for x in j[2:9]] == list(range(3, 10)) and j[-1] == (b"c30", 30, 1)
    j.deleteEntriesFrom(5)  # truncates the engine too
    assert len(j) == 5 and j.engine.last_index() == 5
    j._destroy()


def test_durable_mode_requires_full_dump_file(tmp_path):
    conf = SyncObjConf(journalFile=segwal_journal(tmp_path / "raft"))
    with pytest.raises(ValueError, match="fullDumpFile"):
        _Counter(f"127.0.0.1:{_free_port()}", conf)
    assert not (tmp_path / "raft").exists()  # refused before anything was opened


def test_targets_path_url_and_factory(tmp_path):
    from segwal.storage.memory import InMemoryEngine

    with pytest.raises(ValueError, match="URL"):
        segwal_journal("s3://bucket/raft")
    with pytest.raises(TypeError):
        segwal_journal(42)  # type: ignore[arg-type]
    spec = segwal_journal(lambda: InMemoryEngine(), sync="always")
    j = spec.open()
    j.add(b"x", 1, 1)
    j.sync()
    assert j.engine.last_index() == 1 and j[0] == (b"x", 1, 1)
    j.setCurrentTerm(3, "127.0.0.1:9")
    assert j.engine.load_hard_state().current_term == 3
    j._destroy()
    with pytest.raises(TypeError, match="StorageEngine"):
        segwal_journal(lambda: object()).open()


def test_install_fails_loudly_without_a_wrapped_method(monkeypatch):
    import pysyncobj.version

    from segwal.integrations.pysyncobj import hooks

    monkeypatch.setattr(hooks, "_installed", False)
    monkeypatch.delattr(SyncObj, "_SyncObj__sendNextNodeIdx")
    with pytest.raises(ImportError, match="__sendNextNodeIdx"):
        hooks.install()
    monkeypatch.undo()
    monkeypatch.setattr(hooks, "_installed", False)
    monkeypatch.setattr(pysyncobj.version, "VERSION", "0.3.18")
    with pytest.raises(ImportError, match="0.3.18"):
        hooks.install()


def test_leader_counts_itself_only_for_synced_entries(tmp_path):
    """A single node commits on its own vote (PySyncObj's ``count = 1``): when a
    command's callback reports success, its entry is already in the engine."""
    conf = SyncObjConf(journalFile=segwal_journal(tmp_path / "raft"), fullDumpFile=str(tmp_path / "dump"),
                       autoTickPeriod=0.01)
    o = _Counter(f"127.0.0.1:{_free_port()}", conf)
    try:
        assert _wait(lambda: o._isLeader())
        journal = o._SyncObj__raftLog
        for i in range(1, 31):
            o.incr(1, sync=True, timeout=10)
            assert journal.engine.last_index() >= o.raftCommitIndex, i
    finally:
        o.destroy_synchronous()


def test_other_syncobjs_keep_their_journal(tmp_path):
    conf = SyncObjConf(journalFile=str(tmp_path / "plain.journal"), autoTickPeriod=0.01)
    o = _Counter(f"127.0.0.1:{_free_port()}", conf)
    try:
        assert isinstance(o._SyncObj__raftLog, FileJournal)
        assert _wait(lambda: o._isLeader())
        assert o.incr(2, sync=True, timeout=10) == 2
    finally:
        o.destroy_synchronous()


@pytest.mark.parametrize("sync", ["always", "flush"])
def test_dump_is_fsynced_before_purge_and_clear_in_durable_mode(tmp_path, sync):
    from segwal.testing.volatile import VolatileFileSystem

    fs = VolatileFileSystem(tmp_path)
    dump = str(tmp_path / "dump.bin")
    j = SegwalJournal(tmp_path / "raft", sync=sync, fs=fs, dump_file=dump)
    for i in range(1, 21):
        j.add(b"c", i, 1)
    for op in (lambda: j.deleteEntriesTo(10), j.clear):
        f = fs.open(dump, create=True)  # written and renamed by PySyncObj, never fsynced
        f.pwrite(b"state", 0)
        f.close()
        op()
        assert (tmp_path / "dump.bin").exists() == (sync == "always")
        if sync == "always":
            assert (tmp_path / "dump.bin").read_bytes() == b"state"
            (tmp_path / "dump.bin").unlink()
            fs = VolatileFileSystem(tmp_path)  # forget the image: the next op must sync again
            j._fs = fs
    j._destroy()


@pytest.mark.parametrize("cache", [3, 65536])
def test_entries_from_matches_syncobj_get_entries(tmp_path, cache):
    """``entries_from`` returns what SyncObj's ``__getEntries(i, None, max_bytes)`` computes."""
    j = SegwalJournal(tmp_path / "j", cache_entries=cache)
    for i in range(5, 41):
        j.add(b"x" * (i % 7), i, 1)
        if i % 5 == 0:
            j.sync()

    def reference(from_idx, max_bytes):  # SyncObj.__getEntries, count=None
        first = j[0][1]
        if from_idx is None or from_idx < first:
            return []
        result = j[from_idx - first :]
        total, k = 0, 0
        for k, entry in enumerate(result):
            total += len(entry[0])
            if total >= max_bytes:
                break
        return result[: k + 1]

    for from_idx in (None, 1, 4, 5, 6, 17, 39, 40, 41):
        for max_bytes in (1, 6, 20, 1000):
            assert j.entries_from(from_idx, max_bytes) == reference(from_idx, max_bytes), (from_idx, max_bytes)
    j._destroy()


def test_fs_needs_use_fork_false(tmp_path):
    from segwal.testing.volatile import VolatileFileSystem

    spec = segwal_journal(tmp_path / "raft", fs=VolatileFileSystem(tmp_path))
    with pytest.raises(ValueError, match="useFork=False"):
        _Counter(f"127.0.0.1:{_free_port()}", SyncObjConf(journalFile=spec, fullDumpFile=str(tmp_path / "d")))


def test_fs_serializer_writes_reads_and_transmits_the_dump(tmp_path):
    from segwal.integrations.pysyncobj.dump import FsSerializer
    from segwal.testing.volatile import VolatileFileSystem

    fs = VolatileFileSystem(tmp_path)
    leader = FsSerializer(fs, str(tmp_path / "a.dump"), batch_size=7)
    state = ([{"x": 1}, {"_ReplDict__data": {i: i * 3 for i in range(50)}}], (b"c", 9, 2), (b"b", 8, 2), set())
    assert leader.checkSerializing() == (0, None)
    leader.serialize(state, 8)
    assert leader.checkSerializing() == (2, 8) and leader.checkSerializing() == (0, None)  # reported once
    assert leader.deserialize() == state
    assert not (tmp_path / "a.dump").exists()  # through the volatile file system, never fsynced
    follower = FsSerializer(fs, str(tmp_path / "b.dump"), batch_size=7)
    installed = False
    while not installed:
        chunk = leader.getTransmissionData("node")
        installed = follower.setTransmissionData(chunk)
        assert installed == chunk[2]
    assert follower.deserialize() == state
