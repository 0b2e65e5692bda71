"""The crash simulator's file-system model: a page cache and what is durable, stepped op by op.

:class:`FsModel` replays a :class:`~segwal.testing.recording.Recording` one
operation at a time (:meth:`FsModel.step`) and holds, after each, what a crash
could draw from; :mod:`segwal.testing.crash` builds the crash states from it.

The model (POSIX rules, not one file system's leniency):

* each file (followed by identity, so renames and open-after-unlink work) has a
  *current* content (the page cache) and a *durable* content.  Its writes and
  truncates are *pending* until an ``fdatasync``/``fsync`` of that file makes
  the current content durable;
* each directory has durable names.  A ``create``, ``mkdir``, ``rename``,
  ``unlink`` or ``rmdir`` is pending until an ``fsync_dir`` of its directory (a
  rename across directories is two halves, each durable with its own directory);
  a name whose parent directory is not itself present is unreachable;
* a ``sync_failed`` (Linux fsync semantics, see ``faults.py``) drops the file's
  pending writes from the pending list *without* making them durable: they stay
  in the current content (readable after a killed process) but no later sync
  will ever write them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from segwal.testing.recording import Op, OpKind, Recording

__all__ = ["DirOp", "FsModel", "apply_data", "apply_dirop", "parent_of", "reachable"]


def parent_of(rel: str) -> str:
    """The directory holding ``rel`` (``"."`` for the root)."""
    p = os.path.dirname(rel)
    return p if p else "."


@dataclass(slots=True)
class DirOp:
    """A pending directory operation (durable after fsync_dir(parent))."""

    seq: int
    parent: str
    kind: str  # create | mkdir | rmdir | unlink | rename | link (half of a cross-dir rename)
    path: str
    ino: int = -1
    dst: str = ""


def apply_dirop(ns: dict[str, int], dirs: set[str], op: DirOp) -> bool:
    """Apply one directory op to a namespace; False (and no change) if its precondition fails."""
    k = op.kind
    if k == "create":
        if op.path in ns or op.path in dirs:
            return False
        ns[op.path] = op.ino
    elif k == "mkdir":
        if op.path in dirs or op.path in ns:
            return False
        dirs.add(op.path)
    elif k == "rmdir":
        if op.path not in dirs:
            return False
        dirs.discard(op.path)
    elif k == "unlink":
        if ns.get(op.path) != op.ino:
            return False
        del ns[op.path]
    elif k == "rename":
        if ns.get(op.path) != op.ino:
            return False
        del ns[op.path]
        ns[op.dst] = op.ino
    elif k == "link":
        ns[op.dst] = op.ino
    else:  # pragma: no cover - internal
        raise AssertionError(k)
    return True


def apply_data(buf: bytearray, op: Op) -> None:
    """Apply a write or truncate to a file's content ``buf`` (a gap reads as zeros). O(bytes)."""
    if op.kind is OpKind.WRITE:
        end = op.offset + len(op.data)
        if op.offset > len(buf):
            buf.extend(bytes(op.offset - len(buf)))
        buf[op.offset : end] = op.data
    else:  # truncate
        if op.size < len(buf):
            del buf[op.size :]
        else:
            buf.extend(bytes(op.size - len(buf)))



class FsModel:
    """Page cache + durable state of every file and directory, stepped op by op."""

    def __init__(self, rec: Recording) -> None:
        start = rec.start
        self.cur: dict[int, bytearray] = {}
        self.dur: dict[int, bytes] = {}
        self.pending: dict[int, list[Op]] = {}
        self.ns: dict[str, int] = {}
        for rel, ino in start.inodes.items():
            self.cur[ino] = bytearray(start.files[rel])
            self.dur[ino] = bytes(start.files[rel])
            self.ns[rel] = ino
        self.dirs: set[str] = set(start.dirs)
        self.dns: dict[str, int] = dict(self.ns)
        self.ddirs: set[str] = set(self.dirs)
        self.pdir: list[DirOp] = []
        # Files whose sync failed (Linux semantics): the writes lost then stay in
        # ``cur`` but a later sync writes only what came after the failure, so
        # for these the durable content is rebuilt from ``dur`` + pending ops.
        self.failed: set[int] = set()

    def step(self, op: Op) -> None:
        """Issue one recorded operation: update the page cache, the pending lists and what is durable."""
        k = op.kind
        if k is OpKind.WRITE or k is OpKind.TRUNCATE:
            apply_data(self.cur.setdefault(op.ino, bytearray()), op)
            self.dur.setdefault(op.ino, b"")
            self.pending.setdefault(op.ino, []).append(op)
        elif k is OpKind.FDATASYNC or k is OpKind.FSYNC:
            pend = self.pending.pop(op.ino, None)
            if op.ino in self.failed:
                buf = bytearray(self.dur[op.ino])
                for w in pend or ():
                    apply_data(buf, w)
                self.dur[op.ino] = bytes(buf)
                if bytes(self.cur[op.ino]) == self.dur[op.ino]:
                    self.failed.discard(op.ino)
            elif pend is not None:
                self.dur[op.ino] = bytes(self.cur[op.ino])
        elif k is OpKind.SYNC_FAILED:
            # Pages marked clean after failed writeback: never written by a later sync.
            self.pending.pop(op.ino, None)
            self.failed.add(op.ino)
        elif k is OpKind.CREATE:
            self.cur.setdefault(op.ino, bytearray())
            self.dur.setdefault(op.ino, b"")
            self.ns[op.path] = op.ino
            self.pdir.append(DirOp(op.seq, parent_of(op.path), "create", op.path, op.ino))
        elif k is OpKind.MKDIR:
            self.dirs.add(op.path)
            self.pdir.append(DirOp(op.seq, parent_of(op.path), "mkdir", op.path))
        elif k is OpKind.RMDIR:
            self.dirs.discard(op.path)
            self.pdir.append(DirOp(op.seq, parent_of(op.path), "rmdir", op.path))
        elif k is OpKind.UNLINK:
            self.ns.pop(op.path, None)
            self.pdir.append(DirOp(op.seq, parent_of(op.path), "unlink", op.path, op.ino))
        elif k is OpKind.RENAME:
            self.ns.pop(op.path, None)
            self.ns[op.dst] = op.ino
            sp, dp = parent_of(op.path), parent_of(op.dst)
            if sp == dp:
                self.pdir.append(DirOp(op.seq, sp, "rename", op.path, op.ino, op.dst))
            else:
                self.pdir.append(DirOp(op.seq, dp, "link", op.path, op.ino, op.dst))
                self.pdir.append(DirOp(op.seq, sp, "unlink", op.path, op.ino))
        elif k is OpKind.FSYNC_DIR:
            keep: list[DirOp] = []
            for d in self.pdir:
                if d.parent == op.path:
                    apply_dirop(self.dns, self.ddirs, d)
                else:
                    keep.append(d)
            self.pdir = keep
        else:  # pragma: no cover - internal
            raise AssertionError(k)

    def pending_ops(self) -> list[Op]:
        """Pending writes/truncates of all files, in issue order."""
        out = [op for ops in self.pending.values() for op in ops]
        out.sort(key=lambda o: o.seq)
        return out


def reachable(ns: Mapping[str, int], dirs: set[str]) -> tuple[dict[str, int], frozenset[str]]:
    """The names and directories whose every ancestor directory is present. O(names * depth)."""
    def ok(rel: str) -> bool:
        p = parent_of(rel)
        while p != ".":
            if p not in dirs:
                return False
            p = parent_of(p)
        return True

    live_dirs = frozenset(d for d in dirs if ok(d))
    return {rel: ino for rel, ino in ns.items() if ok(rel)}, live_dirs

