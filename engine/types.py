"""Value types of the engine layer: Raft hard state."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VotedFor", "HardState"]


def _check_uint(owner: str, name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise ValueError(f"{owner}.{name} must be an int in 0..2**64-1, got {value!r}")


@dataclass(frozen=True, slots=True)
class VotedFor:
    """The vote a node cast: for ``voted_for_id`` in ``voted_for_term``."""

    voted_for_id: int
    voted_for_term: int
    committed: bool = False

    def __post_init__(self) -> None:
        _check_uint("VotedFor", "voted_for_id", self.voted_for_id)
        _check_uint("VotedFor", "voted_for_term", self.voted_for_term)
        if type(self.committed) is not bool:
            raise ValueError(f"VotedFor.committed must be a bool, got {self.committed!r}")


@dataclass(frozen=True, slots=True)
class HardState:
    """Raft's persistent state: current term, the vote, and the commit index."""

    current_term: int
    voted_for: VotedFor | None = None
    commit_index: int = 0

    def __post_init__(self) -> None:
        _check_uint("HardState", "current_term", self.current_term)
        _check_uint("HardState", "commit_index", self.commit_index)
        if self.voted_for is not None and not isinstance(self.voted_for, VotedFor):
            raise ValueError(f"HardState.voted_for must be a VotedFor or None, got {self.voted_for!r}")
