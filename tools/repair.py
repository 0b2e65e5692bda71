"""Explicit repair of an engine directory (``segwal repair``).

Without ``force`` it only does what opening would do anyway, but says so and
keeps evidence: a torn tail is cut after its bytes are saved to
``<segment>.broken``, damaged indexes are rebuilt, stray files removed.  It
refuses to touch corruption of acknowledged data.  With ``force`` it also cuts
the log at the first damaged entry (saving the cut bytes likewise) and reports
exactly which indexes were lost, so the node can fetch them again from a peer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from segwal.engine.hardstate import load_hard_state, save_hard_state
from segwal.engine.manifest import MANIFEST_NAME, decode_manifest, encode_manifest
from segwal.errors import LockedError
from segwal.fs import FileSystem, OsFileSystem, read_file, replace_file
from segwal.tools.verify import CORRUPTION, Finding, verify

__all__ = ["RepairResult", "repair"]


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What :func:`repair` did; ``lost`` is the inclusive range of log indexes
    removed because they were damaged (``None`` if none)."""

    lines: tuple[str, ...]
    exit_status: int
    lost: tuple[int, int] | None


def _save_broken(fs: FileSystem, path: str, offset: int) -> str | None:
    """Copy ``path[offset:]`` (without trailing zeros) to ``path + '.broken'``."""
    f = fs.open(path, readonly=True)
    try:
        data = f.pread(max(0, f.size() - offset), offset).rstrip(b"\0")
    finally:
        f.close()
    if not data:
        return None
    out = path + ".broken"
    g = fs.open(out, create=True)
    try:
        g.truncate(0)
        g.pwrite(data, 0)
        g.fsync()
    finally:
        g.close()
    fs.fsync_dir(os.path.dirname(path))
    return out


def repair(path: str, *, force: bool = False, fs: FileSystem | None = None) -> RepairResult:
    """Repair the engine directory ``path``; see the module docstring.

    Exit status: 0 repaired or nothing to do, 2 corruption refused (or left
    that cannot be repaired here: hard state or key/value damage).
    """
    from segwal.engine.engine import WalEngine

    fs = fs or OsFileSystem()
    path = os.path.abspath(path)
    try:
        lock = fs.lock(os.path.join(path, "LOCK"))
    except BlockingIOError:
        raise LockedError(11, "engine directory is open elsewhere (locked)", path) from None
    try:
        report = verify(path, fs=fs, live=False)  # it holds the lock: no writer is at work
    finally:
        lock.release()
    lines: list[str] = [str(f) for f in report.findings]
    if report.exit_status == 0:
        return RepairResult(("nothing to repair: the directory is clean",), 0, None)
    corrupt = [f for f in report.findings if f.severity == CORRUPTION]
    log_corrupt = [f for f in corrupt if f.index is not None and f.path.endswith((".wal", ".idx", MANIFEST_NAME))]
    # A commit index beyond the log is a consequence of the log damage; cutting the
    # log lowers it.  Any other hard-state or key/value damage cannot be repaired here.
    other = [f for f in corrupt if f not in log_corrupt and not f.message.startswith("commit index")]
    if corrupt and not force:
        first = min((f.index for f in corrupt if f.index is not None), default=None)
        hint = f" (entries from {first} on would be lost and must be re-fetched from a peer)" if first else ""
        lines.append(f"refusing to repair corruption of acknowledged data without --force{hint}")
        return RepairResult(tuple(lines), 2, None)
    if other:
        lines.append("cannot repair hard-state or key/value corruption: restore this node from a peer's snapshot")
        return RepairResult(tuple(lines), 2, None)
    lost: tuple[int, int] | None = None
    truncate_at: int | None = None
    tail_cut = [f for f in report.findings if f.path.endswith(".wal") and f.offset is not None
                and ("torn tail" in f.message or "damaged frame" in f.message)]
    for f in tail_cut:
        saved = _save_broken(fs, f.path, f.offset)  # type: ignore[arg-type]
        if saved:
            lines.append(f"saved the {('torn' if 'torn' in f.message else 'damaged')} bytes to {saved}")
    if corrupt:
        first_bad = min(f.index for f in corrupt if f.index is not None)
        for f in log_corrupt:
            if "damaged frame" in f.message and f.offset is not None:
                _cut_tail(fs, path, f)
        truncate_at = first_bad
    for f in report.findings:
        if f.path.endswith(".idx") and "rebuilt" in f.message and fs.exists(f.path):
            fs.unlink(f.path)
    if truncate_at is not None:
        hs = load_hard_state(fs, path)
        if hs is not None and hs.commit_index >= truncate_at:
            save_hard_state(fs, path, replace(hs, commit_index=truncate_at - 1))
            lines.append(
                f"lowered the hard state's commit index from {hs.commit_index} to {truncate_at - 1} "
                "(the lost committed entries must come back from the leader)"
            )
    with WalEngine(path) as eng:
        lines.extend(eng.notes)
        last_before = max(eng.last_index(), max((f.index for f in log_corrupt if f.index), default=0))
        if truncate_at is not None:
            boundary = eng.purge_boundary()
            if boundary is not None:
                truncate_at = max(truncate_at, boundary.index + 1)
            hi = max([last_before] + [_later_hi(f) for f in log_corrupt])
            if truncate_at <= eng.last_index():
                eng.truncate(truncate_at)
            lost = (truncate_at, max(hi, truncate_at))
            lines.append(
                f"cut the log at index {truncate_at}: entries {lost[0]}..{lost[1]} were lost; "
                "re-fetch them from a peer"
            )

        for s in eng.segments():
            if s.sealed and s.last >= s.first:
                eng.entry(s.first)  # rebuilds a missing index
    lines.append("repaired")
    return RepairResult(tuple(lines), 0, lost)


def _later_hi(f: Finding) -> int:
    marker = "entries "
    if "unreachable" in f.message and marker in f.message:
        rng = f.message.split(marker, 1)[1].split(" ", 1)[0]
        try:
            return int(rng.split("..")[1])
        except (IndexError, ValueError):
            return 0
    return 0


def _cut_tail(fs: FileSystem, path: str, f: Finding) -> None:
    """Cut the tail segment at a damaged frame and drop the claims that covered it."""
    seg = fs.open(f.path)
    try:
        seg.truncate(f.offset)  # type: ignore[arg-type]
        seg.fdatasync()
    finally:
        seg.close()
    idx = f.path[: -len(".wal")] + ".idx"
    if fs.exists(idx):
        fs.unlink(idx)
    mpath = os.path.join(path, MANIFEST_NAME)
    data = read_file(fs, mpath)
    if data is not None:
        m = decode_manifest(data, mpath)
        replace_file(fs, path, MANIFEST_NAME, encode_manifest(replace(m, revision=m.revision + 1, tail_durable=0)))
