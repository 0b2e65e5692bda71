"""The archive's object formats and names, byte by byte (docs/archive.md is the other copy): encoding, and strict decoding of untrusted objects.

Every archive object is a 64-byte header and a body (little-endian)::

     0  magic      4s  b"SWAR"
     4  version    u16 ARCHIVE_VERSION (2); larger: FormatVersionError
     6  kind       u16 1 delta, 2 gap, 3 state, 4 kv snapshot, 5 seal record, 6 floor
     8  seq        u64 delta/gap/floor: the log sequence number; state: its own counter;
                       kv snapshot and seal: the log sequence number it follows
    16  first      u64 delta: first index; gap: first missing index; kv: applied index
    24  count      u64 delta: entries; gap: missing entries; kv: applied term
    32  engine_id  u64 the node directory's engine id (0 when unknown)
    40  time_ms    u64 wall-clock milliseconds when the archiver wrote it
    48  body_len   u64 bytes after the header (must equal the object's size - 64)
    56  body_crc   u32 CRC32C of the body
    60  head_crc   u32 CRC32C of bytes 0..59

A delta's body is ``count`` slots of 24 bytes (``term u64, plen u32, zero u32,
check u64`` with ``check = xxh3_64(payload, seed=index) ^ term``), then the
payloads back to back.  Names (under the prefix) carry what a LIST needs to
plan a restore and the object's xxh3_64: version 2 hashes the object without
``time_ms`` and ``head_crc`` (bytes 0..39, 48..59, 64..end, streamed), so a
retried upload of the same content has the same name whenever it is written;
version 1 hashed the whole object (still read)::

    log/<seq:020d>-<first:020d>-<count:020d>-<d|g>-<xxh3:016x>   delta or gap
    state/<n:020d>-<seq:020d>-<xxh3:016x>                        hard state and manifest summary
    kv/<index:020d>-<term:020d>-<seq:020d>-<xxh3:016x>           key/value snapshot (kv/snapshot.py bytes)
    seal/<seq:020d>-<first:020d>-<last:020d>-<xxh3:016x>         a sealed segment: the deltas it is made of
    floor/<seq:020d>-<xxh3:016x>                                 retention removed log objects below seq
    lease/<id>.json, retention/<id>.json                         restore leases, retention passes (JSON)
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import xxhash

from segwal.errors import CorruptionError, FormatVersionError
from segwal.types import Entry, HardState, LogId, VotedFor
from segwal.wal.format import crc32c

__all__ = [
    "ARCHIVE_VERSION",
    "HEADER_SIZE",
    "K_DELTA",
    "K_FLOOR",
    "K_GAP",
    "K_KV",
    "K_SEAL",
    "K_STATE",
    "MAX_OBJECT",
    "Header",
    "LogName",
    "StateRecord",
    "check_name_hash",
    "decode_delta",
    "decode_delta_columns",
    "decode_object",
    "decode_state",
    "delta_checks",
    "encode_columns",
    "encode_delta",
    "encode_object",
    "encode_state",
    "floor_name",
    "join",
    "kv_name",
    "log_name",
    "object_hash",
    "parse_floor_name",
    "parse_kv_name",
    "parse_log_name",
    "parse_state_name",
    "seal_name",
    "state_name",
]

ARCHIVE_VERSION: Final = 2
HEADER_SIZE: Final = 64
K_DELTA, K_GAP, K_STATE, K_KV, K_SEAL, K_FLOOR = 1, 2, 3, 4, 5, 6
_MAGIC: Final = b"SWAR"
_HEAD: Final = struct.Struct("<4sHHQQQQQQI")
_SLOT: Final = np.dtype([("term", "<u8"), ("plen", "<u4"), ("zero", "<u4"), ("check", "<u8")])
_STATE: Final = struct.Struct("<QQQQQQQQQQQQ")
#: Largest object the archive writes or reads (a delta is cut before it).
MAX_OBJECT: Final = 1 << 30

_D = r"(\d{20})"
_H = r"([0-9a-f]{16})"
_LOG_RE: Final = re.compile(rf"log/{_D}-{_D}-{_D}-([dg])-{_H}")
_STATE_RE: Final = re.compile(rf"state/{_D}-{_D}-{_H}")
_KV_RE: Final = re.compile(rf"kv/{_D}-{_D}-{_D}-{_H}")
_FLOOR_RE: Final = re.compile(rf"floor/{_D}-{_H}")


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded object header."""

    kind: int
    seq: int
    first: int
    count: int
    engine_id: int
    time_ms: int


@dataclass(frozen=True, slots=True)
class LogName:
    """What a log object's name says: delta or gap ``seq`` covering ``first .. first+count-1``."""

    name: str
    seq: int
    first: int
    count: int
    gap: bool
    digest: int

    @property
    def last(self) -> int:
        """The last index it covers (``first - 1`` for a truncation)."""
        return self.first + self.count - 1


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The node's hard state and manifest summary as the archiver saw them."""

    hard: HardState | None
    purge: LogId | None
    last_applied: LogId | None
    manifest_revision: int


def join(prefix: str, name: str) -> str:
    """``prefix/name`` (just ``name`` for an empty prefix).  O(len)."""
    return f"{prefix}/{name}" if prefix else name


def object_hash(data: bytes | memoryview) -> int:
    """The xxh3_64 the name of an object carries: by the header's version, of the object
    without its ``time_ms`` and ``head_crc`` fields (2), or of the whole object (1, and
    anything too short or of another version: it then fails its header check).  O(len)."""
    mv = memoryview(data)
    if len(mv) < HEADER_SIZE or bytes(mv[:4]) != _MAGIC or int.from_bytes(mv[4:6], "little") < 2:
        return xxhash.xxh3_64_intdigest(mv)
    h = xxhash.xxh3_64()
    h.update(mv[:40])
    h.update(mv[48:60])
    h.update(mv[HEADER_SIZE:])
    return h.intdigest()


def check_name_hash(name: str, digest: int, data: bytes) -> None:
    """Raise CorruptionError unless ``data`` hashes to the ``digest`` its name carries.  O(len)."""
    got = object_hash(data)
    if got != digest:
        raise CorruptionError(
            f"object content does not match its name (xxh3 {got:016x}, name says {digest:016x})", path=name, offset=0
        )


def encode_object(kind: int, seq: int, first: int, count: int, engine_id: int, body: bytes) -> bytes:
    """Header + body.  Pure, O(len(body))."""
    head = _HEAD.pack(
        _MAGIC, ARCHIVE_VERSION, kind, seq, first, count, engine_id, int(time.time() * 1000), len(body), crc32c(body)
    )
    return head + crc32c(head).to_bytes(4, "little") + body


def decode_object(data: bytes, name: str, kind: int | None = None) -> tuple[Header, memoryview]:
    """Check an object's header and body checksum; returns the header and the body.

    Raises:
        CorruptionError / FormatVersionError: naming the object and the offset.
    """
    if len(data) < HEADER_SIZE:
        raise CorruptionError(f"object of {len(data)} bytes is shorter than its header", path=name, offset=0)
    magic, version, k, seq, first, count, eid, tms, blen, bcrc = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC or crc32c(data[:60]) != int.from_bytes(data[60:64], "little"):
        raise CorruptionError("bad object header (magic or checksum)", path=name, offset=0)
    if version > ARCHIVE_VERSION:
        raise FormatVersionError(
            f"archive object version {version} is newer than {ARCHIVE_VERSION}", path=name, offset=4
        )
    if blen != len(data) - HEADER_SIZE:
        raise CorruptionError(f"body length {blen} does not match the object's size {len(data)}", path=name, offset=48)
    body = memoryview(data)[HEADER_SIZE:]
    if crc32c(body) != bcrc:
        raise CorruptionError("object body checksum mismatch", path=name, offset=HEADER_SIZE)
    if kind is not None and k != kind:
        raise CorruptionError(f"object kind {k}, expected {kind}", path=name, offset=6)
    return Header(k, seq, first, count, eid, tms), body


def encode_delta(seq: int, entries: list[Entry], engine_id: int, first: int | None = None) -> tuple[bytes, np.ndarray]:
    """A delta object holding ``entries`` (contiguous; none: a truncation at ``first``),
    and the entries' check values.  O(bytes)."""
    n = len(entries)
    f = entries[0].index if n else first
    assert f is not None
    slots = np.zeros(n, dtype=_SLOT)
    if n:
        terms = [e.term for e in entries]
        payloads = [e.payload for e in entries]
        h = xxhash.xxh3_64_intdigest
        slots["term"] = terms
        slots["plen"] = [len(p) for p in payloads]
        slots["check"] = [h(p, e.index) ^ e.term for e, p in zip(entries, payloads)]
        body = slots.tobytes() + b"".join(payloads)
    else:
        body = b""
    return encode_object(K_DELTA, seq, f, n, engine_id, body), slots["check"].copy()


def encode_columns(
    seq: int, first: int, terms: np.ndarray, plens: np.ndarray, checks: np.ndarray, payloads: bytes, engine_id: int
) -> bytes:
    """A delta object from columns (the slots' terms, payload lengths, check values) and
    the payloads back to back, as :func:`segwal.engine.tap.segment_raw` reads them.  O(bytes)."""
    slots = np.zeros(len(terms), dtype=_SLOT)
    slots["term"], slots["plen"], slots["check"] = terms, plens, checks
    return encode_object(K_DELTA, seq, first, len(terms), engine_id, slots.tobytes() + payloads)


def _slots(body: memoryview, count: int, name: str) -> np.ndarray:
    if count > len(body) // _SLOT.itemsize:
        raise CorruptionError(
            f"entry count {count} does not fit the object's {len(body)} body bytes", path=name, offset=24
        )
    return np.frombuffer(body, dtype=_SLOT, count=count)


def delta_checks(data: bytes, name: str, count: int) -> np.ndarray:
    """The check values of a delta's slot table (``data`` from offset 0; may be only its
    header and slots, as a ranged GET returns).  Not verified.  O(count)."""
    body = memoryview(data)[HEADER_SIZE:]
    return _slots(body, count, name)["check"].astype(np.uint64)


def decode_delta(data: bytes, name: str) -> tuple[Header, list[Entry]]:
    """Every entry of a delta, each checked; nothing in it trusted before it is
    checked against the object's size.  O(bytes).

    Raises:
        CorruptionError: naming the object, the offset and the log index.
    """
    head, body = decode_object(data, name, K_DELTA)
    n, first = head.count, head.first
    slots = _slots(body, n, name)
    plens = slots["plen"].astype(np.int64)
    end = n * _SLOT.itemsize + int(plens.sum())
    if end != len(body) or (n and bool((slots["zero"] != 0).any())):
        raise CorruptionError(
            f"slot table does not add up to the body ({end} != {len(body)} bytes)", path=name, offset=HEADER_SIZE
        )
    if n and first + n > 1 << 64:
        raise CorruptionError(f"index range {first}+{n} overflows", path=name, offset=16)
    starts = (np.cumsum(plens) - plens + n * _SLOT.itemsize).tolist()
    terms = slots["term"].tolist()
    checks = slots["check"].tolist()
    raw = bytes(body)
    h = xxhash.xxh3_64_intdigest
    out: list[Entry] = []
    new = tuple.__new__
    prev = 0
    for i, (s, ln, t, c) in enumerate(zip(starts, plens.tolist(), terms, checks)):
        p = raw[s : s + ln]
        if h(p, first + i) ^ t != c or t < prev:
            what = "entry checksum mismatch" if t >= prev else f"term {t} below the previous entry's {prev}"
            raise CorruptionError(what, path=name, offset=HEADER_SIZE + 24 * i, index=first + i)
        prev = t
        out.append(new(Entry, (first + i, t, p)))
    return head, out


def decode_delta_columns(data: bytes, name: str) -> tuple[Header, np.ndarray, np.ndarray, np.ndarray, memoryview]:
    """A delta's columns: terms, payload lengths, check values (``uint64``,
    ``uint32``, ``uint64``) and its payloads back to back (a view into ``data``),
    every entry checked (its check value against its payload, hashed here once;
    non-decreasing terms) and every length checked against the object's size
    before use.  O(bytes), without building ``Entry`` objects or keeping a
    per-entry object: what a restore appends as it is.

    Raises:
        CorruptionError: naming the object, the offset and the log index.
    """
    head, body = decode_object(data, name, K_DELTA)
    n, first = head.count, head.first
    slots = _slots(body, n, name)
    plens = slots["plen"].astype(np.int64)
    table = n * _SLOT.itemsize
    end = table + int(plens.sum())
    if end != len(body) or (n and bool((slots["zero"] != 0).any())):
        raise CorruptionError(
            f"slot table does not add up to the body ({end} != {len(body)} bytes)", path=name, offset=HEADER_SIZE
        )
    if n and first + n > 1 << 64:
        raise CorruptionError(f"index range {first}+{n} overflows", path=name, offset=16)
    ends = np.cumsum(plens) + table
    starts = ends - plens
    terms = slots["term"].astype(np.uint64)
    checks = slots["check"].astype(np.uint64)
    # one short-lived slice per payload, hashed and dropped (a list of a million
    # views, GC-tracked objects, costs more than the hashing); slices of ``bytes``
    # are cheaper to make than views of it
    src: bytes | memoryview = data if type(data) is bytes else memoryview(data)
    parts: Iterator[bytes | memoryview] = map(
        src.__getitem__, map(slice, (starts + HEADER_SIZE).tolist(), (ends + HEADER_SIZE).tolist())
    )
    got = np.fromiter(map(xxhash.xxh3_64_intdigest, parts, range(first, first + n)), dtype=np.uint64, count=n)
    bad = np.flatnonzero((got ^ terms) != checks)
    if len(bad):
        i = int(bad[0])
        raise CorruptionError("entry checksum mismatch", path=name, offset=HEADER_SIZE + 24 * i, index=first + i)
    down = np.flatnonzero(terms[1:] < terms[:-1])
    if len(down):
        i = int(down[0]) + 1
        raise CorruptionError(
            f"term {int(terms[i])} below the previous entry's {int(terms[i - 1])}",
            path=name,
            offset=HEADER_SIZE + 24 * i,
            index=first + i,
        )
    return head, terms, plens.astype(np.uint32), checks, body[table:]


def encode_state(n: int, seq: int, engine_id: int, rec: StateRecord) -> bytes:
    """A state object.  Pure."""
    hs, p, a = rec.hard, rec.purge, rec.last_applied
    v = hs.voted_for if hs is not None else None
    flags = (
        (hs is not None)
        | (v is not None) << 1
        | (v is not None and v.committed) << 2
        | (p is not None) << 3
        | (a is not None) << 4
    )
    body = _STATE.pack(
        flags,
        hs.current_term if hs else 0,
        v.voted_for_id if v else 0,
        v.voted_for_term if v else 0,
        hs.commit_index if hs else 0,
        p.term if p else 0,
        p.index if p else 0,
        a.term if a else 0,
        a.index if a else 0,
        rec.manifest_revision,
        0,
        0,
    )
    return encode_object(K_STATE, n, seq, 0, engine_id, body)


def decode_state(data: bytes, name: str) -> tuple[Header, StateRecord]:
    """Decode a state object.  Raises CorruptionError naming it."""
    head, body = decode_object(data, name, K_STATE)
    if len(body) != _STATE.size:
        raise CorruptionError(f"state body of {len(body)} bytes, expected {_STATE.size}", path=name, offset=64)
    flags, term, vid, vterm, commit, pt, pi, at, ai, rev, _r1, _r2 = _STATE.unpack(body)
    vote = VotedFor(vid, vterm, bool(flags & 4)) if flags & 2 else None
    try:
        hard = HardState(term, vote, commit) if flags & 1 else None
        purge = LogId(pt, pi) if flags & 8 else None
        applied = LogId(at, ai) if flags & 16 else None
    except (TypeError, ValueError) as e:
        raise CorruptionError(f"state record out of range: {e}", path=name, offset=64) from None
    return head, StateRecord(hard, purge, applied, rev)


def log_name(seq: int, first: int, count: int, gap: bool, digest: int) -> str:
    """Name of a delta (``gap=False``) or gap object (relative to the prefix).  Pure."""
    return f"log/{seq:020d}-{first:020d}-{count:020d}-{'g' if gap else 'd'}-{digest:016x}"


def parse_log_name(rel: str) -> LogName | None:
    """The fields of a log object's name, or ``None`` if it is not one.  Pure."""
    m = _LOG_RE.fullmatch(rel)
    if m is None:
        return None
    return LogName(rel, int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) == "g", int(m.group(5), 16))


def state_name(n: int, seq: int, digest: int) -> str:
    """Name of state object ``n``, written after log object ``seq``.  Pure."""
    return f"state/{n:020d}-{seq:020d}-{digest:016x}"


def parse_state_name(rel: str) -> tuple[int, int, int] | None:
    """``(n, seq, digest)`` of a state object's name, or ``None``.  Pure."""
    m = _STATE_RE.fullmatch(rel)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3), 16))


def kv_name(applied: LogId, seq: int, digest: int) -> str:
    """Name of a key/value snapshot at ``applied``, written after log object ``seq``.  Pure."""
    return f"kv/{applied.index:020d}-{applied.term:020d}-{seq:020d}-{digest:016x}"


def parse_kv_name(rel: str) -> tuple[int, int, int, int] | None:
    """``(index, term, seq, digest)`` of a key/value snapshot's name, or ``None``.  Pure."""
    m = _KV_RE.fullmatch(rel)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4), 16))


def seal_name(seq: int, first: int, last: int, digest: int) -> str:
    """Name of the seal record of a node segment holding ``first..last`` (last log object ``seq``).  Pure."""
    return f"seal/{seq:020d}-{first:020d}-{last:020d}-{digest:016x}"


def floor_name(seq: int, digest: int) -> str:
    """Name of a retention floor: log objects below ``seq`` were removed.  Pure."""
    return f"floor/{seq:020d}-{digest:016x}"


def parse_floor_name(rel: str) -> tuple[int, int] | None:
    """``(seq, digest)`` of a floor's name, or ``None``.  Pure."""
    m = _FLOOR_RE.fullmatch(rel)
    return None if m is None else (int(m.group(1)), int(m.group(2), 16))
