"""The in-memory ceiling: a Python dict of entries (and of key/value pairs), not durable."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import BasePeer, Change, Entry


class DictPeer(BasePeer):
    """A Python dict of ``Entry``: the in-memory ceiling for reads (not durable)."""

    name = "dict"
    label = "python dict (in-memory ceiling)"
    kind = "ceiling"
    durable = False
    caps = frozenset({"read", "kv_get"})
    _stores: ClassVar[dict[str, dict[Any, Any]]] = {}

    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}
        self.path = ""

    def open(self, path: str) -> None:
        self.path = path
        self.d = self._stores.setdefault(path, {})

    def close(self) -> None:
        self.d = {}

    def append(self, prepared: list[Entry]) -> None:
        for e in prepared:
            self.d[e.index] = e

    def entry(self, index: int) -> Entry | None:
        return self.d.get(index)

    def range(self, start: int, end: int) -> list[Entry]:
        d = self.d
        return [d[i] for i in range(start, end + 1) if i in d]

    def bounds(self) -> tuple[int, int]:
        return (min(self.d), max(self.d)) if self.d else (0, 0)

    def kv_apply(self, prepared: list[Change]) -> None:
        for k, v in prepared:
            if v is None:
                self.d.pop(k, None)
            else:
                self.d[k] = v

    def kv_get(self, key: bytes) -> bytes | None:
        return self.d.get(key)

    @classmethod
    def forget(cls, path: str) -> None:
        cls._stores.pop(path, None)
