"""Acknowledged-call tracking: an engine wrapper that marks each call it acknowledged.

:class:`TrackedEngine` records, on a :class:`~segwal.testing.recording.RecordingFS`,
the marks that :mod:`segwal.testing.logmodel` replays to know what a crash
must keep.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from segwal.fs import OsFileSystem
from segwal.testing.logmodel import as_entry, as_logid
from segwal.testing.recording import RecordingFS

__all__ = ["TrackedEngine"]


class TrackedEngine:
    """Wraps an engine and marks each acknowledged call on a RecordingFS.

    Every mutating WalEngine method is forwarded; when it returns normally the
    matching mark (see :mod:`segwal.testing.logmodel`) is recorded.  Other attributes
    (reads, ``close``...) are forwarded untouched.  A call that raises is not
    marked: it was not acknowledged.

    ``durable``: whether log and key/value calls are durable on return
    (default: ``engine.is_write_durable()`` when the engine has it, else True).
    """

    def __init__(self, engine: Any, fs: RecordingFS, *, durable: bool | None = None) -> None:
        self._engine = engine
        self._fs = fs
        if durable is None:
            probe = getattr(engine, "is_write_durable", None)
            durable = bool(probe()) if callable(probe) else True
        self._durable = durable

    @property
    def engine(self) -> Any:
        """The wrapped engine."""
        return self._engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __enter__(self) -> TrackedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self._engine.close()

    def _mark(self, label: str, **facts: Any) -> None:
        if not self._durable:
            facts["durable"] = False
        self._fs.mark(label, **facts)

    def persist_entries(self, entries: Iterable[Any]) -> Any:
        """Forward; mark ``persist``."""
        batch = list(entries)
        out = self._engine.persist_entries(batch)
        self._mark("persist", entries=tuple(as_entry(e) for e in batch))
        return out

    def truncate(self, from_index: int) -> Any:
        """Forward; mark ``truncate``."""
        out = self._engine.truncate(from_index)
        self._mark("truncate", from_index=from_index)
        return out

    def purge_logs(self, cutoff: Any) -> Any:
        """Forward; mark ``purge``."""
        out = self._engine.purge_logs(cutoff)
        term, index = as_logid(cutoff)  # type: ignore[misc]
        self._mark("purge", term=term, index=index)
        return out

    def save_hard_state(self, hs: Any) -> Any:
        """Forward; mark ``hard_state`` (always durable on return)."""
        out = self._engine.save_hard_state(hs)
        self._fs.mark("hard_state", hard_state=hs)
        return out

    def insert(self, key: bytes, value: bytes) -> Any:
        """Forward; mark ``insert``."""
        out = self._engine.insert(key, value)
        self._mark("insert", key=bytes(key), value=bytes(value))
        return out

    def delete(self, key: bytes) -> Any:
        """Forward; mark ``delete``."""
        out = self._engine.delete(key)
        self._mark("delete", key=bytes(key))
        return out

    def apply(self, changes: Iterable[tuple[bytes, bytes | None]], applied: Any = None) -> Any:
        """Forward; mark ``apply``."""
        ch = [(bytes(k), None if v is None else bytes(v)) for k, v in changes]
        out = self._engine.apply(ch, applied)
        self._mark("apply", changes=tuple(ch), applied=as_logid(applied))
        return out

    def reset(self) -> Any:
        """Forward; mark ``reset``."""
        out = self._engine.reset()
        self._mark("reset")
        return out

    def install_snapshot(self, src: Any) -> Any:
        """Forward; mark ``install_snapshot`` with the snapshot's content (always
        durable on return)."""
        from segwal.kv.snapshot import read_snapshot

        applied, _n, chunks = read_snapshot(OsFileSystem(), str(src))
        out = self._engine.install_snapshot(src)
        kv = tuple((k, v) for keys, values in chunks for k, v in zip(keys, values))
        self._fs.mark("install_snapshot", applied=(applied.term, applied.index), kv=kv)
        return out

    def flush(self) -> Any:
        """Forward; mark ``flush`` (everything before is durable)."""
        out = self._engine.flush()
        self._fs.mark("flush")
        return out
