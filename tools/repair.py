"""Explicit repair of an engine directory (``segwal repair``).

Without ``force`` it only does what opening would do anyway, but says so and
keeps evidence: a torn tail is cut after its bytes are saved to
``<segment>.broken``, damaged indexes are rebuilt, stray files removed.  It
refuses to touch corruption of acknowledged data.  With ``force`` it also cuts
the log at the first damaged entry (saving the cut bytes likewise) and reports
exactly which indexes were lost, so the node can fetch them again from a peer,
and rebuilds a damaged key/value store from the records before the damage
(:mod:`segwal.tools.salvage`), saying which log entries must be applied again.
A lost or damaged hard state is never invented: repair says what the operator
must do instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from segwal.engine.hardstate import HARDSTATE_NAME, load_hard_state, save_hard_state
from segwal.engine.manifest import MANIFEST_NAME, decode_manifest, encode_manifest
from segwal.errors import LockedError
from segwal.fs import FileSystem, OsFileSystem, read_file, replace_file
from segwal.tools.salvage import rebuild_kv, salvage_kv
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
    # log lowers it.  Key/value damage is salvaged; a lost hard state cannot be repaired.
    hard = [f for f in corrupt if f.path.endswith(HARDSTATE_NAME) and not f.message.startswith("commit index")]
    kv_bad = [f for f in corrupt if f"{os.sep}kv{os.sep}" in f.path or f.path.endswith(f"{os.sep}kv")]
    other = [f for f in corrupt if f not in log_corrupt and f not in hard and f not in kv_bad
             and not f.message.startswith("commit index")]
    if hard:
        lines.append(
            "the hard state (current term and vote) is lost or damaged, and is never invented: a node that "
            "forgot its vote could vote twice in one term.  Do not restart this node with its old identity: "
            "remove it from the cluster, then add it back as a new member with an empty directory "
            "(it catches up from the leader)"
        )
        return RepairResult(tuple(lines), 2, None)
    if corrupt and not force:
        first = min((f.index for f in corrupt if f.index is not None), default=None)
        hint = f" (entries from {first} on would be lost and must be re-fetched from a peer)" if first else ""
        if kv_bad:
            hint += " (the key/value store would be rolled back to its last undamaged record)"
        lines.append(f"refusing to repair corruption of acknowledged data without --force{hint}")
        return RepairResult(tuple(lines), 2, None)
    if other:
        lines.append("cannot repair this damage here: restore this node from a peer's snapshot")
        return RepairResult(tuple(lines), 2, None)
    if kv_bad:
        lines.extend(_salvage_kv(fs, path))
    lost: tuple[int, int] | None = None
    truncate_at: int | None = None
    tail_cut = [f for f in report.findings if f.path.endswith(".wal") and f.offset is not None
                and ("torn tail" in f.message or "damaged frame" in f.message)]
    for f in tail_cut:
        saved = _save_broken(fs, f.path, f.offset)  # type: ignore[arg-type]
        if saved:
            lines.append(f"saved the {('torn' if 'torn' in f.message else 'damaged')} bytes to {saved}")
    if any(f.index is not None for f in corrupt):
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


def _salvage_kv(fs: FileSystem, path: str) -> list[str]:
    """Rebuild the key/value store from its undamaged prefix; the lines that say what happened."""
    mpath = os.path.join(path, MANIFEST_NAME)
    data = read_file(fs, mpath)
    assert data is not None
    m = decode_manifest(data, mpath)
    found = salvage_kv(fs, path, m)
    need_from = 1 if found.applied is None else found.applied.index + 1
    boundary = m.purge.index if m.purge is not None else 0
    lines = [f"key/value store damaged ({found.damage}); its records before the damage hold "
             f"{len(found.state)} keys, last_applied {found.applied}"]
    if need_from <= boundary:
        rebuild_kv(fs, path, m, {}, None, 64 << 20)
        lines.append(
            f"the log entries to apply again ({need_from}..) are purged (purge boundary {boundary}): the key/value "
            "store was emptied and last_applied cleared; install a snapshot from a peer (the leader sends one)"
        )
    else:
        rebuild_kv(fs, path, m, found.state, found.applied, 64 << 20)
        lines.append(
            f"rolled the key/value store back to last_applied {found.applied}: apply log entries {need_from}.. "
            "again (they are still in the log); the damaged files are kept as kv/*.broken"
        )
    return lines


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
