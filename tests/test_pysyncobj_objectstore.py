"""``segwal_journal`` targets (path, URL, factory; bad ones) and PySyncObj's dump kept in the object store.

The cluster tests on SeaweedFS (kill -9 series, a node restarted on an empty
disk) are in ``test_pysyncobj_cluster.py``; these are the unit tests: every
target kind and every bad target, the journal using only the StorageEngine
protocol, the dump object format, which dump goes with a log, and the ordering
rules -- the dump is in the store before a purge and before a snapshot install,
and the open puts the right dump where PySyncObj reads it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

pytest.importorskip("pysyncobj")
pytest.importorskip("obstore")

from obstore.store import MemoryStore
from pysyncobj import SyncObj, SyncObjConf

from segwal.engine import WalEngine
from segwal.errors import CorruptionError, FormatVersionError, StorageIOError
from segwal.integrations.pysyncobj import SegwalJournal, segwal_journal
from segwal.integrations.pysyncobj.dumpstore import (
    HEADER_SIZE,
    DumpRef,
    UploadingSerializer,
    choose_dump,
    decode_dump,
    encode_dump,
)
from segwal.storage.memory import InMemoryEngine
from segwal.storage.objectstore import ObjectStoreEngine, as_seam, sidecar
from segwal.types import StorageEngine

PROTOCOL = {n for n in dir(StorageEngine) if not n.startswith("_")} | {"__enter__", "__exit__"}


class ProtocolOnly:
    """An engine that exposes the StorageEngine protocol and nothing else."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name not in PROTOCOL:
            raise AttributeError(f"the journal used {name!r}, which is not in the StorageEngine protocol")
        return getattr(self._inner, name)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


class Recorder:
    """A seam that records every PUT name in order and can fail the ones matching ``fail``."""

    def __init__(self, fail: str | None = None) -> None:
        self.inner = as_seam(MemoryStore())
        self.puts: list[str] = []
        self.gets = 0  # of dump objects
        self.fail = fail

    def get(self, name: str) -> Any:
        self.gets += "/pysyncobj/" in name
        return self.inner.get(name)

    def get_range(self, name: str, start: int, end: int) -> Any:
        return self.inner.get_range(name, start, end)

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        if self.fail is not None and self.fail in name:
            raise StorageIOError(5, "injected PUT failure", name)
        self.inner.put(name, data, create=create, write_id=write_id)
        self.puts.append(name)

    def list(self, prefix: str, after: str | None = None) -> Any:
        return self.inner.list(prefix, after)

    def head(self, name: str) -> Any:
        return self.inner.head(name)

    def delete(self, names: Any) -> None:
        self.inner.delete(names)


def fill(j: SegwalJournal, upto: int, term: int = 1) -> None:
    start = j[-1][1] + 1 if len(j) else 1
    for i in range(start, upto + 1):
        j.add(b"c%d" % i, i, term)
    j.sync()


def open_on(seam: Any, dump: Any, prefix: str = "node1") -> SegwalJournal:
    return segwal_journal(lambda: ObjectStoreEngine(seam, prefix)).open(dump_file=str(dump))


# ---------------------------------------------------------------- targets


def test_path_target_opens_a_wal_engine(tmp_path):
    spec = segwal_journal(tmp_path / "raft", segment_size=4096)
    assert spec.kind == "path" and spec.segment_size == 4096
    j = spec.open()
    assert isinstance(j.engine, WalEngine) and j.dumps is None
    j._destroy()


@pytest.mark.parametrize("url", ["memory://journal-target/node1", "file:///{tmp}/store/node1"])
def test_url_target_opens_an_object_store_engine_and_keeps_the_dump_there(tmp_path, url):
    spec = segwal_journal(url.format(tmp=str(tmp_path).lstrip("/")))
    assert spec.kind == "url"
    with pytest.raises(ValueError, match="fullDumpFile"):
        spec.open()
    dump = tmp_path / "dump.bin"
    j = spec.open(dump_file=str(dump))
    assert isinstance(j.engine, ObjectStoreEngine) and j.dumps is not None
    fill(j, 20)
    dump.write_bytes(b"state at 10")
    j.deleteEntriesTo(9)  # keep index 10 on
    assert [d.first for d in j.dumps.store.dumps()] == [10]
    j._destroy()
    dump.unlink()  # a new machine
    j = spec.open(dump_file=str(dump))
    assert dump.read_bytes() == b"state at 10" and j[0] == (b"c10", 10, 1) and len(j) == 11
    j._destroy()


def test_url_target_on_seaweedfs_passes_store_options(tmp_path, seaweedfs):
    url = f"s3://{seaweedfs.bucket}/journal-target-{os.urandom(4).hex()}"
    spec = segwal_journal(url, engine_options={"compact_slots": 8}, **seaweedfs.url_options())
    dump = tmp_path / "dump.bin"
    j = spec.open(dump_file=str(dump))
    assert j.engine.compact_slots == 8
    fill(j, 30)
    j.setCurrentTerm(2, "127.0.0.1:7001")
    dump.write_bytes(b"state at 21")
    j.deleteEntriesTo(20)
    j._destroy()
    dump.unlink()
    j = spec.open(dump_file=str(dump))
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (2, "127.0.0.1:7001")
    assert j[0][1] == 21 and j[-1][1] == 30 and dump.read_bytes() == b"state at 21"
    j._destroy()


def test_factory_targets(tmp_path):
    j = segwal_journal(lambda: InMemoryEngine()).open()
    assert isinstance(j.engine, InMemoryEngine) and j.dumps is None
    j._destroy()
    seam = Recorder()
    j = segwal_journal(lambda: ObjectStoreEngine(seam, "n")).open(dump_file=str(tmp_path / "d"))
    assert j.dumps is not None and j.dumps.store.folder == "n/pysyncobj/"  # the dump goes to the engine's store
    j._destroy()
    with pytest.raises(ValueError, match="fullDumpFile"):
        segwal_journal(lambda: ObjectStoreEngine(seam, "n")).open()


def test_the_journal_uses_only_the_storage_engine_protocol(tmp_path):
    j = segwal_journal(lambda: ProtocolOnly(WalEngine(tmp_path / "raft"))).open(dump_file=str(tmp_path / "d"))
    fill(j, 40)
    j.setCurrentTerm(3, ("a", 1))  # a non-IPv4 id: kept in the key/value store
    j.setRaftCommitIndex(30)
    j.onOneSecondTimer()
    (tmp_path / "d").write_bytes(b"x")
    j.deleteEntriesTo(10)
    j.deleteEntriesFrom(20)
    assert [x[1] for x in j[:3]] == [11, 12, 13] and j.entries_from(11, 10)[0][1] == 11
    j.clear()
    j.add(b"s", 100, 3)
    j.flush()
    assert j.getVotedForNodeId() == ("a", 1) and j[0] == (b"s", 100, 3)
    j._destroy()


def _raises(exc: type[BaseException], match: str, target: Any, **kw: Any) -> None:
    with pytest.raises(exc, match=match):
        segwal_journal(target, **kw)


def test_bad_targets_are_refused_with_clear_errors(tmp_path):
    engine = InMemoryEngine()
    _raises(ValueError, "empty string", "")
    _raises(TypeError, "bytes", b"/tmp/raft")
    _raises(TypeError, "directory path, a URL .* or a zero-argument factory", 42)
    _raises(TypeError, "directory path, a URL", None)
    _raises(TypeError, "open InMemoryEngine; pass a zero-argument factory", engine)
    _raises(TypeError, "must take no arguments", lambda path: engine)
    _raises(ValueError, "unknown scheme 'ftp'", "ftp://host/raft")
    _raises(ValueError, "names no bucket", "s3:///raft")
    _raises(ValueError, "absolute path", "file://relative/dir")
    _raises(ValueError, "endpoint apply to a URL target only", tmp_path / "raft", endpoint="http://x")
    _raises(ValueError, "engine_options apply to a URL target only", lambda: engine, engine_options={"retries": 1})
    _raises(ValueError, "segment_size applies to a directory path", lambda: engine, segment_size=4096)
    _raises(ValueError, "segment_size applies to a directory path", "memory://x/n", segment_size=4096)
    _raises(ValueError, r"unknown engine_options \['bogus'\]", "memory://x/n", engine_options={"bogus": 1})
    _raises(ValueError, "bad store option: memory:// stores take no options", "memory://x/n", endpoint="http://x")
    _raises(ValueError, "retry.bogus", "s3://bucket/n", **{"retry.bogus": "1"})
    _raises(ValueError, "sync must be", tmp_path / "raft", sync="sometimes")
    with pytest.raises(TypeError, match="the factory returned object, not a StorageEngine"):
        segwal_journal(lambda: object()).open()  # type: ignore[arg-type,return-value]
    assert not (tmp_path / "raft").exists()


class _Obj(SyncObj):
    pass


@pytest.mark.parametrize("sync", ["always", "flush"])
def test_url_journal_requires_full_dump_file_before_anything_opens(sync):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = SyncObjConf(journalFile=segwal_journal("memory://no-dump-file/n1", sync=sync))
    with pytest.raises(ValueError, match="fullDumpFile"):
        _Obj(f"127.0.0.1:{port}", [], conf)
    assert ObjectStoreEngine.from_url("memory://no-dump-file/n1", readonly=True).last_index() == 0


# ---------------------------------------------------------------- dump objects


def test_dump_object_roundtrip_and_every_damaged_byte_is_reported():
    data = encode_dump(42, b"payload bytes")
    assert len(data) == HEADER_SIZE + 13 and decode_dump(data, "n") == (42, b"payload bytes")
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(CorruptionError) as err:
            decode_dump(bytes(bad), "obj")
        assert err.value.path == "obj" and err.value.offset is not None
    with pytest.raises(CorruptionError, match="shorter than its header"):
        decode_dump(data[:20], "obj")
    with pytest.raises(CorruptionError, match="13"):
        decode_dump(data[:-1], "obj")
    newer = bytearray(encode_dump(1, b"x"))
    newer[8] = 2
    from segwal.wal.format import crc32c

    newer[32:36] = crc32c(bytes(newer[:32])).to_bytes(4, "little")
    with pytest.raises(FormatVersionError):
        decode_dump(bytes(newer), "obj")


def test_which_dump_goes_with_a_log():
    d = [DumpRef(5, "a", 1), DumpRef(9, "b", 1), DumpRef(9, "c", 1)]
    assert choose_dump(d, first=9, last=20, purged=True, where="f") == d[2]
    assert choose_dump(d, first=5, last=20, purged=False, where="f") == d[0]  # a crash before the purge to 9
    assert choose_dump(d, first=1, last=20, purged=False, where="f") is None  # the whole history is in the log
    assert choose_dump(d, first=1, last=0, purged=False, where="f") == d[2]  # an empty log: the newest
    assert choose_dump([], first=1, last=0, purged=False, where="f") is None  # a new node
    with pytest.raises(CorruptionError, match="first=12") as err:
        choose_dump(d, first=12, last=20, purged=True, where="f")
    assert err.value.index == 12 and err.value.path == "f"


def test_purge_stores_the_dump_first_and_collects_older_ones(tmp_path):
    seam = Recorder()
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    fill(j, 50)
    dump.write_bytes(b"at 10")
    j.deleteEntriesTo(9)
    dump_put = next(i for i, n in enumerate(seam.puts) if "/pysyncobj/" in n)
    assert any("/log/" in n for n in seam.puts[dump_put + 1 :]), "the purge slot must follow the dump"
    assert j.engine.purge_boundary().index == 9
    dump.write_bytes(b"at 30")
    j.deleteEntriesTo(20)
    assert [d.first for d in j.dumps.store.dumps()] == [30]  # the one for 10 was collected after the purge
    j._destroy()


def test_no_purge_without_the_dump_in_the_store(tmp_path):
    seam = Recorder(fail="/pysyncobj/")
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    fill(j, 30)
    dump.write_bytes(b"at 10")
    with pytest.raises(StorageIOError):
        j.deleteEntriesTo(9)
    assert j.engine.purge_boundary() is None and j.engine.first_index() == 1 and len(j) == 30
    dump.unlink()
    seam.fail = None
    with pytest.raises(FileNotFoundError, match="refusing to purge"):
        j.deleteEntriesTo(9)
    assert j.engine.purge_boundary() is None
    j._destroy()


def test_open_puts_the_dump_that_goes_with_the_log_in_place(tmp_path):
    seam = Recorder()
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    fill(j, 30)
    dump.write_bytes(b"at 10")
    j.deleteEntriesTo(9)
    dump.write_bytes(b"at 20, never stored: a crash before its upload")
    j._destroy()
    gets = seam.gets
    j = open_on(seam, dump)
    assert dump.read_bytes() == b"at 10" and j[0][1] == 10  # the store's dump, which goes with the log
    j._destroy()
    assert seam.gets == gets + 1  # one GET (the local copy differed)
    j = open_on(seam, dump)
    assert seam.gets == gets + 1  # the same bytes locally: no download
    j._destroy()
    # a log that holds the whole history: a local dump would make PySyncObj clear it, so it goes
    j = open_on(seam, dump, prefix="node2")
    fill(j, 5)
    j._destroy()
    dump.write_bytes(b"a dump from elsewhere")
    open_on(seam, dump, prefix="node2")._destroy()
    assert not dump.exists()


def test_open_refuses_a_purged_log_without_its_dump(tmp_path):
    seam = Recorder()
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    fill(j, 30)
    dump.write_bytes(b"at 10")
    j.deleteEntriesTo(9)
    j._destroy()
    seam.delete([d.name for d in seam.list("node1/pysyncobj/")])  # the dump is lost
    with pytest.raises(CorruptionError, match="no PySyncObj dump object with first=10") as err:
        open_on(seam, dump)
    assert err.value.path == "node1/pysyncobj/" and err.value.index == 10


def test_clear_requires_the_dump_in_the_store(tmp_path):
    seam = Recorder()
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    fill(j, 10)
    dump.write_bytes(b"a dump the store has never seen")
    with pytest.raises(RuntimeError, match="not in the object store"):
        j.clear()
    assert len(j) == 10 and j.engine.last_index() == 10
    j.dumps.save_payload(9, dump.read_bytes())
    j.clear()
    assert len(j) == 0
    j._destroy()


def _pysyncobj_dump(data: Any) -> bytes:
    """``data`` in PySyncObj's own dump file format (a gzip'd pickle)."""
    import gzip
    import io

    from pysyncobj import pickle as pspickle

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as g:
        pspickle.dump(data, g)
    return buf.getvalue()


class _Inner:
    """A stand-in for PySyncObj's serializer: the received dump is written on the last chunk."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setTransmissionData(self, data: Any) -> bool:
        with open(self.path, "wb") as f:
            f.write(data)
        return True

    def deserialize(self) -> Any:
        raise AssertionError("deserialize() loads the state into the application: never call it to store a dump")

    def checkSerializing(self) -> Any:
        return (0, None)


def test_a_received_dump_is_stored_before_pysyncobj_may_load_it(tmp_path):
    seam = Recorder(fail="/pysyncobj/")
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    ser = UploadingSerializer(_Inner(str(dump)), j.dumps)
    assert ser.checkSerializing() == (0, None)  # everything else goes to the wrapped serializer
    snapshot = _pysyncobj_dump(({"state": 1}, (b"c", 8, 2), (b"b", 7, 2), set()))
    assert ser.setTransmissionData(snapshot) is False  # not in the store: not complete, not loaded
    seam.fail = None
    assert ser.setTransmissionData(snapshot) is True
    assert [d.first for d in j.dumps.store.dumps()] == [7]  # the journal restarts at the entry before the last
    j.clear()  # allowed now
    j._destroy()


def test_sidecar_refuses_the_engines_own_folders():
    e = ObjectStoreEngine(MemoryStore(), "p")
    assert sidecar(e, "pysyncobj").folder == "p/pysyncobj/"
    for bad in ("log", "manifest", "a/b", "", "Upper"):
        with pytest.raises(ValueError, match="folder"):
            sidecar(e, bad)
    with pytest.raises(TypeError, match="ObjectStoreEngine"):
        sidecar(InMemoryEngine(), "x")  # type: ignore[arg-type]
    e.close()


# ------------------------------------------- custom serializers with a dump in the store


def test_a_received_custom_dump_never_runs_the_applications_deserializer(tmp_path):
    """PySyncObj's deserialize() runs SyncObjConf(deserializer=), which loads the state into
    the application: storing a received dump must not call it (the upload may fail)."""
    import pickle

    from pysyncobj.serializer import Serializer

    app = {"state": "old"}

    def ser(fn: str, data: Any) -> None:
        with open(fn, "wb") as f:
            pickle.dump((app["state"], data), f)

    def deser(fn: str) -> Any:
        with open(fn, "rb") as f:
            st, data = pickle.load(f)
        app["state"] = st
        return data

    seam = Recorder()
    dump = tmp_path / "dump"
    j = open_on(seam, dump)
    blob = pickle.dumps(("NEW", ((b"x", 500, 3), (b"y", 499, 3), None)))
    for fail in ("/pysyncobj/", None):
        seam.fail = fail
        up = UploadingSerializer(Serializer(str(dump), 1 << 20, False, ser, deser, None), j.dumps)
        assert up.setTransmissionData((blob, True, True)) is False  # unreadable without the user's code
        assert app["state"] == "old"
    assert j.dumps.store.dumps() == []
    j._destroy()


def test_an_object_store_journal_refuses_custom_serializers_at_setup(tmp_path):
    def ser(fn: str, data: Any) -> None:
        raise AssertionError("never called")

    def deser(fn: str) -> Any:
        raise AssertionError("never called")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dump = str(tmp_path / "dump")
    conf = SyncObjConf(
        journalFile=segwal_journal("memory://custom-ser/n1"), fullDumpFile=dump, serializer=ser, deserializer=deser
    )
    with pytest.raises(ValueError, match=r"serializer=None, deserializer=None"):
        _Obj(f"127.0.0.1:{port}", [], conf)
    assert ObjectStoreEngine.from_url("memory://custom-ser/n1", readonly=True).last_index() == 0  # nothing opened
    seam = Recorder()
    conf = SyncObjConf(
        journalFile=segwal_journal(lambda: ObjectStoreEngine(seam, "n")),
        fullDumpFile=dump,
        serializer=ser,
        deserializer=deser,
    )
    with pytest.raises(ValueError, match=r"serializer=None, deserializer=None"):
        _Obj(f"127.0.0.1:{port}", [], conf)
    ObjectStoreEngine(seam, "n").close()  # the refused journal's engine was closed (its lease is free)
