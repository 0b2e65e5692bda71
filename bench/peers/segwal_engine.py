"""The segwal peer: :class:`WalEngine` with ``sync="always"``, driven like every other store."""

from __future__ import annotations

from typing import Any

from .base import BasePeer, Change, Entry, term_of


class SegwalPeer(BasePeer):
    """segwal's :class:`WalEngine` with ``sync="always"``."""

    name = "segwal"
    label = "segwal (sync=always)"
    kind = "segwal"
    caps = frozenset({"append", "read", "reopen", "delete", "kv", "kv_get"})
    module = "segwal.engine"

    def __init__(self, segment_size: int | None = None) -> None:
        self.segment_size = segment_size
        self.eng: Any = None

    def unavailable(self) -> str | None:
        try:
            from segwal.engine import Entry as _E  # noqa: F401
            from segwal.engine import LogId as _L  # noqa: F401
            from segwal.engine import WalEngine as _W  # noqa: F401
        except Exception as exc:
            return f"segwal.engine.WalEngine not importable yet ({type(exc).__name__}: {exc})"
        return None

    def version(self) -> str:
        import segwal

        return getattr(segwal, "__version__", "?")

    def open(self, path: str) -> None:
        from segwal.engine import WalEngine

        kw: dict[str, Any] = {"sync": "always"}
        if self.segment_size is not None:
            kw["segment_size"] = self.segment_size
        self.eng = WalEngine(path, **kw)

    def close(self) -> None:
        if self.eng is not None:
            self.eng.close()
            self.eng = None

    def append(self, prepared: list[Entry]) -> None:
        self.eng.persist_entries(prepared)

    def entry(self, index: int) -> Entry | None:
        return self.eng.entry(index)  # type: ignore[no-any-return]

    def range(self, start: int, end: int) -> list[Entry]:
        return self.eng.get_entries_range(start, end)  # type: ignore[no-any-return]

    def bounds(self) -> tuple[int, int]:
        return self.eng.first_index(), self.eng.last_index()

    def purge(self, upto: int) -> None:
        from segwal.engine import LogId

        self.eng.purge_logs(LogId(term_of(upto), upto))

    def truncate(self, from_index: int) -> None:
        self.eng.truncate(from_index)

    def kv_apply(self, prepared: list[Change]) -> None:
        self.eng.apply(prepared)

    def kv_get(self, key: bytes) -> bytes | None:
        return self.eng.get(key)  # type: ignore[no-any-return]
