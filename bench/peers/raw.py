"""The disk limit: pre-encoded records written with ``os.write``/``os.pwrite`` and one ``fdatasync`` per batch.

Raw records are a ``<IIQQ`` header (payload length, crc32c(payload), index,
term) then the payload, 280 bytes per entry; key/value records are a ``<III``
header (key length, value length or ``0xFFFFFFFF`` for a delete, crc32c) then
key and value.  The encoding runs in :meth:`prepare`, outside the timed loop.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from .base import BasePeer, Change, Entry

_RAW_HEADER = struct.Struct("<IIQQ")
_KV_HEADER = struct.Struct("<III")  # key length, value length (0xFFFFFFFF = delete), crc
_DELETED = 0xFFFFFFFF


def encode_raw(batch: Sequence[Entry]) -> bytes:
    """The baseline's raw record: ``<IIQQ`` header + payload, per entry, joined."""
    import crc32c

    pack = _RAW_HEADER.pack
    crc = crc32c.crc32c
    parts: list[bytes] = []
    for e in batch:
        p = e.payload
        parts.append(pack(len(p), crc(p), e.index, e.term))
        parts.append(p)
    return b"".join(parts)


def encode_raw_kv(changes: Sequence[Change]) -> bytes:
    import crc32c

    parts: list[bytes] = []
    for k, v in changes:
        body = k + (v or b"")
        parts.append(_KV_HEADER.pack(len(k), _DELETED if v is None else len(v), crc32c.crc32c(body)))
        parts.append(body)
    return b"".join(parts)


class RawAppendPeer(BasePeer):
    """The disk limit: pre-encoded bytes, ``os.write`` + ``os.fdatasync`` per batch."""

    name = "raw"
    label = "RAW LIMIT: os.write + fdatasync (append)"
    kind = "raw"
    caps = frozenset({"append", "kv"})
    module = "crc32c"

    def __init__(self) -> None:
        self.fd = -1

    def open(self, path: str) -> None:
        self.fd = os.open(os.path.join(path, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def prepare(self, batch: list[Entry]) -> bytes:
        return encode_raw(batch)

    def append(self, prepared: bytes) -> None:
        os.write(self.fd, prepared)
        os.fdatasync(self.fd)

    def kv_prepare(self, changes: list[Change]) -> bytes:
        return encode_raw_kv(changes)

    kv_apply = append


class RawPrezeroedPeer(RawAppendPeer):
    """``os.pwrite`` into a file filled with zeros and synced beforehand."""

    name = "raw_prezeroed"
    label = "raw: pwrite into a pre-zeroed file + fdatasync"
    caps = frozenset({"append"})

    def __init__(self) -> None:
        super().__init__()
        self.off = 0

    def open(self, path: str) -> None:
        self.fd = os.open(os.path.join(path, "raw.log"), os.O_RDWR | os.O_CREAT, 0o644)
        self.off = 0

    def reserve(self, nbytes: int) -> None:
        chunk = b"\0" * (1 << 20)
        size = os.fstat(self.fd).st_size
        want = nbytes + (1 << 20)
        while size < want:
            size += os.pwrite(self.fd, chunk, size)
        os.fsync(self.fd)

    def append(self, prepared: bytes) -> None:
        self.off += os.pwrite(self.fd, prepared, self.off)
        os.fdatasync(self.fd)
