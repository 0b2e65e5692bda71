"""The manifest: which segments make up the log, the purge boundary, the KV generation.

Replaced atomically (:mod:`segwal.fs`); its rename is the commit
point of a rotation, a truncation below the tail segment, a purge and a reset.
Layout (little-endian)::

     0  magic         4s  b"SWMF"
     4  version       u16 FORMAT_VERSION
     6  flags         u16 bit 0: a purge boundary is set; bit 1: the log was
                          reset and no purge boundary was set since (the hard
                          state's commit index then makes no claim on the log)
     8  engine_id     u64 random id chosen when the directory was created
    16  revision      u64 incremented on every write
    24  kv_generation u64 the key/value generation in force (bumped by reset)
    32  next_seq      u64 sequence number for the next segment
    40  purge_term    u64 purge boundary (valid when flag bit 0 is set)
    48  purge_index   u64
    56  tail_durable  u64 clean-close claim: bytes of the tail segment below this
                          offset were durable (0 = no claim)
    64  nsegs         u32 number of segment records
    68  reserved      u32 0
    72  records       nsegs x 32 bytes: seq u64, uid u64, base u64, last u64
   ...  crc           u32 CRC32C of everything before it

Segments are listed in log order; their bases strictly increase.  For a sealed
segment ``last`` is its last live entry (the next segment's base minus one, or
less when a later truncation cut it); for the last record, the tail, ``last``
is informational and recovery trusts the tail scan.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from segwal.errors import CorruptionError, FormatVersionError
from segwal.types import LogId
from segwal.wal.format import FORMAT_VERSION, crc32c

__all__ = ["SegmentRecord", "Manifest", "encode_manifest", "decode_manifest", "MANIFEST_NAME"]

MANIFEST_NAME: Final = "MANIFEST"
_MAGIC: Final = b"SWMF"
_HEAD: Final = struct.Struct("<4sHHQQQQQQQII")
_REC: Final = struct.Struct("<QQQQ")


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One segment as the manifest lists it."""

    seq: int
    uid: int
    base: int
    last: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """The decoded manifest."""

    engine_id: int
    revision: int
    kv_generation: int
    next_seq: int
    purge: LogId | None
    tail_durable: int
    segments: tuple[SegmentRecord, ...]
    reset_pending: bool = False


def encode_manifest(m: Manifest) -> bytes:
    """Serialise a manifest.  Pure."""
    flags = (1 if m.purge is not None else 0) | (2 if m.reset_pending else 0)
    pt, pi = (m.purge.term, m.purge.index) if m.purge is not None else (0, 0)
    parts = [
        _HEAD.pack(
            _MAGIC,
            FORMAT_VERSION,
            flags,
            m.engine_id,
            m.revision,
            m.kv_generation,
            m.next_seq,
            pt,
            pi,
            m.tail_durable,
            len(m.segments),
            0,
        )
    ]
    parts.extend(_REC.pack(s.seq, s.uid, s.base, s.last) for s in m.segments)
    body = b"".join(parts)
    return body + crc32c(body).to_bytes(4, "little")


def decode_manifest(data: bytes, path: str) -> Manifest:
    """Parse a manifest.  Pure.

    Raises:
        FormatVersionError: written by a newer segwal.
        CorruptionError: truncated, bad magic or checksum.
    """
    if len(data) < _HEAD.size + 4:
        raise CorruptionError(f"manifest is {len(data)} bytes, too short", path=path, offset=0)
    magic, version, flags, eid, rev, kvgen, nseq, pt, pi, tdur, nsegs, _r = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC:
        raise CorruptionError(f"bad manifest magic {magic!r}", path=path, offset=0)
    end = _HEAD.size + _REC.size * nsegs
    if len(data) != end + 4:
        raise CorruptionError(f"manifest length {len(data)} does not match {nsegs} segments", path=path, offset=64)
    if crc32c(data[:end]) != int.from_bytes(data[end : end + 4], "little"):
        raise CorruptionError("manifest checksum mismatch", path=path, offset=end)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"manifest format version {version} is newer than the supported {FORMAT_VERSION}; upgrade segwal",
            path=path,
            offset=4,
        )
    segs = tuple(SegmentRecord(*_REC.unpack_from(data, _HEAD.size + _REC.size * i)) for i in range(nsegs))
    for a, b in zip(segs, segs[1:]):
        if b.base <= a.base or b.seq <= a.seq:
            raise CorruptionError("manifest lists segments out of order", path=path, offset=_HEAD.size)
    purge = LogId(pt, pi) if flags & 1 else None
    return Manifest(eid, rev, kvgen, nseq, purge, tdur, segs, bool(flags & 2))
