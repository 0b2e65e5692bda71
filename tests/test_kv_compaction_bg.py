"""Background compaction of the key/value store (kv/compaction.py): writers go on while it copies, nothing is lost.

The compaction thread is held inside its copy (a patched chunk writer waits on
an event) while the test applies overwrites, deletes and new keys: they must
return while it is held (writers are not blocked), and the switch must keep
every one of them (the catch-up).  Each test checks a dict model, after the
switch and after reopening with and without the key index.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from segwal.fs import OsFileSystem
from segwal.kv import compaction
from segwal.kv.files import KVFile
from segwal.kv.keyindex import index_name
from segwal.kv.store import KVStore
from segwal.types import LogId

GEN = 1


class Manifest:
    """Stands in for the engine's manifest: keeps the last committed list of files."""

    def __init__(self) -> None:
        self.files: tuple[KVFile, ...] = ()

    def commit(self, files: tuple[KVFile, ...]) -> None:
        self.files = files


def open_store(path: Path, m: Manifest, **kw: Any) -> KVStore:
    args: dict[str, Any] = dict(engine_id=7, generation=GEN, sync=True, file_size=64 << 10, index_every=1 << 30,  # noqa: C408
                                index_min_keys=0, compact_min_dead=1 << 40, files=m.files, commit=m.commit)
    args.update(kw)
    return KVStore.open(OsFileSystem(), str(path), **args)


def check(s: KVStore, model: dict[bytes, bytes]) -> None:
    assert len(s) == len(model)
    for k, v in model.items():
        assert s.get(k) == v, k
    for i in range(20):
        assert s.get(b"absent-%d" % i) is None
    keys, locs, _ = s.capture()
    assert dict(zip(keys, s.read_values(locs))) == model


def apply(s: KVStore, model: dict[bytes, bytes], ch: list[tuple[bytes, bytes | None]], n: int) -> None:
    olds = s.apply(ch, applied=LogId(1, n))
    for (k, v), old in zip(ch, olds):
        assert old == model.get(k)
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


def fill(s: KVStore, model: dict[bytes, bytes], rng: random.Random) -> None:
    """~3 MiB of records, each key written twice (half of it dead), some deleted."""
    n = 0
    for _round in range(2):
        for b in range(0, 6000, 500):
            n += 1
            apply(s, model, [(b"key-%05d" % i, os.urandom(rng.randrange(150, 350))) for i in range(b, b + 500)], n)
    apply(s, model, [(b"key-%05d" % i, None) for i in range(0, 6000, 7)], n + 1)


@pytest.mark.parametrize("with_index", [True, False])
def test_writers_go_on_during_a_compaction_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_index: bool
) -> None:
    m = Manifest()
    model: dict[bytes, bytes] = {}
    rng = random.Random(12)
    s = open_store(tmp_path, m, index_min_keys=0 if with_index else 1 << 30)
    fill(s, model, rng)
    s._checkpoint()  # with_index: the snapshot is a table plus an (empty) overlay; else all in the overlay
    apply(s, model, [(b"key-%05d" % i, b"after the checkpoint %d" % i) for i in range(3, 900, 11)], 100)
    before = sum(os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path) if n.endswith(".log"))

    held, go = threading.Event(), threading.Event()
    real = compaction._chunk

    def slow_chunk(*a: Any) -> int:
        held.set()
        assert go.wait(30), "the test never let the compaction go on"
        return real(*a)

    monkeypatch.setattr(compaction, "_chunk", slow_chunk)
    out: list[BaseException | None] = []
    t = threading.Thread(target=lambda: out.append(_compact(s)))
    t.start()
    assert held.wait(30)
    # The compaction is held inside its copy: these applies must not wait for it.
    for n in range(20):
        ch: list[tuple[bytes, bytes | None]] = [(b"key-%05d" % rng.randrange(6000), os.urandom(30)) for _ in range(40)]
        ch += [(b"key-%05d" % rng.randrange(6000), None) for _ in range(5)]
        ch += [(b"new-%d-%d" % (n, i), b"v%d" % i) for i in range(5)]
        apply(s, model, ch, 200 + n)
    check(s, model)  # reads see the old files meanwhile
    go.set()
    t.join(60)
    assert out == [None]
    assert s._compaction is None and len(s._files) == 1 and s._files[0].path.endswith(".merged")
    merged = s._files[0].path.rsplit("/", 1)[1]
    check(s, model)
    assert s.last_applied() == LogId(1, 219)
    apply(s, model, [(b"after", b"the switch")], 300)
    files = sorted(os.listdir(tmp_path))
    assert not [n for n in files if n.endswith(".tmp") or (n.endswith(".log") and n < merged)], files
    assert (index_name(GEN) in files) == with_index
    after = sum(os.path.getsize(tmp_path / n) for n in files if n.endswith(".merged"))
    assert after < 0.7 * before  # space reclaimed
    s.close()
    for use_index in (True, False):
        s = open_store(tmp_path, m, use_index=use_index)
        check(s, model)
        assert s.last_applied() == LogId(1, 300)
        s.close(clean=False)


def _compact(s: KVStore) -> BaseException | None:
    try:
        s.compact()
    except BaseException as e:  # noqa: BLE001 - handed to the test thread
        return e
    return None


def test_close_during_a_compaction_stops_it_and_keeps_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Manifest()
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, m)
    fill(s, model, random.Random(3))
    held, go = threading.Event(), threading.Event()
    real = compaction._chunk

    def slow_chunk(*a: Any) -> int:
        held.set()
        go.wait(30)
        return real(*a)

    monkeypatch.setattr(compaction, "_chunk", slow_chunk)
    with s._wlock:
        c = compaction.start_compaction(s)
    assert c is not None and held.wait(30)
    threading.Timer(0.05, go.set).start()
    s.close()  # asks it to stop and waits
    assert c.error is not None and s._compaction is None
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".merged"))]
    s = open_store(tmp_path, m)
    check(s, model)
    s.close()


def test_auto_compaction_runs_in_the_background_and_reclaims(tmp_path: Path) -> None:
    m = Manifest()
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, m, compact_min_dead=256 << 10)
    fill(s, model, random.Random(5))
    c = s._compaction
    if c is not None and c.thread is not None:
        c.thread.join(60)
    check(s, model)
    assert s.stats().dead_bytes < 256 << 10 or s._compaction is not None
    s.close()
    s = open_store(tmp_path, m)
    check(s, model)
    s.close()


def test_engine_compacting_in_the_background_survives_every_crash_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power loss and kill at every step of a compaction that writers overtake: the
    rollover-free copy, the catch-up, the manifest commit, the index rename, the unlinks."""
    import segwal.kv.store as kvstore
    from segwal.testing.pytest_plugin import CrashHarness

    monkeypatch.setattr(kvstore, "INDEX_EVERY", 6)
    monkeypatch.setattr(kvstore, "INDEX_MIN_KEYS", 0)
    held, go = threading.Event(), threading.Event()
    real = compaction._chunk

    def slow_chunk(*a: Any) -> int:
        held.set()
        assert go.wait(30)
        return real(*a)

    harness = CrashHarness(tmp_path / "rec", max_states=None)
    with harness.engine(segment_size=1024) as wal:
        for b in range(6):
            wal.apply([(b"k%d" % ((b * 3 + i) % 7), b"%d-%d" % (b, i) * 5) for i in range(4)] + [(b"k%d" % b, None)],
                      LogId(1, b + 1))
        monkeypatch.setattr(compaction, "_chunk", slow_chunk)
        t = threading.Thread(target=wal._kv.compact)
        t.start()
        assert held.wait(30)
        for b in range(6, 9):  # applied while the compaction copies: caught up at its switch
            wal.apply([(b"k%d" % (b % 7), b"late-%d" % b), (b"k%d" % ((b + 2) % 7), None)], LogId(1, b + 1))
        go.set()
        t.join(60)
        wal.apply([(b"after", b"compaction")], LogId(1, 20))
    names = {op.path.rsplit("/", 1)[-1] for op in harness.fs.ops}
    assert any(n.startswith("kv-") and n.count("-") == 2 and n.endswith(".tmp") for n in names) and any(n.endswith(".index.tmp") for n in names), sorted(names)
    report = harness.check_all(per_point=30, raise_on_failure=False, max_failures=5)
    assert report.explored > 300
    report.raise_if_failed()


# -- the key index written in the background ----------------------------------------------


@pytest.mark.parametrize("first", [True, False])
def test_writers_go_on_during_a_background_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      first: bool) -> None:
    """A checkpoint of a big store builds its table in a thread; changes applied
    meanwhile (overwrites, deletes, new keys) are laid over it at the switch."""
    from segwal.kv import keydir

    monkeypatch.setattr(keydir, "BG_CHECKPOINT_KEYS", 0)
    m = Manifest()
    model: dict[bytes, bytes] = {}
    rng = random.Random(7)
    s = open_store(tmp_path, m, index_every=3000)
    if not first:
        s._checkpoint()  # an index is there: the next one folds a table and an overlay
    held, go = threading.Event(), threading.Event()
    real = keydir.build_table

    def slow_build(rows: Any) -> Any:
        held.set()
        assert go.wait(30)
        return real(rows)

    monkeypatch.setattr(keydir, "build_table", slow_build)
    fill(s, model, rng)  # passes index_every: starts the checkpoint thread
    assert held.wait(30) and s._ckpt is not None
    for n in range(10):  # applied while it builds: must not wait for it
        ch: list[tuple[bytes, bytes | None]] = [(b"key-%05d" % rng.randrange(6000), b"late %d" % n) for _ in range(30)]
        ch += [(b"key-%05d" % rng.randrange(6000), None) for _ in range(5)]
        apply(s, model, ch, 500 + n)
    check(s, model)
    go.set()
    s._ckpt.thread.join(60)  # type: ignore[union-attr]
    assert s._ckpt is None and s._kd.table is not None  # type: ignore[union-attr]
    check(s, model)
    s.close(clean=False)  # a crash: the index and the frames after its checkpoint
    for use_index in (True, False):
        s = open_store(tmp_path, m, use_index=use_index)
        assert (s._kd.table is not None) == use_index  # type: ignore[union-attr]
        check(s, model)
        s.close(clean=False)


def test_close_during_a_background_checkpoint_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segwal.kv import keydir

    monkeypatch.setattr(keydir, "BG_CHECKPOINT_KEYS", 0)
    m = Manifest()
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, m, index_every=3000)
    held, go = threading.Event(), threading.Event()
    real = keydir.build_table

    def slow_build(rows: Any) -> Any:
        held.set()
        go.wait(30)
        return real(rows)

    monkeypatch.setattr(keydir, "build_table", slow_build)
    fill(s, model, random.Random(8))
    assert held.wait(30)
    threading.Timer(0.05, go.set).start()
    s.close()  # stops it, then writes the index itself (clean close)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    s = open_store(tmp_path, m)
    assert s._kd.table is not None  # type: ignore[union-attr]
    check(s, model)
    s.close()


def test_background_checkpoint_survives_every_crash_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segwal.kv.store as kvstore
    from segwal.kv import keydir
    from segwal.testing.pytest_plugin import CrashHarness

    monkeypatch.setattr(kvstore, "INDEX_EVERY", 12)
    monkeypatch.setattr(kvstore, "INDEX_MIN_KEYS", 0)
    monkeypatch.setattr(keydir, "BG_CHECKPOINT_KEYS", 0)
    held, go = threading.Event(), threading.Event()
    real = keydir.build_table

    def slow_build(rows: Any) -> Any:
        held.set()
        assert go.wait(30)
        return real(rows)

    monkeypatch.setattr(keydir, "build_table", slow_build)
    harness = CrashHarness(tmp_path / "rec", max_states=None)
    with harness.engine(segment_size=1024) as wal:
        for b in range(4):
            wal.apply([(b"k%d" % (b * 4 + i), b"%d-%d" % (b, i) * 5) for i in range(4)], LogId(1, b + 1))
        assert held.wait(30)  # the 12th key started it
        ckpt = wal._kv._ckpt
        for b in range(4, 7):  # applied while it builds
            wal.apply([(b"k%d" % (b % 5), b"late-%d" % b), (b"k%d" % ((b + 2) % 9), None)], LogId(1, b + 1))
        go.set()
        ckpt.thread.join(60)
        wal.apply([(b"after", b"checkpoint")], LogId(1, 20))
    names = {op.path.rsplit("/", 1)[-1] for op in harness.fs.ops}
    assert "kv-0000000000000001.index.tmp" in names, sorted(names)
    report = harness.check_all(per_point=30, raise_on_failure=False, max_failures=5)
    assert report.explored > 200
    report.raise_if_failed()


def test_background_commits_hold_the_engines_write_lock(tmp_path: Path) -> None:
    """A compaction's manifest write from its thread runs under the engine's write lock,
    like every other manifest write (else a log rotation's concurrent write could
    collide with it or drop its file list).  Found by the kill -9 test's child."""
    from segwal.engine import WalEngine

    with WalEngine(str(tmp_path / "e"), segment_size=4096) as eng:
        for b in range(20):
            eng.apply([(b"k%d" % i, b"v%d" % b * 20) for i in range(30)], applied=LogId(1, b + 1))
        held: list[bool] = []
        real = eng._commit_kv

        def commit(files: tuple[KVFile, ...]) -> None:
            held.append(eng._wlock._is_owned())  # type: ignore[attr-defined]
            real(files)

        eng._commit_kv = commit  # type: ignore[method-assign]
        eng._kv._commit = commit  # type: ignore[union-attr]
        eng._kv.compact()  # type: ignore[union-attr]
        assert held == [True]
        assert len(eng._kv._files) == 1  # type: ignore[union-attr]
        assert eng.get(b"k3") == b"v19" * 20
