"""The key index of the key/value store (kv/keyindex.py, kv/keydir.py): checkpointed, mapped, verified, rebuildable.

Every test checks the store against a dict model; damage to the index alone
must open cleanly and answer correctly, damage to a record is reported.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segwal.errors import CorruptionError
from segwal.fs import OsFileSystem
from segwal.kv.keyindex import BLOCK_SLOTS, build_table, index_name
from segwal.kv.store import KVStore
from segwal.types import LogId

GEN = 1
INDEX = index_name(GEN)


def open_store(path: Path, **kw: Any) -> KVStore:
    args: dict[str, Any] = dict(engine_id=7, generation=GEN, sync=False, file_size=16 << 10, index_every=200,
                                index_min_keys=0)
    args.update(kw)
    return KVStore.open(OsFileSystem(), str(path), **args)


def churn(s: KVStore, model: dict[bytes, bytes], rng: random.Random, batches: int, keys: int = 1500) -> None:
    """Random batches with overwrites, deletes and repeated keys; checks every returned old value."""
    for b in range(batches):
        ch: list[tuple[bytes, bytes | None]] = []
        for _ in range(rng.randrange(1, 120)):
            k = b"key-%d" % rng.randrange(keys)
            ch.append((k, None if rng.random() < 0.15 else os.urandom(rng.randrange(0, 40))))
        olds = s.apply(ch, applied=LogId(1, b + 1) if b % 3 == 0 else None)
        for (k, v), old in zip(ch, olds):
            assert old == model.get(k)
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v


def check(s: KVStore, model: dict[bytes, bytes]) -> None:
    assert len(s) == len(model)
    for k, v in model.items():
        assert s.get(k) == v
    for i in range(50):
        assert s.get(b"absent-%d" % i) is None
    keys, locs, _ = s.capture()
    assert sorted(keys) == sorted(model)
    assert dict(zip(keys, s.read_values(locs))) == model


def test_build_table_places_every_row_reachable_by_linear_probing() -> None:
    rng = np.random.default_rng(5)
    for n in (0, 1, 95, 96, 1000, 5000):
        rows = np.zeros((n, 4), dtype="<u8")
        rows[:, 0] = rng.integers(0, 1 << 63, n, dtype=np.uint64) | np.uint64(1 << 63) * np.uint64(n % 2)
        rows[:, 0][: n // 10] &= np.uint64(0xFF)  # crowd some homes
        rows[:, 1] = np.arange(1, n + 1, dtype=np.uint64)
        nslots, slots = build_table(rows)
        assert nslots * 0.75 >= n and len(slots) % BLOCK_SLOTS == 0 and slots[-1, 1] == 0
        mask = nslots - 1
        for r in rows[:: max(1, n // 200)]:
            i = int(r[0]) & mask
            while slots[i, 1] != r[1]:
                assert slots[i, 1] != 0, "a probe met an empty slot before its row"
                i += 1


def test_checkpoints_rollovers_and_reopen_match_the_model(tmp_path: Path) -> None:
    rng = random.Random(11)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path)
    churn(s, model, rng, 60)
    assert s._kd.table is not None  # type: ignore[union-attr]  # periodic checkpoints happened
    check(s, model)
    s.close()
    s = open_store(tmp_path)
    assert s._kd.table is not None and not s._kd.over  # type: ignore[union-attr]  # nothing replayed
    assert s.stats().files > 1
    check(s, model)
    churn(s, model, rng, 40)
    applied = s.last_applied()
    s.close(clean=False)  # a crash: the frames after the last checkpoint are replayed
    s = open_store(tmp_path)
    assert s.last_applied() == applied
    check(s, model)
    live, dead = s.stats().live_bytes, s.stats().dead_bytes
    s.close()
    s = open_store(tmp_path, index_every=1 << 30)
    assert (s.stats().live_bytes, s.stats().dead_bytes) == (live, dead)
    s.compact()
    check(s, model)
    s.close()
    s = open_store(tmp_path)
    assert s._kd.table is not None  # type: ignore[union-attr]
    check(s, model)
    s.close()


def test_a_store_opened_without_its_index_matches_one_opened_with_it(tmp_path: Path) -> None:
    rng = random.Random(3)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path)
    churn(s, model, rng, 50)
    s.close()
    os.unlink(tmp_path / INDEX)
    s = open_store(tmp_path)
    assert s._kd.table is None  # type: ignore[union-attr]
    check(s, model)
    stats = s.stats()
    s.close()  # writes the index again
    assert (tmp_path / INDEX).exists()
    s = open_store(tmp_path)
    assert s._kd.table is not None and s.stats() == stats  # type: ignore[union-attr]
    check(s, model)
    s.close()


def _damage(path: Path, how: str, rng: random.Random) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if how == "truncate":
            f.truncate(rng.randrange(size))
        elif how == "zero-head":
            f.write(bytes(128))
        elif how == "zero-block":
            f.seek(size - 4096 * (1 + rng.randrange(max(1, size // 4096 - 1))))
            f.write(bytes(4096))
        elif how == "flip":
            off = rng.randrange(size)
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ (1 << rng.randrange(8))]))
        elif how == "garbage":
            f.write(os.urandom(min(size, 1 << 16)))


@pytest.mark.parametrize("how", ["truncate", "zero-head", "zero-block", "flip", "garbage", "empty"])
def test_damage_to_the_index_alone_opens_cleanly_and_answers_right(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(how)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path)
    churn(s, model, rng, 40)
    s.close()
    pristine = tmp_path / "pristine"
    shutil.copytree(tmp_path, pristine, ignore=shutil.ignore_patterns("pristine"))
    for trial in range(4):
        if how == "empty":
            (tmp_path / INDEX).write_bytes(b"")
        else:
            _damage(tmp_path / INDEX, how, rng)
        with caplog.at_level(logging.WARNING, logger="segwal.kv"):
            s = open_store(tmp_path)
            check(s, model)
            churn(s, model, rng, 3)
            check(s, model)
            s.close()
        s = open_store(tmp_path)
        check(s, model)
        s.close()


def test_a_stale_index_is_not_used(tmp_path: Path) -> None:
    rng = random.Random(8)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path)
    churn(s, model, rng, 30)
    s.close()
    old = (tmp_path / INDEX).read_bytes()
    s = open_store(tmp_path)
    churn(s, model, rng, 10)
    s.compact()  # new files: the old index points into files that are gone
    s.close()
    (tmp_path / INDEX).write_bytes(old)
    s = open_store(tmp_path)
    assert s._kd.table is None  # type: ignore[union-attr]
    check(s, model)
    s.close()


def test_an_index_covering_frames_the_file_no_longer_has_is_not_used(tmp_path: Path) -> None:
    rng = random.Random(9)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, file_size=1 << 20)
    churn(s, model, rng, 20)
    s.close()
    saved = dict(model)
    keep = (tmp_path / INDEX).read_bytes()
    log_file = next(p for p in tmp_path.iterdir() if p.suffix == ".log")
    before = log_file.read_bytes()
    s = open_store(tmp_path, file_size=1 << 20)
    churn(s, model, rng, 20)
    s.close()
    # The record file goes back to its earlier content (as after losing unsynced frames)
    # but the index of the later state survives: the covered frame is not there.
    log_file.write_bytes(before)
    assert (tmp_path / INDEX).read_bytes() != keep
    s = open_store(tmp_path, file_size=1 << 20)
    assert s._kd.table is None  # type: ignore[union-attr]
    check(s, saved)
    s.close()


def test_damage_to_a_record_the_index_points_at_is_corruption(tmp_path: Path) -> None:
    s = open_store(tmp_path, file_size=1 << 20)
    s.apply([(b"alpha-key", b"A" * 30), (b"beta-key", b"B" * 30)], applied=LogId(1, 1))
    s.close()
    log_file = next(p for p in tmp_path.iterdir() if p.suffix == ".log")
    data = bytearray(log_file.read_bytes())
    i = data.index(b"alpha-key")
    data[i] ^= 0x20
    j = data.index(b"B" * 30)
    data[j] ^= 0x01
    log_file.write_bytes(bytes(data))
    s = open_store(tmp_path, file_size=1 << 20)  # sealed below the checkpoint: not read at open
    with pytest.raises(CorruptionError) as e:
        s.get(b"alpha-key")
    assert e.value.path == str(log_file) and e.value.offset == i
    with pytest.raises(CorruptionError):
        s.get(b"beta-key")
    s.close(clean=False)


def test_index_files_of_other_generations_and_leftovers_are_removed(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.apply([(b"k", b"v")])
    s.close()
    (tmp_path / (INDEX + ".tmp")).write_bytes(b"x")
    (tmp_path / index_name(GEN + 1)).write_bytes(b"y")
    (tmp_path / "unrelated.index").write_bytes(b"z")
    s = open_store(tmp_path)
    assert s.get(b"k") == b"v"
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "index" in p.name) == [INDEX, "unrelated.index"]


def test_read_only_open_uses_the_index_and_changes_nothing(tmp_path: Path) -> None:
    rng = random.Random(4)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path)
    churn(s, model, rng, 30)
    s.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    s = open_store(tmp_path, readonly=True)
    assert s._kd.table is not None  # type: ignore[union-attr]
    check(s, model)
    s.close()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- through the engine: verify, crash simulation ------------------------------------------


@pytest.fixture
def small_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines opened in this test write their key index after a few keys."""
    import segwal.kv.store as kvstore

    monkeypatch.setattr(kvstore, "INDEX_EVERY", 5)
    monkeypatch.setattr(kvstore, "INDEX_MIN_KEYS", 0)


def _engine_with_index(path: Path) -> dict[bytes, bytes]:
    from segwal.engine import WalEngine

    model: dict[bytes, bytes] = {}
    with WalEngine(str(path), segment_size=4096) as eng:
        early = [(b"early:%d" % i, b"first value %d" % i) for i in range(5)]
        eng.apply(early)
        model.update(early)
        for b in range(40):
            ch = [(b"user:%04d" % ((b * 7 + i) % 90), b"v%d.%d" % (b, i) * 5) for i in range(6)]
            eng.apply(ch, applied=LogId(1, b + 1))
            model.update(ch)
    return model


def test_verify_checks_the_key_index(tmp_path: Path, small_index: None) -> None:
    from segwal.tools.verify import verify

    model = _engine_with_index(tmp_path / "e")
    kv = tmp_path / "e" / "kv"
    assert (kv / INDEX).exists() and len([p for p in kv.iterdir() if p.suffix == ".log"]) > 1
    assert verify(str(tmp_path / "e")).exit_status == 0
    good = (kv / INDEX).read_bytes()
    data = bytearray(good)
    data[-1000] ^= 0xFF  # a slot block
    (kv / INDEX).write_bytes(bytes(data))
    rep = verify(str(tmp_path / "e"))
    assert rep.exit_status == 1 and "key index damaged" in str(rep.findings[0])
    (kv / INDEX).write_bytes(good)
    # a record below the checkpoint: open does not read it, verify does
    first = sorted(p for p in kv.iterdir() if p.suffix == ".log")[0]
    raw = bytearray(first.read_bytes())
    at = next(raw.find(v) for v in model.values() if raw.find(v) > 0)  # a live value in it
    raw[at] ^= 0x01
    first.write_bytes(bytes(raw))
    rep = verify(str(tmp_path / "e"))
    assert rep.exit_status == 2 and any(f.path == str(first) for f in rep.findings)
    from segwal.engine import WalEngine

    with WalEngine(str(tmp_path / "e"), segment_size=4096) as eng:  # opens: the damage is found on use
        errors = 0
        for k, v in model.items():
            try:
                assert eng.get(k) == v
            except CorruptionError as e:
                assert e.path == str(first)
                errors += 1
        assert 0 < errors <= 6
    # index and record both damaged: the rebuild meets the damaged record, every read reports it
    (kv / INDEX).write_bytes(bytes(data))
    with WalEngine(str(tmp_path / "e"), segment_size=4096) as eng:
        for k in list(model)[:3]:
            with pytest.raises(CorruptionError):
                eng.get(k)


def engine_kv_workload(harness: Any) -> None:
    """Key/value batches across record-file rollovers and key index checkpoints, a compaction, a clean close."""
    with harness.engine(segment_size=1024) as wal:
        for b in range(9):
            wal.apply([(b"k%d" % ((b * 3 + i) % 11), b"%d-%d" % (b, i) * 6) for i in range(4)] + [(b"k%d" % b, None)],
                      LogId(1, b + 1))
        wal._kv.compact()
        wal.apply([(b"after", b"compaction")], LogId(1, 20))


def test_engine_with_key_index_survives_every_crash_state(tmp_path: Path, small_index: None) -> None:
    from segwal.testing.pytest_plugin import CrashHarness

    harness = CrashHarness(tmp_path / "rec", max_states=None)
    engine_kv_workload(harness)
    names = {op.path.rsplit("/", 1)[-1] for op in harness.fs.ops}
    assert any(n.endswith(".index") or n.endswith(".index.tmp") for n in names), names
    report = harness.check_all(per_point=40, raise_on_failure=False, max_failures=5)
    assert report.explored > 300
    report.raise_if_failed()


def test_batched_previous_value_lookups_agree_with_single_lookups(tmp_path: Path) -> None:
    """``KeyTable.lookup_many`` (the writer's path) answers what ``lookup`` answers, in order,
    for keys in the table, keys only in the overlay, deleted keys and absent keys."""
    rng = random.Random(5)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, index_every=1 << 30)
    churn(s, model, rng, 60, keys=3000)
    s._checkpoint()
    kd: Any = s._kd
    assert kd.table is not None and not kd.over
    churn(s, model, rng, 5, keys=3000)  # some keys now shadowed by the overlay
    probe = [b"key-%d" % i for i in range(3000)] + [b"absent-%d" % i for i in range(300)]
    rng.shuffle(probe)
    assert kd.table.lookup_many(probe) == [kd.table.lookup(k) for k in probe]
    assert kd.get_many(probe) == [kd.get(k) for k in probe]
    olds = s.apply([(k, b"new") for k in probe])
    assert olds == [model.get(k) for k in probe]
    s.close()


def test_apply_reports_a_damaged_key_behind_the_index_and_writes_nothing(tmp_path: Path) -> None:
    s = open_store(tmp_path, file_size=1 << 20)
    s.apply([(b"alpha-key", b"A" * 30), (b"beta-key", b"B" * 30)], applied=LogId(1, 1))
    s.close()
    log_file = next(p for p in tmp_path.iterdir() if p.suffix == ".log")
    data = bytearray(log_file.read_bytes())
    i = data.index(b"alpha-key")
    data[i] ^= 0x20
    log_file.write_bytes(bytes(data))
    s = open_store(tmp_path, file_size=1 << 20)
    size = log_file.stat().st_size
    with pytest.raises(CorruptionError) as e:
        s.apply([(b"beta-key", b"b"), (b"alpha-key", b"a")])
    assert e.value.path == str(log_file) and e.value.offset == i
    assert log_file.stat().st_size == size and s.get(b"beta-key") == b"B" * 30
    s.close(clean=False)


def test_apply_on_a_damaged_index_block_rebuilds_and_returns_the_right_old_values(tmp_path: Path) -> None:
    rng = random.Random(9)
    model: dict[bytes, bytes] = {}
    s = open_store(tmp_path, index_every=1 << 30)
    churn(s, model, rng, 60, keys=3000)
    s.close()
    idx = tmp_path / INDEX
    raw = bytearray(idx.read_bytes())
    for off in range(len(raw) - 4096 * 3, len(raw) - 4096 * 3 + 256):  # inside the slot blocks
        raw[off] ^= 0xFF
    idx.write_bytes(bytes(raw))
    s = open_store(tmp_path, index_every=1 << 30)
    keys = sorted(model) + [b"fresh-1"]
    assert s.apply([(k, b"x") for k in keys]) == [model.get(k) for k in keys]  # the first reads after open
    check(s, dict.fromkeys(keys, b"x"))
    s.close()
