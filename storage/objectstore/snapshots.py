"""Snapshot files for the object-store engine: write one to, or read one from, a local path or an object URL.

The bytes are segwal's snapshot format (:mod:`segwal.kv.snapshot`, the same
files ``WalEngine.snapshot`` writes), so snapshots move between engines.  A
target with a scheme (``s3://bucket/key``, ``file:///...``, ``memory://...``)
is an object, anything else a local path.
"""

from __future__ import annotations

import os
import tempfile

from segwal.errors import CorruptionError
from segwal.fs import OsFileSystem
from segwal.kv.snapshot import CHUNK_PAIRS, read_snapshot, write_snapshot
from segwal.storage.objectstore.io import Store
from segwal.storage.objectstore.layout import checkpoint_name
from segwal.storage.objectstore.seam import as_seam
from segwal.storage.objectstore.urls import has_scheme, store_from_url
from segwal.storage.objectstore.view import encode_checkpoint
from segwal.types import LogId

__all__ = ["write_to", "read_from", "upload_checkpoint"]


def _chunks(items: list[tuple[bytes, bytes]]) -> list[tuple[list[bytes], list[bytes]]]:
    return [([k for k, _ in items[i : i + CHUNK_PAIRS]], [v for _, v in items[i : i + CHUNK_PAIRS]])
            for i in range(0, len(items), CHUNK_PAIRS)]


def write_to(dest: str, applied: LogId, items: list[tuple[bytes, bytes]]) -> None:
    """Write a snapshot of ``items`` at ``applied`` to ``dest`` (path or URL).

    Durable on return: a file is fsynced and renamed into place; an object is
    acknowledged by its store (one PUT, so never partial).  O(bytes).
    """
    if not has_scheme(dest):
        write_snapshot(OsFileSystem(), os.path.abspath(dest), applied, len(items), iter(_chunks(items)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snapshot")
        write_snapshot(OsFileSystem(), path, applied, len(items), iter(_chunks(items)))
        with open(path, "rb") as f:
            data = f.read()
    store, key = store_from_url(dest)
    as_seam(store).put(key, data)


def read_from(src: str) -> tuple[LogId, dict[bytes, bytes]]:
    """Read and verify a whole snapshot from ``src`` (path or URL): ``(applied, data)``.

    Raises CorruptionError for a damaged snapshot, FileNotFoundError when it
    does not exist.  O(bytes).
    """
    if not has_scheme(src):
        applied, _n, chunks = read_snapshot(OsFileSystem(), os.path.abspath(src))
    else:
        store, key = store_from_url(src)
        obj = as_seam(store).get(key)
        if obj is None:
            raise FileNotFoundError(f"no snapshot object at {src}")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "snapshot")
            with open(path, "wb") as f:
                f.write(obj.data)
            applied, _n, chunks = read_snapshot(OsFileSystem(), path)
    return applied, {k: v for keys, values in chunks for k, v in zip(keys, values)}


def upload_checkpoint(io: Store, epoch: int, kv: dict[bytes, bytes], applied: LogId) -> int:
    """Write ``kv`` at ``applied`` as a checkpoint object under a fresh unique name; return its ``u``.

    Durable on return (acknowledged); not yet part of the state: an INSTALL
    slot naming it is the commit point.  O(bytes).
    """
    uniq = int.from_bytes(os.urandom(8), "little")
    wid = os.urandom(16)
    name = checkpoint_name(io.prefix, uniq)
    if io.create(name, encode_checkpoint(epoch, wid, kv, applied), wid.hex()) is not None:
        raise CorruptionError("a fresh checkpoint name is taken", path=name)
    return uniq
