"""Full verification of an engine directory, without changing it (``segwal verify``).

Unlike opening, which trusts sealed segments through their indexes, this reads
every byte: every frame's checksums, every entry's check value, every index
against the segment it describes, the manifest, the hard state and the
key/value files.  Each finding names the file, the offset and, where a log
entry is affected, its index.

Findings are *recoverable* (a torn tail that open would cut, an index open
would rebuild, stray temporary or leftover files open would remove) or
*corruption* (acknowledged data is damaged or missing).

A live directory (a writer holds its lock) is verified without any lock, as
of one manifest generation: sealed segments fully, the tail up to its last
complete frame.  What the writer is doing meanwhile is not a finding but a
*live note* (the tail's frames still being written, a checkpoint or a new file
in progress); a finding of corruption is reported only when the same run of
one manifest generation finds it again (a file the writer removed, or a frame
read while it was being written, makes verify read again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segwal.engine.hardstate import HARDSTATE_NAME, decode_hard_state
from segwal.engine.manifest import MANIFEST_NAME, Manifest, decode_manifest
from segwal.engine.segments import index_name, replay_frames, segment_name
from segwal.errors import CorruptionError
from segwal.fs import TMP_SUFFIX, FileSystem, OsFileSystem, lock_held, read_file
from segwal.index.format import OFFSETS_START, offsets_hash
from segwal.index.offsets import TailIndex, read_index_header
from segwal.wal.format import (
    KIND_ENTRIES,
    SEGMENT_HEADER_SIZE,
    Buf,
    FrameHeader,
    decode_segment_header,
    find_valid_frames,
    scan_frames,
)
from segwal.wal.reader import read_entries, read_entry
from segwal.wal.segment import recover_tail

__all__ = ["MAX_LIVE_WAIT", "Finding", "VerifyReport", "replay_segment", "verify"]

#: Seconds verify keeps reading a live directory again while its writer changes it
#: under every run, before it reports what the last run found.
MAX_LIVE_WAIT = 30.0

RECOVERABLE = "recoverable"
CORRUPTION = "corruption"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found: ``severity`` is ``"recoverable"`` or ``"corruption"``."""

    severity: str
    path: str
    offset: int | None
    index: int | None
    message: str

    def __str__(self) -> str:
        where = self.path + (f" @{self.offset}" if self.offset is not None else "")
        idx = f" (log index {self.index})" if self.index is not None else ""
        return f"{self.severity}: {where}{idx}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of :func:`verify`."""

    findings: tuple[Finding, ...]
    segments: int
    entries: int
    bytes_scanned: int
    #: a writer held the directory while it was verified
    live: bool = False
    #: what the writer was doing meanwhile (not findings): which part of the tail was live, ...
    live_notes: tuple[str, ...] = ()

    @property
    def exit_status(self) -> int:
        """0 clean, 1 only recoverable findings, 2 corruption."""
        if any(f.severity == CORRUPTION for f in self.findings):
            return 2
        return 1 if self.findings else 0


def replay_segment(
    buf: Buf, base: int, frames: list[tuple[int, FrameHeader]], path: str
) -> tuple[np.ndarray, int]:
    """Offsets of the live entries after replaying ``frames`` of a segment starting
    at ``base``; returns (offsets, last index).  The same replay as open."""
    t = TailIndex(base)
    last = replay_frames(t, frames, path)
    return t.array().copy(), last


@dataclass
class _Run:
    """One verification run: the findings, the live notes, and what carries over
    between runs of a live directory (sealed segments already verified)."""

    live: bool
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sealed: dict[tuple[int, int, int, int, int], tuple[list[Finding], int, int]] = field(default_factory=dict)


def verify(
    path: str,
    *,
    fs: FileSystem | None = None,
    progress: Callable[[int, int], None] | None = None,
    live: bool | None = None,
) -> VerifyReport:
    """Check every file of the engine directory ``path``; change nothing, take no lock.

    ``live``: whether a writer may be at work in the directory (default: whether
    one holds its lock now, ``segwal.fs.lock_held``; when that cannot be told,
    True).  A live directory is read as of one manifest generation and read
    again when the writer's work explains a finding (see the module docstring).

    Complexity: reads every byte once (one CRC32C pass per frame, one xxh3 per
    entry); a live directory's tail and key/value files again on each re-read,
    its sealed segments once.  ``progress(done_bytes, total_bytes)`` is called
    as segments are scanned.
    """
    fs = fs or OsFileSystem()
    path = os.path.abspath(path)
    if live is None:
        held = lock_held(fs, os.path.join(path, "LOCK"))
        live = True if held is None else held
    mpath = os.path.join(path, MANIFEST_NAME)
    run = _Run(live)
    deadline = time.monotonic() + MAX_LIVE_WAIT
    same = 0
    while True:
        data = read_file(fs, mpath)
        run.findings, run.notes = [], []
        report = _verify_once(fs, path, data, run, progress)
        if not live or report.exit_status < 2:
            return report
        # Corruption in a live directory: damage, or the writer's work read half-done?
        same = same + 1 if read_file(fs, mpath) == data else 0
        if same >= 2 or time.monotonic() > deadline:
            return report


def _verify_once(
    fs: FileSystem, path: str, data: bytes | None, run: _Run, progress: Callable[[int, int], None] | None
) -> VerifyReport:
    findings = run.findings
    mpath = os.path.join(path, MANIFEST_NAME)
    if data is None:
        raise CorruptionError("not a segwal directory (no MANIFEST)", path=mpath)
    try:
        m = decode_manifest(data, mpath)
    except CorruptionError as e:
        return VerifyReport((Finding(CORRUPTION, e.path, e.offset, None, e.reason),), 0, 0, len(data), run.live)
    hard = read_file(fs, os.path.join(path, HARDSTATE_NAME))  # before the log: never newer than it
    names = fs.listdir(path)
    listed = {segment_name(s.seq) for s in m.segments} | {index_name(s.seq) for s in m.segments}
    for n in sorted(names):
        p = os.path.join(path, n)
        if n.endswith(TMP_SUFFIX):
            if run.live:
                run.notes.append(f"{p}: a file the writer is replacing")
            else:
                findings.append(Finding(RECOVERABLE, p, None, None, "stray temporary file (removed at open)"))
        elif (n.endswith(".wal") or n.endswith(".idx")) and n not in listed:
            if run.live:
                run.notes.append(f"{p}: a segment file the writer is creating or removing")
            else:
                findings.append(Finding(RECOVERABLE, p, None, None, "segment file not in the manifest (removed at open)"))
    _check_manifest_shape(m, mpath, findings)
    sizes = {}
    for s in m.segments:
        sp = os.path.join(path, segment_name(s.seq))
        sizes[s.seq] = 0
        try:
            fh = fs.open(sp, readonly=True)
        except FileNotFoundError:
            continue
        sizes[s.seq] = fh.size()
        fh.close()
    total = sum(sizes.values())
    done = 0
    entries = 0
    log_last = m.purge.index if m.purge is not None else 0
    for k, s in enumerate(m.segments):
        is_tail = k == len(m.segments) - 1
        key = (s.seq, s.uid, s.base, s.last, m.purge.index if m.purge is not None else 0)
        if not is_tail and key in run.sealed:
            found, live, last = run.sealed[key]  # verified by an earlier run: sealed segments never change
            findings.extend(found)
        else:
            mark = len(findings)
            live, last = _verify_segment(fs, path, m, s, is_tail, findings, run)
            if not is_tail:
                run.sealed[key] = (findings[mark:], live, last)
        entries += live
        if is_tail:
            log_last = max(log_last, last)
        done += sizes[s.seq]
        if progress is not None:
            progress(done, total)
    _verify_hard_state(path, hard, m, log_last, findings)
    _verify_kv(fs, path, m, findings, run.live)
    return VerifyReport(tuple(findings), len(m.segments), entries, total, run.live, tuple(run.notes))


def _check_manifest_shape(m: Manifest, mpath: str, findings: list[Finding]) -> None:
    segs = m.segments
    for a, b in zip(segs, segs[1:]):
        if a.last != b.base - 1:
            findings.append(
                Finding(CORRUPTION, mpath, None, a.last + 1, f"segment {a.seq:#x} ends at {a.last}, next starts at {b.base}")
            )
    if segs and m.purge is not None and segs[0].base > m.purge.index + 1:
        findings.append(
            Finding(CORRUPTION, mpath, None, m.purge.index + 1, "entries missing between purge boundary and first segment")
        )


def _verify_segment(
    fs: FileSystem, path: str, m: Manifest, s: object, is_tail: bool, findings: list[Finding], run: _Run
) -> tuple[int, int]:
    """Scan one segment fully; returns (live entries, last live index)."""
    seq, uid, base, mlast = s.seq, s.uid, s.base, s.last  # type: ignore[attr-defined]
    sp = os.path.join(path, segment_name(seq))
    ip = os.path.join(path, index_name(seq))
    try:
        f = fs.open(sp, readonly=True)
    except FileNotFoundError:
        findings.append(Finding(CORRUPTION, sp, None, base, "segment listed in the manifest is missing"))
        return 0, base - 1
    try:
        buf = f.pread(f.size(), 0)
    finally:
        f.close()
    try:
        h = decode_segment_header(buf, sp)
    except CorruptionError as e:
        findings.append(Finding(CORRUPTION, sp, e.offset, base, e.reason))
        return 0, base - 1
    if h is None or h.engine_id != m.engine_id or (h.seq, h.uid, h.base_index) != (seq, uid, base):
        findings.append(Finding(CORRUPTION, sp, 0, base, "segment header is zeroed, foreign or stale"))
        return 0, base - 1
    floor = m.purge.index + 1 if m.purge is not None else 1
    damaged: list[tuple[int, object]] = []
    if is_tail:
        rec = recover_tail(buf, SEGMENT_HEADER_SIZE, h.crc, known_durable=m.tail_durable)
        frames, end, torn, corrupt, later = rec.frames, rec.end, rec.torn, rec.corrupt, rec.later
    else:
        res = scan_frames(buf, SEGMENT_HEADER_SIZE, h.crc, damaged=damaged)  # type: ignore[arg-type]
        frames, end, torn, corrupt = res.frames, res.end, False, res.stop == "invalid"
        later = [fh for fh in find_valid_frames(buf, res.end) if fh[0] >= res.end] if corrupt else []
    try:
        offs, last = replay_segment(buf, base, frames, sp)
    except CorruptionError as e:
        findings.append(Finding(CORRUPTION, sp, e.offset, e.index, e.reason))
        return 0, base - 1
    if is_tail and run.live and not corrupt:
        busy = len(bytes(buf[end:]).rstrip(b"\0"))
        run.notes.append(
            f"tail {sp} (live): verified up to offset {end}, entries up to {last}; "
            + (f"the {busy} bytes after it were being written (a torn tail if the writer stopped)" if busy
               else "nothing written after it yet")
        )
    if torn or corrupt:
        if is_tail and not corrupt and run.live:
            pass  # the writer's frame in progress: the live note above says so
        elif is_tail and not corrupt:
            findings.append(Finding(RECOVERABLE, sp, end, last + 1, "torn tail (cut at open)"))
        else:
            hi = max((fh.first_index + fh.count - 1 for _, fh in later if fh.kind == KIND_ENTRIES), default=None)
            lost = f"; entries {last + 1}..{hi} are unreachable" if hi is not None and hi > last else ""
            findings.append(Finding(CORRUPTION, sp, end, last + 1, "damaged frame in acknowledged data" + lost))
    if not is_tail:
        last_live = mlast
        if last < mlast:
            findings.append(
                Finding(CORRUPTION, sp, end, last + 1, f"segment holds entries up to {last}, manifest says {mlast}")
            )
            last_live = last
    else:
        last_live = last
    n = max(0, last_live - base + 1)
    lo = max(base, floor)
    bad = _bad_entries(buf, offs[lo - base : n], lo, sp)
    for a, b, off in bad:
        findings.append(Finding(CORRUPTION, sp, off, a, f"entries {a}..{b} fail their checksums"))
    for off, fh in damaged:
        first, count = fh.first_index, fh.count  # type: ignore[attr-defined]
        if first + count - 1 < floor or first > last_live:
            findings.append(
                Finding(RECOVERABLE, sp, off, None, f"damaged batch {first}..{first + count - 1} holds only purged or cut entries")
            )
        elif not bad:
            findings.append(
                Finding(RECOVERABLE, sp, off, None,
                        f"damaged batch {first}..{first + count - 1}: its live entries verify one by one "
                        "(the damage is in cut entries or padding)")
            )
    mark = len(findings)
    _verify_index(fs, ip, seq, uid, base, offs[:n], is_tail, findings)
    if is_tail and run.live and len(findings) > mark:
        run.notes.extend(f"{ip}: {f.message} (a checkpoint in progress)" for f in findings[mark:])
        del findings[mark:]
    return max(0, n - (lo - base)), last_live


def _bad_entries(buf: bytes, offs: np.ndarray, first: int, path: str) -> list[tuple[int, int, int]]:
    """Ranges ``(first_bad, last_bad, offset)`` of consecutive entries failing their check."""
    try:
        read_entries(buf, offs, first, path)
        return []
    except CorruptionError:
        pass
    out: list[tuple[int, int, int]] = []
    for i, o in enumerate(offs.tolist()):
        try:
            read_entry(buf, o, first + i, path)
        except CorruptionError:
            idx = first + i
            if out and out[-1][1] == idx - 1:
                out[-1] = (out[-1][0], idx, out[-1][2])
            else:
                out.append((idx, idx, o))
    return out


def _verify_index(
    fs: FileSystem, ip: str, seq: int, uid: int, base: int, offs: np.ndarray, is_tail: bool, findings: list[Finding]
) -> None:
    if not fs.exists(ip):
        if not is_tail:
            findings.append(Finding(RECOVERABLE, ip, None, None, "index missing (rebuilt from its segment on use)"))
        return
    f = fs.open(ip, readonly=True)
    try:
        h = read_index_header(f)
        if h is None or (h.seq, h.uid, h.base) != (seq, uid, base):
            findings.append(Finding(RECOVERABLE, ip, 0, None, "index header damaged or stale (rebuilt on use)"))
            return
        raw = f.pread(4 * h.count, OFFSETS_START)
    finally:
        f.close()
    if len(raw) != 4 * h.count or offsets_hash(raw) != h.data_hash:
        findings.append(Finding(RECOVERABLE, ip, OFFSETS_START, None, "index checksum mismatch (rebuilt on use)"))
        return
    have = np.frombuffer(raw, dtype="<u4")
    n = min(len(have), len(offs))
    if not is_tail and len(have) < len(offs):
        findings.append(Finding(CORRUPTION, ip, 32, base + len(have), "index holds fewer entries than the segment"))
    diff = np.flatnonzero(have[:n] != offs[:n])
    if len(diff):
        i = int(diff[0])
        findings.append(
            Finding(CORRUPTION, ip, OFFSETS_START + 4 * i, base + i, "index disagrees with its segment (valid checksum)")
        )


def _verify_hard_state(path: str, data: bytes | None, m: Manifest, log_last: int, findings: list[Finding]) -> None:
    hp = os.path.join(path, HARDSTATE_NAME)
    if data is None:
        if m.hard_state_saved:
            findings.append(Finding(CORRUPTION, hp, None, None,
                                    "hard state is missing: the manifest records that one was saved"))
        return
    try:
        hs = decode_hard_state(data, hp)
    except CorruptionError as e:
        findings.append(Finding(CORRUPTION, hp, e.offset, None, e.reason))
        return
    if not m.reset_pending and hs.commit_index > log_last:
        findings.append(
            Finding(CORRUPTION, hp, 32, log_last + 1, f"commit index {hs.commit_index} is beyond the last index {log_last}")
        )


def _verify_kv(fs: FileSystem, path: str, m: Manifest, findings: list[Finding], live: bool) -> None:
    kvdir = os.path.join(path, "kv")
    if not fs.exists(kvdir) and not m.kv_files:
        return
    from segwal.kv import KVStore

    try:  # every frame of every record file, not only those after the key index's checkpoint
        kv = KVStore.open(fs, kvdir, engine_id=m.engine_id, generation=m.kv_generation, sync=False, readonly=True,
                          files=m.kv_files, use_index=False)
    except CorruptionError as e:
        findings.append(Finding(CORRUPTION, e.path, e.offset, None, e.reason))
        return
    try:
        _verify_kv_index(fs, kvdir, m, kv, findings)
    finally:
        kv.close()


def _verify_kv_index(fs: FileSystem, kvdir: str, m: Manifest, full: Any, findings: list[Finding]) -> None:
    """The key index (a cache): usable, every block intact, and the same answer as a full replay for every key."""
    from segwal.kv import KVStore
    from segwal.kv.keyindex import index_name

    ip = os.path.join(kvdir, index_name(m.kv_generation))
    if not fs.exists(ip):
        return
    with_index = KVStore.open(fs, kvdir, engine_id=m.engine_id, generation=m.kv_generation, sync=False,
                              readonly=True, files=m.kv_files)
    try:
        kd = with_index._kd
        if getattr(kd, "table", None) is None:
            findings.append(Finding(RECOVERABLE, ip, None, None, "key index not usable (rebuilt at open)"))
            return
        keys, locs, _ = full.capture()
        try:
            for k, loc in zip(keys, locs):
                got = kd.get(k)
                if got is None or (got[0].seq, *got[1:]) != (loc[0].seq, *loc[1:]):
                    findings.append(Finding(CORRUPTION, ip, None, None,
                                            f"key index disagrees with the record files for key {k[:40]!r}"))
                    return
        except CorruptionError as e:
            findings.append(Finding(CORRUPTION, e.path, e.offset, None, e.reason))
            return
        except Exception as e:  # noqa: BLE001 - a damaged block (IndexDamaged)
            findings.append(Finding(RECOVERABLE, ip, getattr(e, "offset", None), None,
                                    f"key index damaged (rebuilt on use): {e}"))
            return
        if len(kd) != len(keys):
            findings.append(Finding(CORRUPTION, ip, 40, None, f"key index counts {len(kd)} keys, the files {len(keys)}"))
    finally:
        with_index.close()
