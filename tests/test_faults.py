"""I/O faults with :class:`segwal.testing.FaultyFS` over the real file system.

Each test plans a fault on the Nth call of one operation class, runs one engine
call, and checks what the engine promised (``segwal/errors.py``):

* a failed fsync/fdatasync raises :class:`SyncError`, the batch is not
  acknowledged, every later write raises :class:`EnginePoisonedError` until
  reopen, and the failed batch is not visible after reopen (FaultyFS models
  Linux: the failed data stays readable in the page cache, so the engine must
  cut it, never retry the sync and trust it);
* ENOSPC and short writes raise :class:`OutOfSpaceError`, roll the in-memory
  state back, cut the file back to the batch start, and the engine keeps
  working once space is back; a full disk can still be opened;
* read errors during open raise :class:`StorageIOError` and change no file
  (never taken for a torn tail);
* directory-fsync and rename failures raise, and the directory reopens to the
  old or the new state, never to a mix.

Where a test loops over "every call of that class", the calls are counted by a
fault-free run of the same operation first, so the tests follow the engine when
it changes how many syncs an operation needs.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from segwal.engine import (
    EnginePoisonedError,
    Entry,
    HardState,
    LogId,
    OutOfSpaceError,
    StorageIOError,
    SyncError,
    WalEngine,
)
from segwal.fs import OsFileSystem
from segwal.testing import (
    FaultyFS,
    OpKind,
    RecordingFS,
    TrackedEngine,
    check_recording,
    snapshot_engine,
)
from segwal.testing.checker import ScratchFS
from segwal.testing.logmodel import Snapshot
from segwal.tools.verify import verify
from segwal.wal.format import SEGMENT_HEADER_SIZE, decode_frame_header

SEG = 1024
KEYS = (b"a", b"b")
MARK = b"FAILED-BATCH"  # payload marker of the batch whose I/O fails

Op = Callable[[WalEngine], object]

# Layout after populate(): 7 batches of 3 entries x 60 bytes (296-byte frames),
# 3 frames per segment: sealed 1..9 and 10..18, tail 19..21 with room left.
OPS: dict[str, Op] = {
    "append": lambda e: e.persist_entries([Entry(22, 2, MARK * 4)]),
    "append_rotating": lambda e: e.persist_entries([Entry(22, 2, MARK * 75)]),
    "overwrite": lambda e: e.persist_entries([Entry(20, 2, MARK * 4)]),
    "overwrite_below_tail": lambda e: e.persist_entries([Entry(14, 2, MARK * 4)]),
    "truncate": lambda e: e.truncate(20),
    "truncate_below_tail": lambda e: e.truncate(12),
    "purge": lambda e: e.purge_logs(LogId(1, 9)),
    "purge_within_segment": lambda e: e.purge_logs(LogId(1, 5)),
    "save_hard_state": lambda e: e.save_hard_state(HardState(2, None, 12)),
    "apply": lambda e: e.apply([(b"a", MARK), (b"b", MARK)], LogId(1, 21)),
}


def populate(e: WalEngine) -> None:
    for k in range(7):
        e.persist_entries([Entry(i, 1, bytes([i]) * 60) for i in range(1 + 3 * k, 4 + 3 * k)])
    e.save_hard_state(HardState(1, None, 10))
    e.insert(b"a", b"1")


def snap(e: WalEngine) -> Snapshot:
    return snapshot_engine(e, KEYS)


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != "LOCK"}


def frames_end(path: Path) -> int:
    """Offset just past the last valid frame of a segment or key/value file."""
    data = path.read_bytes()
    off = SEGMENT_HEADER_SIZE
    while (h := decode_frame_header(data, off)) is not None:
        off += h.frame_len
    return off


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cleanly closed, populated engine directory; tests work on copies."""
    d = tmp_path_factory.mktemp("faults") / "template"
    with WalEngine(d, segment_size=SEG) as e:
        populate(e)
    return d


@pytest.fixture(scope="module")
def states(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Snapshot]:
    """The state before any operation ("pre") and after each fault-free operation."""
    out: dict[str, Snapshot] = {}
    root = tmp_path_factory.mktemp("states")
    with WalEngine(template, segment_size=SEG, readonly=True) as e:
        out["pre"] = snap(e)
    for name, op in OPS.items():
        d = root / name
        shutil.copytree(template, d)
        with WalEngine(d, segment_size=SEG) as e:
            op(e)
            out[name] = snap(e)
    return out


@pytest.fixture(scope="module")
def call_counts(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    """Calls per operation class that each fault-free operation makes."""
    out: dict[str, dict[str, int]] = {}
    root = tmp_path_factory.mktemp("counts")
    for name, op in OPS.items():
        d = root / name
        shutil.copytree(template, d)
        fs = FaultyFS(OsFileSystem())
        with WalEngine(d, segment_size=SEG, fs=fs) as e:
            before = dict(fs.counts)
            op(e)
            out[name] = {k: fs.counts[k] - before[k] for k in fs.counts}
    return out


def fresh(template: Path, tmp_path: Path, name: str = "db") -> tuple[Path, FaultyFS, WalEngine]:
    d = tmp_path / name
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(template, d)
    fs = FaultyFS(OsFileSystem())
    return d, fs, WalEngine(d, segment_size=SEG, fs=fs)


def reopen_snapshot(d: Path) -> Snapshot:
    with WalEngine(d, segment_size=SEG) as e:
        return snap(e)


def assert_refuses_writes(e: WalEngine) -> None:
    """Every mutating call raises EnginePoisonedError."""
    nxt = e.last_index() + 1
    calls: list[Op] = [
        lambda e: e.persist_entries([Entry(nxt, 9, b"after")]),
        lambda e: e.truncate(nxt - 1),
        lambda e: e.purge_logs(LogId(1, 3)),
        lambda e: e.save_hard_state(HardState(9, None, 0)),
        lambda e: e.apply([(b"b", b"after")]),
        lambda e: e.insert(b"b", b"after"),
        lambda e: e.delete(b"a"),
        lambda e: e.flush(),
        lambda e: e.reset(),
    ]
    for call in calls:
        with pytest.raises(EnginePoisonedError, match="reopen"):
            call(e)


def marker_files(d: Path) -> list[str]:
    return [name for name, data in files_of(d).items() if MARK in data]


# -- fsync / fdatasync errors -------------------------------------------------------


@pytest.mark.parametrize("opname", list(OPS))
def test_sync_error_poisons_and_the_failed_batch_is_never_visible(
    opname: str, template: Path, tmp_path: Path, states: dict[str, Snapshot], call_counts: dict[str, dict[str, int]]
) -> None:
    syncs = call_counts[opname]["sync"]
    assert syncs >= 1
    for nth in range(1, syncs + 1):
        d, fs, e = fresh(template, tmp_path)
        pre = snap(e)
        assert pre == states["pre"]
        fs.fail("sync", nth)
        with pytest.raises(StorageIOError) as ei:
            OPS[opname](e)
        fs.clear()
        (hit,) = fs.injected
        if hit.path.endswith(".idx"):
            # The sealed index of a rotation is derived data (rebuilt from its
            # segment when damaged): its failed sync fails the call but need not
            # poison; nothing of the batch was acknowledged.
            assert snap(e) == pre, f"sync #{nth} ({hit.path}): in-memory state changed"
            e.close()
            assert reopen_snapshot(d) == pre
            continue
        assert isinstance(ei.value, SyncError), f"sync #{nth} on {hit.path} raised {ei.value!r}"
        assert ei.value.errno == errno.EIO
        # Not acknowledged: readers still see the old state, writers are refused.
        assert snap(e) == pre
        assert_refuses_writes(e)
        e.close()
        after = reopen_snapshot(d)
        assert after == pre, f"sync #{nth} on {hit.path}: failed call visible after reopen: {pre.diff(after)}"
        # The failed bytes were cut (not left in the page cache to be read back)
        # or sit in a file that is not part of the log and was removed at open.
        assert marker_files(d) == []
        # The reopened engine accepts writes again.
        with WalEngine(d, segment_size=SEG) as r:
            r.persist_entries([Entry(r.last_index() + 1, 3, b"later")])
            assert r.entry(r.last_index()) == Entry(r.last_index(), 3, b"later")


def test_failed_sync_is_not_durable_in_any_crash_state(tmp_path: Path) -> None:
    """A failed fdatasync under Linux semantics, then reopen and more writes: no
    crash state after the failure (process kill, power loss, torn writes,
    reordering, lost directory entries) shows the failed batch.

    Crash points before the failed call returned are left out: a crash there
    is a crash during an unacknowledged call, which may legally keep the batch.
    (A process killed between the failed fsync and the engine's cut-back leaves
    the batch in the page cache, where a restart cannot tell it from durable
    data: the fsyncgate window no user-space engine can close.)
    """
    rec = RecordingFS(tmp_path / "rec")
    fs = FaultyFS(rec)
    path = str(tmp_path / "rec" / "db")
    with TrackedEngine(WalEngine(path, fs=fs, segment_size=SEG), rec) as e:
        populate(e)  # type: ignore[arg-type]
        fs.fail("sync", path_contains=".wal")
        with pytest.raises(SyncError):
            e.persist_entries([Entry(22, 2, MARK * 4)])
        returned_at = len(rec.ops)
        with pytest.raises(EnginePoisonedError):
            e.persist_entries([Entry(22, 2, b"retry")])
    fs.clear()
    with TrackedEngine(WalEngine(path, fs=fs, segment_size=SEG), rec) as e:
        e.persist_entries([Entry(22, 2, b"retry")])
        e.apply([(b"b", b"2")])
        e.persist_entries([Entry(23, 2, b"big" * 300)])  # rotates
        e.truncate(23)
    assert any(op.kind is OpKind.SYNC_FAILED for op in rec.ops)
    report = check_recording(
        rec,
        open_engine=lambda p: WalEngine(p, fs=ScratchFS(), segment_size=SEG),
        engine_subdir="db",
        max_states=300,
        per_point=6,
        min_point=returned_at,
        seed=3,
    )
    assert report.explored > 30
    report.raise_if_failed()


# -- ENOSPC and short writes ---------------------------------------------------------

WRITE_FAULTS = {
    "enospc": {"error": errno.ENOSPC},
    "short-0": {"short": 0},
    "short-7": {"short": 7},
    "short-100": {"short": 100},
}


@pytest.mark.parametrize("fault", list(WRITE_FAULTS))
@pytest.mark.parametrize("opname", ["append", "overwrite", "truncate", "apply"])
def test_out_of_space_rolls_back_and_cuts_the_file(
    opname: str, fault: str, template: Path, tmp_path: Path, states: dict[str, Snapshot]
) -> None:
    d, fs, e = fresh(template, tmp_path)
    pre = snap(e)
    target = max((d / "kv").glob("kv-*.log")) if opname == "apply" else max(d.glob("*.wal"))
    before = target.read_bytes()
    batch_start = frames_end(target)
    fs.fail("write", **WRITE_FAULTS[fault])  # type: ignore[arg-type]
    with pytest.raises(OutOfSpaceError) as ei:
        OPS[opname](e)
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(target)
    assert len(fs.injected) == 1
    # In-memory state rolled back; the file is cut back to where the batch began.
    assert snap(e) == pre
    assert (e.last_index(), e.first_index()) == (pre.last_index, pre.first_index)
    after = target.read_bytes()
    assert len(after) == batch_start and after == before[:batch_start]
    # Space is back: the same call now works and survives reopen.
    fs.clear()
    OPS[opname](e)
    assert snap(e) == states[opname]
    e.close()
    assert reopen_snapshot(d) == states[opname]


@pytest.mark.parametrize("op", ["write", "truncate", "open"])
def test_out_of_space_while_rotating_rolls_back(
    op: str, template: Path, tmp_path: Path, states: dict[str, Snapshot], call_counts: dict[str, dict[str, int]]
) -> None:
    """Every ENOSPC during a rotating append (sealed index, new segment, manifest)
    fails the call, keeps the old state and leaves the engine usable; a half-made
    segment file is never listed, and is gone after the next open."""
    for nth in range(1, call_counts["append_rotating"][op] + 1):
        d, fs, e = fresh(template, tmp_path)
        pre = snap(e)
        fs.fail(op, nth, error=errno.ENOSPC)
        with pytest.raises(StorageIOError) as ei:
            OPS["append_rotating"](e)
        assert ei.value.errno == errno.ENOSPC, f"{op} #{nth}: {ei.value!r}"
        fs.clear()
        assert snap(e) == pre
        OPS["append_rotating"](e)
        e.close()
        assert reopen_snapshot(d) == states["append_rotating"]
        assert verify(str(d)).exit_status == 0, f"{op} #{nth}: leftovers after reopen"


@pytest.mark.parametrize("opname", ["append_rotating", "save_hard_state", "purge"])
def test_enospc_on_metadata_writes_is_out_of_space_error(opname: str, template: Path, tmp_path: Path) -> None:
    _, fs, e = fresh(template, tmp_path)
    fs.fail("write", error=errno.ENOSPC)
    with pytest.raises(OutOfSpaceError):
        OPS[opname](e)
    e.close()


def _crash_copy_with_torn_tail(template: Path, dest: Path) -> Path:
    """A copy as a crash would leave it (no clean-close claim), with garbage after
    the tail's last frame: a torn write that open cuts."""
    work = dest.parent / (dest.name + "-live")
    shutil.copytree(template, work)
    e = WalEngine(work, segment_size=SEG)
    e.persist_entries([Entry(22, 1, b"x" * 40)])
    shutil.copytree(work, dest)  # taken while open: no clean close recorded
    e.close()
    tail = max(dest.glob("*.wal"))
    end = frames_end(tail)
    tail.write_bytes(tail.read_bytes()[:end] + bytes(range(1, 256)) * 2)
    return dest


@pytest.mark.parametrize("kind", ["clean", "torn-tail"])
def test_open_works_on_a_full_disk(kind: str, template: Path, tmp_path: Path) -> None:
    if kind == "clean":
        d = tmp_path / "db"
        shutil.copytree(template, d)
        with WalEngine(d, segment_size=SEG, readonly=True) as r:
            expect = snap(r)
    else:
        d = _crash_copy_with_torn_tail(template, tmp_path / "db")
        probe = tmp_path / "probe"
        shutil.copytree(d, probe)
        with WalEngine(probe, segment_size=SEG) as r:
            expect = snap(r)
    fs = FaultyFS(OsFileSystem())
    fs.fail("write", error=errno.ENOSPC, persistent=True)
    e = WalEngine(d, segment_size=SEG, fs=fs)
    try:
        assert snap(e) == expect
        nxt = e.last_index() + 1
        with pytest.raises(OutOfSpaceError):
            e.persist_entries([Entry(nxt, 5, b"no room")])
        with pytest.raises(OutOfSpaceError):
            e.insert(b"b", b"no room")
        with pytest.raises(StorageIOError):
            e.save_hard_state(HardState(5, None, 1))
        assert snap(e) == expect
        fs.clear()  # space freed: writes work again without a reopen
        e.persist_entries([Entry(nxt, 5, b"room")])
        e.insert(b"b", b"room")
    finally:
        e.close()
    with WalEngine(d, segment_size=SEG) as r:
        assert r.entry(nxt) == Entry(nxt, 5, b"room") and r.get(b"b") == b"room"


def test_close_on_a_full_disk_does_not_raise(template: Path, tmp_path: Path) -> None:
    d = tmp_path / "db"
    shutil.copytree(template, d)
    fs = FaultyFS(OsFileSystem())
    fs.fail("write", error=errno.ENOSPC, persistent=True)
    e = WalEngine(d, segment_size=SEG, fs=fs)
    e.close()


# -- read errors during open ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["clean", "torn-tail"])
@pytest.mark.parametrize("op", ["pread", "open"])
def test_read_errors_at_open_are_io_errors_and_change_nothing(op: str, kind: str, template: Path, tmp_path: Path) -> None:
    if kind == "clean":
        d = tmp_path / "db"
        shutil.copytree(template, d)
    else:
        d = _crash_copy_with_torn_tail(template, tmp_path / "db")
    before = files_of(d)
    tail = max(d.glob("*.wal")).name
    cut = before[tail][: frames_end(d / tail)]
    nth = 1
    while True:
        fs = FaultyFS(OsFileSystem())
        fs.fail(op, nth)
        try:
            e = WalEngine(d, segment_size=SEG, fs=fs, readonly=False)
        except StorageIOError as err:
            assert isinstance(err, OSError) and err.errno == errno.EIO
            assert err.filename == fs.injected[0].path, (nth, err)
            now = files_of(d)
            if kind == "torn-tail" and now[tail] == cut:
                # A real torn tail may be cut before a later file fails to read.
                now[tail] = before[tail]
            assert now == before, f"{op} #{nth} failed but files changed"
            nth += 1
            continue
        assert not fs.injected, f"{op} #{nth} fault fired but open succeeded"
        e.close()
        break
    assert nth > 3  # manifest, segment, index, hard state, key/value files


def test_listdir_error_at_open_is_a_storage_io_error(template: Path, tmp_path: Path) -> None:
    d = tmp_path / "db"
    shutil.copytree(template, d)
    fs = FaultyFS(OsFileSystem())
    fs.fail("listdir")
    with pytest.raises(StorageIOError):
        WalEngine(d, segment_size=SEG, fs=fs)


# -- directory fsync and rename failures ------------------------------------------------


@pytest.mark.parametrize("op", ["fsync_dir", "rename"])
@pytest.mark.parametrize("opname", ["append_rotating", "truncate_below_tail", "purge", "save_hard_state"])
def test_dir_fsync_and_rename_failures_reopen_consistent(
    op: str, opname: str, template: Path, tmp_path: Path,
    states: dict[str, Snapshot], call_counts: dict[str, dict[str, int]],
) -> None:
    n = call_counts[opname][op]
    assert n >= 1
    for nth in range(1, n + 1):
        d, fs, e = fresh(template, tmp_path)
        pre = snap(e)
        fs.fail(op, nth)
        with pytest.raises(OSError) as ei:
            OPS[opname](e)
        fs.clear()
        assert ei.value.errno == errno.EIO
        if isinstance(ei.value, SyncError):
            # The commit point (a rename) may or may not be durable: fail-stop.
            assert_refuses_writes(e)
            e.close()
            allowed = {"old": pre, "new": states[opname]}
            after = reopen_snapshot(d)
            assert after in allowed.values(), f"{op} #{nth}: {pre.diff(after)}"
        else:
            # Failed before the commit point: nothing changed, the engine goes on.
            assert snap(e) == pre, f"{op} #{nth} ({ei.value!r}) changed the in-memory state"
            OPS[opname](e)
            e.close()
            assert reopen_snapshot(d) == states[opname]
        assert verify(str(d)).exit_status == 0, f"{op} #{nth}: verify after reopen"


def test_dir_fsync_error_during_rotation_is_a_segwal_error(template: Path, tmp_path: Path) -> None:
    _, fs, e = fresh(template, tmp_path)
    fs.fail("fsync_dir")
    with pytest.raises(StorageIOError):
        OPS["append_rotating"](e)
    e.close()


@pytest.mark.parametrize("op", ["write", "truncate"])
def test_failed_segment_create_leaves_no_file_and_no_open_descriptor(op: str, template: Path, tmp_path: Path) -> None:
    d, fs, e = fresh(template, tmp_path)
    names = sorted(p.name for p in d.iterdir())
    gc.collect()  # closed files of earlier tests still awaiting collection would skew the count
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    fs.fail(op, 1, error=errno.ENOSPC, path_contains=".wal")  # the new segment's first write/truncate
    with pytest.raises(OutOfSpaceError):
        OPS["append_rotating"](e)
    try:
        assert sorted(p.name for p in d.iterdir()) == names
        if fds is not None:
            gc.collect()
            assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        e.close()
