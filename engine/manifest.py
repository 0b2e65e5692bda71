"""The manifest: which segments make up the log, the purge boundary, the KV generation.

Replaced atomically (:mod:`segwal.fs`); its rename is the commit
point of a rotation, a truncation below the tail segment, a purge and a reset.
Layout (little-endian)::

     0  magic         4s  b"SWMF"
     4  version       u16 MANIFEST_VERSION (2; version 1 has no key/value section)
     6  flags         u16 bit 0: a purge boundary is set; bit 1: the log was
                          reset and no purge boundary was set since (the hard
                          state's commit index then makes no claim on the log);
                          bit 2: a hard state was saved (HARDSTATE must exist);
                          bit 3: the key/value files are listed below
     8  engine_id     u64 random id chosen when the directory was created
    16  revision      u64 incremented on every write
    24  kv_generation u64 the key/value generation in force (bumped by reset)
    32  next_seq      u64 sequence number for the next segment
    40  purge_term    u64 purge boundary (valid when flag bit 0 is set)
    48  purge_index   u64
    56  tail_durable  u64 clean-close claim: bytes of the tail segment below this
                          offset were durable (0 = no claim)
    64  nsegs         u32 number of segment records
    68  nkv           u32 number of key/value file records (0 unless flag bit 3)
    72  records       nsegs x 32 bytes: seq u64, uid u64, base u64, last u64
   ...  kv records    nkv x 24 bytes: seq u64, uid u64, length u64
   ...  crc           u32 CRC32C of everything before it

Segments are listed in log order; their bases strictly increase.  For a sealed
segment ``last`` is its last live entry (the next segment's base minus one, or
less when a later truncation cut it); for the last record, the tail, ``last``
is informational and recovery trusts the tail scan.

Key/value files (generation ``kv_generation``) are listed in sequence order,
contiguous.  For every file but the last, ``length`` is its exact size: it was
sealed (cut to its last frame and fsynced) before this manifest was written.
For the last, the active file, ``length`` is a durable claim: its bytes below
that offset were synced and must be intact (the header at least; after a
compaction, everything it wrote; after a clean close, the whole file).  A file
of the generation that is not listed is a leftover of an operation that never
committed.  See docs/format-kv.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from segwal.errors import CorruptionError, FormatVersionError
from segwal.kv.files import KVFile
from segwal.types import LogId
from segwal.wal.format import crc32c

__all__ = ["SegmentRecord", "KVFile", "Manifest", "encode_manifest", "decode_manifest", "MANIFEST_NAME",
           "MANIFEST_VERSION"]

MANIFEST_NAME: Final = "MANIFEST"
_MAGIC: Final = b"SWMF"
_HEAD: Final = struct.Struct("<4sHHQQQQQQQII")
_REC: Final = struct.Struct("<QQQQ")
_KVREC: Final = struct.Struct("<QQQ")
#: Version 2 added the key/value section (flag bit 3) and the hard-state flag (bit 2).
MANIFEST_VERSION: Final = 2


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
    hard_state_saved: bool = False
    #: the key/value files, or ``None`` in a version-1 manifest that did not list them
    kv_files: tuple[KVFile, ...] | None = None


def encode_manifest(m: Manifest) -> bytes:
    """Serialise a manifest.  Pure."""
    flags = (1 if m.purge is not None else 0) | (2 if m.reset_pending else 0) | (4 if m.hard_state_saved else 0)
    kv = m.kv_files
    if kv is not None:
        flags |= 8
    pt, pi = (m.purge.term, m.purge.index) if m.purge is not None else (0, 0)
    parts = [
        _HEAD.pack(
            _MAGIC,
            MANIFEST_VERSION,
            flags,
            m.engine_id,
            m.revision,
            m.kv_generation,
            m.next_seq,
            pt,
            pi,
            m.tail_durable,
            len(m.segments),
            0 if kv is None else len(kv),
        )
    ]
    parts.extend(_REC.pack(s.seq, s.uid, s.base, s.last) for s in m.segments)
    if kv is not None:
        parts.extend(_KVREC.pack(k.seq, k.uid, k.length) for k in kv)
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
    magic, version, flags, eid, rev, kvgen, nseq, pt, pi, tdur, nsegs, nkv = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC:
        raise CorruptionError(f"bad manifest magic {magic!r}", path=path, offset=0)
    if version > MANIFEST_VERSION:  # before the length check: a newer layout may differ
        if crc32c(data[:-4]) == int.from_bytes(data[-4:], "little"):
            raise FormatVersionError(
                f"manifest format version {version} is newer than the supported {MANIFEST_VERSION}; upgrade segwal",
                path=path,
                offset=4,
            )
    end = _HEAD.size + _REC.size * nsegs + _KVREC.size * nkv
    if len(data) != end + 4:
        raise CorruptionError(
            f"manifest length {len(data)} does not match {nsegs} segments and {nkv} key/value files", path=path,
            offset=64,
        )
    if crc32c(data[:end]) != int.from_bytes(data[end : end + 4], "little"):
        raise CorruptionError("manifest checksum mismatch", path=path, offset=end)
    if version > MANIFEST_VERSION:
        raise CorruptionError(f"manifest version {version} is unknown", path=path, offset=4)
    if nkv and not flags & 8:
        raise CorruptionError("manifest lists key/value files without the flag that says so", path=path, offset=6)
    segs = tuple(SegmentRecord(*_REC.unpack_from(data, _HEAD.size + _REC.size * i)) for i in range(nsegs))
    for a, b in zip(segs, segs[1:]):
        if b.base <= a.base or b.seq <= a.seq:
            raise CorruptionError("manifest lists segments out of order", path=path, offset=_HEAD.size)
    purge = LogId(pt, pi) if flags & 1 else None
    kv_off = _HEAD.size + _REC.size * nsegs
    kv = (tuple(KVFile(*_KVREC.unpack_from(data, kv_off + _KVREC.size * i)) for i in range(nkv))
          if flags & 8 else None)
    if kv is not None and any(b.seq != a.seq + 1 for a, b in zip(kv, kv[1:])):
        raise CorruptionError("manifest lists key/value files out of sequence", path=path, offset=kv_off)
    return Manifest(eid, rev, kvgen, nseq, purge, tdur, segs, bool(flags & 2), bool(flags & 4), kv)
