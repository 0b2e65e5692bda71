"""The record codec of the key/value store: pure functions that check, encode and decode a KV frame body.

KV frame body (little-endian; the frame around it is ``wal/format.py``'s)::

     0  flags          u32  1 = carries ``applied``, 2 = clean close, 4 = end of compaction
     4  reserved       u32  0
     8  applied_term   u64
    16  applied_index  u64
    24  klen[count]    u32 each
        vlen[count]    u32 each, 0xFFFFFFFF = tombstone (delete)
        check[count]   u64 each, xxh3_64(value) (0 for a tombstone)
        key0 value0 key1 value1 ...   (a tombstone has no value bytes)
        zero padding to a multiple of 8 (added by encode_frame)

No I/O: everything here works on bytes and lists.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from segwal.errors import CorruptionError
from segwal.types import LogId

__all__ = [
    "BODY_HEAD_SIZE",
    "FLAG_APPLIED",
    "FLAG_CLOSE",
    "FLAG_COMPACT_END",
    "MAX_BATCH_BYTES",
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "REC_TABLE",
    "TOMBSTONE",
    "KVBody",
    "decode_kv_body",
    "encode_kv_body",
    "split_changes",
    "validate_changes",
]

#: Largest key, value and whole batch accepted by :meth:`KVStore.apply`.
MAX_KEY_SIZE: Final = 1 << 16
MAX_VALUE_SIZE: Final = (1 << 28)
MAX_BATCH_BYTES: Final = 1 << 30

TOMBSTONE: Final = 0xFFFFFFFF
FLAG_APPLIED: Final = 1
FLAG_CLOSE: Final = 2
FLAG_COMPACT_END: Final = 4

_BODY_HEAD = struct.Struct("<IIQQ")
BODY_HEAD_SIZE: Final = _BODY_HEAD.size  # 24
REC_TABLE: Final = 16  # klen + vlen + check, per record
_LITTLE = sys.byteorder == "little"

assert BODY_HEAD_SIZE == 24


_TUPLE: Final = frozenset((tuple,))
_BYTES: Final = frozenset((bytes,))
_BYTES_OR_NONE: Final = frozenset((bytes, type(None)))
_PAD: Final = bytes(8)


def _u32(values: list[int]) -> array.array[int]:
    a = array.array("I", values)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a


def _u64(values: list[int]) -> array.array[int]:
    a = array.array("Q", values)
    if not _LITTLE:  # pragma: no cover
        a.byteswap()
    return a


def encode_kv_body(
    keys: list[bytes],
    values: list[bytes | None],
    checks: list[int],
    applied: LogId | None,
    flags: int = 0,
    *,
    has_none: bool = True,
) -> bytes:
    """Encode the body of one KV frame (pure).  O(total bytes), a constant number of
    C-level calls plus list work proportional to the number of records.

    ``checks[i]`` must be ``xxh3_64(values[i])`` (0 for a tombstone).

    >>> import xxhash
    >>> b = encode_kv_body([b"k"], [b"v"], [xxhash.xxh3_64_intdigest(b"v")], None)
    >>> decode_kv_body(b, 0, len(b), 1, "<buf>").keys
    [b'k']
    """
    n = len(keys)
    if applied is not None:
        flags |= FLAG_APPLIED
        head = _BODY_HEAD.pack(flags, 0, applied.term, applied.index)
    else:
        head = _BODY_HEAD.pack(flags, 0, 0, 0)
    if has_none and None in values:
        vlens = [TOMBSTONE if v is None else len(v) for v in values]
        data_vals: list[bytes] = [b"" if v is None else v for v in values]
    else:
        vlens = list(map(len, values))  # type: ignore[arg-type]
        data_vals = values  # type: ignore[assignment]
    parts: list[Any] = [None] * (2 * n)
    parts[0::2] = keys
    parts[1::2] = data_vals
    return b"".join((head, _u32(list(map(len, keys))), _u32(vlens), _u64(checks), *parts))


def encode_kv_padded(
    keys: Any, values: Any, klens: list[int], vlens: list[int], checks: list[int], applied: LogId | None,
    *, deletes: bool = False,
) -> bytes:
    """:func:`encode_kv_body` for the write path, padded with zeros to a multiple of 8
    (so :func:`~segwal.wal.format.encode_frame` need not copy it to pad it).  Pure.

    ``klens``/``vlens`` are the lengths of ``keys``/``values`` (``vlens[i]`` is
    0 for a delete, whose value is ``None``: :func:`split_changes`'s); ``checks``
    as in :func:`encode_kv_body`; ``deletes`` must be true when any value is ``None``.
    The bytes are those of :func:`encode_kv_body` plus the frame's padding.
    O(total bytes), one join.
    """
    n = len(klens)
    if applied is not None:
        head = _BODY_HEAD.pack(FLAG_APPLIED, 0, applied.term, applied.index)
    else:
        head = _BODY_HEAD.pack(0, 0, 0, 0)
    parts: list[Any] = [None] * (2 * n + 5)
    parts[0] = head
    parts[1] = _u32(klens)
    parts[2] = _u32(vlens)
    parts[3] = _u64(checks)
    parts[4 : 2 * n + 4 : 2] = keys
    parts[5 : 2 * n + 4 : 2] = values
    size = BODY_HEAD_SIZE + REC_TABLE * n + sum(klens) + sum(vlens)
    if deletes:
        parts[2] = _u32([TOMBSTONE if v is None else ln for v, ln in zip(values, vlens)])
        parts[5 : 2 * n + 4 : 2] = [b"" if v is None else v for v in values]
    parts[-1] = _PAD[: -size & 7]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class KVBody:
    """A decoded KV frame body: records with the absolute offset of each value.

    Attributes:
        flags: FLAG_* bits.
        applied: the ``LogId`` carried, or ``None``.
        keys: the keys, in batch order.
        vstarts, vends: absolute offsets of each value in the buffer.
        vlens: value lengths (``TOMBSTONE`` for a delete).
        checks: xxh3_64 of each value (0 for a delete).
    """

    flags: int
    applied: LogId | None
    keys: list[bytes]
    vstarts: list[int]
    vends: list[int]
    vlens: list[int]
    checks: list[int]


def decode_kv_body(buf: Any, body_off: int, body_end: int, count: int, path: str) -> KVBody:
    """Decode a KV body lying at ``buf[body_off:body_end]`` (padding included) holding
    ``count`` records.  Pure.  O(count) plus the key copies.

    Raises:
        CorruptionError: the body's internal lengths do not add up (a frame whose
            CRC matched but whose content is inconsistent).
    """
    table = body_off + BODY_HEAD_SIZE
    data = table + REC_TABLE * count
    if data > body_end:
        raise CorruptionError(f"KV frame table of {count} records overruns the frame", path=path, offset=body_off)
    flags, _r, aterm, aidx = _BODY_HEAD.unpack_from(buf, body_off)
    klens = np.frombuffer(buf, "<u4", count, table)
    vlens_a = np.frombuffer(buf, "<u4", count, table + 4 * count)
    checks = np.frombuffer(buf, "<u8", count, table + 8 * count).tolist()
    vl0 = np.where(vlens_a == TOMBSTONE, 0, vlens_a).astype(np.int64)
    inter = np.empty(2 * count, np.int64)
    inter[0::2] = klens
    inter[1::2] = vl0
    acc = np.cumsum(inter) + data
    total_end = int(acc[-1]) if count else data
    if total_end > body_end or body_end - total_end >= 8:
        raise CorruptionError(
            f"KV frame records end at {total_end}, frame body ends at {body_end}", path=path, offset=body_off
        )
    ends = acc.tolist()
    kstarts = [data, *ends[1:-1:2]] if count else []
    vstarts = ends[0::2]
    vends = ends[1::2]
    keys = [bytes(buf[a:b]) for a, b in zip(kstarts, vstarts)]
    applied = LogId(aterm, aidx) if flags & FLAG_APPLIED else None
    return KVBody(flags, applied, keys, vstarts, vends, vlens_a.tolist(), checks)


def validate_changes(changes: list[Any]) -> tuple[list[bytes], list[bytes | None], bool]:
    """Split and check a batch of ``(key, value)`` changes: ``(keys, values, any_delete)``.
    Pure, changes nothing.  O(number of changes), C-level passes in the common case.

    Raises:
        TypeError: a change is not a pair, a key is not bytes, or a value is
            neither bytes nor ``None``.
        ValueError: a key, a value or the whole batch is over its limit
            (``MAX_KEY_SIZE``, ``MAX_VALUE_SIZE``, ``MAX_BATCH_BYTES``).
    """
    keys, vals, has_none, _kl, _vl = split_changes(changes)
    return list(keys), list(vals), has_none


def split_changes(changes: list[Any]) -> tuple[Any, Any, bool, list[int], list[int]]:
    """:func:`validate_changes` for the write path: ``(keys, values, any_delete, klens, vlens)``,
    keys and values as sequences (tuples in the common case), ``vlens[i]`` is 0 for a delete.
    Pure, changes nothing.  O(number of changes): about seven C-level passes when every
    change is a pair of bytes; any doubt falls back to a per-change loop that names the
    offending change.

    Raises:
        TypeError / ValueError: as :func:`validate_changes`.
    """
    keys = None
    if set(map(type, changes)) == _TUPLE:  # tuples only: zip must not consume a one-shot iterable
        try:
            # strict: a change longer or shorter than the others raises; unpacking into two
            # then fails unless every change has exactly two items.
            keys, vals = zip(*changes, strict=True)
        except ValueError:
            keys = None
    if keys is not None and set(map(type, keys)) == _BYTES:
        vtypes = set(map(type, vals))
        if vtypes <= _BYTES_OR_NONE:
            has_none = type(None) in vtypes
            vsizes = [0 if v is None else len(v) for v in vals] if has_none else list(map(len, vals))
            ksizes = list(map(len, keys))
            mk = max(ksizes)
            mv = max(vsizes)
            if (
                mk <= MAX_KEY_SIZE
                and mv <= MAX_VALUE_SIZE
                and (
                    len(keys) * (mk + mv + REC_TABLE) <= MAX_BATCH_BYTES
                    or sum(ksizes) + sum(vsizes) + REC_TABLE * len(keys) <= MAX_BATCH_BYTES
                )
            ):
                return keys, vals, has_none, ksizes, vsizes
    ks, vs, has_none = _validate_slow(changes)
    return ks, vs, has_none, list(map(len, ks)), [0 if v is None else len(v) for v in vs]


def _validate_slow(changes: list[Any]) -> tuple[list[bytes], list[bytes | None], bool]:
    keys: list[bytes] = []
    vals: list[bytes | None] = []
    total = 0
    for i, ch in enumerate(changes):
        try:
            k, v = ch
        except (TypeError, ValueError):
            raise TypeError(f"change {i}: expected a (key, value) pair, got {type(ch).__name__}") from None
        if type(k) is not bytes:
            raise TypeError(f"change {i}: key must be bytes, got {type(k).__name__}")
        if len(k) > MAX_KEY_SIZE:
            raise ValueError(f"change {i}: key of {len(k)} bytes exceeds MAX_KEY_SIZE ({MAX_KEY_SIZE})")
        if v is not None:
            if type(v) is not bytes:
                raise TypeError(f"change {i}: value must be bytes or None, got {type(v).__name__}")
            if len(v) > MAX_VALUE_SIZE:
                raise ValueError(
                    f"change {i}: value of {len(v)} bytes exceeds MAX_VALUE_SIZE ({MAX_VALUE_SIZE})"
                )
            total += len(v)
        total += len(k) + REC_TABLE
        keys.append(k)
        vals.append(v)
    if total > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {total} bytes exceeds MAX_BATCH_BYTES ({MAX_BATCH_BYTES})")
    return keys, vals, None in vals
