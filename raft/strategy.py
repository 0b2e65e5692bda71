"""The values that configure and report :class:`~segwal.raft.log.BufferedRaftLog`'s persistence: the strategies :class:`DiskFirst` and :class:`MemFirst`, and :class:`WriteStats`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DiskFirst", "MemFirst", "PersistenceStrategy", "WriteStats"]


@dataclass(frozen=True, slots=True)
class DiskFirst:
    """Every append returns only after its entries are durable.

    One engine write (and fsync) per append; appends are serialised.  Use it
    when the caller must not see an acknowledgement before the disk has it and
    appends are rare, or as the safe baseline.
    """


@dataclass(frozen=True, slots=True)
class MemFirst:
    """Appends return after the memory write; a writer thread persists in batches.

    Attributes:
        idle_interval: seconds a pending entry may wait for company before the
            writer hands the batch to the engine when nobody waits for it.  When
            someone waits (:meth:`BufferedRaftLog.wait_durable`,
            :meth:`BufferedRaftLog.flush`) the writer starts at once, except that
            it gives the threads its previous write released up to this long to
            append again and join the batch.  ``0`` writes as soon as it can.
        max_batch_entries: write at once when this many entries are pending.
        max_batch_bytes: write at once when this many payload bytes are pending.

    These are triggers, not caps: the writer always takes *every* pending
    entry, so the appends that arrived during one fsync go out in the next
    single write (group commit).
    """

    idle_interval: float = 0.001
    max_batch_entries: int = 4096
    max_batch_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if not (isinstance(self.idle_interval, (int, float)) and self.idle_interval >= 0):
            raise ValueError(f"idle_interval must be a number >= 0, got {self.idle_interval!r}")
        for name in ("max_batch_entries", "max_batch_bytes"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What :class:`BufferedRaftLog` handed to its engine so far.

    Attributes:
        writes: engine writes (``persist_entries`` calls, each made durable).
        entries: entries those writes carried; ``entries / writes`` is the mean
            group-commit batch (1 under :class:`DiskFirst` with single appends).
    """

    writes: int
    entries: int


PersistenceStrategy = DiskFirst | MemFirst
"""The two persistence strategies of :class:`BufferedRaftLog`."""
