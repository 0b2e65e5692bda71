"""The in-bucket format of the object-store engine: object names, object header, records and manifest, as pure functions over bytes.

``docs/format-objectstore.md`` is the byte-by-byte specification; the tables
below repeat it.  All integers are little-endian.  Object names under the
engine's prefix (``<id>`` = 20 decimal digits, so that names list in numeric
order; ``<u>`` = 16 lower-case hex digits of a random u64)::

    manifest/<id>.manifest      the manifest, id 1, 2, ... (create-if-absent)
    log/<id>.slot               slot <id>: one record (create-if-absent)
    chunk/<first index>-<u>.chunk   compacted entries (unique name)
    kv/<u>.kv                   a key/value checkpoint (unique name)

Object header (56 bytes, at offset 0 of every slot, chunk and checkpoint)::

     0  magic      4s  b"SWOB"
     4  version    u16 OBJECT_VERSION
     6  kind       u16 K_* below
     8  epoch      u64 writer epoch of the writer that made the object
    16  seq        u64 slot number (slots), first log index (chunks), 0 (checkpoints)
    24  write_id   16s unique id of this write (also in metadata where the store has it)
    40  aux_len    u32 bytes of the aux block that follows the header
    44  aux_crc    u32 CRC32C of the aux block
    48  reserved   u32 0
    52  header_crc u32 CRC32C of bytes 0..51

Then the aux block, zero-padded to a multiple of 8, then frames of
``segwal.wal.format`` chained from ``header_crc`` (ENTRIES, TRUNCATE, KV).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from segwal.errors import CorruptionError, FormatVersionError
from segwal.types import LogId
from segwal.wal.format import align8, crc32c

__all__ = [
    "OBJECT_VERSION",
    "MANIFEST_VERSION",
    "MANIFEST_MAGIC",
    "OBJECT_HEADER_SIZE",
    "K_FENCE",
    "K_ENTRIES",
    "K_TRUNCATE",
    "K_PURGE",
    "K_HARDSTATE",
    "K_KV",
    "K_RESET",
    "K_INSTALL",
    "K_CHUNK",
    "K_CHECKPOINT",
    "KIND_NAMES",
    "ObjectHeader",
    "ChunkRef",
    "Manifest",
    "manifest_name",
    "slot_name",
    "chunk_name",
    "checkpoint_name",
    "parse_id",
    "encode_object",
    "decode_object_header",
    "encode_logid",
    "decode_logid",
    "encode_install",
    "decode_install",
    "encode_manifest",
    "decode_manifest",
]

OBJECT_VERSION: Final = 1
MANIFEST_VERSION: Final = 1
_OBJ_MAGIC: Final = b"SWOB"
MANIFEST_MAGIC: Final = b"SWOM"

K_FENCE: Final = 1
K_ENTRIES: Final = 2
K_TRUNCATE: Final = 3
K_PURGE: Final = 4
K_HARDSTATE: Final = 5
K_KV: Final = 6
K_RESET: Final = 7
K_INSTALL: Final = 8
K_CHUNK: Final = 16
K_CHECKPOINT: Final = 17
KIND_NAMES: Final = {
    K_FENCE: "fence", K_ENTRIES: "entries", K_TRUNCATE: "truncate", K_PURGE: "purge",
    K_HARDSTATE: "hard state", K_KV: "kv", K_RESET: "reset", K_INSTALL: "install",
    K_CHUNK: "chunk", K_CHECKPOINT: "kv checkpoint",
}

_HEADER: Final = struct.Struct("<4sHHQQ16sIII")  # crc appended separately
OBJECT_HEADER_SIZE: Final = _HEADER.size + 4  # 56
_LOGID: Final = struct.Struct("<QQ")
_INSTALL: Final = struct.Struct("<QQQ")  # applied term, applied index, checkpoint u
assert OBJECT_HEADER_SIZE == 56


# -- names ----------------------------------------------------------------------


def manifest_name(prefix: str, mid: int) -> str:
    """``<prefix>manifest/<20 digits>.manifest``.  O(1)."""
    return f"{prefix}manifest/{mid:020d}.manifest"


def slot_name(prefix: str, seq: int) -> str:
    """``<prefix>log/<20 digits>.slot``.  O(1)."""
    return f"{prefix}log/{seq:020d}.slot"


def chunk_name(prefix: str, first_index: int, uniq: int) -> str:
    """``<prefix>chunk/<20 digits>-<16 hex>.chunk``.  O(1)."""
    return f"{prefix}chunk/{first_index:020d}-{uniq:016x}.chunk"


def checkpoint_name(prefix: str, uniq: int) -> str:
    """``<prefix>kv/<16 hex>.kv``.  O(1)."""
    return f"{prefix}kv/{uniq:016x}.kv"


def parse_id(name: str, folder: str, suffix: str) -> int | None:
    """The 20-digit id of a manifest or slot name (``folder``/``suffix`` as above), else ``None``.  O(len)."""
    base = name.rsplit("/", 2)
    if len(base) < 2 or base[-2] != folder or not base[-1].endswith(suffix):
        return None
    digits = base[-1][: -len(suffix)]
    if len(digits) != 20 or not digits.isdigit():
        return None
    return int(digits)


# -- object header ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    """A decoded object header with its aux block; ``body`` is where the frames start."""

    kind: int
    epoch: int
    seq: int
    write_id: bytes
    aux: bytes
    header_crc: int
    body: int


def encode_object(kind: int, epoch: int, seq: int, write_id: bytes, aux: bytes = b"") -> tuple[bytes, int]:
    """The header and padded aux block of an object; returns ``(bytes, header_crc)``.

    Frames go right after the returned bytes, the first chained from
    ``header_crc``.  Pure, O(len(aux)).
    """
    raw = _HEADER.pack(_OBJ_MAGIC, OBJECT_VERSION, kind, epoch, seq, write_id, len(aux), crc32c(aux), 0)
    hcrc = crc32c(raw)
    pad = align8(len(aux)) - len(aux)
    return raw + hcrc.to_bytes(4, "little") + aux + bytes(pad), hcrc


def decode_object_header(buf: bytes | memoryview, name: str) -> ObjectHeader:
    """Decode and check the header (and aux block) of the object ``name``.

    Raises:
        CorruptionError: too short, bad magic, bad checksums.
        FormatVersionError: written by a newer segwal.
    Pure, O(len(aux)).
    """
    if len(buf) < OBJECT_HEADER_SIZE:
        raise CorruptionError(f"object is {len(buf)} bytes, shorter than its header", path=name, offset=0)
    magic, version, kind, epoch, seq, wid, aux_len, aux_crc, _r = _HEADER.unpack_from(buf, 0)
    if magic != _OBJ_MAGIC:
        raise CorruptionError(f"bad object magic {bytes(magic)!r}", path=name, offset=0)
    hcrc = int.from_bytes(buf[52:56], "little")
    if crc32c(bytes(buf[:52])) != hcrc:
        raise CorruptionError("object header checksum mismatch", path=name, offset=52)
    if version > OBJECT_VERSION:
        raise FormatVersionError(f"object version {version} is newer than {OBJECT_VERSION}", path=name, offset=4)
    end = OBJECT_HEADER_SIZE + aux_len
    if end > len(buf):
        raise CorruptionError(f"aux block of {aux_len} bytes overruns the object", path=name, offset=40)
    aux = bytes(buf[OBJECT_HEADER_SIZE:end])
    if crc32c(aux) != aux_crc:
        raise CorruptionError("aux block checksum mismatch", path=name, offset=OBJECT_HEADER_SIZE)
    return ObjectHeader(kind, epoch, seq, bytes(wid), aux, hcrc, OBJECT_HEADER_SIZE + align8(aux_len))


def encode_logid(lid: LogId) -> bytes:
    """16 bytes: term, index.  Pure."""
    return _LOGID.pack(lid.term, lid.index)


def decode_logid(aux: bytes, name: str) -> LogId:
    """The LogId of a PURGE record's aux block.  CorruptionError when it is not 16 bytes."""
    if len(aux) != _LOGID.size:
        raise CorruptionError(f"purge record aux block is {len(aux)} bytes, expected 16", path=name, offset=56)
    term, index = _LOGID.unpack(aux)
    return LogId(term, index)


def encode_install(applied: LogId, uniq: int) -> bytes:
    """24 bytes of an INSTALL record: the snapshot's LogId and the checkpoint's name id.  Pure."""
    return _INSTALL.pack(applied.term, applied.index, uniq)


def decode_install(aux: bytes, name: str) -> tuple[LogId, int]:
    """``(applied, checkpoint u)`` of an INSTALL record.  CorruptionError when not 24 bytes."""
    if len(aux) != _INSTALL.size:
        raise CorruptionError(f"install record aux block is {len(aux)} bytes, expected 24", path=name, offset=56)
    term, index, uniq = _INSTALL.unpack(aux)
    return LogId(term, index), uniq


# -- manifest ---------------------------------------------------------------------

_MAN: Final = struct.Struct("<4sHHQQ16sQQQQQQQQII44s4x")
_CHUNK_REF: Final = struct.Struct("<QIIQQ")
_F_HARD: Final = 1
_F_BOUNDARY: Final = 2
_F_APPLIED: Final = 4
_F_CHECKPOINT: Final = 8
_F_CLAIM: Final = 16


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A compacted chunk as the manifest lists it: entries ``first .. first+live-1`` are live.

    ``count`` entries are stored (``live <= count``: a later truncation cut
    the rest); ``size`` is the object's length in bytes.
    """

    first: int
    count: int
    live: int
    uniq: int
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """A full snapshot of what is live (see ``docs/format-objectstore.md``)."""

    mid: int = 0
    epoch: int = 0
    write_id: bytes = bytes(16)
    claim: bool = False
    replay_after: int = 0
    last_index: int = 0
    boundary: LogId | None = None
    applied: LogId | None = None
    hard_state: bytes | None = None
    checkpoint: int | None = None
    checkpoint_size: int = 0
    chunks: tuple[ChunkRef, ...] = field(default_factory=tuple)


def encode_manifest(m: Manifest) -> bytes:
    """The bytes of a manifest object.  Pure, O(number of chunks)."""
    flags = (
        (_F_HARD if m.hard_state is not None else 0)
        | (_F_BOUNDARY if m.boundary is not None else 0)
        | (_F_APPLIED if m.applied is not None else 0)
        | (_F_CHECKPOINT if m.checkpoint is not None else 0)
        | (_F_CLAIM if m.claim else 0)
    )
    b, a = m.boundary or LogId(0, 0), m.applied or LogId(0, 0)
    head = _MAN.pack(
        MANIFEST_MAGIC, MANIFEST_VERSION, flags, m.mid, m.epoch, m.write_id, m.replay_after, m.last_index,
        b.term, b.index, a.term, a.index, m.checkpoint or 0, m.checkpoint_size, len(m.chunks), 0,
        m.hard_state or bytes(44),
    )
    body = b"".join(_CHUNK_REF.pack(c.first, c.count, c.live, c.uniq, c.size) for c in m.chunks)
    raw = head + body
    return raw + crc32c(raw).to_bytes(4, "little")


def decode_manifest(data: bytes, name: str) -> Manifest:
    """Parse and check a manifest object.

    Raises:
        CorruptionError: wrong size, magic or checksum.
        FormatVersionError: a newer manifest version.
    Pure, O(number of chunks).
    """
    if len(data) < _MAN.size + 4:
        raise CorruptionError(f"manifest is {len(data)} bytes, shorter than its header", path=name, offset=0)
    fields = _MAN.unpack_from(data, 0)
    magic, version, flags, mid, epoch, wid, replay_after, last = fields[:8]
    bterm, bindex, aterm, aindex, ckpt, ckpt_size, nchunks, _r, hard = fields[8:]
    if magic != MANIFEST_MAGIC:
        raise CorruptionError(f"bad manifest magic {magic!r}", path=name, offset=0)
    if crc32c(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise CorruptionError("manifest checksum mismatch", path=name, offset=len(data) - 4)
    if version > MANIFEST_VERSION:
        raise FormatVersionError(f"manifest version {version} is newer than {MANIFEST_VERSION}", path=name, offset=4)
    if len(data) != _MAN.size + _CHUNK_REF.size * nchunks + 4:
        raise CorruptionError(f"manifest of {nchunks} chunks is {len(data)} bytes", path=name, offset=0)
    chunks = tuple(
        ChunkRef(*_CHUNK_REF.unpack_from(data, _MAN.size + i * _CHUNK_REF.size)) for i in range(nchunks)
    )
    return Manifest(
        mid=mid,
        epoch=epoch,
        write_id=wid,
        claim=bool(flags & _F_CLAIM),
        replay_after=replay_after,
        last_index=last,
        boundary=LogId(bterm, bindex) if flags & _F_BOUNDARY else None,
        applied=LogId(aterm, aindex) if flags & _F_APPLIED else None,
        hard_state=hard if flags & _F_HARD else None,
        checkpoint=ckpt if flags & _F_CHECKPOINT else None,
        checkpoint_size=ckpt_size,
        chunks=chunks,
    )

