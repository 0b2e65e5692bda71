"""Records of the log's live segments, shared by its reader, recovery and writer:
their file names, the in-memory segment, what ``segwal inspect`` shows, and the
replay of a segment's frames onto its offset index."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from segwal.engine.manifest import SegmentRecord
from segwal.errors import CorruptionError
from segwal.index.offsets import SealedIndex, TailIndex
from segwal.wal.format import FRAME_HEADER_SIZE, KIND_ENTRIES, KIND_TRUNCATE, SLOT_SIZE, FrameHeader
from segwal.wal.segment import SegmentFile

__all__ = ["LiveSegment", "SegmentInfo", "segment_name", "index_name", "replay_frames"]


def segment_name(seq: int) -> str:
    """File name of segment ``seq``."""
    return f"{seq:016x}.wal"


def index_name(seq: int) -> str:
    """File name of segment ``seq``'s index."""
    return f"{seq:016x}.idx"


def replay_frames(index: TailIndex, frames: list[tuple[int, FrameHeader]], path: str) -> int:
    """Apply a segment's ENTRIES and TRUNCATE frames, in order, to its offset index;
    returns the last index the segment then holds (``base - 1`` when empty).

    An ENTRIES frame starting at ``k`` replaces everything from ``k`` on; a
    TRUNCATE frame cuts at ``k``.  Pure apart from ``index``.  O(entries).

    Raises:
        CorruptionError: a valid frame that cannot follow the ones before it.
    """
    base = index.base
    last = base - 1 + index.count
    for off, h in frames:
        if h.kind not in (KIND_ENTRIES, KIND_TRUNCATE):
            raise CorruptionError(f"unexpected frame kind {h.kind} in a log segment", path=path, offset=off)
        if not base <= h.first_index <= last + 1:
            raise CorruptionError(
                f"frame at index {h.first_index} cannot follow a segment holding {base}..{last}",
                path=path,
                offset=off,
                index=h.first_index,
            )
        if h.kind == KIND_ENTRIES:
            start = off + FRAME_HEADER_SIZE
            index.set_from(h.first_index - base, np.arange(start, start + SLOT_SIZE * h.count, SLOT_SIZE, dtype=np.uint32))
            last = h.first_index + h.count - 1
        else:
            index.truncate(h.first_index - base)
            last = h.first_index - 1
    return last


class LiveSegment:
    """One live segment in memory."""

    __slots__ = ("seq", "uid", "base", "last", "path", "idx_path", "file", "index")

    def __init__(self, directory: str, rec: SegmentRecord) -> None:
        self.seq = rec.seq
        self.uid = rec.uid
        self.base = rec.base
        self.last = rec.last
        self.path = os.path.join(directory, segment_name(rec.seq))
        self.idx_path = os.path.join(directory, index_name(rec.seq))
        self.file: SegmentFile | None = None
        self.index: TailIndex | SealedIndex | None = None

    def record(self) -> SegmentRecord:
        return SegmentRecord(self.seq, self.uid, self.base, self.last)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A live segment as ``segwal inspect`` shows it (``last < first`` when empty)."""

    seq: int
    path: str
    first: int
    last: int
    size: int
    sealed: bool
