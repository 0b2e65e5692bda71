"""Snapshot files of the key/value state: a portable, checksummed copy at a ``LogId``.

Layout (little-endian)::

    header (48 bytes)
       0  magic          4s  b"SWSN"
       4  version        u16 FORMAT_VERSION
       6  flags          u16 0
       8  applied_term   u64 the LogId the data was applied up to
      16  applied_index  u64
      24  count          u64 number of key/value pairs
      32  reserved       12 bytes of zero
      44  crc            u32 CRC32C of bytes 0..43
    chunks, each:
       0  n              u32 pairs in the chunk (0 = end chunk)
       4  body_len       u32
       8  body_crc       u32 CRC32C of the body
      12  reserved       u32 0
      16  body           klen[n] u32, vlen[n] u32, then key0 value0 key1 value1 ...
    the end chunk has n = 0 and an 8-byte body: the pair count again (u64)

A file without its end chunk, with a bad checksum or a count that does not add
up is refused as a whole (:class:`CorruptionError`); installing never starts
from a damaged snapshot.  Snapshot files are written under a temporary name,
fsynced and renamed, so ``dest`` never holds a partial snapshot.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from typing import Final

import numpy as np

from segwal.errors import CorruptionError, FormatVersionError, StorageIOError, SyncError
from segwal.fs import TMP_SUFFIX, FileSystem
from segwal.types import LogId
from segwal.wal.format import FORMAT_VERSION, crc32c
from segwal.wal.segment import io_error

__all__ = ["CHUNK_PAIRS", "read_snapshot", "write_snapshot"]

_MAGIC: Final = b"SWSN"
_HEAD: Final = struct.Struct("<4sHHQQQ12xI")
_CHUNK: Final = struct.Struct("<IIII")
CHUNK_PAIRS: Final = 4096


def _encode_chunk(keys: list[bytes], values: list[bytes]) -> bytes:
    n = len(keys)
    kl = np.fromiter(map(len, keys), dtype="<u4", count=n)
    vl = np.fromiter(map(len, values), dtype="<u4", count=n)
    inter = [b for pair in zip(keys, values) for b in pair]
    body = kl.tobytes() + vl.tobytes() + b"".join(inter)
    return _CHUNK.pack(n, len(body), crc32c(body), 0) + body


def write_snapshot(
    fs: FileSystem, dest: str, applied: LogId, count: int, chunks: Iterator[tuple[list[bytes], list[bytes]]]
) -> None:
    """Write a snapshot file at ``dest`` from ``chunks`` of (keys, values).

    Durable on return: written to ``dest.tmp``, fsynced, renamed, directory fsynced.
    Complexity: O(bytes).
    """
    tmp = dest + TMP_SUFFIX
    try:
        f = fs.open(tmp, create=True)
        try:
            f.truncate(0)
            head = _HEAD.pack(_MAGIC, FORMAT_VERSION, 0, applied.term, applied.index, count, 0)
            head = head[:44] + crc32c(head[:44]).to_bytes(4, "little")
            f.pwrite(head, 0)
            off = len(head)
            seen = 0
            for keys, values in chunks:
                if not keys:
                    continue
                raw = _encode_chunk(keys, values)
                f.pwrite(raw, off)
                off += len(raw)
                seen += len(keys)
            if seen != count:
                raise ValueError(f"snapshot chunks held {seen} pairs, expected {count}")
            end = seen.to_bytes(8, "little")
            f.pwrite(_CHUNK.pack(0, 8, crc32c(end), 0) + end, off)
            f.fsync()
        finally:
            f.close()
        fs.rename(tmp, dest)
    except BaseException as e:
        try:
            fs.unlink(tmp)  # never leave a partial snapshot behind (it may fill the disk)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise io_error(e, "writing snapshot", dest) from e
        raise
    try:
        fs.fsync_dir(os.path.dirname(os.path.abspath(dest)) or ".")
    except OSError as e:
        raise SyncError(e.errno or errno.EIO, f"directory fsync failed: {e.strerror or e}", dest) from e


def read_snapshot(fs: FileSystem, src: str) -> tuple[LogId, int, list[tuple[list[bytes], list[bytes]]]]:
    """Read and verify a whole snapshot file: ``(applied, count, chunks)``.

    Raises:
        CorruptionError: damaged, truncated or inconsistent (nothing is returned).
        FormatVersionError: written by a newer segwal.
    """
    try:
        f = fs.open(src, readonly=True)
        try:
            data = f.pread(f.size(), 0)
        finally:
            f.close()
    except OSError as e:
        raise StorageIOError(e.errno or 5, f"reading snapshot failed: {e.strerror or e}", src) from e
    if len(data) < _HEAD.size:
        raise CorruptionError("snapshot is shorter than its header", path=src, offset=0)
    magic, version, _flags, term, index, count, crc = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC:
        raise CorruptionError(f"not a segwal snapshot (magic {magic!r})", path=src, offset=0)
    if crc32c(data[:44]) != crc:
        raise CorruptionError("snapshot header checksum mismatch", path=src, offset=44)
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"snapshot format version {version} is newer than {FORMAT_VERSION}", path=src, offset=4)
    off = _HEAD.size
    chunks: list[tuple[list[bytes], list[bytes]]] = []
    total = 0
    view = memoryview(data)
    while True:
        if off + _CHUNK.size > len(data):
            raise CorruptionError("snapshot is truncated (no end chunk)", path=src, offset=off)
        n, blen, bcrc, _r = _CHUNK.unpack_from(data, off)
        body = view[off + _CHUNK.size : off + _CHUNK.size + blen]
        if len(body) != blen or crc32c(body) != bcrc:
            raise CorruptionError("snapshot chunk checksum mismatch", path=src, offset=off)
        if n == 0:
            if blen != 8 or int.from_bytes(body, "little") != total or total != count:
                raise CorruptionError(f"snapshot holds {total} pairs, header says {count}", path=src, offset=off)
            break
        if 8 * n > blen:  # a length read from disk never drives a read past what is there
            raise CorruptionError(f"snapshot chunk of {n} pairs is only {blen} bytes", path=src, offset=off)
        kl = np.frombuffer(body, dtype="<u4", count=n).tolist()
        vl = np.frombuffer(body, dtype="<u4", count=n, offset=4 * n).tolist()
        pos = 8 * n
        keys: list[bytes] = []
        values: list[bytes] = []
        for a, b in zip(kl, vl):
            keys.append(bytes(body[pos : pos + a]))
            pos += a
            values.append(bytes(body[pos : pos + b]))
            pos += b
        if pos != blen:
            raise CorruptionError("snapshot chunk lengths do not add up", path=src, offset=off)
        chunks.append((keys, values))
        total += n
        off += _CHUNK.size + blen
    return LogId(term, index), count, chunks
