"""The engine's state in memory and the records that change it: encoding each record, decoding an object, replaying it.

A :class:`View` is what a manifest plus the slots after it say: the log
as *runs* (one per ENTRIES frame: which object holds which entries, at which
offsets), the purge boundary, hard state, key/value data and last applied.
Records are encoded here (:func:`encode_entries`, :func:`encode_kv`, ...) and
applied by :meth:`View.apply_slot` in slot order, at open and after each
acknowledged write, so that what a reopen replays is exactly what the writer
applied.  No I/O happens here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

import numpy as np
import xxhash

from segwal.engine.hardstate import decode_hard_state
from segwal.errors import CorruptionError
from segwal.kv.codec import decode_kv_body, encode_kv_body
from segwal.storage.objectstore.layout import (
    K_CHECKPOINT,
    K_ENTRIES,
    K_FENCE,
    K_HARDSTATE,
    K_INSTALL,
    K_KV,
    K_PURGE,
    K_RESET,
    K_TRUNCATE,
    KIND_NAMES,
    ObjectHeader,
    decode_logid,
    decode_object_header,
    encode_object,
)
from segwal.types import Entry, HardState, LogId
from segwal.wal.format import (
    FRAME_HEADER_SIZE,
    KIND_ENTRIES,
    KIND_KV,
    KIND_TRUNCATE,
    SLOT_DTYPE,
    SLOT_SIZE,
    encode_entries_frame,
    encode_frame,
    scan_frames,
)

__all__ = ["Run", "View", "encode_entries", "encode_kv", "encode_truncate", "decode_runs", "decode_kv_frames",
           "encode_checkpoint", "Decoded", "decode_slot"]

_xxh3 = xxhash.xxh3_64_intdigest
#: Bytes of key/value pairs per KV frame of a checkpoint object.
_CKPT_FRAME: Final = 1 << 20


class Run:
    """Entries ``first .. first+count-1`` of one ENTRIES frame in object ``name``.

    ``pstart[k]``/``plen[k]`` locate entry ``first+k``'s payload in the
    object; ``checks[k]`` is its per-entry check value.  ``count`` shrinks when
    a truncation or overwrite cuts the run.
    """

    __slots__ = ("first", "count", "name", "terms", "pstart", "plen", "checks")

    def __init__(
        self, first: int, name: str, terms: list[int], pstart: list[int], plen: list[int], checks: list[int]
    ) -> None:
        self.first = first
        self.count = len(terms)
        self.name = name
        self.terms = terms
        self.pstart = pstart
        self.plen = plen
        self.checks = checks


def decode_runs(buf: bytes | memoryview, hdr: ObjectHeader, name: str, limit: int | None = None) -> list[Run]:
    """The runs of an object holding ENTRIES frames (a slot or a chunk), checked.

    ``limit`` stops the scan there (a ranged read of a chunk's table); then
    body checksums are not verified (entries are verified one by one on read).
    Raises CorruptionError naming the object and offset.  O(entries).
    """
    runs: list[Run] = []
    if limit is not None:
        off = hdr.body
        if off + FRAME_HEADER_SIZE > len(buf):
            raise CorruptionError("chunk table is cut short", path=name, offset=off)
        from segwal.wal.format import decode_frame_header

        fh = decode_frame_header(buf, off)
        if fh is None or fh.prev_crc != hdr.header_crc or fh.kind != KIND_ENTRIES:
            raise CorruptionError("bad ENTRIES frame header", path=name, offset=off)
        frames = [(off, fh)]
    else:
        scan = scan_frames(buf, hdr.body, hdr.header_crc)
        if scan.stop != "end" or scan.end != len(buf):
            raise CorruptionError(f"damaged frame ({scan.stop})", path=name, offset=scan.end)
        frames = scan.frames
    for off, fh in frames:
        if fh.kind != KIND_ENTRIES:
            raise CorruptionError(f"unexpected frame kind {fh.kind}", path=name, offset=off)
        table_end = off + FRAME_HEADER_SIZE + SLOT_SIZE * fh.count
        if table_end > len(buf):
            raise CorruptionError("slot table overruns the object", path=name, offset=off)
        t = np.frombuffer(buf, SLOT_DTYPE, fh.count, off + FRAME_HEADER_SIZE)
        runs.append(
            Run(fh.first_index, name, t["term"].tolist(), t["pstart"].tolist(), t["plen"].tolist(),
                t["check"].tolist())
        )
    return runs


def encode_entries(
    kind: int, epoch: int, seq: int, wid: bytes, first: int, terms: Sequence[int], payloads: Sequence[bytes]
) -> bytes:
    """A slot (``K_ENTRIES``) or chunk (``K_CHUNK``) object holding one ENTRIES frame.  O(bytes)."""
    head, hcrc = encode_object(kind, epoch, seq, wid)
    fr = encode_entries_frame(first, terms, payloads, offset=len(head), durable=len(head), prev_crc=hcrc)
    return b"".join((head, *fr.buffers))


def encode_truncate(epoch: int, seq: int, wid: bytes, from_index: int) -> bytes:
    """A TRUNCATE slot object (one TRUNCATE frame).  O(1)."""
    head, hcrc = encode_object(K_TRUNCATE, epoch, seq, wid)
    fr = encode_frame(KIND_TRUNCATE, from_index, b"", offset=len(head), durable=len(head), prev_crc=hcrc)
    return b"".join((head, *fr.buffers))


def _kv_frame(keys: list[bytes], values: list[bytes | None], applied: LogId | None, off: int, prev: int) -> bytes:
    checks = [0 if v is None else _xxh3(v) for v in values]
    body = encode_kv_body(keys, values, checks, applied)
    fr = encode_frame(KIND_KV, 0, body, offset=off, durable=off, prev_crc=prev, count=len(keys))
    return b"".join(fr.buffers)


def encode_kv(
    epoch: int, seq: int, wid: bytes, keys: list[bytes], values: list[bytes | None], applied: LogId | None
) -> bytes:
    """A KV slot object: one KV frame with every change and ``applied``.  O(bytes)."""
    head, hcrc = encode_object(K_KV, epoch, seq, wid)
    return head + _kv_frame(keys, values, applied, len(head), hcrc)


def encode_checkpoint(epoch: int, wid: bytes, kv: dict[bytes, bytes], applied: LogId | None) -> bytes:
    """A key/value checkpoint object: every pair in KV frames of ~1 MiB, ``applied`` in the last.  O(bytes)."""
    from segwal.storage.objectstore.layout import encode_logid

    head, prev = encode_object(K_CHECKPOINT, epoch, 0, wid, b"" if applied is None else encode_logid(applied))
    parts = [head]
    off = len(head)
    keys: list[bytes] = []
    values: list[bytes | None] = []
    size = 0
    items = list(kv.items())
    for i, (k, v) in enumerate(items):
        keys.append(k)
        values.append(v)
        size += len(k) + len(v)
        if size >= _CKPT_FRAME or i == len(items) - 1:
            raw = _kv_frame(keys, values, None, off, prev)
            prev = int.from_bytes(raw[36:40], "little")
            parts.append(raw)
            off += len(raw)
            keys, values, size = [], [], 0
    return b"".join(parts)


def decode_kv_frames(buf: bytes, hdr: ObjectHeader, name: str) -> list[tuple[list[bytes], list[bytes | None], LogId | None]]:
    """The changes of every KV frame of an object: ``(keys, values, applied)`` each.  O(bytes)."""
    scan = scan_frames(buf, hdr.body, hdr.header_crc)
    if scan.stop != "end" or scan.end != len(buf):
        raise CorruptionError(f"damaged frame ({scan.stop})", path=name, offset=scan.end)
    out: list[tuple[list[bytes], list[bytes | None], LogId | None]] = []
    for off, fh in scan.frames:
        if fh.kind != KIND_KV:
            raise CorruptionError(f"unexpected frame kind {fh.kind}", path=name, offset=off)
        body = decode_kv_body(buf, off + FRAME_HEADER_SIZE, off + fh.frame_len, fh.count, name)
        values: list[bytes | None] = [
            None if ln == 0xFFFFFFFF else buf[a:b] for a, b, ln in zip(body.vstarts, body.vends, body.vlens)
        ]
        out.append((body.keys, values, body.applied))
    return out


class Decoded:
    """One slot object, decoded: its header and what its record carries."""

    __slots__ = ("hdr", "runs", "from_index", "cutoff", "hard", "kv", "install")

    def __init__(self, hdr: ObjectHeader) -> None:
        self.hdr = hdr
        self.runs: list[Run] = []
        self.from_index = 0
        self.cutoff: LogId | None = None
        self.hard: HardState | None = None
        self.kv: list[tuple[list[bytes], list[bytes | None], LogId | None]] = []
        self.install: tuple[LogId, int] | None = None


def decode_slot(buf: bytes, name: str) -> Decoded:
    """Decode and check a slot object (any record kind).  CorruptionError naming it.  O(bytes)."""
    hdr = decode_object_header(buf, name)
    d = Decoded(hdr)
    kind = hdr.kind
    if kind == K_ENTRIES:
        d.runs = decode_runs(buf, hdr, name)
        if len(d.runs) != 1 or d.runs[0].count == 0:
            raise CorruptionError("an entries slot must hold one non-empty frame", path=name, offset=hdr.body)
    elif kind == K_TRUNCATE:
        scan = scan_frames(buf, hdr.body, hdr.header_crc)
        if len(scan.frames) != 1 or scan.frames[0][1].kind != KIND_TRUNCATE or scan.end != len(buf):
            raise CorruptionError("a truncate slot must hold one TRUNCATE frame", path=name, offset=hdr.body)
        d.from_index = scan.frames[0][1].first_index
    elif kind == K_PURGE:
        d.cutoff = decode_logid(hdr.aux, name)
    elif kind == K_HARDSTATE:
        d.hard = decode_hard_state(hdr.aux, name)
    elif kind == K_KV:
        d.kv = decode_kv_frames(buf, hdr, name)
    elif kind == K_INSTALL:
        from segwal.storage.objectstore.layout import decode_install

        d.install = decode_install(hdr.aux, name)
    elif kind not in (K_FENCE, K_RESET):
        what = KIND_NAMES.get(kind, str(kind))
        raise CorruptionError(f"a {what} object cannot be a slot", path=name, offset=6)
    return d


class View:
    """The log, boundary, hard state and key/value data as of some slot.

    Log invariants: ``runs`` ascend and are contiguous, every run non-empty;
    the log is ``first .. last`` where ``last`` can exceed the last run after
    a purge beyond the end (then the log is empty).
    """

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.firsts: list[int] = []
        self.first = 1
        self.last = 0
        self.boundary: LogId | None = None
        self.hard: HardState | None = None
        self.kv: dict[bytes, bytes] = {}
        self.applied: LogId | None = None
        #: the key/value data changed since the manifest's checkpoint
        self.kv_dirty = False
        #: checkpoint ids (``u``) that INSTALL records of the replayed slots named
        self.installed: list[int] = []

    # -- reads ------------------------------------------------------------

    def locate(self, index: int) -> tuple[Run, int] | None:
        """The run holding ``index`` and the position in it, or ``None``.  O(log runs)."""
        pos = bisect_right(self.firsts, index) - 1
        if pos < 0:
            return None
        run = self.runs[pos]
        k = index - run.first
        return (run, k) if k < run.count and index >= self.first else None

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index`` if it is in the log.  O(log runs)."""
        hit = self.locate(index)
        return None if hit is None else hit[0].terms[hit[1]]

    def entries_empty(self) -> bool:
        """Whether the log holds no entry.  O(1)."""
        return self.first > self.last

    # -- changes ----------------------------------------------------------

    def _cut(self, from_index: int) -> None:
        """Drop every entry >= ``from_index`` from the runs."""
        pos = bisect_right(self.firsts, from_index - 1) - 1 if self.firsts else -1
        keep = pos + 1
        if pos >= 0:
            run = self.runs[pos]
            run.count = max(0, min(run.count, from_index - run.first))
            if run.count == 0:
                keep = pos
        del self.runs[keep:]
        del self.firsts[keep:]

    def _drop_below(self, index: int) -> None:
        """Drop whole runs that end below ``index`` (their entries are purged)."""
        n = 0
        while n < len(self.runs) and self.runs[n].first + self.runs[n].count - 1 < index:
            n += 1
        if n:
            del self.runs[:n]
            del self.firsts[:n]

    def add_run(self, run: Run) -> None:
        """Persist ``run`` (checked by the caller): append, or overwrite the suffix from its first index."""
        empty = self.entries_empty()
        self._cut(run.first)
        self.runs.append(run)
        self.firsts.append(run.first)
        if empty:
            self.first = run.first
        self.last = run.first + run.count - 1

    def truncate(self, from_index: int) -> None:
        """Remove entries >= ``from_index`` (a checked, effective truncation)."""
        self._cut(from_index)
        self.first = min(self.first, from_index)
        self.last = from_index - 1

    def purge(self, cutoff: LogId) -> None:
        """Remove entries <= ``cutoff.index`` and record the boundary (a checked, effective purge)."""
        k = cutoff.index
        non_empty = not self.entries_empty() and k < self.last
        self.last = max(self.last, k)
        self.first = k + 1 if non_empty else self.last + 1
        self._drop_below(k + 1)
        if not non_empty:
            self.runs.clear()
            self.firsts.clear()
        self.boundary = cutoff

    def reset(self) -> None:
        """Clear log, boundary, key/value data and last applied; keep the hard state."""
        self.runs.clear()
        self.firsts.clear()
        self.first, self.last, self.boundary = 1, 0, None
        self.kv = {}
        self.applied = None
        self.kv_dirty = True

    def install(self, applied: LogId, kv: dict[bytes, bytes], uniq: int) -> None:
        """Replace everything but the hard state by a snapshot at ``applied``."""
        self.runs.clear()
        self.firsts.clear()
        self.boundary = applied
        self.first, self.last = applied.index + 1, applied.index
        self.kv = kv
        self.applied = applied
        self.kv_dirty = True
        self.installed.append(uniq)

    def apply_kv(self, keys: list[bytes], values: list[bytes | None], applied: LogId | None) -> None:
        """Apply one KV record's changes in order, then record ``applied`` if given."""
        kv = self.kv
        for k, v in zip(keys, values):
            if v is None:
                kv.pop(k, None)
            else:
                kv[k] = bytes(v)
        if applied is not None:
            self.applied = applied
        self.kv_dirty = True

    def apply_slot(self, d: Decoded) -> None:
        """Apply a decoded slot record (INSTALL is applied by the engine, which loads the checkpoint)."""
        kind = d.hdr.kind
        if kind == K_ENTRIES:
            run = d.runs[0]
            if not self.entries_empty() and not self.first <= run.first <= self.last + 1:
                raise CorruptionError(
                    f"entries {run.first}.. cannot follow a log holding {self.first}..{self.last}",
                    path=run.name, offset=d.hdr.body, index=run.first,
                )
            self.add_run(run)
        elif kind == K_TRUNCATE:
            if d.from_index <= self.last:
                self.truncate(d.from_index)
        elif kind == K_PURGE:
            assert d.cutoff is not None
            if self.boundary is None or d.cutoff.index > self.boundary.index:
                self.purge(d.cutoff)
        elif kind == K_HARDSTATE:
            self.hard = d.hard
        elif kind == K_KV:
            for keys, values, applied in d.kv:
                self.apply_kv(keys, values, applied)
        elif kind == K_RESET:
            self.reset()

    def entries_of(self, run: Run, lo: int, hi: int, data: bytes | memoryview, base: int) -> list[Entry]:
        """Entries ``lo..hi`` of ``run`` from ``data``, which holds the object's bytes from
        offset ``base`` on; each is verified by its check value.  O(entries)."""
        out: list[Entry] = []
        terms, pstart, plen, checks = run.terms, run.pstart, run.plen, run.checks
        for i in range(lo, hi + 1):
            k = i - run.first
            a = pstart[k] - base
            p = bytes(data[a : a + plen[k]])
            t = terms[k]
            if _xxh3(p, i) ^ t != checks[k]:
                raise CorruptionError("entry check value mismatch", path=run.name, offset=pstart[k], index=i)
            out.append(Entry(i, t, p))
        return out
