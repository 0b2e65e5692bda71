"""Unit tests of segwal.testing: the recorder, the crash-state generator, FaultyFS,
the checker (on a toy log, so they do not depend on the engine) and the fixture."""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from segwal.fs import OsFileSystem
from segwal.testing import (
    CheckContext,
    CrashSimulator,
    Fault,
    FaultyFS,
    LogModel,
    Mark,
    OpKind,
    Recording,
    RecordingFS,
    candidates_at,
    check_recording,
)
from segwal.testing.crash import _pieces
from segwal.testing.tracking import TrackedEngine

pytest_plugins = ["pytester"]


def states(fs: RecordingFS, **kw: Any) -> list[Any]:
    return list(CrashSimulator(fs.recording(), **kw).states())


def by_gen(sts: list[Any], gen: str, point: int | None = None) -> list[Any]:
    return [s for s in sts if s.generator == gen and (point is None or s.point == point)]


def only(fs: RecordingFS, gen: str, point: int | None = None) -> Any:
    """The single state of a one-state generator at ``point`` (default: the end), undeduplicated."""
    pt = len(fs.ops) if point is None else point
    (state,) = CrashSimulator(fs.recording(), generators=[gen]).states(only_points=[pt])
    return state


# -- recorder -----------------------------------------------------------------


def test_recorder_logs_mutations_in_order_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"before")
    fs = RecordingFS(tmp_path)
    assert dict(fs.start.files) == {"old": b"before"}
    fs.mkdir(str(tmp_path / "d"))
    f = fs.open(str(tmp_path / "d" / "a"), create=True)
    buf = bytearray(b"hello")
    f.pwrite(buf, 0)
    buf[:] = b"XXXXX"  # the log holds a copy, not the caller's buffer
    f.pwritev([b"ab", b"cd"], 5)
    f.truncate(7)
    f.fdatasync()
    fs.mark("acked", n=1)
    fs.rename(str(tmp_path / "d" / "a"), str(tmp_path / "d" / "b"))
    fs.fsync_dir(str(tmp_path / "d"))
    fs.unlink(str(tmp_path / "old"))
    f.close()
    ops = fs.ops
    assert [o.kind for o in ops] == [
        OpKind.MKDIR,
        OpKind.CREATE,
        OpKind.WRITE,
        OpKind.WRITE,
        OpKind.TRUNCATE,
        OpKind.FDATASYNC,
        OpKind.RENAME,
        OpKind.FSYNC_DIR,
        OpKind.UNLINK,
    ]
    assert ops[0].path == "d" and ops[1].path == os.path.join("d", "a")
    assert ops[2].data == b"hello" and ops[3].data == b"abcd" and ops[3].offset == 5
    assert ops[6].dst == os.path.join("d", "b") and ops[6].ino == ops[1].ino
    assert fs.marks == (Mark(position=6, label="acked", facts=fs.marks[0].facts),)
    assert fs.marks[0].facts["n"] == 1
    assert (tmp_path / "d" / "b").read_bytes() == b"helloab"  # really done


def test_recorder_rejects_outside_paths_and_foreign_files(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path / "root")
    with pytest.raises(ValueError, match="outside"):
        fs.open(str(tmp_path / "elsewhere"), create=True)
    (tmp_path / "root" / "sneaky").write_bytes(b"x")  # bypasses the seam
    with pytest.raises(ValueError, match="not created through"):
        fs.open(str(tmp_path / "root" / "sneaky"))


def test_recording_save_load_roundtrip(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path / "r")
    f = fs.open(str(tmp_path / "r" / "x"), create=True)
    f.pwrite(b"abc", 0)
    fs.mark("persist", entries=((1, 1, b"abc"),))
    rec = fs.recording()
    rec.save(tmp_path / "rec.pickle")
    back = Recording.load(tmp_path / "rec.pickle")
    assert back.ops == rec.ops and back.marks == rec.marks and dict(back.start.files) == {}


# -- crash states ------------------------------------------------------------------


def test_unsynced_write_disappears_on_power_loss_but_not_on_kill(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    fs = RecordingFS(tmp_path)
    f = fs.open(str(tmp_path / "f"))
    f.pwrite(b"new", 0)
    end = len(fs.ops)
    sts = states(fs)
    assert by_gen(sts, "process_kill", end)[0].files["f"] == b"new"
    assert by_gen(sts, "lose_unsynced", end) == []  # same content as the start: deduplicated
    assert any(s.files["f"] == b"old" for s in sts)
    f.fdatasync()
    sts = states(fs)
    assert only(fs, "lose_unsynced").files["f"] == b"new"


def test_created_file_vanishes_without_directory_fsync(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path)
    f = fs.open(str(tmp_path / "seg"), create=True)
    f.pwrite(b"data", 0)
    f.fdatasync()
    assert "seg" not in only(fs, "lose_unsynced").files  # synced data, but the name was never made durable
    fs.fsync_dir(str(tmp_path))
    assert only(fs, "lose_unsynced").files == {"seg": b"data"}


def test_file_in_new_directory_needs_the_directory_made_durable(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path)
    fs.mkdir(str(tmp_path / "d"))
    f = fs.open(str(tmp_path / "d" / "x"), create=True)
    f.pwrite(b"1", 0)
    f.fdatasync()
    fs.fsync_dir(str(tmp_path / "d"))  # the name is durable in d, but d itself is not
    lost = only(fs, "lose_unsynced")
    assert lost.files == {} and lost.dirs == frozenset()
    fs.fsync_dir(str(tmp_path))
    ok = only(fs, "lose_unsynced")
    assert ok.files == {os.path.join("d", "x"): b"1"} and ok.dirs == {"d"}


def test_rename_and_unlink_can_revert_until_directory_fsync(tmp_path: Path) -> None:
    (tmp_path / "hs").write_bytes(b"v1")
    (tmp_path / "stale").write_bytes(b"zombie")
    fs = RecordingFS(tmp_path)
    t = fs.open(str(tmp_path / "hs.tmp"), create=True)
    t.pwrite(b"v2", 0)
    t.fsync()
    fs.rename(str(tmp_path / "hs.tmp"), str(tmp_path / "hs"))
    fs.unlink(str(tmp_path / "stale"))
    end = len(fs.ops)
    sts = list(CrashSimulator(fs.recording()).states(only_points=[end]))
    dir_states = by_gen(sts, "dir_ops", end)
    seen = {(s.files.get("hs"), "stale" in s.files, "hs.tmp" in s.files) for s in sts}
    assert (b"v1", True, False) in seen  # nothing durable: rename reverted, unlink reverted
    assert (b"v2", False, False) in seen  # everything applied
    assert (b"v1", True, True) in seen  # only the create persisted
    assert (b"v2", True, False) in seen  # rename durable, unlink reverted (zombie)
    assert all("reverted" not in s.variant for s in dir_states)  # variants name lost ops
    assert any("rename hs.tmp->hs" in s.variant for s in dir_states)
    fs.fsync_dir(str(tmp_path))
    final = list(CrashSimulator(fs.recording()).states(only_points=[len(fs.ops)]))
    assert {(s.files.get("hs"), "stale" in s.files) for s in final} == {(b"v2", False)}


def test_rename_keeps_durable_content_of_unsynced_file(tmp_path: Path) -> None:
    (tmp_path / "hs").write_bytes(b"v1")
    fs = RecordingFS(tmp_path)
    t = fs.open(str(tmp_path / "hs.tmp"), create=True)
    t.pwrite(b"v2", 0)  # no fsync before the rename: the classic bug
    fs.rename(str(tmp_path / "hs.tmp"), str(tmp_path / "hs"))
    fs.fsync_dir(str(tmp_path))
    assert only(fs, "lose_unsynced").files == {"hs": b""}  # rename durable, data not: an empty file


def test_sector_pieces_are_aligned_to_the_file() -> None:
    from segwal.testing.recording import Op

    op = Op(seq=0, kind=OpKind.WRITE, path="f", ino=1, offset=100, data=bytes(1000))
    assert [(o, len(d)) for o, d in _pieces(op, 512)] == [(100, 412), (512, 512), (1024, 76)]


def test_torn_writes_mix_old_new_zero_and_garbage_per_sector(tmp_path: Path) -> None:
    old, new = b"o" * 2048, b"n" * 2048
    (tmp_path / "f").write_bytes(old)
    fs = RecordingFS(tmp_path)
    f = fs.open(str(tmp_path / "f"))
    f.pwrite(new, 0)
    torn = by_gen(states(fs, generators=["torn"], per_point=64), "torn")
    assert len(torn) > 10
    kinds: set[str] = set()
    for s in torn:
        content = s.files["f"]
        assert len(content) == 2048
        for i in range(4):
            sec = content[i * 512 : (i + 1) * 512]
            if sec == old[:512]:
                kinds.add("old")
            elif sec == new[:512]:
                kinds.add("new")
            elif sec == bytes(512):
                kinds.add("zero")
            else:  # garbage fills a whole sector; never a mix of old and new
                assert b"o" * 8 not in sec and b"n" * 8 not in sec
                kinds.add("garbage")
    assert kinds == {"old", "new", "zero", "garbage"}
    cut = [s for s in torn if "cut after 1 of 4" in s.variant]
    assert cut and cut[0].files["f"] == new[:512] + old[512:]


def test_torn_append_past_end_leaves_holes_as_zeros(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path)
    f = fs.open(str(tmp_path / "f"), create=True)
    fs.fsync_dir(str(tmp_path))
    f.pwrite(b"x" * 1024, 0)
    torn = by_gen(states(fs, generators=["torn"], per_point=40), "torn")
    for s in torn:
        c = s.files["f"]
        assert len(c) in (0, 512, 1024)
        if len(c) == 1024 and c[:512] != b"x" * 512:
            assert b"x" * 8 not in c[:512]  # zeros or garbage, never a partial sector


def test_reorder_applies_every_subset_in_issue_order(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path)
    a = fs.open(str(tmp_path / "a"), create=True)
    b = fs.open(str(tmp_path / "b"), create=True)
    fs.fsync_dir(str(tmp_path))
    a.pwrite(b"1", 0)
    b.pwrite(b"2", 0)
    a.pwrite(b"3", 0)  # overrides the first write to a
    end = len(fs.ops)
    got = {(s.files["a"], s.files["b"]) for s in states(fs, generators=["reorder"]) if s.point == end}
    # 8 subsets of 3 writes; {1,3} and {3} give the same state (a later write wins)
    assert got == {(b"", b""), (b"1", b""), (b"", b"2"), (b"1", b"2"), (b"3", b""), (b"3", b"2")}


def test_dedup_and_budget_and_determinism(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path)
    f = fs.open(str(tmp_path / "f"), create=True)
    fs.fsync_dir(str(tmp_path))
    for i in range(6):
        f.pwrite(bytes([65 + i]) * 700, i * 700)
        if i % 2:
            f.fdatasync()
    sim = CrashSimulator(fs.recording(), per_point=16)
    sts = list(sim.states())
    digests = [s.digest for s in sts]
    assert len(set(digests)) == len(digests)
    assert sim.stats.unique == len(sts) and sim.stats.duplicates > 0
    assert sum(sim.stats.per_generator.values()) == len(sts)
    again = [s.digest for s in CrashSimulator(fs.recording(), per_point=16).states()]
    assert again == digests
    capped = list(CrashSimulator(fs.recording(), per_point=16, max_states=5).states())
    assert [s.digest for s in capped] == digests[:5]
    one = sts[-1]
    redo = CrashSimulator(fs.recording(), per_point=16).states(only_points=[one.point], only_generators=[one.generator])
    assert one.digest in {s.digest for s in redo}


def test_materialize_and_describe(tmp_path: Path) -> None:
    fs = RecordingFS(tmp_path / "r")
    fs.mkdir(str(tmp_path / "r" / "d"))
    f = fs.open(str(tmp_path / "r" / "d" / "x"), create=True)
    f.pwrite(b"abc", 0)
    state = by_gen(states(fs), "process_kill", len(fs.ops))[0]
    out = state.materialize(tmp_path / "out")
    assert (out / "d" / "x").read_bytes() == b"abc"
    assert "crash point 3" in state.describe() and "process_kill" in state.describe()
    with pytest.raises(FileExistsError):
        state.materialize(tmp_path / "out")


def test_failed_sync_under_linux_semantics_is_never_made_durable(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"....")
    rec = RecordingFS(tmp_path)
    fs = FaultyFS(rec)
    f = fs.open(str(tmp_path / "f"))
    f.pwrite(b"A", 0)
    fs.fail("sync")
    with pytest.raises(OSError) as ei:
        f.fdatasync()
    assert ei.value.errno == errno.EIO
    assert f.pread(4, 0) == b"A..."  # still visible in the page cache
    f.pwrite(b"B", 1)
    f.fdatasync()  # succeeds, but does not write the failed page back
    assert only(rec, "process_kill").files["f"] == b"AB.."
    assert only(rec, "lose_unsynced").files["f"] == b".B.."
    assert OpKind.SYNC_FAILED in {o.kind for o in rec.ops}


def test_lenient_sync_failure_keeps_data_dirty(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"....")
    rec = RecordingFS(tmp_path)
    fs = FaultyFS(rec, [Fault(op="sync")], linux_fsync=False)
    f = fs.open(str(tmp_path / "f"))
    f.pwrite(b"A", 0)
    with pytest.raises(OSError):
        f.fdatasync()
    f.fdatasync()
    assert only(rec, "lose_unsynced").files["f"] == b"A..."


# -- FaultyFS ------------------------------------------------------------------------


def test_faulty_fs_fails_the_nth_call_once_or_persistently(tmp_path: Path) -> None:
    fs = FaultyFS(OsFileSystem(), [Fault(op="write", nth=2, error=errno.ENOSPC)])
    f = fs.open(str(tmp_path / "f"), create=True)
    f.pwrite(b"a", 0)
    with pytest.raises(OSError) as ei:
        f.pwrite(b"b", 1)
    assert ei.value.errno == errno.ENOSPC
    f.pwrite(b"c", 1)  # once only
    assert f.pread(10, 0) == b"ac"
    fs.fail("sync", persistent=True)
    for _ in range(3):
        with pytest.raises(OSError):
            f.fsync()
    fs.clear()
    f.fdatasync()
    assert fs.counts["write"] == 3 and fs.counts["sync"] == 4
    assert [(i.fault.op, i.call) for i in fs.injected] == [("write", 2), ("sync", 1), ("sync", 2), ("sync", 3)]


def test_faulty_fs_short_write_writes_a_prefix_then_enospc(tmp_path: Path) -> None:
    fs = FaultyFS(OsFileSystem())
    f = fs.open(str(tmp_path / "f"), create=True)
    fs.fail("write", short=3)
    with pytest.raises(OSError) as ei:
        f.pwritev([b"ab", b"cdef"], 0)
    assert ei.value.errno == errno.ENOSPC
    assert f.pread(10, 0) == b"abc"


def test_faulty_fs_other_ops_and_path_filter(tmp_path: Path) -> None:
    fs = FaultyFS(OsFileSystem())
    a = fs.open(str(tmp_path / "a.wal"), create=True)
    fs.open(str(tmp_path / "b.idx"), create=True).close()
    fs.fail("rename", path_contains=".idx")
    fs.fail("open", error=errno.EACCES, path_contains="c")
    fs.fail("pread")
    fs.fail("unlink", error=errno.EROFS)
    fs.fail("fsync_dir")
    fs.rename(str(tmp_path / "a.wal"), str(tmp_path / "a2.wal"))  # not filtered in
    with pytest.raises(OSError):
        fs.rename(str(tmp_path / "b.idx"), str(tmp_path / "b2.idx"))
    with pytest.raises(PermissionError):
        fs.open(str(tmp_path / "c"), create=True)
    with pytest.raises(OSError):
        a.pread(1, 0)
    with pytest.raises(OSError) as ei:
        fs.unlink(str(tmp_path / "a2.wal"))
    assert ei.value.errno == errno.EROFS
    with pytest.raises(OSError):
        fs.fsync_dir(str(tmp_path))
    with pytest.raises(ValueError):
        Fault(op="fly")
    with pytest.raises(ValueError):
        Fault(op="sync", short=3)


# -- checker, on a toy log (independent of segwal.engine) -------------------------------


class ToyLog:
    """A tiny WAL: one line per batch, ``crc32 json\\n``; a bad or partial line ends the log.

    ``bugs`` switches off single steps to check the harness catches them.
    """

    def __init__(self, path: str, fs: Any = None, bugs: frozenset[str] = frozenset()) -> None:
        self.fs = fs or OsFileSystem()
        self.bugs = bugs
        self.path = path
        if not self.fs.exists(path):
            self.fs.mkdir(path)
            self.fs.fsync_dir(os.path.dirname(path))
        name = os.path.join(path, "log")
        new = not self.fs.exists(name)
        self.f = self.fs.open(name, create=True)
        if new and "no_dir_fsync" not in bugs:
            self.fs.fsync_dir(path)
        self.entries: dict[int, tuple[int, bytes]] = {}
        self.end = 0
        data = self.f.pread(self.f.size(), 0)
        while True:
            nl = data.find(b"\n", self.end)
            if nl < 0:
                break
            line = data[self.end : nl]
            crc, _, body = line.partition(b" ")
            if not crc.isdigit() or int(crc) != zlib.crc32(body):
                break
            batch = json.loads(body)
            self.entries = {k: v for k, v in self.entries.items() if k < batch[0][0]}
            for i, t, p in batch:
                self.entries[i] = (t, bytes.fromhex(p))
            self.end = nl + 1

    def persist_entries(self, entries: list[Any]) -> None:
        batch = [(e[0], e[1], e[2]) for e in entries]
        first = batch[0][0]
        self.entries = {k: v for k, v in self.entries.items() if k < first}
        body = json.dumps([(i, t, p.hex()) for i, t, p in batch]).encode()
        line = str(zlib.crc32(body)).encode() + b" " + body + b"\n"
        if "line_per_entry" in self.bugs:  # each entry its own record: a batch is not atomic
            line = b""
            for e in batch:
                body = json.dumps([(e[0], e[1], e[2].hex())]).encode()
                line += str(zlib.crc32(body)).encode() + b" " + body + b"\n"
        self.f.pwrite(line, self.end)
        if "no_sync" not in self.bugs:
            self.f.fdatasync()
        self.end += len(line)
        for i, t, p in batch:
            self.entries[i] = (t, p)

    def first_index(self) -> int:
        return min(self.entries) if self.entries else self.last_index() + 1

    def last_index(self) -> int:
        return max(self.entries) if self.entries else 0

    def entry(self, i: int) -> tuple[int, int, bytes] | None:
        return (i, *self.entries[i]) if i in self.entries else None

    def get_entries_range(self, a: int, b: int) -> list[tuple[int, int, bytes]]:
        return [(i, *self.entries[i]) for i in range(a, b + 1) if i in self.entries]

    def purge_boundary(self) -> None:
        return None

    def load_hard_state(self) -> None:
        return None

    def get(self, key: bytes) -> None:
        return None

    def close(self) -> None:
        self.f.close()


def toy_workload(root: Path, bugs: frozenset[str] = frozenset()) -> RecordingFS:
    fs = RecordingFS(root)
    log = TrackedEngine(ToyLog(str(root / "db"), fs, bugs), fs)
    log.persist_entries([(1, 1, b"a" * 300), (2, 1, b"b" * 300), (3, 1, b"z" * 300)])
    log.persist_entries([(3, 1, b"c" * 700)])
    log.persist_entries([(3, 2, b"C" * 100), (4, 2, b"d")])  # overwrite from 3
    log.persist_entries([(5, 2, b"e" * 1200)])
    log.close()
    return fs


def test_checker_passes_a_correct_toy_log(tmp_path: Path) -> None:
    fs = toy_workload(tmp_path / "rec")
    report = check_recording(fs, open_engine=ToyLog, engine_subdir="db", per_point=16)
    assert report.ok, report.summary()
    assert report.explored > 50 and report.generated >= report.explored
    assert {"process_kill", "torn"} <= set(report.per_generator)


@pytest.mark.parametrize(
    ("bug", "generator", "needle"),
    [
        ("no_sync", "lose_unsynced", "entry"),
        ("no_dir_fsync", "lose_unsynced", "entry 1"),
        ("line_per_entry", "torn", "neither"),
    ],
)
def test_checker_catches_a_broken_toy_log(tmp_path: Path, bug: str, generator: str, needle: str) -> None:
    fs = toy_workload(tmp_path / "rec", frozenset({bug}))
    report = check_recording(fs, open_engine=ToyLog, engine_subdir="db", per_point=16, keep_failed=tmp_path / "kept")
    assert not report.ok
    assert any(f.generator == generator for f in report.failures), report.summary()
    text = report.summary()
    assert needle in text and "crash point" in text
    kept = Path(report.failures[0].kept or "")
    assert kept.is_dir() and (kept / "db").is_dir()
    with pytest.raises(AssertionError):
        report.raise_if_failed()


def test_candidates_cover_acked_and_in_flight_calls() -> None:
    marks = [
        Mark(position=1, label="persist", facts={"entries": [(1, 1, b"a"), (2, 1, b"b")]}),
        Mark(position=2, label="hard_state", facts={"hard_state": ("hs", 1)}),
        Mark(position=3, label="truncated", facts={"from_index": 2}),
        Mark(position=4, label="purged", facts={"term": 1, "index": 1}),
        Mark(position=5, label="apply", facts={"changes": [(b"k", b"v")], "applied": (1, 1)}),
        Mark(position=6, label="reset"),
    ]
    c = candidates_at(marks, 2)
    assert [s.last_index for s in c] == [2, 1]  # acked, then truncate in flight
    assert c[0].hard_state == ("hs", 1) and c[0].entries == ((1, 1, b"a"), (2, 1, b"b"))
    after_purge = candidates_at(marks, 4)[0]
    assert after_purge.first_index == 2 and after_purge.last_index == 1 and after_purge.purge_boundary == (1, 1)
    applied = candidates_at(marks, 5)[0]
    assert applied.kv == ((b"k", b"v"),) and applied.last_applied == (1, 1)
    reset = candidates_at(marks, 6)[0]
    assert (reset.last_index, reset.kv, reset.purge_boundary, reset.hard_state) == (0, ((b"k", None),), None, ("hs", 1))


def test_candidates_in_flush_mode_allow_losing_a_suffix() -> None:
    marks = [
        Mark(position=1, label="persist", facts={"entries": [(1, 1, b"a")], "durable": False}),
        Mark(position=2, label="flush"),
        Mark(position=3, label="persist", facts={"entries": [(2, 1, b"b")], "durable": False}),
        Mark(position=4, label="hard_state", facts={"hard_state": 7}),
        Mark(position=5, label="persist", facts={"entries": [(3, 1, b"c")], "durable": False}),
    ]
    got = {(s.last_index, s.hard_state) for s in candidates_at(marks, 5)}
    assert got == {(3, 7), (2, 7), (1, 7)}


def test_log_model_overwrite_and_purge_beyond_end() -> None:
    m = LogModel()
    m.apply(Mark(position=0, label="persist", facts={"entries": [(5, 1, b"x"), (6, 1, b"y")]}))
    m.apply(Mark(position=0, label="persist", facts={"entries": [(6, 2, b"z")]}))
    assert m.snapshot([]).entries == ((5, 1, b"x"), (6, 2, b"z"))
    m.apply(Mark(position=0, label="purge", facts={"term": 3, "index": 9}))
    s = m.snapshot([])
    assert (s.first_index, s.last_index, s.entries) == (10, 9, ())


def test_custom_invariant_gets_the_context(tmp_path: Path) -> None:
    fs = toy_workload(tmp_path / "rec")
    seen: list[CheckContext] = []

    def at_most_five(ctx: CheckContext) -> list[str]:
        seen.append(ctx)
        return [] if ctx.snapshot.last_index <= 5 else ["too long"]

    report = check_recording(
        fs, open_engine=ToyLog, engine_subdir="db", invariants=[at_most_five], reopen=False, max_states=20
    )
    assert report.ok and report.explored == 20 and len(seen) == 20
    assert all(isinstance(c.acked, tuple) for c in seen)


# -- the pytest fixture ------------------------------------------------------------------


def test_fixture_in_a_user_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        from tests_toy import ToyLog

        def test_toy(crash_fs):
            log = crash_fs.fs and ToyLog(str(crash_fs.path), crash_fs.fs)
            log.persist_entries([(1, 1, b"a"), (2, 1, b"b")])
            crash_fs.mark("persist", entries=[(1, 1, b"a"), (2, 1, b"b")])
            log.close()
            report = crash_fs.check_all(open_engine=ToyLog, max_states=30)
            assert report.explored > 5
        """
    )
    src = Path(__file__).read_text()
    toy = src[src.index("class ToyLog") : src.index("def toy_workload")]
    pytester.makepyfile(
        tests_toy="import json, os, zlib\nfrom typing import Any\nfrom segwal.fs import OsFileSystem\n\n" + toy
    )
    result = pytester.runpytest_subprocess("-p", "no:segwal", "-p", "segwal.testing.pytest_plugin")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*segwal crash simulation*", "*crash states explored*"])


# -- end to end on segwal's own engine ------------------------------------------------------


def engine_workload(harness: Any) -> None:
    """Appends, overwrites, truncates, purges, rotations, hard state and key/value calls."""
    from segwal.engine import Entry, HardState, LogId, VotedFor

    with harness.engine(segment_size=512) as wal:
        wal.save_hard_state(HardState(1, VotedFor(1, 1), 0))
        for i in range(1, 10, 3):
            wal.persist_entries([Entry(j, 1, bytes([j]) * (40 + 20 * j)) for j in range(i, i + 3)])
        wal.insert(b"a", b"1")
        wal.persist_entries([Entry(8, 2, b"x" * 200), Entry(9, 2, b"y")])  # conflict overwrite
        wal.save_hard_state(HardState(2, VotedFor(2, 2), 7))
        wal.truncate(9)
        wal.persist_entries([Entry(9, 3, b"z" * 300)])
        wal.purge_logs(LogId(1, 4))
        wal.apply([(b"b", b"2"), (b"a", None)], LogId(3, 9))
        for i in range(10, 14):
            wal.persist_entries([Entry(i, 3, bytes([i]) * 90)])
        wal.purge_logs(LogId(3, 11))
        wal.truncate(13)


@pytest.fixture(scope="module")
def engine_report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One power-loss run over the engine workload, shared by the tests below."""
    pytest.importorskip("segwal.engine", reason="engine not built yet")
    from segwal.testing.pytest_plugin import CrashHarness

    harness = CrashHarness(tmp_path_factory.mktemp("engine") / "rec", max_states=None)
    engine_workload(harness)
    return harness.check_all(per_point=160, raise_on_failure=False, max_failures=20)


def test_wal_engine_crash_states_are_explored(engine_report: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The harness drives the real engine through thousands of crash states quickly."""
    with capsys.disabled():
        print("\n" + engine_report.summary().splitlines()[0])
    assert engine_report.explored > 1000
    assert set(engine_report.per_generator) == {"process_kill", "lose_unsynced", "torn", "reorder", "dir_ops"}


def test_wal_engine_survives_every_crash_state(engine_report: Any) -> None:
    """Every crash state of the workload opens to a legal state (all invariants)."""
    engine_report.raise_if_failed()
