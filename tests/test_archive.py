"""The archive (segwal.storage.archive): shipping a node's log, restore at latest and at N, damage, gaps, purge holds, retention racing a restore, untrusted names.

Local stores (file://, an in-test dict seam) for most; the session's SeaweedFS
S3 server for the archiver thread with rotations and purges and for the
sidecar killed with SIGKILL (tests/test_archive_sidecar.py).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import xxhash

from segwal.engine import WalEngine
from segwal.errors import CorruptionError, StorageIOError
from segwal.storage.archive import Archiver, read_archived_position, restore
from segwal.storage.archive import format as archive_format
from segwal.storage.archive.format import (
    K_DELTA,
    StateRecord,
    decode_object,
    encode_delta,
    encode_object,
    encode_state,
    log_name,
    object_hash,
    parse_log_name,
)
from segwal.storage.archive.retention import apply_retention
from segwal.storage.archive.verify import verify_archive
from segwal.storage.objectstore.seam import ObjectExistsError, ObjectInfo, StoredObject
from segwal.types import Entry, HardState, LogId, VotedFor
from segwal.wal.format import crc32c


class DictSeam:
    """An ObjectStoreSeam over a dict; ``down`` makes every call fail; ``on_get`` runs before a GET."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.down = False
        self.on_get: Any = None
        self.lock = threading.Lock()

    def _check(self, name: str) -> None:
        if self.down:
            raise StorageIOError(5, "store is down", name)

    def get(self, name: str) -> StoredObject | None:
        self._check(name)
        if self.on_get is not None:
            self.on_get(name)
        with self.lock:
            d = self.objects.get(name)
        return None if d is None else StoredObject(d, None)

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        self._check(name)
        d = self.objects.get(name)
        return None if d is None else d[start:end]

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        self._check(name)
        with self.lock:
            if create and name in self.objects:
                raise ObjectExistsError(name)
            self.objects[name] = bytes(data)

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        self._check(prefix)
        with self.lock:
            return sorted(ObjectInfo(n, len(d)) for n, d in self.objects.items() if n.startswith(prefix))

    def head(self, name: str) -> ObjectInfo | None:
        self._check(name)
        d = self.objects.get(name)
        return None if d is None else ObjectInfo(name, len(d))

    def delete(self, names: Sequence[str]) -> None:
        self._check(names[0] if names else "")
        with self.lock:
            for n in names:
                self.objects.pop(n, None)


def ents(a: int, b: int, term: int, tag: str = "") -> list[Entry]:
    return [Entry(i, term, f"{tag}{i}/{term}".encode() * 3) for i in range(a, b + 1)]


def log_of(eng: WalEngine) -> list[Entry]:
    return eng.get_entries_range(eng.first_index(), eng.last_index())


def same_as(path: Path, expected: list[Entry], *, base: int, kv: dict[bytes, bytes] | None = None) -> HardState | None:
    with WalEngine(path, readonly=True) as r:
        assert r.first_index() == base + 1
        assert log_of(r) == expected
        if kv is not None:
            assert {k: r.get(k) for k in kv} == kv
            applied = r.last_applied()
            assert (applied.index if applied else 0) == base
        return r.load_hard_state()


# -- restore at latest and at N ----------------------------------------------------------


def test_restore_latest_and_at_n_is_the_archived_state(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node", segment_size=2048)
    arch = Archiver(node, seam, "a/b", kv_snapshot_interval=0)
    history: list[list[Entry]] = []  # the node's log after each pass, in pass order

    def ship() -> None:
        arch.sync_now()
        history.append(log_of(node))

    node.persist_entries(ents(1, 60, 1))
    ship()
    node.save_hard_state(HardState(2, VotedFor(1, 2), 40))
    node.persist_entries(ents(61, 90, 2))
    ship()
    node.truncate(75)  # below the tail segment or not: a new generation of 75..
    node.persist_entries(ents(75, 80, 3, "x"))
    ship()
    node.apply([(b"k", b"v1")], applied=LogId(1, 30))
    node.persist_entries(ents(81, 84, 3, "y"))
    node.persist_entries(ents(82, 83, 4, "z"))  # an overwrite inside the tail, then a cut
    node.truncate(84)
    ship()
    assert arch.status().shipped_index == 83 == read_archived_position(seam, "a/b")
    node.save_hard_state(HardState(5, None, 83))
    arch.sync_now()
    node.close()

    res = restore(seam, "a/b", tmp_path / "latest")
    assert (res.first_index, res.last_index, res.kv_snapshot_index) == (31, 83, 30)
    hs = same_as(tmp_path / "latest", history[-1][30:], base=30, kv={b"k": b"v1"})
    assert hs == HardState(5, None, 83)  # the archived term, no vote, commit clamped to what was restored
    assert "new member" in res.message.lower() and "whole-cluster rebuild" in res.message
    for n, shot in ((50, -1), (70, -1), (83, -1), (88, 1), (90, 1)):
        # the newest archived version of entries <= n: the last pass whose log held n, cut at n
        want = [e for e in history[shot] if 30 < e.index <= n]
        r = restore(seam, "a/b", tmp_path / f"at{n}", to_index=n)
        assert r.last_index == n
        hs = same_as(tmp_path / f"at{n}", want, base=30, kv={b"k": b"v1"})
        assert hs is not None and hs.voted_for is None and hs.commit_index == min(83, n)
    with pytest.raises(ValueError, match="beyond"):
        restore(seam, "a/b", tmp_path / "nope", to_index=91)
    assert not (tmp_path / "nope").exists()
    with pytest.raises(ValueError, match="not empty"):
        restore(seam, "a/b", tmp_path / "latest")
    assert verify_archive(seam, "a/b").exit_status == 0


def test_restored_directory_opens_as_a_writer_with_private_modes(tmp_path: Path) -> None:
    seam = DictSeam()
    with WalEngine(tmp_path / "node") as node, Archiver(node, seam) as arch:
        node.persist_entries(ents(1, 10, 1))
        arch.sync_now()
    restore(seam, "", tmp_path / "r")
    for root, dirs, files in os.walk(tmp_path / "r"):
        for d in dirs:
            assert os.stat(os.path.join(root, d)).st_mode & 0o077 == 0
        for f in files:
            assert os.stat(os.path.join(root, f)).st_mode & 0o077 == 0
    assert os.stat(tmp_path / "r").st_mode & 0o077 == 0
    with WalEngine(tmp_path / "r") as w:
        w.persist_entries(ents(11, 12, 2))
        assert w.last_index() == 12


# -- damage ------------------------------------------------------------------------------


def _archive(tmp_path: Path, seam: DictSeam) -> list[str]:
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "p")
        for k in range(4):
            node.persist_entries(ents(10 * k + 1, 10 * k + 10, 1))
            arch.sync_now()
    return sorted(n for n in seam.objects if n.startswith("p/log/"))


def test_damaged_object_makes_restore_refuse_and_name_it(tmp_path: Path) -> None:
    seam = DictSeam()
    logs = _archive(tmp_path, seam)
    victim = logs[1]
    data = bytearray(seam.objects[victim])
    data[len(data) - 3] ^= 0x40  # a payload byte
    seam.objects[victim] = bytes(data)
    with pytest.raises(CorruptionError) as ei:
        restore(seam, "p", tmp_path / "r")
    assert victim in str(ei.value)
    assert not (tmp_path / "r").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".r.")]
    rep = verify_archive(seam, "p")
    assert rep.exit_status == 2 and any(victim in f for f in rep.findings)
    # a restore that stops before the damaged object does not need it
    assert restore(seam, "p", tmp_path / "early", to_index=10).last_index == 10


@pytest.mark.parametrize("what", ["payload", "check"])
def test_forged_entry_with_consistent_object_checksums_is_refused(tmp_path: Path, what: str) -> None:
    """An object whose name hash and CRCs agree with its bytes, but one entry's payload
    (or slot check value) changed: only the per-entry check catches it.  The restore
    writes the archive's check values as they are, so that check must run on the way in."""
    seam = DictSeam()
    logs = _archive(tmp_path, seam)
    victim = logs[1]
    ln = parse_log_name(victim[len("p/") :])
    assert ln is not None and ln.count == 10
    head, body = decode_object(seam.objects[victim], victim, K_DELTA)
    forged = bytearray(body)
    if what == "payload":
        forged[-3] ^= 0x40  # a byte of the last entry's payload
    else:
        forged[9 * 24 + 16] ^= 0x01  # the last slot's check value
    data = encode_object(K_DELTA, head.seq, head.first, head.count, head.engine_id, bytes(forged))
    name = "p/" + log_name(ln.seq, ln.first, ln.count, False, object_hash(data))
    del seam.objects[victim]
    seam.objects[name] = data
    with pytest.raises(CorruptionError, match="entry checksum mismatch") as ei:
        restore(seam, "p", tmp_path / "r")
    assert name in str(ei.value) and ei.value.index == 20
    assert not (tmp_path / "r").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".r.")]
    assert restore(seam, "p", tmp_path / "early", to_index=10).last_index == 10


def test_missing_object_makes_restore_refuse_and_name_it(tmp_path: Path) -> None:
    seam = DictSeam()
    logs = _archive(tmp_path, seam)
    del seam.objects[logs[2]]
    with pytest.raises(CorruptionError, match="log object 3 is missing"):
        restore(seam, "p", tmp_path / "r")
    with pytest.raises(CorruptionError, match="missing"):
        read_archived_position(seam, "p")
    assert not (tmp_path / "r").exists()


# -- untrusted names and destinations -----------------------------------------------------


def test_object_names_never_become_paths(tmp_path: Path) -> None:
    seam = DictSeam()
    _archive(tmp_path, seam)
    payload = seam.objects[min(n for n in seam.objects if n.startswith("p/log/"))]
    for evil in (
        "p/log/../../escape",
        "p/../escape",
        "p/kv/../../../escape",
        "p/log//abs/escape",
        "p/state/..%2f..%2fescape",
        "p/seal/../../escape",
    ):
        seam.objects[evil] = payload
    (tmp_path / "dest").mkdir()
    res = restore(seam, "p", tmp_path / "dest" / "r")
    assert res.last_index == 40
    assert sorted(os.listdir(tmp_path / "dest")) == ["r"]
    assert not any("escape" in n for n in os.listdir(tmp_path))
    rep = verify_archive(seam, "p")
    assert (
        sum("not an archive object name" in f for f in rep.findings) == 5
    )  # p/../escape is outside the prefix's folders


def test_restore_refuses_a_symlinked_destination(tmp_path: Path) -> None:
    seam = DictSeam()
    _archive(tmp_path, seam)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(ValueError, match="symbolic link"):
        restore(seam, "p", tmp_path / "link")
    assert os.listdir(tmp_path / "elsewhere") == []


# -- purges: held within the bound, a gap past it -------------------------------------------


def test_archiver_holds_purges_until_archived(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node", segment_size=1024)
    arch = Archiver(node, seam, "h", tail_interval=3600, max_held_bytes=1 << 20).start()
    try:
        node.persist_entries(ents(1, 5, 1))
        arch.sync_now()
        seam.down = True  # the store is down while the node rotates and purges
        for k in range(1, 9):
            node.persist_entries(ents(5 * k + 1, 5 * k + 5, 1))
        node.purge_logs(LogId(1, 38))
        assert node.first_index() == 39
        assert arch.status().held_bytes > 0
        seam.down = False
        assert arch.sync_now() == 45
        st = arch.status()
        assert st.gaps == () and st.held_bytes == 0
    finally:
        arch.stop()
        node.close()
    same_as_all = restore(seam, "h", tmp_path / "r")
    assert (same_as_all.first_index, same_as_all.last_index) == (1, 45)


def test_archiver_past_its_bound_lets_the_purge_go_and_records_the_gap(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node", segment_size=1024)
    arch = Archiver(node, seam, "g", tail_interval=3600, max_held_bytes=0, kv_snapshot_interval=None).start()
    try:
        node.persist_entries(ents(1, 5, 1))
        arch.sync_now()
        seam.down = True
        for k in range(1, 9):
            node.persist_entries(ents(5 * k + 1, 5 * k + 5, 1))
        node.purge_logs(LogId(1, 38))
        seam.down = False
        arch.sync_now()
        gaps = arch.status().gaps
        assert gaps == ((6, 20),)  # the first segment went unarchived; 21..38 are still in a kept segment
    finally:
        arch.stop()
        node.close()
    with pytest.raises(ValueError, match=rf"entries 6\.\.{gaps[0][1]} are a gap"):
        restore(seam, "g", tmp_path / "r")
    assert restore(seam, "g", tmp_path / "r5", to_index=5).last_index == 5
    assert verify_archive(seam, "g").exit_status == 1


# -- retention racing a restore -----------------------------------------------------------


def test_retention_pass_racing_a_restore_spares_its_plan(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node")
    arch = Archiver(node, seam, "r", kv_snapshot_interval=0)
    for k in range(6):
        node.persist_entries(ents(10 * k + 1, 10 * k + 10, 1))
        if k == 4:
            node.apply([(b"k", b"v")], applied=LogId(1, 45))
        arch.sync_now()
    fired: list[Any] = []

    def race(name: str) -> None:
        if "/log/" in name and not fired:
            fired.append(apply_retention(seam, "r", 0))  # every snapshot is old enough: remove all it may

    seam.on_get = race
    # planned before the pass (entries 1..40: no snapshot below them): its lease protects its plan
    res = restore(seam, "r", tmp_path / "x", to_index=40)
    assert fired and fired[0].spared, "the retention pass ran during the restore and found the lease"
    assert set(fired[0].spared) & {n for n in seam.objects if "/log/" in n}
    assert res.last_index == 40 and res.kv_snapshot_index == 0
    seam.on_get = None
    again = apply_retention(seam, "r", 0)  # the lease is gone: the rest goes now
    assert again.deleted
    res2 = restore(seam, "r", tmp_path / "y")
    assert (res2.first_index, res2.last_index) == (46, 60)
    # an archiver restarted on the node (which still holds 1..60) resumes above the floor: nothing re-shipped
    logs = {n for n in seam.objects if "/log/" in n}
    assert Archiver(node, seam, "r").sync_now() == 60
    assert {n for n in seam.objects if "/log/" in n} == logs
    node.close()
    with pytest.raises(ValueError):
        restore(seam, "r", tmp_path / "z", to_index=20)  # below the retention floor now


# -- lost replies and restarts: nothing uploaded twice -------------------------------------


class LostReplies(DictSeam):
    """Every ``fail_every``-th log PUT lands, then raises as if its reply was lost."""

    def __init__(self, fail_every: int) -> None:
        super().__init__()
        self.fail_every = fail_every
        self.puts = 0

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        super().put(name, data, create=create, write_id=write_id)
        if "/log/" in name:
            self.puts += 1
            if self.puts % self.fail_every == 0:
                raise StorageIOError(5, "reply lost", name)


def test_lost_replies_and_restarts_never_double_a_log_object(tmp_path: Path) -> None:
    seam = LostReplies(3)
    node = WalEngine(tmp_path / "node", segment_size=1024)
    arch = Archiver(node, seam, "l")
    term = 1
    for k in range(30):
        if k % 7 == 6:
            term += 1
            node.truncate(node.last_index() - 2)
        node.persist_entries(ents(node.last_index() + 1, node.last_index() + 4, term))
        try:
            arch.sync_now()
        except StorageIOError:
            pass
        if k % 10 == 9:
            arch = Archiver(node, seam, "l")  # a restarted archiver: re-seeds from the bucket
    while True:
        try:
            assert arch.sync_now() == node.last_index()
            break
        except StorageIOError:
            pass
    seqs = [n.split("/")[2].split("-")[0] for n in seam.objects if n.startswith("l/log/")]
    assert len(seqs) == len(set(seqs))
    want = log_of(node)
    node.close()
    restore(seam, "l", tmp_path / "r")
    same_as(tmp_path / "r", want, base=0)


# -- the command line ---------------------------------------------------------------------


def test_cli_verify_and_restore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segwal.cli import main

    url = f"file://{tmp_path / 'bucket'}"
    with WalEngine(tmp_path / "node", segment_size=1024) as node:
        node.persist_entries(ents(1, 30, 1))
        node.save_hard_state(HardState(1, VotedFor(3, 1), 30))
        from segwal.tools.archive import run_sidecar

        with open(os.devnull, "w") as sink:
            assert run_sidecar(str(tmp_path / "node"), url, {}, tail_interval=0.01, passes=2, out=sink) == 0
    assert main(["archive", "verify", url]) == 0
    assert "restorable up to 30: clean" in capsys.readouterr().out
    assert main(["restore", url, str(tmp_path / "r"), "--to-index", "20"]) == 0
    out = capsys.readouterr().out
    assert "NEW member" in out and "whole-cluster rebuild" in out and "no vote" in out
    with WalEngine(tmp_path / "r", readonly=True) as r:
        assert r.last_index() == 20 and r.load_hard_state() == HardState(1, None, 20)
    assert main(["restore", url, str(tmp_path / "r")]) == 1  # not empty: refused, changed nothing
    assert "not empty" in capsys.readouterr().err
    assert main(["archive", "run", url]) == 1  # no DIR
    bad = next((tmp_path / "bucket" / "log").iterdir())
    bad.write_bytes(bad.read_bytes()[:-1] + b"!")
    assert main(["archive", "verify", url]) == 2
    assert bad.name in capsys.readouterr().out
    assert main(["restore", url, str(tmp_path / "r2")]) == 2
    assert bad.name in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_restore_at_n_of_an_older_generation_never_mixes_in_a_later_snapshot(tmp_path: Path) -> None:
    seam = DictSeam()
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "m", kv_snapshot_interval=0)
        node.persist_entries(ents(1, 20, 1))
        node.apply([(b"k", b"gen1")], applied=LogId(1, 6))
        arch.sync_now()
        node.truncate(5)  # not what a Raft node does below its applied index; the archive must still not mix
        node.persist_entries(ents(5, 12, 2, "b"))
        node.apply([(b"k", b"gen2")], applied=LogId(2, 10))
        arch.sync_now()
    # 15 only ever existed in the first generation: the snapshot at 10 (second generation) does not fit it
    r = restore(seam, "m", tmp_path / "old", to_index=15)
    assert r.kv_snapshot_index == 6
    same_as(tmp_path / "old", ents(7, 15, 1), base=6, kv={b"k": b"gen1"})
    r = restore(seam, "m", tmp_path / "new")
    assert (r.kv_snapshot_index, r.last_index) == (10, 12)
    same_as(tmp_path / "new", ents(11, 12, 2, "b"), base=10, kv={b"k": b"gen2"})


def test_retention_pass_between_a_restores_listing_and_its_lease_makes_it_plan_again(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node")
    arch = Archiver(node, seam, "q", kv_snapshot_interval=0)
    node.persist_entries(ents(1, 50, 1))
    node.apply([(b"k", b"45")], applied=LogId(1, 45))
    arch.sync_now()
    real_put = seam.put
    done: list[Any] = []

    def put(name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        if "/lease/" in name and not done:  # the restore listed and planned (snapshot at 45): now, before its lease,
            done.append(1)  # the node moves on and a retention pass removes what that plan named
            node.persist_entries(ents(51, 60, 1))
            node.apply([(b"k", b"55")], applied=LogId(1, 55))
            arch.sync_now()
            done.append(apply_retention(seam, "q", 0))
        real_put(name, data, create=create, write_id=write_id)

    seam.put = put  # type: ignore[method-assign]
    res = restore(seam, "q", tmp_path / "r")
    assert done and any("/kv/" in d for d in done[1].deleted)  # the planned snapshot at 45 went
    assert (res.kv_snapshot_index, res.last_index) == (55, 60)
    same_as(tmp_path / "r", ents(56, 60, 1), base=55, kv={b"k": b"55"})
    node.close()


def test_restore_imports_neither_asyncio_nor_the_object_store_engine() -> None:
    """The ``segwal restore`` child imports what a restore runs, not the rest of ``segwal.storage``
    (its start-up is part of the restore time); the lazy names still resolve as before."""
    code = (
        "import sys, types\n"
        "import segwal.storage.archive, segwal.tools.archive\n"
        "heavy = ['asyncio', 'sqlite3', 'segwal.storage.objectstore.engine', 'segwal.storage.aio']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "from segwal.storage.objectstore import Sidecar\n"
        "from segwal.storage.objectstore import ObjectStoreEngine, sidecar, store_from_url\n"
        "from segwal.storage import ObjectStoreEngine as O, SqliteEngine\n"
        "print(isinstance(sidecar, types.FunctionType), O is ObjectStoreEngine, SqliteEngine.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True True SqliteEngine"]


# -- review findings (regressions) ------------------------------------------------------


def test_snapshot_install_over_stale_entries_never_mixes_them_into_a_restore(tmp_path: Path) -> None:
    with WalEngine(tmp_path / "leader") as ld:
        ld.persist_entries(ents(1, 20, 1) + ents(21, 40, 2, "L"))
        ld.apply([(b"k", b"leader@40")], applied=LogId(2, 40))
        ld.snapshot(str(tmp_path / "snap"))
    for interval in (None, 60.0):
        seam = DictSeam()
        node = WalEngine(tmp_path / f"node{interval}")
        arch = Archiver(node, seam, "p", kv_snapshot_interval=60)
        node.persist_entries(ents(1, 20, 1) + ents(21, 50, 1, "stale"))
        node.apply([(b"k", b"node@20")], applied=LogId(1, 20))
        arch.sync_now()  # kv@20 shipped
        arch._ship.kv_interval = interval
        node.install_snapshot(str(tmp_path / "snap"))  # the leader's snapshot at (2, 40)
        node.persist_entries(ents(41, 45, 2, "L"))
        arch.sync_now()
        node.close()
        dest = tmp_path / f"r{interval}"
        if interval is None:  # no snapshot at or after the boundary: refused, the gap named
            with pytest.raises(ValueError, match=r"entries 21\.\.40 are a gap"):
                restore(seam, "p", dest)
            continue
        r = restore(seam, "p", dest)
        assert r.kv_snapshot_index == 40
        same_as(dest, ents(41, 45, 2, "L"), base=40, kv={b"k": b"leader@40"})
        r = restore(seam, "p", tmp_path / "at30", to_index=20)  # the committed part is still restorable
        assert r.last_index == 20
    # the stale entries not yet archived when the snapshot is installed: a gap, then a snapshot at once
    seam = DictSeam()
    with WalEngine(tmp_path / "behind", segment_size=1024) as node:
        arch = Archiver(node, seam, "p", kv_snapshot_interval=60)
        node.persist_entries(ents(1, 20, 1))
        node.apply([(b"k", b"node@20")], applied=LogId(1, 20))
        arch.sync_now()
        node.persist_entries(ents(21, 50, 1, "stale"))
        node.install_snapshot(str(tmp_path / "snap"))
        node.persist_entries(ents(41, 45, 2, "L"))
        arch.sync_now()
    assert restore(seam, "p", tmp_path / "rb").kv_snapshot_index == 40
    same_as(tmp_path / "rb", ents(41, 45, 2, "L"), base=40, kv={b"k": b"leader@40"})


def test_retention_after_a_rollback_keeps_what_todays_history_needs(tmp_path: Path) -> None:
    seam = DictSeam()
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "p", kv_snapshot_interval=0)
        node.persist_entries(ents(1, 100, 1))
        node.apply([(b"k", b"100")], applied=LogId(1, 100))
        arch.sync_now()
        node.persist_entries(ents(101, 300, 1))
        node.apply([(b"k", b"250")], applied=LogId(1, 250))
        arch.sync_now()
    restore(seam, "p", tmp_path / "rolled", to_index=150)  # roll back, keep archiving to the same prefix
    with WalEngine(tmp_path / "rolled") as n2:
        a2 = Archiver(n2, seam, "p", kv_snapshot_interval=0)
        a2.sync_now()
        n2.persist_entries(ents(151, 170, 2, "new"))
        n2.apply([(b"k", b"160")], applied=LogId(2, 160))
        a2.sync_now()
        want = log_of(n2)
    res = apply_retention(seam, "p", 5, now=time.time() + 60)  # every snapshot is old enough
    assert res.deleted and not any("/kv/00000000000000000160-" in d for d in res.deleted)
    r = restore(seam, "p", tmp_path / "after")
    assert (r.kv_snapshot_index, r.last_index) == (160, 170)
    same_as(tmp_path / "after", [e for e in want if e.index > 160], base=160, kv={b"k": b"160"})


def test_retention_keeps_older_generations_a_window_target_needs(tmp_path: Path) -> None:
    seam = DictSeam()
    t0 = time.time()
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "p", kv_snapshot_interval=0)
        with mock.patch.object(archive_format.time, "time", lambda: t0 - 1000):  # written 1000 s ago
            node.persist_entries(ents(1, 200, 1))
            node.apply([(b"k", b"150")], applied=LogId(1, 150))
            arch.sync_now()
        node.truncate(151)  # a new leader overwrote 151.. just now: 200 was the latest until now
        node.persist_entries(ents(151, 160, 2, "b"))
        arch.sync_now()
    assert apply_retention(seam, "p", 500, now=t0).deleted == []
    restore(seam, "p", tmp_path / "at200", to_index=200)
    same_as(tmp_path / "at200", ents(151, 200, 1), base=150, kv={b"k": b"150"})
    # once 200 was the latest longer ago than the window, its objects may go; today's latest stays
    res = apply_retention(seam, "p", 500, now=t0 + 1000)
    assert res.deleted
    assert restore(seam, "p", tmp_path / "latest").last_index == 160
    with pytest.raises(ValueError):
        restore(seam, "p", tmp_path / "gone", to_index=200)


def test_retention_never_removes_the_object_holding_the_latest_entry(tmp_path: Path) -> None:
    seam = DictSeam()
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "p", kv_snapshot_interval=0)
        node.persist_entries(ents(1, 30, 1))
        node.apply([(b"k", b"v")], applied=LogId(1, 30))  # the snapshot holds everything
        arch.sync_now()
    apply_retention(seam, "p", 0, now=time.time() + 60)
    assert read_archived_position(seam, "p") == 30
    r = restore(seam, "p", tmp_path / "b")
    assert (r.kv_snapshot_index, r.last_index) == (30, 30)


def test_restore_leases_and_checks_its_state_object(tmp_path: Path) -> None:
    seam = DictSeam()
    node = WalEngine(tmp_path / "node")
    arch = Archiver(node, seam, "p", kv_snapshot_interval=0)
    node.persist_entries(ents(1, 10, 1))
    node.save_hard_state(HardState(1, None, 5))
    arch.sync_now()
    fired: list[Any] = []

    def race(name: str) -> None:  # the node moves on and a retention pass runs during the restore
        if "/log/" in name and not fired:
            fired.append(1)
            node.save_hard_state(HardState(2, None, 10))
            for k in range(1, 4):
                node.persist_entries(ents(10 * k + 1, 10 * k + 10, 2))
                arch.sync_now()
            node.apply([(b"k", b"v")], applied=LogId(2, 40))
            arch.sync_now()
            fired.append(apply_retention(seam, "p", 0, now=time.time() + 60))

    seam.on_get = race
    r = restore(seam, "p", tmp_path / "x", to_index=10)
    assert any("/state/" in s for s in fired[1].spared)
    assert r.hard_state == HardState(1, None, 5)
    seam.on_get = None
    node.close()
    # a state object whose content does not match the hash in its name is refused, named
    st = max(n for n in seam.objects if "/state/" in n)
    seam.objects[st] = encode_state(1, 1, 0, StateRecord(HardState(999, None, 10), None, None, 0))
    with pytest.raises(CorruptionError, match="hash in its name") as ei:
        restore(seam, "p", tmp_path / "y")
    assert st in str(ei.value)


class InFlightPut(DictSeam):
    """The second log PUT times out client-side and lands later, after the archiver's re-seed LIST."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.late: tuple[str, bytes] | None = None

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        if "/log/" in name:
            self.n += 1
            if self.n == 2:
                self.late = (name, bytes(data))
                raise StorageIOError(110, "timed out", name)
        super().put(name, data, create=create, write_id=write_id)
        if self.late is not None and self.n >= 3:
            super().put(*self.late)
            self.late = None


def _v1(data: bytes, time_ms: int) -> bytes:
    """``data`` as a version-1 object written at ``time_ms`` (its name hashed the whole object)."""
    head = bytearray(data[:64])
    head[4:6] = (1).to_bytes(2, "little")
    head[40:48] = time_ms.to_bytes(8, "little")
    head[60:64] = crc32c(bytes(head[:60])).to_bytes(4, "little")
    return bytes(head) + data[64:]


def test_a_retried_upload_never_makes_the_archive_unrestorable(tmp_path: Path) -> None:
    seam = InFlightPut()
    with WalEngine(tmp_path / "node") as node:
        arch = Archiver(node, seam, "p", kv_snapshot_interval=None)
        node.persist_entries(ents(1, 10, 1))
        arch.sync_now()
        node.persist_entries(ents(11, 20, 1))
        with pytest.raises(StorageIOError):
            arch.sync_now()
        time.sleep(0.002)  # the retry is written at another millisecond: its name must not change
        arch.sync_now()
        node.persist_entries(ents(21, 30, 1))
        arch.sync_now()
    seqs = [n.split("/")[2].split("-")[0] for n in seam.objects if "/log/" in n]
    assert len(seqs) == len(set(seqs)) == 3
    assert restore(seam, "p", tmp_path / "r").last_index == 30
    # version-1 twins (one seq, same entries, names differ by their write time): equal content restores
    s2 = DictSeam()
    for seq, a, b, tag, times in ((1, 1, 10, "", (1,)), (2, 11, 20, "", (2, 3)), (3, 21, 30, "", (4,))):
        for t in times:
            data = _v1(encode_delta(seq, ents(a, b, 1, tag), 0)[0], t)
            assert object_hash(data) == xxhash.xxh3_64_intdigest(data)
            s2.objects["q/" + log_name(seq, a, b - a + 1, False, object_hash(data))] = data
    assert restore(s2, "q", tmp_path / "twins").last_index == 30
    assert verify_archive(s2, "q").exit_status == 0
    # twins with different content: both refuse, naming the object
    data = _v1(encode_delta(2, ents(11, 20, 1, "x"), 0)[0], 5)
    s2.objects["q/" + log_name(2, 11, 10, False, object_hash(data))] = data
    with pytest.raises(CorruptionError, match="appears twice with different content"):
        restore(s2, "q", tmp_path / "differ")
    rep = verify_archive(s2, "q")
    assert rep.exit_status == 2 and any("content differs" in f for f in rep.findings)


def test_verify_reports_a_header_that_disagrees_with_its_name(tmp_path: Path) -> None:
    for what in ("seq", "gap"):
        seam = DictSeam()
        d1 = encode_delta(1, ents(1, 10, 1), 0)[0]
        if what == "seq":  # a delta whose header says seq 7, named as seq 2
            d2, gap = encode_delta(7, ents(11, 20, 1), 0)[0], False
        else:  # a delta under a gap's name
            d2, gap = encode_delta(2, ents(11, 20, 1), 0)[0], True
        for seq, first, data, g in ((1, 1, d1, False), (2, 11, d2, gap)):
            seam.objects["p/" + log_name(seq, first, 10, g, object_hash(data))] = data
        rep = verify_archive(seam, "p")
        assert rep.exit_status == 2, (what, rep.findings)
        assert any(f.startswith("p/log/00000000000000000002-") for f in rep.findings)
        if what == "seq":
            with pytest.raises(CorruptionError, match="header says seq 7"):
                restore(seam, "p", tmp_path / what)


def test_an_oversized_listed_object_is_refused_before_it_is_fetched(tmp_path: Path) -> None:
    seam = DictSeam()
    with WalEngine(tmp_path / "node") as node:
        node.persist_entries(ents(1, 10, 1))
        Archiver(node, seam, "p", kv_snapshot_interval=None).sync_now()
    big = next(n for n in seam.objects if "/log/" in n)
    bound = len(seam.objects[big]) + 100
    seam.objects[big] += b"\0" * 200  # as listed: beyond the bound below
    fetched: list[str] = []
    seam.on_get = fetched.append
    mods = (
        importlib.import_module("segwal.storage.archive.restore"),
        importlib.import_module(verify_archive.__module__),
    )
    with (
        mock.patch.object(mods[0], "MAX_OBJECT", bound, create=True),
        mock.patch.object(mods[1], "MAX_OBJECT", bound, create=True),
    ):
        with pytest.raises(CorruptionError, match=f"expected 64 to {bound} bytes") as ei:
            restore(seam, "p", tmp_path / "r")
        assert big in str(ei.value)
        rep = verify_archive(seam, "p")
    assert big not in fetched and rep.exit_status == 2 and any(big in f for f in rep.findings)
