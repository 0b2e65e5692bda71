"""The key index file of the key/value store: a mapped open-addressing table of key hashes, built, written and validated.

``kv-G.index`` (``docs/format-kv.md``, "Key index") is a checkpoint of the key
directory: for every live key, the xxh3 of the key and where its record lies
(file sequence, key offset, key and value lengths, xxh3 of the value), in a
linear-probing hash table of 32-byte slots, plus the position in the record
files it covers.  It is a pure cache: written to ``.tmp``, fdatasynced and
renamed; never listed in the manifest; a missing, stale or damaged one is
ignored (open replays the record files) and rebuilt.  The table is mapped, not
loaded: a lookup touches the one or two 4 KiB blocks it probes, each verified
against its xxh3 the first time it is used (:class:`KeyTable`).  Building it is
vectorized with numpy (:func:`build_table`).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import numpy as np
import xxhash

from segwal.errors import CorruptionError, SyncError
from segwal.fs import FileSystem, OsFile
from segwal.types import LogId
from segwal.wal.segment import SegmentFile

__all__ = [
    "INDEX_VERSION",
    "IndexDamaged",
    "IndexHeader",
    "KeyTable",
    "build_table",
    "index_name",
    "load_index",
    "write_index",
]

log = logging.getLogger("segwal.kv")

_xxh3 = xxhash.xxh3_64_intdigest

INDEX_MAGIC: Final = b"SWKI"
INDEX_VERSION: Final = 1
SLOT: Final = 32  # bytes per slot: 4 u64 words
BLOCK: Final = 4096  # bytes per verified block
BLOCK_SLOTS: Final = BLOCK // SLOT
MAX_LOAD: Final = 0.75
_SLOT = struct.Struct("<4Q")
_HEAD = struct.Struct("<4sHHQQQQQQQQIIQQQQ8xQ")  # 128 bytes
assert _HEAD.size == 128
_FLAG_APPLIED: Final = 1


class IndexDamaged(Exception):
    """A block of a key index no longer matches its checksum (internal: the store rebuilds)."""

    def __init__(self, path: str, offset: int) -> None:
        super().__init__(f"key index {path} damaged at offset {offset}")
        self.path = path
        self.offset = offset


def index_name(generation: int) -> str:
    """The key index file name of ``generation``.  Pure."""
    return f"kv-{generation:016x}.index"


@dataclass(frozen=True, slots=True)
class IndexHeader:
    """What a key index records besides its slots (see docs/format-kv.md)."""

    engine_id: int
    generation: int
    nslots: int  # power of two: home slot = hash & (nslots - 1)
    phys: int  # slots in the file (>= nslots; probes run past nslots, never wrap)
    nkeys: int
    covered_seq: int  # the record file and offset up to which every frame is in the table
    covered_off: int
    last_frame_off: int  # start of the frame ending at covered_off (covered_off itself if none)
    covered_crc: int  # chain value at covered_off (header_crc of that frame, or the file header's crc)
    files: tuple[tuple[int, int], ...]  # (seq, uid) of every record file up to covered_seq
    live: int
    dead: int
    applied: LogId | None

    def slots_offset(self) -> int:
        """Offset of slot 0 in the file.  Pure."""
        n = _HEAD.size + 16 * len(self.files) + 8 * _nblocks(self.phys)
        return (n + BLOCK - 1) // BLOCK * BLOCK


def _nblocks(phys: int) -> int:
    return (phys + BLOCK_SLOTS - 1) // BLOCK_SLOTS


def _encode_head(h: IndexHeader, sums: bytes) -> bytes:
    files = b"".join(struct.pack("<QQ", s, u) for s, u in h.files)
    a = h.applied
    raw = _HEAD.pack(
        INDEX_MAGIC, INDEX_VERSION, _FLAG_APPLIED if a is not None else 0, h.engine_id, h.generation, h.nslots,
        h.phys, h.nkeys, h.covered_seq, h.covered_off, h.last_frame_off, h.covered_crc, len(h.files), h.live,
        h.dead, a.term if a is not None else 0, a.index if a is not None else 0, 0,
    )
    crc = _xxh3(raw[:120] + files + sums)
    return raw[:120] + crc.to_bytes(8, "little") + files + sums


def build_table(rows: Any) -> tuple[int, Any]:
    """Place ``rows`` (an ``(n, 4)`` uint64 array: key hash, seq | koff << 32,
    klen | vlen << 32, value xxh3) in a linear-probing table: ``(nslots, slots)``.

    Vectorized: sort by home slot, then each entry goes to ``max(home, previous
    position + 1)`` (a running maximum), so the slots between an entry's home and
    its position are all occupied, as a probe needs.  Probes never wrap: the
    table runs past ``nslots`` as far as the last run needs, plus one empty
    slot, rounded up to a whole block.  O(n log n).
    """
    n = len(rows)
    nslots = BLOCK_SLOTS
    while nslots * MAX_LOAD < n:
        nslots *= 2
    home = (rows[:, 0] & np.uint64(nslots - 1)).astype(np.int64)
    order = np.argsort(home, kind="stable")
    hs = home[order]
    idx = np.arange(n, dtype=np.int64)
    pos = idx + np.maximum.accumulate(hs - idx) if n else idx
    top = int(pos[-1]) + 2 if n else 1
    phys = max(nslots, (top + BLOCK_SLOTS - 1) // BLOCK_SLOTS * BLOCK_SLOTS)
    slots = np.zeros((phys, 4), dtype="<u8")
    if n:
        slots[pos] = rows[order]
    return nslots, slots


def write_index(fs: FileSystem, directory: str, head: IndexHeader, slots: Any, *, rename: bool = True) -> None:
    """Write ``kv-G.index`` (``.tmp``, fdatasync, rename; no directory fsync: a lost
    rename leaves an older or no index, both safe).  O(table bytes).  With
    ``rename=False`` the file is left as ``kv-G.index.tmp`` (a background
    compaction renames it once its output is committed).

    Raises:
        OSError: the write failed (the caller logs it; the index is a cache).
    """
    raw = np.ascontiguousarray(slots).data.cast("B")
    sums = b"".join(_xxh3(raw[i : i + BLOCK]).to_bytes(8, "little") for i in range(0, len(raw), BLOCK))
    meta = _encode_head(head, sums)
    so = head.slots_offset()
    final = f"{directory}/{index_name(head.generation)}"
    tmp = final + ".tmp"
    f = fs.open(tmp, create=True)
    try:
        f.truncate(0)
        f.pwrite(meta + bytes(so - len(meta)), 0)
        step = 8 << 20
        for i in range(0, len(raw), step):
            f.pwrite(raw[i : i + step], so + i)
        f.fdatasync()
    except BaseException:
        f.close()
        try:
            fs.unlink(tmp)
        except OSError:
            pass
        raise
    f.close()
    if rename:
        fs.rename(tmp, final)


class KeyTable:
    """A key index opened for lookups (immutable; shared by concurrent readers).

    ``segs`` maps a file sequence to its open :class:`SegmentFile`.  Every slot
    read lies in a block verified against its checksum (once per block, flags in
    ``ok``); every hit is verified against the key stored in the record file.

    Point reads use ``pread`` (of the index block or slots, then of the record)
    when the files are real OS files: the kernel maps 64 KiB or more around each
    page a read of a map faults in, so random reads through maps would make
    resident memory grow with the keys read.  The map serves bulk reads
    (:meth:`rows`) and file systems without descriptors (tests).
    """

    __slots__ = (
        "_buf",
        "_fio",
        "_pread",
        "_so",
        "head",
        "mask",
        "ok",
        "path",
        "phys",
        "q",
        "readers",
        "segs",
        "sums",
    )

    def __init__(self, path: str, head: IndexHeader, buf: Any, sums: Any, segs: dict[int, SegmentFile],
                 fio: Any = None) -> None:
        self.path = path
        self.head = head
        self.mask = head.nslots - 1
        self.phys = head.phys
        self._buf = buf
        self._so = head.slots_offset()
        self.q = memoryview(buf)[self._so : self._so + head.phys * SLOT].cast("Q")
        self.sums = memoryview(sums).cast("Q")
        self.ok = bytearray(_nblocks(head.phys))
        self.segs = segs
        self._fio = fio  # an open io.FileIO of the index (closed when the table is dropped), or None
        self._pread: Callable[[int, int], bytes] | None = None if fio is None else partial(os.pread, fio.fileno())
        # seq -> pread(size, offset) of that record file, for real OS files
        self.readers: dict[int, Callable[[int, int], bytes]] | None = None
        if fio is not None and all(type(seg.file) is OsFile for seg in segs.values()):
            self.readers = {seq: partial(os.pread, seg.file.fd) for seq, seg in segs.items()}  # type: ignore[attr-defined]

    def _verify(self, b: int) -> None:
        s = b * BLOCK
        if _xxh3(self.q.cast("B")[s : s + BLOCK]) != self.sums[b]:
            raise IndexDamaged(self.path, self._so + s)
        self.ok[b] = 1

    def _slots(self, i: int) -> tuple[bytes | memoryview, int]:
        """Slots ``i`` up to ``end`` (a few, within one block) as raw bytes, and ``end``;
        the block is verified first if it was not yet."""
        if i >= self.phys:
            raise IndexDamaged(self.path, self._so + i * SLOT)
        b = i >> 7
        pr = self._pread
        if pr is None:
            if not self.ok[b]:
                self._verify(b)
            end = min((b + 1) * BLOCK_SLOTS, i + 4)
            return self.q.cast("B")[i * SLOT : end * SLOT], end
        if self.ok[b]:
            end = min((b + 1) * BLOCK_SLOTS, i + 4)
            raw = pr((end - i) * SLOT, self._so + i * SLOT)
        else:
            blk = pr(BLOCK, self._so + b * BLOCK)
            if _xxh3(blk) != self.sums[b]:
                raise IndexDamaged(self.path, self._so + b * BLOCK)
            self.ok[b] = 1
            end = (b + 1) * BLOCK_SLOTS
            raw = blk[(i - b * BLOCK_SLOTS) * SLOT :]
        if len(raw) != (end - i) * SLOT:
            raise IndexDamaged(self.path, self._so + i * SLOT)
        return raw, end

    def _find(self, key: bytes) -> tuple[SegmentFile, int, int, int, int, bytes | None] | None:
        """The slot of ``key``: ``(file, key offset, klen, vlen, value xxh3, record or None)``
        (the record, key then value, when it was read with ``pread``), or ``None``.

        Raises:
            IndexDamaged: a probed block fails its checksum.
            CorruptionError: a record's key does not hash to its slot's hash.
        """
        h = _xxh3(key)
        i = h & self.mask
        unpack = _SLOT.unpack_from
        readers = self.readers
        while True:
            raw, end = self._slots(i)
            for off in range(0, len(raw), SLOT):
                h0, w1, w2, chk = unpack(raw, off)
                if w1 == 0:
                    return None
                if h0 != h:
                    continue
                seq = w1 & 0xFFFFFFFF
                seg = self.segs.get(seq)
                if seg is None:
                    raise IndexDamaged(self.path, self._so + (i + off // SLOT) * SLOT)
                koff = w1 >> 32
                klen = w2 & 0xFFFFFFFF
                vlen = w2 >> 32
                if readers is not None:
                    rec: bytes | None = readers[seq](klen + vlen, koff)
                    stored = rec[:klen]  # type: ignore[index]
                else:
                    rec = None
                    m: Any = seg.map
                    stored = (m if m is not None else seg.buffer())[koff : koff + klen]
                if stored == key:
                    return seg, koff, klen, vlen, chk, rec
                if _xxh3(stored) != h:
                    raise CorruptionError("key/value record key does not match the key index", path=seg.path,
                                          offset=koff)
            i = end

    def lookup(self, key: bytes) -> tuple[SegmentFile, int, int, int] | None:
        """Where ``key``'s value lies, or ``None``.  O(1) expected: one or two slots,
        one key comparison.

        Raises:
            IndexDamaged: a probed block fails its checksum.
            CorruptionError: the record a slot points at holds a key that no longer
                hashes to the slot's hash (damage in the record file).
        """
        f = self._find(key)
        if f is None:
            return None
        seg, koff, klen, vlen, chk, _rec = f
        return (seg, koff + klen, koff + klen + vlen, chk)

    def lookup_many(self, keys: list[bytes]) -> list[tuple[SegmentFile, int, int, int] | None]:
        """:meth:`lookup` of each key, in order (the writer's previous-value lookups).

        Written flat like :meth:`value`: one ``pread`` of up to four slots per key
        (or of the whole block, verified, on its first use), and a hit's stored
        key compared through the record file's map (the writer reads the value
        from that map next).  O(len(keys)) expected.

        Raises:
            IndexDamaged: a probed block fails its checksum.
            CorruptionError: a record's key does not hash to its slot's hash.
        """
        pr = self._pread
        if pr is None:
            return list(map(self.lookup, keys))
        mask = self.mask
        ok = self.ok
        so = self._so
        segs = self.segs
        iter_unpack = _SLOT.iter_unpack
        out: list[tuple[SegmentFile, int, int, int] | None] = []
        for key, h in zip(keys, map(_xxh3, keys)):
            i = h & mask
            loc = None
            while True:
                if i >= self.phys:
                    raise IndexDamaged(self.path, so + i * SLOT)
                b = i >> 7
                if ok[b]:
                    n = min(((b + 1) << 7) - i, 4)
                    raw: Any = pr(n * SLOT, so + i * SLOT)
                    if len(raw) != n * SLOT:
                        raise IndexDamaged(self.path, so + i * SLOT)
                else:
                    raw, end = self._slots(i)  # reads and verifies the whole block once
                    n = end - i
                for h0, w1, w2, chk in iter_unpack(raw):
                    if w1 == 0:
                        n = 0
                        break
                    if h0 != h:
                        continue
                    seg = segs.get(w1 & 0xFFFFFFFF)
                    if seg is None:
                        raise IndexDamaged(self.path, so + i * SLOT)
                    koff = w1 >> 32
                    ke = koff + (w2 & 0xFFFFFFFF)
                    m: Any = seg.map
                    stored = (m if m is not None else seg.buffer())[koff:ke]
                    if stored == key:
                        loc = (seg, ke, ke + (w2 >> 32), chk)
                        n = 0
                        break
                    if _xxh3(stored) != h:
                        raise CorruptionError("key/value record key does not match the key index", path=seg.path,
                                              offset=koff)
                if n == 0:
                    break
                i += n
            out.append(loc)
        return out

    def value(self, key: bytes) -> bytes | None:
        """The value of ``key``, or ``None``, its xxh3 checked.  O(1) expected: one
        ``pread`` of up to four slots (the probed block's first use reads and verifies
        all of it), one ``pread`` of the record, one key comparison.

        The hot path of :meth:`KVStore.get`: written flat (no helper calls), it
        costs two system calls and about a microsecond of Python.

        Raises:
            IndexDamaged: a probed block fails its checksum.
            CorruptionError: the record is damaged (file, offset of the key or value).
        """
        pr = self._pread
        readers = self.readers
        if pr is None or readers is None:
            return self._value_mapped(key)
        h = _xxh3(key)
        i = h & self.mask
        ok = self.ok
        so = self._so
        while True:
            b = i >> 7
            if not ok[b]:
                self._slots(i)  # reads and verifies the whole block once
            n = min(((b + 1) << 7) - i, 4)
            raw = pr(n * SLOT, so + i * SLOT)
            if len(raw) != n * SLOT:
                raise IndexDamaged(self.path, so + i * SLOT)
            for h0, w1, w2, chk in _SLOT.iter_unpack(raw):
                if w1 == 0:
                    return None
                if h0 != h:
                    continue
                read = readers.get(w1 & 0xFFFFFFFF)
                if read is None:
                    raise IndexDamaged(self.path, so + i * SLOT)
                koff = w1 >> 32
                klen = w2 & 0xFFFFFFFF
                rec = read(klen + (w2 >> 32), koff)
                if rec[:klen] == key:
                    v = rec[klen:]
                    if _xxh3(v) != chk:
                        seg = self.segs[w1 & 0xFFFFFFFF]
                        raise CorruptionError("key/value value checksum mismatch", path=seg.path,
                                              offset=koff + klen)
                    return v
                if _xxh3(rec[:klen]) != h:
                    seg = self.segs[w1 & 0xFFFFFFFF]
                    raise CorruptionError("key/value record key does not match the key index", path=seg.path,
                                          offset=koff)
            i += n

    def _value_mapped(self, key: bytes) -> bytes | None:
        """:meth:`value` through the maps (file systems without descriptors)."""
        f = self._find(key)
        if f is None:
            return None
        seg, koff, klen, vlen, chk, rec = f
        if rec is not None:
            v = rec[klen:]
        else:
            m: Any = seg.map
            v = (m if m is not None else seg.buffer())[koff + klen : koff + klen + vlen]
        if _xxh3(v) != chk:
            raise CorruptionError("key/value value checksum mismatch", path=seg.path, offset=koff + klen)
        return v

    def _drop(self) -> None:
        """Drop the map's pages from the process after a bulk read (they stay in the page cache)."""
        if isinstance(self._buf, mmap.mmap):
            try:
                self._buf.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                pass

    def rows(self) -> Any:
        """Every occupied slot as an ``(n, 4)`` uint64 array, each block verified.  O(table bytes).

        Raises:
            IndexDamaged: a block fails its checksum.
        """
        for b in range(len(self.ok)):
            if not self.ok[b]:
                self._verify(b)
        a = np.frombuffer(self.q.cast("B"), dtype="<u8").reshape(-1, 4)
        out = a[a[:, 1] != 0].copy()
        self._drop()
        return out

    def key_at(self, row: Any) -> bytes:
        """The key stored in the record file for table row ``row``."""
        seg = self.segs[int(row[1]) & 0xFFFFFFFF]
        koff = int(row[1]) >> 32
        return bytes(seg.buffer()[koff : koff + (int(row[2]) & 0xFFFFFFFF)])

    def items(self) -> Iterator[tuple[bytes, tuple[SegmentFile, int, int, int]]]:
        """``(key, loc)`` of every key in the table, keys read from the record files.  O(keys)."""
        rows = self.rows()
        for i in range(0, len(rows), 4096):  # small slices: a background reader never holds the GIL long
            for row in rows[i : i + 4096].tolist():
                seg = self.segs[row[1] & 0xFFFFFFFF]
                koff = row[1] >> 32
                ke = koff + (row[2] & 0xFFFFFFFF)
                yield bytes(seg.buffer()[koff:ke]), (seg, ke, ke + (row[2] >> 32), row[3])


def load_index(
    fs: FileSystem, directory: str, *, engine_id: int, generation: int, path: str | None = None
) -> tuple[IndexHeader, Any, Any] | str:
    """Open ``kv-G.index``: ``(header, buffer, block sums)``, or why it cannot be used.

    Checks the magic, version, identity, the checksum over the header, file list
    and block sums, and the file's size; the slots are verified lazily
    (:class:`KeyTable`).  O(blocks): ~8 bytes read per 4 KiB of table.
    """
    path = path or f"{directory}/{index_name(generation)}"
    if not fs.exists(path):
        return "missing"
    try:
        f = fs.open(path, readonly=True)
    except OSError as e:
        return f"unreadable ({e})"
    try:
        raw = f.pread(_HEAD.size, 0)
        if len(raw) < _HEAD.size:
            return "short header"
        (magic, version, flags, eid, gen, nslots, phys, nkeys, cseq, coff, lfo, ccrc, nfiles, live, dead, at, ai,
         crc) = _HEAD.unpack(raw)
        if magic != INDEX_MAGIC:
            return "bad magic"
        if version != INDEX_VERSION:
            return f"version {version}"
        if eid != engine_id or gen != generation:
            return "foreign or stale"
        if nslots < 1 or nslots & (nslots - 1) or phys < nslots or phys % BLOCK_SLOTS or nfiles > 1 << 20:
            return "bad geometry"
        size = f.size()
        nrest = 16 * nfiles + 8 * _nblocks(phys)
        if size < _HEAD.size + nrest:
            return "wrong size"
        buf: Any = f.map()
        if buf is None:
            buf = f.pread(size, 0)
        rest = memoryview(buf)[_HEAD.size : _HEAD.size + nrest]  # no copy: ~8 bytes per 4 KiB of table
        hasher = xxhash.xxh3_64(raw[:120])
        hasher.update(rest)
        if hasher.intdigest() != crc:
            return "header checksum mismatch"
        files = tuple(struct.iter_unpack("<QQ", rest[: 16 * nfiles]))
        head = IndexHeader(eid, gen, nslots, phys, nkeys, cseq, coff, lfo, ccrc, files, live, dead,
                           LogId(at, ai) if flags & _FLAG_APPLIED else None)
        if size != head.slots_offset() + phys * SLOT:
            return "wrong size"
        return head, buf, rest[16 * nfiles :]
    except OSError as e:
        return f"unreadable ({e})"
    finally:
        f.close()


def sync_error(e: OSError, path: str) -> SyncError:
    """An :class:`SyncError` for a failed index write (never raised to a writer: logged)."""
    return SyncError(e.errno or errno.EIO, f"key index write failed: {e.strerror or e}", path)

