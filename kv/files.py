"""The record files of the key/value store: name, choose, create, scan, seal and end them; read values back.

Files in the store directory (``G`` = generation, ``S`` = file sequence, both 16
lower-case hex digits)::

    kv-G-S.log      record file written by apply
    kv-G-S.merged   compaction output: its final name makes every file of
                    generation G with a smaller S obsolete (the commit point)
    kv-G-S.tmp      compaction in progress; removed at open

Each file starts with the common 64-byte segment header (``engine_id``, ``seq`` =
S, ``uid`` random, ``base_index`` = G) followed by ``KIND_KV`` frames
(``kv/codec.py``).  A live value is found by its :data:`Loc`.  Only
:func:`read_locs` runs on every apply that overwrites keys; the rest runs at
open, close, and when a file is started or sealed.
"""

from __future__ import annotations

import errno
import logging
import operator
import random
import re
from typing import Any, NamedTuple

import xxhash

from segwal.errors import CorruptionError, OutOfSpaceError, SyncError
from segwal.fs import FileSystem
from segwal.kv.codec import FLAG_CLOSE, encode_kv_body
from segwal.types import LogId
from segwal.wal.format import (
    KIND_KV,
    SEGMENT_HEADER_SIZE,
    FrameHeader,
    decode_segment_header,
    encode_frame,
    scan_frames,
)
from segwal.wal.prealloc import Preallocator
from segwal.wal.segment import SegmentFile, io_error, recover_tail

__all__ = [
    "KVFile",
    "Loc",
    "create_file",
    "file_name",
    "move_zeroing",
    "open_file",
    "read_locs",
    "scan_file",
    "seal_file",
    "select_files",
    "select_tracked",
    "torn_creation",
    "write_clean_end",
]

log = logging.getLogger("segwal.kv")

#: Where a live value lies: ``(file, start, end, xxh3 of the value)``.
Loc = tuple[SegmentFile, int, int, int]


class KVFile(NamedTuple):
    """A record file as the engine's manifest lists it.

    ``length`` is the exact size of a sealed file, and for the active (last)
    file a durable claim: its bytes below that offset were synced when the list
    was committed and must still be there.
    """

    seq: int
    uid: int
    length: int

_xxh3 = xxhash.xxh3_64_intdigest
_getitem = operator.getitem
_get_map = operator.attrgetter("map")

_NAME = re.compile(r"^kv-([0-9a-f]{16})-([0-9a-f]{16})\.(log|merged|tmp)$")


def file_name(generation: int, seq: int, kind: str) -> str:
    """The name of file ``seq`` of ``generation``; ``kind`` is ``log``, ``merged`` or ``tmp``.  Pure."""
    return f"kv-{generation:016x}-{seq:016x}.{kind}"



def read_locs(locs: list[Loc]) -> list[bytes]:
    """The values at ``locs`` (not empty), each verified against its xxh3.  C-level maps, O(bytes).

    Raises:
        CorruptionError: a value no longer matches its checksum (the first such one is named).
    """
    segs, starts, ends, checks = zip(*locs)
    values: list[bytes] = list(map(_getitem, map(_get_map, segs), map(slice, starts, ends)))
    if list(map(_xxh3, values)) != list(checks):
        for seg, s, v, c in zip(segs, starts, values, checks):
            if _xxh3(v) != c:
                raise CorruptionError("key/value value checksum mismatch", path=seg.path, offset=s)
    return values


def _list_generation(
    fs: FileSystem, directory: str, generation: int, *, keep_others: bool
) -> tuple[list[tuple[int, str, str]], list[str]]:
    """``([(seq, kind, name), ...] of generation's .log/.merged files, [names to delete])``:
    stray ``.tmp`` files and, unless ``keep_others``, other generations' files.  Sorted by name."""
    try:
        names = fs.listdir(directory) if fs.exists(directory) else []
    except OSError as e:
        raise io_error(e, "listing key/value directory", directory) from e
    ours: list[tuple[int, str, str]] = []
    doomed: list[str] = []
    for name in sorted(names):
        m = _NAME.match(name)
        if m is None:
            continue  # not ours: leave it alone
        gen, seq, kind = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        if gen != generation:
            if not keep_others:
                doomed.append(name)
        elif kind == "tmp":
            doomed.append(name)
        else:
            ours.append((seq, kind, name))
    return ours, doomed


def _remove(fs: FileSystem, directory: str, names: list[str]) -> None:
    """Delete ``names`` durably: the directory is fsynced before (a compaction's rename
    becomes durable before what it replaces goes) and after."""
    try:
        fs.fsync_dir(directory)
        for name in names:
            fs.unlink(f"{directory}/{name}")
        fs.fsync_dir(directory)
    except OSError as e:
        raise io_error(e, "removing stale key/value files", directory) from e


def select_files(
    fs: FileSystem, directory: str, generation: int, *, keep_others: bool, readonly: bool
) -> tuple[list[tuple[int, str]], int]:
    """The record files of ``generation`` in use in ``directory``, as ``(seq, name)`` in
    sequence order, and the sequence the first one must have (the newest committed
    compaction output, else 1).

    Unless ``readonly``, deletes (with directory fsyncs before and after) the files of
    other generations (kept if ``keep_others``), stray ``.tmp`` files and the files
    a committed compaction made obsolete.  O(files in the directory).

    Raises:
        CorruptionError: two files with one sequence, or a missing sequence.
        StorageIOError: listing or removing failed.
    """
    ours, doomed = _list_generation(fs, directory, generation, keep_others=keep_others)
    mine: dict[int, tuple[str, str]] = {}
    for seq, kind, name in ours:
        if seq in mine:
            raise CorruptionError(
                f"two files with sequence {seq}: {mine[seq][0]} and {name}", path=f"{directory}/{name}", offset=None
            )
        mine[seq] = (name, kind)
    merged = [s for s, (_n, k) in mine.items() if k == "merged"]
    base = max(merged) if merged else 1
    obsolete = [mine.pop(s)[0] for s in sorted(mine) if s < base]
    if not readonly and (doomed or obsolete):
        _remove(fs, directory, doomed + obsolete)
    seqs = sorted(mine)
    if seqs and seqs[0] != base:
        raise CorruptionError(
            f"key/value file sequence {base} is missing (first present is {seqs[0]})",
            path=f"{directory}/{mine[seqs[0]][0]}",
            offset=None,
        )
    for a, b in zip(seqs, seqs[1:]):
        if b != a + 1:
            raise CorruptionError(
                f"key/value files {a + 1}..{b - 1} are missing", path=f"{directory}/{mine[b][0]}", offset=None
            )
    return [(s, mine[s][0]) for s in seqs], base


def select_tracked(
    fs: FileSystem, directory: str, generation: int, files: tuple[KVFile, ...], *, keep_others: bool, readonly: bool
) -> list[tuple[int, str]]:
    """The names of the record files the manifest lists (``files``), as ``(seq, name)``.

    Every listed file must be there: one that is not is acknowledged data gone.
    Every other file of ``generation`` is the leftover of an operation that never
    committed (a rollover or compaction cut short, a ``.tmp``), and files of other
    generations are stale (kept if ``keep_others``); unless ``readonly`` they are
    deleted (directory fsynced after).  O(files in the directory).

    Raises:
        CorruptionError: a listed file is missing (named, with the manifest's record).
        StorageIOError: listing or removing failed.
    """
    wanted = {f.seq for f in files}
    ours, doomed = _list_generation(fs, directory, generation, keep_others=keep_others)
    found: dict[int, list[str]] = {}
    for seq, _kind, name in ours:
        if seq in wanted:
            found.setdefault(seq, []).append(name)
        else:
            doomed.append(name)
    out: list[tuple[int, str]] = []
    for f in files:
        names_f = found.get(f.seq)
        if not names_f:
            raise CorruptionError(
                f"key/value file {f.seq} of generation {generation} is missing (the manifest lists it, "
                f"{'sealed at' if f is not files[-1] else 'durable up to'} {f.length} bytes)",
                path=f"{directory}/{file_name(generation, f.seq, 'log')}",
                offset=None,
            )
        # both a .log and a .merged of one sequence: the manifest's uid tells which (open_file checks it)
        out.append((f.seq, names_f[-1] if len(names_f) == 1 else _pick_by_uid(fs, directory, names_f, f.uid)))
        doomed.extend(n for n in names_f if n != out[-1][1])
    if not readonly and doomed:
        _remove(fs, directory, doomed)
    return out


def _pick_by_uid(fs: FileSystem, directory: str, names: list[str], uid: int) -> str:
    for name in names:
        try:
            f = fs.open(f"{directory}/{name}", readonly=True)
            try:
                head = f.pread(SEGMENT_HEADER_SIZE, 0)
            finally:
                f.close()
            h = decode_segment_header(head, name) if len(head) == SEGMENT_HEADER_SIZE else None
        except (OSError, CorruptionError):
            continue
        if h is not None and h.uid == uid:
            return name
    return names[-1]  # none matches: open_file reports the stale header


def create_file(
    fs: FileSystem, directory: str, *, engine_id: int, generation: int, seq: int, prealloc: int
) -> SegmentFile:
    """Create record file ``seq`` (``.log``) with its header durable, and its name durable.

    Raises:
        OutOfSpaceError / StorageIOError: the file could not be created.
        SyncError: the file or directory fsync failed.
    """
    path = f"{directory}/{file_name(generation, seq, 'log')}"
    seg = SegmentFile.create(
        fs, path, engine_id=engine_id, seq=seq, uid=random.getrandbits(64), base=generation, prealloc=prealloc,
    )
    try:
        seg.sync()
        fs.fsync_dir(directory)
    except SyncError:
        seg.discard()
        raise
    except OSError as e:
        seg.discard()
        raise SyncError(e.errno or errno.EIO, f"fsync of directory failed: {e.strerror or e}", directory) from e
    seg.durable = seg.end
    return seg


def seal_file(seg: SegmentFile) -> None:
    """Seal a full record file: truncate it to its last frame, fsync it, and map it whole.

    Durability: everything in it is durable when this returns.

    Raises:
        SyncError: the truncate or the fsync failed (the caller poisons the store).
    """
    try:
        seg.file.truncate(seg.end)
        seg.file.fsync()
    except OSError as e:
        raise SyncError(e.errno or errno.EIO, f"sealing key/value file failed: {e.strerror or e}", seg.path) from e
    seg.remap()
    seg.durable = seg.end


def write_clean_end(seg: SegmentFile, applied: LogId | None) -> None:
    """Record a clean end of the active file: an empty frame carrying ``applied`` whose
    durable claim covers the whole file (so later damage anywhere in it is
    corruption, not a torn tail), then fdatasync.  Call after a flush.

    A full disk skips the marker with a WARNING: everything is already synced,
    the marker is only a stronger claim for the next open.

    Raises:
        SyncError: the fdatasync failed; the frame is cut back (the caller poisons the store).
    """
    body = encode_kv_body([], [], [], applied, FLAG_CLOSE)
    off, prev_crc = seg.end, seg.last_crc
    try:
        seg.append(encode_frame(KIND_KV, 0, body, offset=off, durable=seg.durable, prev_crc=prev_crc))
    except OutOfSpaceError as e:
        # A full disk must not make close fail.
        log.warning("key/value clean-close marker not written (%s): disk full", e)
        return
    try:
        seg.sync()
    except SyncError:
        seg.rollback(off, prev_crc)
        raise



def move_zeroing(pa: Preallocator | None, old: SegmentFile | None, new: SegmentFile | None, file_size: int) -> None:
    """Move background zero-filling by ``pa`` (if any) from ``old`` to the new active file ``new``."""
    if pa is None:
        return
    if old is not None:
        pa.unregister(old)
        old.stop_zeroing()
    if new is not None:
        pa.register(new, file_size)


def torn_creation(fs: FileSystem, directory: str, name: str, *, readonly: bool) -> bool:
    """Whether the last file never got its header (a crash while it was being
    created); if so it is removed (WARNING; kept if ``readonly``).  Its header is
    synced before any frame goes in, so such a file holds nothing acknowledged.

    Raises:
        StorageIOError: reading or removing the file failed.
    """
    path = f"{directory}/{name}"
    try:
        f = fs.open(path, readonly=True)
        try:
            size = f.size()
            if size > 1 << 20:
                return False
            head = f.pread(size, 0)
        finally:
            f.close()
    except OSError as e:
        raise io_error(e, "reading key/value file", path) from e
    if len(head) >= SEGMENT_HEADER_SIZE:
        try:
            if decode_segment_header(head, path) is not None:
                return False
        except CorruptionError:
            pass
    if len(head) > SEGMENT_HEADER_SIZE and head[SEGMENT_HEADER_SIZE:].strip(b"\0"):
        return False  # data after a bad header: not a torn creation (open_file reports it)
    log.warning("key/value file %s: torn creation (no valid header) at offset 0: removed", path)
    if not readonly:
        try:
            fs.unlink(path)
            fs.fsync_dir(directory)
        except OSError as e:
            raise io_error(e, "removing torn key/value file", path) from e
    return True


def open_file(
    fs: FileSystem,
    directory: str,
    name: str,
    seq: int,
    *,
    engine_id: int,
    generation: int,
    readonly: bool,
    prealloc: int,
) -> SegmentFile:
    """Open record file ``name`` and check its header against its name and the store;
    its frames are not read yet (:func:`scan_file`).  The file is closed on error.

    Raises:
        CorruptionError: missing or damaged header, a foreign or stale file.
        StorageIOError: opening or reading failed.
    """
    path = f"{directory}/{name}"
    try:
        f = fs.open(path, readonly=readonly)
    except OSError as e:
        raise io_error(e, "opening key/value file", path) from e
    try:
        head = f.pread(SEGMENT_HEADER_SIZE, 0)
    except OSError as e:
        f.close()
        raise io_error(e, "reading key/value file header", path) from e
    try:
        h = decode_segment_header(head, path) if len(head) == SEGMENT_HEADER_SIZE else None
        bad_header = None
    except CorruptionError as e:
        h, bad_header = None, e
    if h is None:
        f.close()
        if bad_header is not None:
            raise bad_header
        raise CorruptionError("key/value file header is missing or zeroed", path=path, offset=0)
    try:
        if h.engine_id != engine_id:
            raise CorruptionError(
                f"foreign key/value file: engine id {h.engine_id:#x} != {engine_id:#x}", path=path, offset=8
            )
        if h.seq != seq or h.base_index != generation:
            raise CorruptionError(
                f"stale key/value file: header (seq {h.seq}, generation {h.base_index}) does not match its "
                f"name (seq {seq}, generation {generation})",
                path=path,
                offset=16,
            )
    except BaseException:
        f.close()
        raise
    seg = SegmentFile(fs, path, f, seq, h.uid, generation, prealloc)
    seg.last_crc = h.crc
    return seg


def scan_file(
    seg: SegmentFile, *, last: bool, readonly: bool, length: int | None = None, start: int = SEGMENT_HEADER_SIZE,
    prev_crc: int | None = None,
) -> tuple[Any, list[tuple[int, FrameHeader]]]:
    """Scan the frames of an opened record file: ``(buffer, [(offset, header), ...])``.

    A sealed file (not ``last``) must be whole, and exactly ``length`` bytes when
    the manifest gives it.  The last file may end in a torn tail, cut off with a
    WARNING (the cut is made and what remains synced unless ``readonly``), but
    never below ``length``, the manifest's durable claim for it.  Sets
    ``seg.end``, ``seg.last_crc`` and, for a sealed file, ``seg.durable``.
    ``start``/``prev_crc``: scan from a checkpoint (the key index's covered
    position and chain value) instead of the first frame.
    O(bytes in the file from ``start``).

    Raises:
        CorruptionError: damage in a sealed file or a sealed file of the wrong
            size, or damage below a durable claim in the last one.
    """
    path = seg.path
    buf = seg.buffer()
    if last:
        crc = seg.last_crc if prev_crc is None else prev_crc
        rec = recover_tail(buf, start, crc, known_durable=length or 0)
        if rec.corrupt:
            raise CorruptionError(
                f"damaged key/value frame below a durable claim of offset {rec.claim}", path=path, offset=rec.end
            )
        frames = rec.frames
        seg.end, seg.last_crc = rec.end, rec.last_crc
        if rec.torn and readonly:
            log.info("key/value file %s: read up to offset %d; what follows is being written or torn", path, rec.end)
        elif rec.torn:
            log.warning("key/value file %s: torn tail at offset %d cut off", path, rec.end)
            if not readonly:
                seg.cut_torn_tail()
                buf = seg.buffer()
        elif not readonly:
            seg.sync()  # what the OS holds becomes durable: later frames may claim it
    else:
        res = scan_frames(buf, start, seg.last_crc if prev_crc is None else prev_crc)
        if res.stop != "end" or res.end != len(buf):
            raise CorruptionError("damaged frame in a sealed key/value file", path=path, offset=res.end)
        if length is not None and len(buf) != length:
            raise CorruptionError(
                f"sealed key/value file is {len(buf)} bytes, the manifest says {length}", path=path,
                offset=min(len(buf), length),
            )
        frames = res.frames
        seg.end, seg.last_crc, seg.durable = res.end, res.last_crc, res.end
    return buf, frames
