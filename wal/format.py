"""Segment and frame format: pure functions over bytes (no I/O here).

Strategy: everything that decides what bytes mean lives in this module, and it
only ever sees buffers (``bytes``, ``mmap``, ``memoryview``).  Writers call the
encoders and hand the buffers to a file; recovery reads a file into a buffer and
calls :func:`scan_frames`.  A crash is then simulated by slicing bytes.

All integers are little-endian.  ``docs/format.md`` is the byte-by-byte spec;
the tables below repeat it.

Segment header (64 bytes at offset 0)::

     0  magic      4s  b"SWSG"
     4  version    u16 FORMAT_VERSION; a larger one is refused
     6  flags      u16 0
     8  engine_id  u64 random id of the engine directory (foreign files differ)
    16  seq        u64 segment sequence number (file name)
    24  uid        u64 random id of this activation of the file (stale copies differ)
    32  base_index u64 first log index this segment may hold
    40  reserved   20 bytes of zero
    60  crc        u32 CRC32C of bytes 0..59

Frames follow from offset 64, each 8-byte aligned.  Frame header (40 bytes)::

     0  kind          u8  1 = ENTRIES, 2 = TRUNCATE, 3 = KV (0 = no frame: zeroed space)
     1  version       u8  FRAME_VERSION
     2  magic         u16 0x5746
     4  count         u32 entries in the body (0 for TRUNCATE)
     8  first_index   u64 ENTRIES: index of the first entry; TRUNCATE: from_index
    16  frame_len     u32 whole frame in bytes, header and padding included
    20  durable       u32 durable claim: every byte of this segment below this
                          offset was on stable storage when the frame was written
    24  prev_crc      u32 header_crc of the previous frame (segment crc for the first)
    28  body_crc      u32 CRC32C of the body, padding included
    32  reserved      u32 0
    36  header_crc    u32 CRC32C of bytes 0..35

ENTRIES body: ``count`` slots of 24 bytes, then the payloads back to back, then
zero padding to a multiple of 8.  Slot::

     0  term    u64
     8  pstart  u32 offset of the payload in the segment file
    12  plen    u32 payload length
    16  check   u64 xxh3_64(payload, seed=index) ^ term

``check`` lets one entry be verified alone (a point read), and binds the
payload to its index (the hash's seed) and term (xor-ed in): a slot read at
the wrong index, or with a flipped term, fails it.  ``body_crc`` covers the whole batch at once (recovery
and range reads).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import crc32c as _crc32c_mod
import numpy as np
import xxhash

from segwal.errors import CorruptionError, FormatVersionError

__all__ = [
    "FORMAT_VERSION",
    "FRAME_HEADER",
    "FRAME_HEADER_SIZE",
    "FRAME_VERSION",
    "KIND_ENTRIES",
    "KIND_KV",
    "KIND_TRUNCATE",
    "MAX_SEGMENT_BYTES",
    "SEGMENT_HEADER",
    "SEGMENT_HEADER_SIZE",
    "SINGLE_ENTRY_MAX",
    "SLOT",
    "SLOT_DTYPE",
    "SLOT_SIZE",
    "Buf",
    "EncodedFrame",
    "EntryColumns",
    "FrameHeader",
    "ScanResult",
    "SegmentHeader",
    "align8",
    "crc32c",
    "decode_frame_header",
    "decode_segment_header",
    "encode_entries_columns",
    "encode_entries_frame",
    "encode_frame",
    "encode_segment_header",
    "encode_single_entry",
    "entry_check",
    "find_valid_frames",
    "scan_frames",
]

crc32c = _crc32c_mod.crc32c

#: What the pure decoders read from: file bytes, a view of them, or a shared map.
Buf = bytes | bytearray | memoryview | mmap.mmap
_xxh3 = xxhash.xxh3_64_intdigest

FORMAT_VERSION: Final = 1
FRAME_VERSION: Final = 1
FRAME_MAGIC: Final = 0x5746
SEGMENT_MAGIC: Final = b"SWSG"

KIND_ENTRIES: Final = 1
KIND_TRUNCATE: Final = 2
KIND_KV: Final = 3
_KINDS: Final = frozenset((KIND_ENTRIES, KIND_TRUNCATE, KIND_KV))

SEGMENT_HEADER: Final = struct.Struct("<4sHHQQQQ20xI")
SEGMENT_HEADER_SIZE: Final = SEGMENT_HEADER.size  # 64
FRAME_HEADER: Final = struct.Struct("<BBHIQIIIIII")
FRAME_HEADER_SIZE: Final = FRAME_HEADER.size  # 40
SLOT: Final = struct.Struct("<QIIQ")
SLOT_SIZE: Final = SLOT.size  # 24
SLOT_DTYPE: Final = np.dtype([("term", "<u8"), ("pstart", "<u4"), ("plen", "<u4"), ("check", "<u8")])

#: Offsets inside a segment are u32: a segment file never reaches 4 GiB.
MAX_SEGMENT_BYTES: Final = (1 << 32) - 1


assert SEGMENT_HEADER_SIZE == 64 and FRAME_HEADER_SIZE == 40 and SLOT_SIZE == 24


def align8(n: int) -> int:
    """Round ``n`` up to a multiple of 8.

    >>> align8(0), align8(1), align8(8)
    (0, 8, 8)
    """
    return (n + 7) & ~7


def entry_check(payload: Buf, index: int, term: int) -> int:
    """The per-entry check value stored in a slot: ``xxh3_64(payload, seed=index) ^ term``.

    Seeding with the index binds the payload to its position (a slot read at
    another index fails); xor-ing the term makes any flipped term bit flip the
    same bit of the expected value.  One hash call and one xor to verify, which
    matters in Python's read path.  O(len(payload)).
    """
    return _xxh3(payload, index) ^ term


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The decoded 64-byte segment header."""

    engine_id: int
    seq: int
    uid: int
    base_index: int
    crc: int


def encode_segment_header(engine_id: int, seq: int, uid: int, base_index: int) -> bytes:
    """The 64 bytes of a segment header."""
    raw = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, engine_id, seq, uid, base_index, 0)
    crc = crc32c(raw[:60])
    return raw[:60] + crc.to_bytes(4, "little")


def decode_segment_header(buf: Buf, path: str) -> SegmentHeader | None:
    """Decode a segment header; ``None`` when the header is all zeros (never activated).

    Raises:
        FormatVersionError: the file comes from a newer format version.
        CorruptionError: bad magic or checksum.
    """
    if len(buf) < SEGMENT_HEADER_SIZE:
        raise CorruptionError(f"segment header is {len(buf)} bytes, expected 64", path=path, offset=0)
    head = bytes(buf[:SEGMENT_HEADER_SIZE])
    if head == bytes(SEGMENT_HEADER_SIZE):
        return None
    magic, version, _flags, engine_id, seq, uid, base, crc = SEGMENT_HEADER.unpack(head)
    if magic != SEGMENT_MAGIC:
        raise CorruptionError(f"bad segment magic {magic!r}", path=path, offset=0)
    if crc32c(head[:60]) != crc:
        raise CorruptionError("segment header checksum mismatch", path=path, offset=0)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"segment format version {version} is newer than the supported {FORMAT_VERSION}; "
            "upgrade segwal to read it",
            path=path,
            offset=4,
        )
    return SegmentHeader(engine_id, seq, uid, base, crc)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded, self-consistent frame header (its ``header_crc`` matched)."""

    kind: int
    count: int
    first_index: int
    frame_len: int
    durable: int
    prev_crc: int
    body_crc: int
    header_crc: int


def _pack_header(
    kind: int, count: int, first_index: int, frame_len: int, durable: int, prev_crc: int, body_crc: int
) -> tuple[bytes, int]:
    raw = FRAME_HEADER.pack(
        kind, FRAME_VERSION, FRAME_MAGIC, count, first_index, frame_len, durable, prev_crc, body_crc, 0, 0
    )
    hcrc = crc32c(raw[:36])
    return raw[:36] + hcrc.to_bytes(4, "little"), hcrc


class EncodedFrame(NamedTuple):
    """A frame ready to write: ``buffers`` go back to back at the frame's offset.

    A NamedTuple, not a frozen dataclass: one is built per append, and on the
    single-entry path the dataclass constructor alone cost ~0.7 us.
    """

    buffers: tuple[bytes | memoryview, ...]
    frame_len: int
    header_crc: int
    #: ENTRIES only: absolute offset of each entry's slot in the segment file.
    slot_offsets: Sequence[int] | np.ndarray | None


def encode_frame(
    kind: int, first_index: int, body: bytes, *, offset: int, durable: int, prev_crc: int, count: int = 0
) -> EncodedFrame:
    """Encode a frame with an opaque ``body`` (TRUNCATE has an empty one; KV its own).

    ``offset`` is where the frame will be written in its file.
    """
    pad = align8(len(body)) - len(body)
    padded = body + bytes(pad) if pad else body
    frame_len = FRAME_HEADER_SIZE + len(padded)
    if offset + frame_len > MAX_SEGMENT_BYTES:
        raise ValueError(f"frame of {frame_len} bytes at offset {offset} would pass the 4 GiB segment limit")
    header, hcrc = _pack_header(kind, count, first_index, frame_len, durable, prev_crc, crc32c(padded))
    return EncodedFrame((header, padded) if padded else (header,), frame_len, hcrc, None)


#: Batches up to this size are encoded with plain struct calls: numpy's fixed
#: cost per call outweighs its per-entry gain below it (measured: a 64-entry
#: batch costs 48 us of CPU this way against 53 us through numpy).
SMALL_BATCH: Final = 64
_pack_slot = SLOT.pack


def encode_entries_frame(
    first_index: int,
    terms: Sequence[int] | np.ndarray,
    payloads: Sequence[bytes],
    *,
    offset: int,
    durable: int,
    prev_crc: int,
    sizes: np.ndarray | None = None,
) -> EncodedFrame:
    """Encode one ENTRIES frame holding a whole batch.

    Complexity: O(n) — plain struct calls for small batches, vectorised numpy for
    large ones — plus one xxh3 call per payload and one CRC32C over the batch.

    Args:
        first_index: index of ``payloads[0]``.
        terms: one term per payload (ints < 2**64).
        payloads: the payloads (bytes-like).
        offset: absolute offset where the frame will be written.
        durable: the durable claim to record (see module docs).
        prev_crc: ``header_crc`` of the frame before it (chain).
        sizes: the payload lengths as a uint64 array, if the caller has them.
    """
    n = len(payloads)
    table_off = offset + FRAME_HEADER_SIZE
    payload_off = table_off + SLOT_SIZE * n
    blob = b"".join(payloads)
    body_len = SLOT_SIZE * n + len(blob)
    pad = -body_len & 7
    frame_len = FRAME_HEADER_SIZE + body_len + pad
    if offset + frame_len > MAX_SEGMENT_BYTES:
        raise ValueError(
            f"batch of {n} entries ({frame_len} bytes) at offset {offset} would pass the 4 GiB segment limit"
        )
    if n <= SMALL_BATCH:
        parts = []
        pos = payload_off
        idx = first_index
        for t, p in zip(terms, payloads):
            ln = len(p)
            parts.append(_pack_slot(t, pos, ln, _xxh3(p, idx) ^ t))
            pos += ln
            idx += 1
        tb = b"".join(parts)
        slots: Sequence[int] | np.ndarray = range(table_off, table_off + SLOT_SIZE * n, SLOT_SIZE)
    else:
        lens = sizes if sizes is not None else np.fromiter(map(len, payloads), dtype=np.uint64, count=n)
        t_arr = terms.astype(np.uint64, copy=False) if isinstance(terms, np.ndarray) else np.array(terms, dtype=np.uint64)
        table = np.empty(n, SLOT_DTYPE)
        table["term"] = t_arr
        table["pstart"] = np.cumsum(lens) - lens + payload_off
        table["plen"] = lens
        hashes = np.fromiter(map(_xxh3, payloads, range(first_index, first_index + n)), dtype=np.uint64, count=n)
        table["check"] = hashes ^ t_arr
        tb = table.tobytes()
        slots = np.arange(table_off, table_off + SLOT_SIZE * n, SLOT_SIZE, dtype=np.uint32)
    tail = bytes(pad)
    body_crc = crc32c(tail, crc32c(blob, crc32c(tb)))
    header, hcrc = _pack_header(KIND_ENTRIES, n, first_index, frame_len, durable, prev_crc, body_crc)
    return EncodedFrame((header, tb, blob, tail) if pad else (header, tb, blob), frame_len, hcrc, slots)


class EntryColumns:
    """A batch as columns whose check values are already known: ``terms`` (uint64),
    ``plens`` (payload lengths), ``checks`` (uint64, each the slot's
    ``xxh3_64(payload, seed=index) ^ term`` for the index the batch is written at)
    and ``blob``, the payloads back to back (``len(blob) == plens.sum()``).

    What a restore appends: the archive's check values, verified against the
    payloads when the archive object was read, go into the slots as they are.
    ``len()`` is the number of entries (a writer takes it where it takes a list
    of payloads).
    """

    __slots__ = ("blob", "checks", "plens", "terms")

    def __init__(self, terms: np.ndarray, plens: np.ndarray, checks: np.ndarray, blob: bytes | memoryview) -> None:
        self.terms, self.plens, self.checks, self.blob = terms, plens, checks, blob

    def __len__(self) -> int:
        return len(self.terms)


def encode_entries_columns(
    first_index: int, cols: EntryColumns, *, offset: int, durable: int, prev_crc: int
) -> EncodedFrame:
    """Encode one ENTRIES frame from columns: byte for byte what
    :func:`encode_entries_frame` gives for the same entries when ``cols.checks``
    hold their check values (the caller's promise: this encoder hashes nothing,
    so a wrong check value is written as given, and every later read of that
    entry reports it as corrupt).  The payloads are not copied: ``cols.blob`` is
    one of the frame's buffers.

    Pure.  Complexity: O(n) numpy work for the slot table and one CRC32C over the
    table and the payloads.

    Raises:
        ValueError: columns of different lengths, a ``blob`` whose length is not
            the sum of ``plens``, or a frame that would pass the 4 GiB segment limit.
    """
    n = len(cols.terms)
    if len(cols.plens) != n or len(cols.checks) != n:
        raise ValueError(f"columns of {n} terms, {len(cols.plens)} lengths and {len(cols.checks)} check values")
    plens = np.asarray(cols.plens, dtype=np.uint64)
    blob = cols.blob
    if int(plens.sum()) != len(blob):
        raise ValueError(f"payload blob of {len(blob)} bytes, the lengths add up to {int(plens.sum())}")
    table_off = offset + FRAME_HEADER_SIZE
    payload_off = table_off + SLOT_SIZE * n
    body_len = SLOT_SIZE * n + len(blob)
    pad = -body_len & 7
    frame_len = FRAME_HEADER_SIZE + body_len + pad
    if offset + frame_len > MAX_SEGMENT_BYTES:
        raise ValueError(
            f"batch of {n} entries ({frame_len} bytes) at offset {offset} would pass the 4 GiB segment limit"
        )
    table = np.empty(n, SLOT_DTYPE)
    table["term"] = cols.terms
    table["pstart"] = np.cumsum(plens) - plens + np.uint64(payload_off)
    table["plen"] = plens
    table["check"] = cols.checks
    tb = table.tobytes()
    tail = bytes(pad)
    body_crc = crc32c(tail, crc32c(blob, crc32c(tb)))
    header, hcrc = _pack_header(KIND_ENTRIES, n, first_index, frame_len, durable, prev_crc, body_crc)
    slots = np.arange(table_off, table_off + SLOT_SIZE * n, SLOT_SIZE, dtype=np.uint32)
    return EncodedFrame((header, tb, blob, tail) if pad else (header, tb, blob), frame_len, hcrc, slots)


_PAD = tuple(bytes(k) for k in range(8))
_pack_frame_header = FRAME_HEADER.pack


_pack_header36 = struct.Struct("<8sQIIIII").pack  # the header up to its own check value, after a fixed prefix
#: kind, version, magic and count of a one-entry ENTRIES frame: the same 8 bytes every time.
_SINGLE_PREFIX: Final = struct.pack("<BBHI", KIND_ENTRIES, FRAME_VERSION, FRAME_MAGIC, 1)
_pack_u32 = struct.Struct("<I").pack

#: Payloads up to this size take :func:`encode_single_entry` (one contiguous
#: buffer, one write); larger ones the vectored batch path, which copies nothing.
SINGLE_ENTRY_MAX: Final = 16 << 10


def encode_single_entry(index: int, term: int, payload: bytes, offset: int, durable: int, prev_crc: int) -> tuple[bytes, int]:
    """The ENTRIES frame of a one-entry batch as one ``bytes``, and its header
    check value: byte for byte what :func:`encode_entries_frame` gives for
    ``[payload]``, built with two ``crc32c`` calls and no intermediate objects
    (a Raft library appending one entry at a time pays this per append).
    Pure; O(len(payload)): the payload is copied once, so callers keep it for
    small payloads (:data:`SINGLE_ENTRY_MAX`).

    Raises:
        ValueError: the frame would pass the 4 GiB segment limit.
    """
    body = _pack_slot(term, offset + 64, len(payload), _xxh3(payload, index) ^ term) + payload
    pad = -len(body) & 7
    if pad:
        body += _PAD[pad]
    flen = 40 + len(body)
    if offset + flen > MAX_SEGMENT_BYTES:
        raise ValueError(f"entry of {len(payload)} bytes at offset {offset} would pass the 4 GiB segment limit")
    h = _pack_header36(_SINGLE_PREFIX, index, flen, durable, prev_crc, crc32c(body), 0)
    hcrc = crc32c(h)
    return h + _pack_u32(hcrc) + body, hcrc


def decode_frame_header(buf: Buf, off: int) -> FrameHeader | None:
    """Decode the frame header at ``off``: ``None`` if it is not a self-consistent
    header (zeros, garbage, torn, bad checksum).  Pure; reads 40 bytes.

    Raises:
        FormatVersionError: a valid header of a newer frame version.
    """
    if off + FRAME_HEADER_SIZE > len(buf):
        return None
    kind, version, magic, count, first, flen, durable, prev, bcrc, _r, hcrc = FRAME_HEADER.unpack_from(buf, off)
    if kind not in _KINDS or magic != FRAME_MAGIC:
        return None
    if crc32c(buf[off : off + 36]) != hcrc:
        return None
    if version != FRAME_VERSION:
        if version > FRAME_VERSION:
            raise FormatVersionError(
                f"frame version {version} is newer than the supported {FRAME_VERSION}",
                path="<buffer>",
                offset=off,
            )
        return None
    if flen < FRAME_HEADER_SIZE or flen & 7:
        return None
    return FrameHeader(kind, count, first, flen, durable, prev, bcrc, hcrc)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What :func:`scan_frames` found.

    Attributes:
        frames: ``(offset, header)`` of each valid, chained frame, in order.
        end: offset just past the last valid frame (where the next frame goes).
        last_crc: ``header_crc`` of the last valid frame (the chain value at ``end``).
        stop: why the scan stopped: ``"end"`` (buffer exhausted), ``"zero"`` (a
            zeroed header: unwritten space) or ``"invalid"`` (bytes that are not a
            valid chained frame: a torn write or damage).
    """

    frames: list[tuple[int, FrameHeader]]
    end: int
    last_crc: int
    stop: str


def _valid_at(buf: Buf, off: int, limit: int) -> FrameHeader | None:
    h = decode_frame_header(buf, off)
    if h is None or off + h.frame_len > limit:
        return None
    if crc32c(buf[off + FRAME_HEADER_SIZE : off + h.frame_len]) != h.body_crc:
        return None
    if h.kind == KIND_ENTRIES and h.frame_len < FRAME_HEADER_SIZE + SLOT_SIZE * h.count:
        return None
    return h


def scan_frames(
    buf: Buf,
    start: int,
    prev_crc: int,
    limit: int | None = None,
    *,
    damaged: list[tuple[int, FrameHeader]] | None = None,
) -> ScanResult:
    """Walk the frames of a segment from ``start`` while each one is valid and
    chained to the previous one (its ``prev_crc`` equals the previous header crc).

    With ``damaged`` (a list to fill), a frame whose header is valid and chained
    but whose body fails its CRC is recorded there and stepped over (the chain
    runs through header checksums, so it continues): this is how a full
    verification names exactly the entries a damaged batch holds.  Recovery
    passes no list: any damage stops the scan.

    Pure: the whole recovery decision for one file is made from ``buf``.
    O(bytes scanned): one CRC32C over each frame.

    >>> scan_frames(bytes(128), 64, 0).stop
    'zero'
    """
    end = len(buf) if limit is None else min(limit, len(buf))
    frames: list[tuple[int, FrameHeader]] = []
    off = start
    crc = prev_crc
    while True:
        if off + FRAME_HEADER_SIZE > end:
            tail = bytes(buf[off:end])
            stop = "end" if not tail.strip(b"\0") else "invalid"
            return ScanResult(frames, off, crc, stop)
        h = _valid_at(buf, off, end)
        if h is None and damaged is not None:
            hh = decode_frame_header(buf, off)
            if hh is not None and hh.prev_crc == crc and off + hh.frame_len <= end:
                damaged.append((off, hh))
                frames.append((off, hh))
                crc = hh.header_crc
                off += hh.frame_len
                continue
        if h is None or h.prev_crc != crc:
            if bytes(buf[off : off + FRAME_HEADER_SIZE]) == bytes(FRAME_HEADER_SIZE):
                return ScanResult(frames, off, crc, "zero")
            return ScanResult(frames, off, crc, "invalid")
        frames.append((off, h))
        crc = h.header_crc
        off += h.frame_len


def find_valid_frames(buf: Buf, start: int, limit: int | None = None) -> list[tuple[int, FrameHeader]]:
    """Every self-valid frame (header and body checksums match) at an 8-aligned
    offset in ``[start, limit)``, chained or not.

    Used after a scan stops at damage: a valid frame beyond the damage whose
    durable claim passes the damaged offset proves the damage hit synced data
    (corruption, not a torn tail).  Vectorised candidate search with numpy, so
    the cost is one pass over the bytes plus a CRC per candidate.
    """
    end = len(buf) if limit is None else min(limit, len(buf))
    start = align8(start)
    if end - start < FRAME_HEADER_SIZE:
        return []
    n = (end - start) // 8
    words = np.frombuffer(buf, dtype="<u8", count=n, offset=start)
    nz = np.flatnonzero(words)  # unwritten space is zeros: usually nothing is left
    if len(nz) == 0:
        return []
    low = words[nz] & np.uint64(0xFFFFFFFF)
    # kind in the low byte, version next, magic in bytes 2..3
    kinds = low & np.uint64(0xFF)
    magic = (low >> np.uint64(16)) & np.uint64(0xFFFF)
    cand = nz[(magic == FRAME_MAGIC) & (kinds >= 1) & (kinds <= 3)]
    out: list[tuple[int, FrameHeader]] = []
    for i in cand.tolist():
        off = start + 8 * i
        h = _valid_at(buf, off, end)
        if h is not None:
            out.append((off, h))
    return out
