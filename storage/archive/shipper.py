"""One archiving pass over a node's log: find what changed since the last pass, ship it as new archive objects, and keep the archive's position.

:class:`Shipper` is what both the in-process :class:`~segwal.storage.archive.Archiver`
thread and the ``segwal archive run`` sidecar call at every tail interval.
A pass (:meth:`Shipper.cycle`):

1. reads the log's segments (a read-only view is refreshed first);
2. compares the check values of the entries already archived with the node's
   (sealed segments once; the tail at every pass, from its slots: no payload
   is read): the first difference, or a node log now shorter than the
   archive, is an overwrite or a truncation, shipped as a new delta starting
   there (a new generation of those indexes);
3. ships what the node lost before it was archived from held segments, or
   records it as a gap; then ships every new entry as deltas;
4. records each sealed segment once (a seal record naming its deltas: nothing
   uploaded twice), the hard state and manifest summary when they change, and
   a key/value snapshot at an interval.

Its position lives in the bucket: a new Shipper (a restarted archiver, or one
after a restore) re-seeds it from a LIST and the slot tables of the deltas
that overlap the node's log.  Every object is written create-if-absent under
a name carrying its content hash, so a retried upload is never a second copy.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from segwal.engine import WalEngine
from segwal.engine.tap import LogState, RawEntries, SegmentRef, log_segments, segment_checks, segment_raw
from segwal.errors import CorruptionError, StaleViewError
from segwal.storage.archive.catalog import Run, read_catalog, replay
from segwal.storage.archive.format import (
    HEADER_SIZE,
    K_GAP,
    K_KV,
    K_SEAL,
    LogName,
    StateRecord,
    decode_state,
    delta_checks,
    encode_columns,
    encode_delta,
    encode_object,
    encode_state,
    join,
    kv_name,
    log_name,
    object_hash,
    seal_name,
    state_name,
)
from segwal.storage.objectstore.seam import ObjectExistsError, ObjectStoreSeam
from segwal.types import Entry, LogId

__all__ = ["ShipStats", "Shipper"]

log = logging.getLogger("segwal.archive")

#: A delta is cut at this many payload bytes or entries (the catch-up of a long log).
MAX_DELTA_BYTES: Final = 16 << 20
MAX_DELTA_ENTRIES: Final = 1 << 16
_READ: Final = 4096
_NO_CHECK: Final = np.uint64(0x5EA1_0000_DEAD_BEEF)  # stands for "not archived" (a gap) in the check array


@dataclass
class ShipStats:
    """Counters of a Shipper since it started."""

    bytes_uploaded: int = 0
    bytes_written_by_node: int = 0
    objects_uploaded: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)


class Shipper:
    """Ships one node's log to ``prefix`` of ``seam`` (see the module docstring).

    Not thread-safe: one caller at a time (the Archiver holds a lock around it).
    """

    def __init__(
        self, engine: WalEngine, seam: ObjectStoreSeam, prefix: str, *, kv_snapshot_interval: float | None = 60.0
    ) -> None:
        self.engine = engine
        self.seam = seam
        self.prefix = prefix.strip("/")
        self.kv_interval = kv_snapshot_interval
        self.stats = ShipStats()
        self.readonly = engine._readonly
        self.seeded = False
        self.next_seq = 1
        self.last = 0  # the archive's last index
        self.runs: list[Run] = []
        self.fp = np.zeros(0, dtype=np.uint64)  # check values of archived entries fp_base..last
        self.fp_base = 1
        self.verified: dict[tuple[int, int], int] = {}  # sealed (seq, uid) -> compared up to
        self.sealed: set[tuple[int, int]] = set()
        self.state_n = 1
        self.state: StateRecord | None = None
        self.kv_at: LogId | None = None
        self.kv_time = 0.0
        self.held: list[SegmentRef] = []  # segments a purge unlinked before they were shipped (Archiver)
        self.node_hi = 0
        self.pending_since: float | None = None
        self.report_time = 0.0
        self.purge_checked: LogId | None = None  # the purge boundary checked against the archive

    # -------------------------------------------------------------- position

    def seed(self, ls: LogState) -> None:
        """(Re)read the archive's position from the bucket.  O(objects) LIST plus one ranged
        GET per delta overlapping the node's log."""
        cat = read_catalog(self.seam, self.prefix)
        rp = replay(cat)
        self.runs = rp.runs
        self.last = rp.last
        self.next_seq = rp.seq + 1 if rp.seq else max(cat.floor, 1)
        self.stats.gaps = [(r.first, r.last) for r in rp.gaps() if r.obj.seq]
        lo = max(ls.lo, 1)
        self.fp_base = lo
        n = max(0, self.last - lo + 1)
        fp = np.full(n, _NO_CHECK, dtype=np.uint64)
        wanted = [(r, max(r.first, lo)) for r in self.runs if not r.obj.gap and max(r.first, lo) <= r.last]

        def slots(item: tuple[Run, int]) -> tuple[Run, int, np.ndarray]:
            r, a = item
            name = join(self.prefix, r.obj.name)
            pos1 = r.last - r.obj.first
            raw = self.seam.get_range(name, 0, HEADER_SIZE + 24 * (pos1 + 1))
            if raw is None or len(raw) < HEADER_SIZE + 24 * (pos1 + 1):
                raise CorruptionError("archived delta is missing or short", path=name)
            return r, a, delta_checks(raw, name, pos1 + 1)[a - r.obj.first :]

        with ThreadPoolExecutor(8) as pool:  # one ranged GET of the slot table per delta, 8 at a time
            for r, a, checks in pool.map(slots, wanted):
                fp[a - lo : r.last - lo + 1] = checks
        self.fp = fp
        self.verified.clear()
        if cat.states:
            n_, _s, name, _d = cat.states[-1]
            got = self.seam.get(name)
            self.state_n = n_ + 1
            if got is not None:
                try:
                    self.state = decode_state(got.data, name)[1]
                except CorruptionError:
                    self.state = None
        if cat.kvs:
            k = cat.kvs[-1]
            self.kv_at = LogId(k.term, k.index)
            self.kv_time = time.monotonic()
        self.sealed = set()
        self.purge_checked = None
        self.seeded = True

    # ---------------------------------------------------------------- uploads

    def _put(self, rel: str, data: bytes) -> str:
        name = join(self.prefix, rel)
        try:
            self.seam.put(name, data, create=True)
        except ObjectExistsError:
            pass  # the name carries the content's hash: this very object (an earlier attempt landed)
        self.stats.bytes_uploaded += len(data)
        self.stats.objects_uploaded += 1
        return name

    def _ship_entries(self, entries: list[Entry], first: int) -> None:
        data, checks = encode_delta(self.next_seq, entries, self.engine_id, first)
        self._ship_data(data, first, len(entries), checks)

    def _ship_data(self, data: bytes, first: int, n: int, checks: np.ndarray) -> None:
        rel = log_name(self.next_seq, first, n, False, object_hash(data))
        self._put(rel, data)
        self.stats.bytes_written_by_node += len(data) - HEADER_SIZE
        self._advance(LogName(rel, self.next_seq, first, n, False, 0), checks)

    def _ship_raw(self, parts: list[RawEntries]) -> None:
        """One delta from consecutive column pieces."""
        if len(parts) == 1:
            p = parts[0]
            terms, plens, checks, payloads = p.terms, p.plens, p.checks, p.payloads
        else:
            terms = np.concatenate([p.terms for p in parts])
            plens = np.concatenate([p.plens for p in parts])
            checks = np.concatenate([p.checks for p in parts])
            payloads = b"".join(p.payloads for p in parts)
        first = parts[0].first
        data = encode_columns(self.next_seq, first, terms, plens, checks, payloads, self.engine_id)
        self._ship_data(data, first, len(terms), checks)

    def _ship_gap(self, first: int, last: int) -> None:
        data = encode_object(K_GAP, self.next_seq, first, last - first + 1, self.engine_id, b"")
        rel = log_name(self.next_seq, first, last - first + 1, True, object_hash(data))
        self._put(rel, data)
        log.warning(
            "archive gap: entries %d..%d were purged by the node before they were archived (%s)",
            first,
            last,
            join(self.prefix, rel),
        )
        self.stats.gaps.append((first, last))
        self.kv_at = None  # a key/value snapshot after the gap makes the later points restorable: ship one now
        self._advance(
            LogName(rel, self.next_seq, first, last - first + 1, True, 0),
            np.full(last - first + 1, _NO_CHECK, dtype=np.uint64),
        )

    def _advance(self, obj: LogName, checks: np.ndarray) -> None:
        f = obj.first
        while self.runs and self.runs[-1].first >= f:
            self.runs.pop()
        if self.runs and self.runs[-1].last >= f:
            r = self.runs.pop()
            self.runs.append(Run(r.first, f - 1, r.obj))
        if obj.count:
            self.runs.append(Run(f, obj.last, obj))
        if f < self.fp_base:
            self.fp_base, self.fp = f, checks.copy()
        else:
            keep = self.fp[: f - self.fp_base]
            pad = np.full(f - self.fp_base - len(keep), _NO_CHECK, dtype=np.uint64)
            self.fp = np.concatenate([keep, pad, checks])
        self.last = obj.last
        self.next_seq += 1

    # ------------------------------------------------------------------ pass

    @property
    def engine_id(self) -> int:
        """The node's engine id (carried by every object)."""
        return int(self.engine._log.manifest.engine_id)

    def cycle(self) -> int:
        """One pass (module docstring); returns the archive's last index.

        Raises:
            StorageIOError: the store failed (the next pass re-seeds from the bucket).
            CorruptionError: the node's log or the archive is damaged.
        """
        eng = self.engine
        if self.readonly:
            try:
                eng.refresh()
            except StaleViewError as e:
                log.info("archive pass skipped: %s", e)
                return self.last
        ls = log_segments(eng)
        now = time.monotonic()
        if ls.hi > self.last and self.pending_since is None:
            self.pending_since = now
        self.node_hi = ls.hi
        try:
            if not self.seeded:
                self.seed(ls)
            self._pass(ls)
        except BaseException:
            self.seeded = False  # an upload may have landed without its reply: read the position again
            raise
        if self.last >= ls.hi:
            self.pending_since = None
        self.report_time = time.time()
        return self.last

    def _divergence(self, ls: LogState) -> int | None:
        """The first index whose archived version differs from the node's, or ``None``."""
        d: int | None = None
        base = self.fp_base
        for ref in ls.segments:
            a, b = max(ref.base, ls.lo, base), min(ref.last, self.last)
            if a > b:
                continue
            key = (ref.seq, ref.uid)
            if ref.sealed and self.verified.get(key, -1) >= b:
                continue
            checks = segment_checks(self.engine, ref, a, b)
            if checks is None:
                raise _Retry()
            known = self.fp[a - base : b - base + 1]  # _NO_CHECK: not archived here (a gap, below the floor)
            diff = np.flatnonzero((checks != known) & (known != _NO_CHECK))
            if len(diff):
                d = a + int(diff[0])
                break
            if ref.sealed:
                self.verified[key] = b
        if ls.hi < self.last and (d is None or ls.hi + 1 < d):
            d = ls.hi + 1
        return d

    def _pass(self, ls: LogState) -> None:
        if ls.lo > self.fp_base:  # what the node no longer has cannot diverge: forget its checks
            self.fp = self.fp[ls.lo - self.fp_base :]
            self.fp_base = ls.lo
        try:
            self._check_boundary(ls)
            d = self._divergence(ls)
            if d is not None:
                if d > ls.hi:
                    self._ship_entries([], d)  # a truncation
                else:  # entries from d on are shipped again, as a new generation of those indexes
                    self._ship_range(ls.segments, d, ls.hi, d)
            if ls.lo > self.last + 1:
                self._ship_lost(ls)
                self._check_boundary(ls)  # entries shipped from held segments may be the stale ones
            if ls.hi > self.last:
                self._ship_range(ls.segments, self.last + 1, ls.hi, None)
        except _Retry:
            return
        self._seal(ls)
        self._ship_state(ls)
        self._ship_kv()

    def _check_boundary(self, ls: LogState) -> None:
        """A purge boundary ``(t, i)`` whose archived entry ``i`` has another term than ``t``
        (a follower installed a leader's snapshot over stale entries it held): the archived
        entries from the node's last known commit point up to ``i`` are not the log the
        cluster kept.  Record them as a gap (a new generation: replay cuts there, so no
        restore combines them with what follows) and ship a key/value snapshot at once.
        One ranged GET per new boundary."""
        p = ls.purge
        if p is None or p == self.purge_checked or (self.state is not None and self.state.purge == p):
            self.purge_checked = p
            return
        if p.index > self.last:
            return  # checked once the entries up to it are archived (from held segments, or a gap)
        if p.index < 1:
            self.purge_checked = p
            return
        run = next((r for r in self.runs if r.first <= p.index <= r.last), None)
        if run is None or run.obj.gap:
            self.purge_checked = p
            return
        name = join(self.prefix, run.obj.name)
        off = HEADER_SIZE + 24 * (p.index - run.obj.first)
        raw = self.seam.get_range(name, off, off + 8)
        if raw is None or len(raw) < 8:
            raise CorruptionError("archived delta is missing or short", path=name, offset=off, index=p.index)
        term = int.from_bytes(raw, "little")
        if term != p.term:
            st = self.state
            safe = 0  # entries at or below a commit point the node reported match every node's log
            if st is not None:
                safe = max(st.hard.commit_index if st.hard else 0, st.last_applied.index if st.last_applied else 0)
            first = max(1, min(safe + 1, p.index))
            log.warning(
                "archive: the node's purge boundary %s does not match the archived term %d at index %d "
                "(a snapshot install over stale entries): entries %d..%d recorded as a gap",
                p,
                term,
                p.index,
                first,
                p.index,
            )
            self._ship_gap(first, p.index)  # and a key/value snapshot at once
        self.purge_checked = p

    def _ship_range(self, refs: list[SegmentRef], a: int, b: int, overwrite: int | None) -> None:
        """Ship entries ``a..b`` from the segments ``refs`` (the first delta starts at
        ``overwrite`` when set: a new generation), in deltas of at most MAX_DELTA_BYTES
        or MAX_DELTA_ENTRIES.  Stops early (the next pass goes on) when the writer
        rewrote the log under the read, or the segments do not cover the range."""
        parts: list[RawEntries] = []
        count = size = 0
        while a <= b:
            ref = next((r for r in refs if r.base <= a <= r.last), None)
            if ref is None:
                break
            got = segment_raw(self.engine, ref, a, min(b, ref.last, a + _READ - 1))
            if got is None:  # the writer rewrote the log under the read: ship what was read, go on next pass
                if parts:
                    self._ship_raw(parts)
                raise _Retry()
            parts.append(got)
            count += len(got.terms)
            size += len(got.payloads) + 24 * len(got.terms)
            a += len(got.terms)
            if count >= MAX_DELTA_ENTRIES or size >= MAX_DELTA_BYTES:
                self._ship_raw(parts)
                parts, count, size, overwrite = [], 0, 0, None
        if parts:
            self._ship_raw(parts)
        elif overwrite is not None:
            self._ship_entries([], overwrite)  # the node cut its log meanwhile: record the truncation

    def _ship_lost(self, ls: LogState) -> None:
        """Entries ``last+1 .. lo-1`` are below the node's first index: shipped from held
        segments, or from the part of a segment a purge kept; else recorded as a gap."""
        lo = ls.lo
        have = [*self.held, *ls.segments]
        while self.last + 1 < lo:
            a = self.last + 1
            ref = next((h for h in have if h.base <= a <= h.last), None)
            if ref is None:
                nxt = min((h.base for h in have if h.base > a), default=lo)
                self._ship_gap(a, min(lo, nxt) - 1)
                continue
            self._ship_range([ref], a, min(ref.last, lo - 1), None)
            if self.last < a:
                raise _Retry()

    def _seal(self, ls: LogState) -> None:
        """One seal record per sealed node segment whose entries are all archived."""
        for ref in ls.segments:
            key = (ref.seq, ref.uid)
            if not ref.sealed or key in self.sealed or ref.last > self.last or ref.last < ref.base:
                continue
            a = max(ref.base, ls.lo)
            names = [r.obj.name for r in self.runs if r.last >= a and r.first <= ref.last and not r.obj.gap]
            body = "\n".join(names).encode()
            data = encode_object(K_SEAL, self.next_seq - 1, a, ref.last - a + 1, self.engine_id, body)
            self._put(seal_name(self.next_seq - 1, a, ref.last, object_hash(data)), data)
            self.sealed.add(key)

    def _ship_state(self, ls: LogState) -> None:
        eng = self.engine
        rec = StateRecord(eng.load_hard_state(), ls.purge, eng.last_applied(), ls.manifest_revision)
        if self.state is not None and (rec.hard, rec.purge, rec.manifest_revision) == (
            self.state.hard,
            self.state.purge,
            self.state.manifest_revision,
        ):
            return  # last_applied alone moves with every apply: the key/value snapshots carry it
        data = encode_state(self.state_n, self.next_seq - 1, self.engine_id, rec)
        self._put(state_name(self.state_n, self.next_seq - 1, object_hash(data)), data)
        self.state_n += 1
        self.state = rec

    def _ship_kv(self) -> None:
        if self.kv_interval is None:
            return
        eng = self.engine
        applied = eng.last_applied()
        if applied is None or applied == self.kv_at or applied.index > self.last:
            return
        if self.kv_at is not None and time.monotonic() - self.kv_time < self.kv_interval:
            return
        fd, tmp = tempfile.mkstemp(prefix="segwal-archive-kv-")
        os.close(fd)
        try:
            at = eng.snapshot(tmp)
            with open(tmp, "rb") as f:
                body = f.read()
        finally:
            for p in (tmp, tmp + ".tmp"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        if at.index > self.last:
            return
        data = encode_object(K_KV, self.next_seq - 1, at.index, at.term, self.engine_id, body)
        self._put(kv_name(at, self.next_seq - 1, object_hash(data)), data)
        self.kv_at = at
        self.kv_time = time.monotonic()


class _Retry(Exception):
    """The writer rewrote the log during a comparison: try again at the next pass."""
