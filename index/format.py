"""Index file format: pure functions over bytes.

One index file ``<seq>.idx`` sits beside each segment ``<seq>.wal``.  It maps
``index - base`` to the absolute offset (u32) of that entry's slot in the
segment, so ``entry(i)`` is one array lookup.  Layout::

       0  header slot A (80 bytes)
    4096  header slot B (80 bytes)
    8192  offsets: u32 little-endian, one per entry, count of them valid

Header (80 bytes)::

     0  magic        4s  b"SWIX"
     4  version      u16 FORMAT_VERSION
     6  flags        u16 bit 0: sealed (complete, final)
     8  seq          u64 segment sequence number
    16  uid          u64 segment uid (must match the segment header)
    24  base         u64 segment base index
    32  count        u64 offsets covered by ``data_hash``
    40  ckpt_seq     u64 checkpoint sequence: the valid slot with the larger wins
    48  covered_end  u32 segment offset up to which frames are reflected
    52  chain_crc    u32 header crc of the last frame before ``covered_end``
    56  data_hash    u64 xxh3_64 of the ``count`` offsets (4*count bytes)
    64  reserved     12 bytes of zero
    76  crc          u32 CRC32C of bytes 0..75

Two header slots, 4 KiB apart (never in one sector), are written alternately, so
a torn header write leaves the previous checkpoint readable.  The index is
derived data: missing or failing its checksums, it is rebuilt from its segment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import xxhash

from segwal.errors import FormatVersionError
from segwal.wal.format import FORMAT_VERSION, Buf, crc32c

__all__ = [
    "INDEX_HEADER",
    "INDEX_HEADER_SIZE",
    "SLOT_B_OFFSET",
    "OFFSETS_START",
    "FLAG_SEALED",
    "IndexHeader",
    "encode_index_header",
    "decode_index_header",
    "offsets_hash",
]

INDEX_MAGIC: Final = b"SWIX"
INDEX_HEADER: Final = struct.Struct("<4sHHQQQQQIIQ12xI")
INDEX_HEADER_SIZE: Final = INDEX_HEADER.size  # 80
SLOT_B_OFFSET: Final = 4096
OFFSETS_START: Final = 8192
FLAG_SEALED: Final = 1

assert INDEX_HEADER_SIZE == 80


@dataclass(frozen=True, slots=True)
class IndexHeader:
    """A decoded index header (its checksum matched)."""

    sealed: bool
    seq: int
    uid: int
    base: int
    count: int
    ckpt_seq: int
    covered_end: int
    chain_crc: int
    data_hash: int


def offsets_hash(data: Buf) -> int:
    """Checksum of the offsets bytes (xxh3_64).  O(len)."""
    return xxhash.xxh3_64_intdigest(data)


def encode_index_header(h: IndexHeader) -> bytes:
    """The 80 bytes of an index header."""
    raw = INDEX_HEADER.pack(
        INDEX_MAGIC,
        FORMAT_VERSION,
        FLAG_SEALED if h.sealed else 0,
        h.seq,
        h.uid,
        h.base,
        h.count,
        h.ckpt_seq,
        h.covered_end,
        h.chain_crc,
        h.data_hash,
        0,
    )
    return raw[:76] + crc32c(raw[:76]).to_bytes(4, "little")


def decode_index_header(buf: Buf, path: str, offset: int = 0) -> IndexHeader | None:
    """Decode one header slot; ``None`` if it is not a valid header (zeros, torn, damaged).

    Raises:
        FormatVersionError: a valid header written by a newer format version.
    """
    raw = bytes(buf[offset : offset + INDEX_HEADER_SIZE])
    if len(raw) < INDEX_HEADER_SIZE:
        return None
    magic, version, flags, seq, uid, base, count, ckpt, cend, chain, dhash, crc = INDEX_HEADER.unpack(raw)
    if magic != INDEX_MAGIC or crc32c(raw[:76]) != crc:
        return None
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"index format version {version} is newer than the supported {FORMAT_VERSION}",
            path=path,
            offset=offset + 4,
        )
    return IndexHeader(bool(flags & FLAG_SEALED), seq, uid, base, count, ckpt, cend, chain, dhash)
