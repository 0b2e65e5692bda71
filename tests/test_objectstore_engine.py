"""``ObjectStoreEngine`` beyond the contract: read-only views, URLs and options, snapshots, damage, bad input.

Mostly on MemoryStore (quick); the URL and snapshot paths also on the
session's SeaweedFS.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from segwal.errors import CorruptionError, EngineClosedError, StaleViewError
from segwal.types import Entry, HardState, LogId, VotedFor

obstore = pytest.importorskip("obstore")
from obstore.store import LocalStore, MemoryStore  # noqa: E402

from segwal.storage import ObjectStoreEngine  # noqa: E402
from segwal.storage.objectstore.layout import slot_name  # noqa: E402
from segwal.storage.objectstore.seam import ObstoreAdapter  # noqa: E402
from segwal.storage.objectstore.urls import has_scheme, parse_store_options, split_url, store_from_url  # noqa: E402


def batch(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, f"{i}/{term}".encode()) for i in range(first, last + 1)]


def names(store: Any, prefix: str) -> list[str]:
    return sorted(m["path"] for chunk in obstore.list(store, prefix) for m in chunk)


# -- read-only views ----------------------------------------------------------------


def test_readonly_never_writes_and_never_fences_the_writer() -> None:
    store = MemoryStore()
    writer = ObjectStoreEngine(store, "n", compact_slots=4)
    writer.persist_entries(batch(1, 5))
    writer.save_hard_state(HardState(1, VotedFor(2, 1)))
    before = names(store, "n/")
    reader = ObjectStoreEngine(store, "n", readonly=True)
    assert names(store, "n/") == before
    assert reader.get_entries_range(1, 10) == batch(1, 5)
    assert reader.load_hard_state() == HardState(1, VotedFor(2, 1))
    for call in (lambda: reader.persist_entries(batch(6, 6)), lambda: reader.insert(b"k", b"v"),
                 lambda: reader.save_hard_state(HardState(2)), reader.compact):
        with pytest.raises(PermissionError):
            call()
    writer.persist_entries(batch(6, 6))  # not fenced
    assert names(store, "n/") != before
    reader.refresh()
    assert reader.last_index() == 6
    reader.close()
    writer.close()


def test_readonly_view_under_compaction_reports_stale_then_refreshes() -> None:
    store = MemoryStore()
    writer = ObjectStoreEngine(store, "n", compact_slots=1000)
    for i in range(1, 20):
        writer.persist_entries(batch(i, i))
    reader = ObjectStoreEngine(store, "n", readonly=True, cache_bytes=0)
    writer.purge_logs(LogId(1, 10))  # compacts: the slots the reader indexed are deleted
    with pytest.raises(StaleViewError):
        reader.entry(15)
    reader.refresh()
    assert reader.get_entries_range(1, 30) == batch(11, 19)
    assert reader.purge_boundary() == LogId(1, 10)
    writer.close()
    reader.close()


def test_readonly_on_an_empty_prefix_is_empty_and_writes_nothing() -> None:
    store = MemoryStore()
    with ObjectStoreEngine(store, "none", readonly=True) as reader:
        assert reader.last_index() == 0 and reader.load_hard_state() is None
    assert names(store, "") == []


# -- damage ---------------------------------------------------------------------------


def test_a_damaged_slot_is_corruption_naming_the_object() -> None:
    store = MemoryStore()
    with ObjectStoreEngine(store, "n", compact_slots=1000) as e:
        e.persist_entries(batch(1, 3))
        e.persist_entries(batch(4, 6))
    name = slot_name("n/", 3)
    data = bytearray(obstore.get(store, name).bytes())
    data[-5] ^= 0xFF  # a payload byte
    obstore.put(store, name, bytes(data))
    with pytest.raises(CorruptionError) as info:
        ObjectStoreEngine(store, "n")
    assert info.value.path == name and info.value.offset is not None


def test_a_missing_slot_in_the_middle_is_corruption() -> None:
    store = MemoryStore()
    with ObjectStoreEngine(store, "n", compact_slots=1000) as e:
        for i in range(1, 5):
            e.persist_entries(batch(i, i))
    obstore.delete(store, slot_name("n/", 3))
    with pytest.raises(CorruptionError):
        ObjectStoreEngine(store, "n")


def test_a_damaged_chunk_entry_is_corruption_with_its_index() -> None:
    store = MemoryStore()
    with ObjectStoreEngine(store, "n", compact_slots=2) as e:
        e.persist_entries(batch(1, 4))
        e.persist_entries(batch(5, 8))
        e.compact()
    chunk = [n for n in names(store, "n/chunk/")][0]
    data = bytearray(obstore.get(store, chunk).bytes())
    data[-3] ^= 0x01
    obstore.put(store, chunk, bytes(data))
    with ObjectStoreEngine(store, "n", cache_bytes=0) as again:
        assert again.entry(1) == batch(1, 1)[0]
        with pytest.raises(CorruptionError) as info:
            again.entry(8)
        assert info.value.index == 8 and info.value.path == chunk


# -- compaction and garbage -----------------------------------------------------------


def test_compaction_keeps_fences_and_bounds_the_objects() -> None:
    store = MemoryStore()
    for _ in range(3):
        with ObjectStoreEngine(store, "n", compact_slots=8, chunk_bytes=4096) as e:
            start = e.last_index() + 1
            for i in range(start, start + 40):
                e.persist_entries([Entry(i, 1, bytes(200))])
    with ObjectStoreEngine(store, "n") as e:
        assert e.last_index() == 120 and e.get_entries_range(1, 120) == [Entry(i, 1, bytes(200)) for i in range(1, 121)]
    listed = names(store, "n/")
    slots = [n for n in listed if "/log/" in n]
    assert len(slots) <= 4 + 8  # the fences of the opens, and the slots after the last manifest
    live_manifests = [m for chunk in obstore.list(store, "n/manifest/") for m in chunk if m["size"] > 0]
    assert len(live_manifests) <= 2


def test_reopen_after_compaction_reads_chunks_cold() -> None:
    store = MemoryStore()
    with ObjectStoreEngine(store, "n", compact_slots=16) as e:
        for i in range(1, 200, 4):
            e.persist_entries(batch(i, i + 3))
        e.compact()
    with ObjectStoreEngine(store, "n", cache_bytes=0) as again:
        assert again.entry(77) == batch(77, 77)[0]
        assert again.get_entries_range(50, 150) == batch(50, 150)


# -- snapshots --------------------------------------------------------------------------


def _with_state(e: ObjectStoreEngine) -> None:
    e.persist_entries(batch(1, 5))
    e.apply([(b"a", b"1"), (b"b", b"2")], applied=LogId(1, 5))


def test_snapshot_to_a_path_and_install_from_it(tmp_path: Path) -> None:
    with ObjectStoreEngine(MemoryStore(), "a") as src:
        _with_state(src)
        assert src.snapshot(str(tmp_path / "snap")) == LogId(1, 5)
    store = MemoryStore()
    with ObjectStoreEngine(store, "b") as dst:
        dst.save_hard_state(HardState(3))
        dst.persist_entries(batch(1, 9, term=2))
        dst.insert(b"old", b"x")
        assert dst.install_snapshot(tmp_path / "snap") == LogId(1, 5)
        assert dst.get(b"a") == b"1" and dst.get(b"old") is None and dst.last_applied() == LogId(1, 5)
        assert dst.purge_boundary() == LogId(1, 5) and dst.last_index() == 5 and dst.entry(5) is None
    with ObjectStoreEngine(store, "b") as again:
        assert again.get(b"b") == b"2" and again.get(b"old") is None and again.load_hard_state() == HardState(3)
        assert again.purge_boundary() == LogId(1, 5) and again.first_index() == 6


def test_snapshot_to_a_url_and_install_from_it() -> None:
    name = f"snaps-{uuid.uuid4().hex[:8]}"
    with ObjectStoreEngine(MemoryStore(), "a") as src:
        _with_state(src)
        src.snapshot(f"memory://{name}/snapshots/s1")
    with ObjectStoreEngine(MemoryStore(), "b") as dst:
        assert dst.install_snapshot(f"memory://{name}/snapshots/s1") == LogId(1, 5)
        assert dst.keys() == [b"a", b"b"]


def test_snapshot_without_last_applied_is_a_value_error(tmp_path: Path) -> None:
    with ObjectStoreEngine(MemoryStore(), "a") as e:
        with pytest.raises(ValueError, match="last_applied"):
            e.snapshot(str(tmp_path / "x"))


def test_snapshot_on_seaweedfs(seaweedfs: Any, tmp_path: Path) -> None:
    opts = seaweedfs.url_options()
    base = f"s3://{seaweedfs.bucket}/snap-{uuid.uuid4().hex[:8]}"
    with ObjectStoreEngine.from_url(f"{base}/node", **opts) as src:
        _with_state(src)
        src.snapshot(str(tmp_path / "s"))
    with ObjectStoreEngine.from_url(f"{base}/other", **opts) as dst:
        dst.install_snapshot(str(tmp_path / "s"))
        assert dst.get(b"a") == b"1"
    with ObjectStoreEngine.from_url(f"{base}/other", readonly=True, **opts) as ro:
        assert ro.get(b"b") == b"2" and ro.last_applied() == LogId(1, 5)


# -- URLs, options and bad input ---------------------------------------------------------


def test_urls_and_options(tmp_path: Path) -> None:
    assert split_url("s3://bucket/a/b/") == ("s3", "bucket", "a/b")
    assert split_url(f"file://{tmp_path}") == ("file", str(tmp_path), "")
    assert split_url("memory://") == ("memory", "", "")
    assert has_scheme("gs://b") and not has_scheme("/tmp/x") and not has_scheme("relative/path")
    assert parse_store_options(["endpoint=http://h:1", "client.allow_http=true", "a=b=c"]) == {
        "endpoint": "http://h:1", "client.allow_http": "true", "a": "b=c"}
    for bad in ("nothing", "ftp://x/y", "s3:///prefix", "file://relative"):
        with pytest.raises(ValueError, match="url"):
            split_url(bad)
    with pytest.raises(ValueError, match="not key=value"):
        parse_store_options(["novalue"])
    with pytest.raises(ValueError, match="retry"):
        store_from_url("s3://b/p", **{"retry.nonsense": "1"})
    store, prefix = store_from_url("s3://b/p", endpoint="http://127.0.0.1:1", **{"client.allow_http": "true"})
    assert type(store).__name__ == "S3Store" and prefix == "p"


def test_from_url_file_and_memory(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/node"
    with ObjectStoreEngine.from_url(url) as e:
        e.persist_entries(batch(1, 2))
    with ObjectStoreEngine.from_url(url) as e:
        assert e.last_index() == 2
    name = f"memory://m-{uuid.uuid4().hex[:8]}/node"
    with ObjectStoreEngine.from_url(name, engine_options={"compact_slots": 2}) as e:
        e.persist_entries(batch(1, 3))
    with ObjectStoreEngine.from_url(name) as e:
        assert e.get_entries_range(1, 3) == batch(1, 3)


def test_bad_arguments_raise_naming_them() -> None:
    store = MemoryStore()
    with pytest.raises(TypeError, match="store"):
        ObjectStoreEngine(object())
    with pytest.raises(TypeError, match="prefix"):
        ObjectStoreEngine(store, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="readonly"):
        ObjectStoreEngine(store, readonly=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        ObjectStoreEngine(store, retries=-1)
    with pytest.raises(ValueError, match="compact_slots"):
        ObjectStoreEngine(store, compact_slots=0)
    assert names(store, "") == []  # nothing written by a refused open
    e = ObjectStoreEngine(store, "n")
    with pytest.raises(TypeError, match="index"):
        e.entry("1")  # type: ignore[arg-type]
    e.close()
    with pytest.raises(EngineClosedError):
        e.last_index()


def test_the_seam_adapter_on_localstore(tmp_path: Path) -> None:
    seam = ObstoreAdapter(LocalStore(str(tmp_path), mkdir=True))
    seam.put("a/x", b"12345", create=True, write_id="w1")  # LocalStore keeps no metadata: still accepted
    from segwal.storage.objectstore.seam import ObjectExistsError

    with pytest.raises(ObjectExistsError):
        seam.put("a/x", b"other", create=True, write_id="w2")
    got = seam.get("a/x")
    assert got is not None and got.data == b"12345"
    assert seam.get_range("a/x", 1, 3) == b"23"
    assert seam.get("a/none") is None and seam.get_range("a/none", 0, 1) is None and seam.head("a/none") is None
    assert [i.name for i in seam.list("a/")] == ["a/x"]
    seam.delete(["a/x", "a/none"])
    assert seam.list("a/") == []


def test_bench_cloud_quick_smoke(seaweedfs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from segwal.bench.runner import main

    assert main(["--cloud", "--quick", "--endpoint", seaweedfs.endpoint, "--bucket", seaweedfs.bucket,
                 "--entries", "2000"]) == 0
    out = capsys.readouterr().out
    assert "durable append B=1024" in out and "reopen_after_compaction_s" in out


def test_5xx_replies_of_a_real_http_endpoint_are_storage_io_errors() -> None:
    """A local HTTP server answering 503 to everything: the adapter reports StorageIOError."""
    import threading
    from datetime import timedelta
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from obstore.store import S3Store

    from segwal.errors import StorageIOError

    class Unavailable(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _reply

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = S3Store("b", endpoint=f"http://127.0.0.1:{server.server_address[1]}", region="us-east-1",
                        access_key_id="x", secret_access_key="y", client_options={"allow_http": True},
                        retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=2),
                                      "backoff": {"init_backoff": timedelta(milliseconds=10),
                                                  "max_backoff": timedelta(milliseconds=20), "base": 2}})
        with pytest.raises(StorageIOError):
            ObjectStoreEngine(store, "n", retries=1, retry_delay=0.0)
        seam = ObstoreAdapter(store)
        for call in (lambda: seam.get("x"), lambda: seam.put("x", b"1", create=True), lambda: seam.list("n/"),
                     lambda: seam.get_range("x", 0, 1), lambda: seam.head("x"), lambda: seam.delete(["x"])):
            with pytest.raises(StorageIOError):
                call()
    finally:
        server.shutdown()
        server.server_close()


def test_format_versions_and_round_trips() -> None:
    """Objects and manifests round-trip; a newer version is FormatVersionError naming the object."""
    from segwal.errors import FormatVersionError
    from segwal.storage.objectstore.layout import (
        K_PURGE,
        ChunkRef,
        Manifest,
        decode_manifest,
        decode_object_header,
        encode_logid,
        encode_manifest,
        encode_object,
    )
    from segwal.wal.format import crc32c

    m = Manifest(mid=7, epoch=3, write_id=bytes(range(16)), claim=True, replay_after=40, last_index=99,
                 boundary=LogId(2, 50), applied=LogId(2, 60), hard_state=bytes(44), checkpoint=5,
                 checkpoint_size=123, chunks=(ChunkRef(51, 49, 40, 9, 4096),))
    raw = encode_manifest(m)
    assert decode_manifest(raw, "m") == m
    newer = bytearray(raw)
    newer[4] = 9
    newer[-4:] = crc32c(bytes(newer[:-4])).to_bytes(4, "little")
    with pytest.raises(FormatVersionError) as info:
        decode_manifest(bytes(newer), "m")
    assert info.value.path == "m" and info.value.offset == 4
    with pytest.raises(CorruptionError):
        decode_manifest(raw[:-1] + bytes([raw[-1] ^ 1]), "m")
    obj, _crc = encode_object(K_PURGE, 3, 12, bytes(16), encode_logid(LogId(1, 2)))
    hdr = decode_object_header(obj, "o")
    assert (hdr.kind, hdr.epoch, hdr.seq, hdr.aux) == (K_PURGE, 3, 12, encode_logid(LogId(1, 2)))
    newer_obj = bytearray(obj)
    newer_obj[4] = 9
    newer_obj[52:56] = crc32c(bytes(newer_obj[:52])).to_bytes(4, "little")
    with pytest.raises(FormatVersionError):
        decode_object_header(bytes(newer_obj), "o")
