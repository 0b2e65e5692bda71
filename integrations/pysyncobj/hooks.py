"""Plugging SegwalJournal into PySyncObj 0.3.17: the configuration marker and the wrapped functions.

The list of what is wrapped, and why, is in the package docstring
(``segwal.integrations.pysyncobj``).  Every wrapper first checks that the
SyncObj it runs for uses a :class:`SegwalJournal` (or was configured with a
:class:`SegwalJournalFile`) and otherwise calls the original unchanged, so
other SyncObjs in the process are unaffected.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from segwal.engine import DEFAULT_SEGMENT_SIZE
from segwal.fs import FileSystem
from segwal.types import StorageEngine

from .dump import FsSerializer
from .journal import DEFAULT_CACHE_ENTRIES, SegwalJournal

__all__ = ["SUPPORTED_VERSION", "SegwalJournalFile", "install", "segwal_journal"]

SUPPORTED_VERSION = "0.3.17"
_ctx = threading.local()  # .conf: the SyncObjConf of the SyncObj being constructed on this thread


@dataclass(frozen=True)
class SegwalJournalFile:
    """What to put in ``SyncObjConf.journalFile`` to get a :class:`SegwalJournal`
    (build it with :func:`segwal_journal`).  The journal is opened when SyncObj
    is constructed, so one configuration can serve successive SyncObj instances."""

    target: str | Callable[[], StorageEngine]
    segment_size: int = DEFAULT_SEGMENT_SIZE
    sync: Literal["always", "flush"] = "always"
    fs: FileSystem | None = None
    cache_entries: int = DEFAULT_CACHE_ENTRIES

    def open(self, dump_file: str | None = None) -> SegwalJournal:
        """Open the journal this marker names (called by the patched createJournal,
        which passes the SyncObj's ``fullDumpFile``).  O(cache_entries) reads."""
        t = self.target
        if isinstance(t, str):
            return SegwalJournal(
                t, segment_size=self.segment_size, sync=self.sync, fs=self.fs, dump_file=dump_file,
                cache_entries=self.cache_entries,
            )
        engine = t()
        if not isinstance(engine, StorageEngine):
            raise TypeError(f"segwal_journal: the factory returned {type(engine).__name__}, not a StorageEngine")
        return SegwalJournal(
            engine=engine, sync=self.sync, fs=self.fs, dump_file=dump_file, cache_entries=self.cache_entries
        )


def segwal_journal(
    target: str | os.PathLike[str] | Callable[[], StorageEngine],
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    sync: Literal["always", "flush"] = "always",
    fs: FileSystem | None = None,
    cache_entries: int = DEFAULT_CACHE_ENTRIES,
) -> SegwalJournalFile:
    """The value for ``SyncObjConf(journalFile=...)`` that makes a SyncObj keep its
    Raft log in segwal.  Installs the hooks (:func:`install`).

    Args:
        target: a directory path (a :class:`~segwal.engine.WalEngine` is opened
            there), or a zero-argument callable returning an open
            :class:`~segwal.types.StorageEngine` (called at each SyncObj
            construction; the journal closes it).  A URL string is refused with
            a ``ValueError`` until an engine for URLs exists.
        segment_size: segment size of the ``WalEngine`` opened at a path.
        sync: ``"always"`` (default, durable: Raft's rules hold across a power
            cut; needs ``fullDumpFile``) or ``"flush"`` (acknowledges once
            written to the OS: survives ``kill -9`` of any number of nodes, not
            a power cut of a majority).
        fs: a :class:`~segwal.fs.FileSystem` for the engine at ``target`` and for
            the dump file (e.g. ``segwal.testing.volatile.VolatileFileSystem``
            for power-loss tests).  The SyncObj must then run with
            ``useFork=False``: the dump is written through ``fs`` in the tick thread.
        cache_entries: how many of the newest entries the journal keeps in memory.

    Durability: none by itself (it only describes the journal).  O(1).
    """
    install()
    if sync not in ("always", "flush"):
        raise ValueError(f"sync must be 'always' or 'flush', got {sync!r}")
    if isinstance(target, (str, os.PathLike)):
        path = os.fspath(target)
        if not isinstance(path, str):
            raise TypeError(f"segwal_journal: a path must be text, got {path!r}")
        if "://" in path:
            raise ValueError(
                f"segwal_journal({path!r}): no storage engine for URLs is available in this segwal; "
                "pass a directory path or a zero-argument factory returning a StorageEngine"
            )
        return SegwalJournalFile(path, segment_size, sync, fs, cache_entries)
    if callable(target):
        return SegwalJournalFile(target, segment_size, sync, fs, cache_entries)
    raise TypeError(f"segwal_journal: expected a path, a URL or an engine factory, got {target!r}")


# ------------------------------------------------------------------ the hooks

_install_lock = threading.Lock()
_installed = False


def _spec_of(conf: Any) -> SegwalJournalFile | None:
    jf = getattr(conf, "journalFile", None)
    return jf if isinstance(jf, SegwalJournalFile) else None


def _check_conf(conf: Any, spec: SegwalJournalFile) -> None:
    if spec.sync == "always" and conf.fullDumpFile is None:
        raise ValueError(
            "segwal_journal(sync='always') needs SyncObjConf(fullDumpFile=...): without a dump file "
            "PySyncObj keeps its snapshot in memory only, and log compaction would delete entries that "
            "nothing durable holds any more (or use sync='flush', which makes no power-loss promise)"
        )
    if spec.fs is not None and (conf.useFork or conf.serializer is not None):
        raise ValueError(
            "segwal_journal(fs=...) needs SyncObjConf(useFork=False) and no custom serializer: "
            "the dump is written through fs in the tick thread"
        )


def install() -> None:
    """Wrap the PySyncObj functions listed in the package docstring.  Idempotent;
    called on import of ``segwal.integrations.pysyncobj``.

    Raises:
        ImportError: the installed PySyncObj is not 0.3.17 or lacks one of the
            wrapped functions (never a silent fallback to unsafe behaviour).
    """
    global _installed
    import pysyncobj.syncobj as so
    from pysyncobj.version import VERSION

    with _install_lock:
        if _installed:
            return
        cls = so.SyncObj
        wanted = {
            "pysyncobj.syncobj.createJournal": getattr(so, "createJournal", None),
            "pysyncobj.syncobj.Serializer": getattr(so, "Serializer", None),
            "SyncObj.__init__": cls.__dict__.get("__init__"),
            "SyncObj._onTick": cls.__dict__.get("_onTick"),
            "SyncObj.__sendNextNodeIdx": cls.__dict__.get("_SyncObj__sendNextNodeIdx"),
            "SyncObj.__getEntries": cls.__dict__.get("_SyncObj__getEntries"),
            "SyncObj.__setCurrentTerm": cls.__dict__.get("_SyncObj__setCurrentTerm"),
        }
        missing = [k for k, v in wanted.items() if not callable(v)]
        if VERSION != SUPPORTED_VERSION or missing:
            raise ImportError(
                f"segwal.integrations.pysyncobj supports pysyncobj {SUPPORTED_VERSION} only "
                f"(installed: {VERSION}; missing: {', '.join(missing) or 'nothing'}); "
                "install 'pysyncobj>=0.3.17,<0.3.18'"
            )
        orig_create = so.createJournal
        orig_serializer = so.Serializer
        orig_init = cls.__init__
        orig_tick = cls._onTick
        orig_send = cls._SyncObj__sendNextNodeIdx
        orig_get = cls._SyncObj__getEntries

        def createJournal(journalFile: Any = None) -> Any:
            if isinstance(journalFile, SegwalJournalFile):
                conf = getattr(_ctx, "conf", None)
                dump = conf.fullDumpFile if conf is not None and conf.journalFile is journalFile else None
                return journalFile.open(dump_file=dump)
            return orig_create(journalFile)

        def Serializer(fileName: Any, transmissionBatchSize: Any, *args: Any, **kwargs: Any) -> Any:
            spec = _spec_of(getattr(_ctx, "conf", None))
            if spec is not None and spec.fs is not None:
                return FsSerializer(spec.fs, fileName, transmissionBatchSize)
            return orig_serializer(fileName, transmissionBatchSize, *args, **kwargs)

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            conf = kwargs["conf"] if "conf" in kwargs else (args[2] if len(args) > 2 else None)
            spec = _spec_of(conf)
            if spec is None:
                orig_init(self, *args, **kwargs)
                return
            _check_conf(conf, spec)
            _ctx.conf = conf
            try:
                orig_init(self, *args, **kwargs)
            finally:
                _ctx.conf = None

        def _onTick(self: Any, *args: Any, **kwargs: Any) -> Any:
            # The leader counts itself toward a commit in _onTick (count = 1): every
            # entry it added before this tick must be on disk first.
            j = self.__dict__.get("_SyncObj__raftLog")
            if isinstance(j, SegwalJournal):
                j.sync()
            return orig_tick(self, *args, **kwargs)

        def __sendNextNodeIdx(self: Any, *args: Any, **kwargs: Any) -> Any:
            # A follower's acknowledgement (after append_entries or a snapshot
            # install) promises what it received: persist before send.
            j = self.__dict__.get("_SyncObj__raftLog")
            if isinstance(j, SegwalJournal):
                j.sync()
            return orig_send(self, *args, **kwargs)

        def __getEntries(self: Any, fromIDx: Any, count: Any = None, maxSizeBytes: Any = None) -> Any:
            # A batch for append_entries: read only up to maxSizeBytes, not to the end of the log.
            if count is None and maxSizeBytes is not None:
                j = self.__dict__.get("_SyncObj__raftLog")
                if isinstance(j, SegwalJournal):
                    return j.entries_from(fromIDx, maxSizeBytes)
            return orig_get(self, fromIDx, count, maxSizeBytes)

        createJournal._segwal_original = orig_create  # type: ignore[attr-defined]
        so.createJournal = createJournal
        so.Serializer = Serializer
        cls.__init__ = __init__
        cls._onTick = _onTick
        cls._SyncObj__sendNextNodeIdx = __sendNextNodeIdx
        cls._SyncObj__getEntries = __getEntries
        _installed = True
