"""What every peer shares: the :class:`Peer` protocol, :class:`BasePeer` defaults, and the ``Entry``/``Change`` types.

The adapters subclass :class:`BasePeer`, whose methods raise
``NotImplementedError`` for the workloads a store does not take part in; the
registry, and why every store goes through the same calls, are in the package
``__init__``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

__all__ = ["Entry", "Change", "Peer", "BasePeer", "term_of", "new_entry"]

try:  # the engine's own value type when it exists, so no peer is favoured
    from segwal.types import Entry
except Exception:  # pragma: no cover - segwal is always installed with the bench

    class Entry(NamedTuple):  # type: ignore[no-redef]
        index: int  # type: ignore[assignment]
        term: int
        payload: bytes = b""


Change = tuple[bytes, "bytes | None"]
"""A key/value change: ``(key, value)``; ``value is None`` deletes the key."""


def term_of(index: int) -> int:
    """Term of the entry at ``index`` in every workload: ``1 + index // 10000``."""
    return 1 + index // 10000


def new_entry(index: int, term: int, payload: bytes) -> Entry:
    """An ``Entry`` built the same way for every KV peer: the cheapest public way to build one."""
    return tuple.__new__(Entry, (index, term, payload))


@runtime_checkable
class Peer(Protocol):
    """What a workload may ask of a store.

    Capabilities: ``caps`` names the workloads the store takes part in
    (``append``, ``read``, ``reopen``, ``delete``, ``kv``, ``kv_get``).  A
    method outside the store's capabilities raises ``NotImplementedError``.
    Every mutating call is durable when it returns if ``durable`` is true.
    Calls come from one thread.
    """

    name: str
    """Short identifier used on the command line and in the JSON."""
    label: str
    """Human-readable description for tables."""
    kind: str
    """``segwal``, ``raw`` (the disk limit), ``peer`` (a store a user would pick) or
    ``ceiling`` (an in-memory or non-durable reference, never a "best peer")."""
    durable: bool
    caps: frozenset[str]

    def unavailable(self) -> str | None:
        """``None`` if the store can run here, else why not (missing package)."""

    def version(self) -> str:
        """Package and library version, for the machine record."""

    def open(self, path: str) -> None:
        """Open or create the store in directory ``path``."""

    def close(self) -> None:
        """Release the store; its data stays on disk."""

    def reserve(self, nbytes: int) -> None:
        """Called before a timed append of about ``nbytes``; untimed."""

    def prepare(self, batch: list[Entry]) -> Any:
        """Turn one batch into what :meth:`append` takes; runs outside the timed loop."""

    def append(self, prepared: Any) -> None:
        """Append one batch durably (one sync)."""

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` or ``None``."""

    def range(self, start: int, end: int) -> list[Entry]:
        """Entries ``start..end`` inclusive, ascending."""

    def bounds(self) -> tuple[int, int]:
        """``(first_index, last_index)``; ``(0, 0)`` when empty."""

    def purge(self, upto: int) -> None:
        """Durably remove every entry ``<= upto``."""

    def truncate(self, from_index: int) -> None:
        """Durably remove every entry ``>= from_index``."""

    def kv_prepare(self, changes: list[Change]) -> Any:
        """Like :meth:`prepare` for one key/value batch."""

    def kv_apply(self, prepared: Any) -> None:
        """Apply one batch of key/value changes atomically and durably."""

    def kv_get(self, key: bytes) -> bytes | None:
        """The value of ``key`` or ``None``."""


class BasePeer:
    """Defaults shared by the adapters: identity ``prepare``, no capabilities."""

    name: ClassVar[str] = "base"
    label: ClassVar[str] = "base"
    kind: ClassVar[str] = "peer"
    durable: ClassVar[bool] = True
    caps: ClassVar[frozenset[str]] = frozenset()
    module: ClassVar[str | None] = None

    def unavailable(self) -> str | None:
        if self.module is None:
            return None
        try:
            __import__(self.module)
        except Exception as exc:  # ImportError, or a broken wheel
            return f"{self.module} not importable ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str:
        if self.module is None:
            return ""
        try:
            from importlib.metadata import version

            return version(self.module)
        except Exception:
            return "?"

    def reserve(self, nbytes: int) -> None:
        return None

    def prepare(self, batch: list[Entry]) -> Any:
        return batch

    def kv_prepare(self, changes: list[Change]) -> Any:
        return changes

    def _no(self) -> NotImplementedError:
        return NotImplementedError(f"{self.name} does not support this workload")

    # Everything below is overridden by the adapters that have the capability.
    def open(self, path: str) -> None:
        raise self._no()

    def close(self) -> None:
        raise self._no()

    def append(self, prepared: Any) -> None:
        raise self._no()

    def entry(self, index: int) -> Entry | None:
        raise self._no()

    def range(self, start: int, end: int) -> list[Entry]:
        raise self._no()

    def bounds(self) -> tuple[int, int]:
        raise self._no()

    def purge(self, upto: int) -> None:
        raise self._no()

    def truncate(self, from_index: int) -> None:
        raise self._no()

    def kv_apply(self, prepared: Any) -> None:
        raise self._no()

    def kv_get(self, key: bytes) -> bytes | None:
        raise self._no()
