"""Plugging SegwalJournal into PySyncObj 0.3.17: the configuration marker and the wrapped functions.

The list of what is wrapped, and why, is in the package docstring
(``segwal.integrations.pysyncobj``).  Every wrapper first checks that the
SyncObj it runs for uses a :class:`SegwalJournal` (or was configured with a
:class:`SegwalJournalFile`) and otherwise calls the original unchanged, so
other SyncObjs in the process are unaffected.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from segwal.engine import DEFAULT_SEGMENT_SIZE
from segwal.fs import FileSystem, OsFileSystem
from segwal.storage.objectstore import ObjectStoreEngine, sidecar, store_from_url
from segwal.storage.objectstore.urls import has_scheme, split_url
from segwal.types import StorageEngine

from .dump import FsSerializer
from .dumpstore import DUMP_FOLDER, DumpKeeper, DumpStore, UploadingSerializer
from .journal import DEFAULT_CACHE_ENTRIES, SegwalJournal

__all__ = ["SUPPORTED_VERSION", "SegwalJournalFile", "install", "segwal_journal"]

SUPPORTED_VERSION = "0.3.17"
_ctx = threading.local()  # .conf / .journal: the SyncObjConf and journal of the SyncObj being constructed here
#: the keyword arguments of ObjectStoreEngine that ``engine_options`` may set
ENGINE_OPTIONS = frozenset({"retries", "retry_delay", "compact_slots", "chunk_bytes", "cache_bytes", "background"})


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
    store_options: tuple[tuple[str, object], ...] = ()
    engine_options: tuple[tuple[str, object], ...] = ()

    @property
    def kind(self) -> Literal["path", "url", "factory"]:
        """What ``target`` is.  O(1)."""
        t = self.target
        return "factory" if not isinstance(t, str) else "url" if has_scheme(t) else "path"

    def open(self, dump_file: str | None = None) -> SegwalJournal:
        """Open the journal this marker names (called by the patched createJournal,
        which passes the SyncObj's ``fullDumpFile``).  With an engine in an object
        store (a URL, or a factory returning an ObjectStoreEngine) the dump is kept
        in that store (:mod:`.dumpstore`): ``dump_file`` is then required, and the
        store's dump is put there before this returns.  O(cache_entries) reads."""
        t = self.target
        if self.kind == "path":
            assert isinstance(t, str)
            return SegwalJournal(
                t,
                segment_size=self.segment_size,
                sync=self.sync,
                fs=self.fs,
                dump_file=dump_file,
                cache_entries=self.cache_entries,
            )
        if isinstance(t, str):
            store, prefix = store_from_url(t, **dict(self.store_options))
            engine: object = ObjectStoreEngine(store, prefix, **dict(self.engine_options))  # type: ignore[arg-type]
        else:
            engine = t()
            if not isinstance(engine, StorageEngine):
                raise TypeError(f"segwal_journal: the factory returned {type(engine).__name__}, not a StorageEngine")
        dumps = None
        if isinstance(engine, ObjectStoreEngine):
            if dump_file is None:
                engine.close()
                raise ValueError(
                    "segwal_journal: a journal in an object store needs SyncObjConf(fullDumpFile=...): the dump "
                    "is kept in the store beside the log, and log compaction purges nothing before it is there"
                )
            side = sidecar(engine, DUMP_FOLDER)
            dumps = DumpKeeper(DumpStore(side.seam, side.folder), self.fs or OsFileSystem(), dump_file)
        assert isinstance(engine, StorageEngine)
        return SegwalJournal(
            engine=engine,
            sync=self.sync,
            fs=self.fs,
            dump_file=dump_file,
            cache_entries=self.cache_entries,
            dumps=dumps,
        )


def segwal_journal(
    target: str | os.PathLike[str] | Callable[[], StorageEngine],
    *,
    segment_size: int | None = None,
    sync: Literal["always", "flush"] = "always",
    fs: FileSystem | None = None,
    cache_entries: int = DEFAULT_CACHE_ENTRIES,
    engine_options: Mapping[str, Any] | None = None,
    **store_options: object,
) -> SegwalJournalFile:
    """The value for ``SyncObjConf(journalFile=...)`` that makes a SyncObj keep its
    Raft log in segwal.  Installs the hooks (:func:`install`).

    Args:
        target: one of

            * a directory path: a :class:`~segwal.engine.WalEngine` is opened there;
            * a URL with a scheme (``s3://bucket/node1``, ``gs://``, ``az://``,
              ``file:///dir``, ``memory://name``): an
              :class:`~segwal.storage.objectstore.ObjectStoreEngine` is opened
              with ``ObjectStoreEngine.from_url(target, **store_options)``, and
              PySyncObj's dump is kept in the same store (:mod:`.dumpstore`);
            * a zero-argument callable returning an open
              :class:`~segwal.types.StorageEngine` (called at each SyncObj
              construction; the journal closes it).  When it returns an
              ``ObjectStoreEngine``, the dump is kept in its store too.
        segment_size: segment size of the ``WalEngine`` opened at a path
            (a directory path only; default ``DEFAULT_SEGMENT_SIZE``).
        sync: ``"always"`` (default, durable: Raft's rules hold across a power
            cut; needs ``fullDumpFile``) or ``"flush"`` (acknowledges once
            written to the OS: survives ``kill -9`` of any number of nodes, not
            a power cut of a majority).  An object-store engine is durable on
            every write in both modes, and always needs ``fullDumpFile``.
        fs: a :class:`~segwal.fs.FileSystem` for the engine at a path and for
            the dump file (e.g. ``segwal.testing.volatile.VolatileFileSystem``
            for power-loss tests).  The SyncObj must then run with
            ``useFork=False``: the dump is written through ``fs`` in the tick thread.
        cache_entries: how many of the newest entries the journal keeps in memory.
        engine_options: other keyword arguments of ``ObjectStoreEngine`` for a
            URL (``compact_slots``, ``chunk_bytes``, ``cache_bytes``, ``retries``,
            ``retry_delay``, ``background``).
        store_options: the store's configuration for a URL, as for
            ``ObjectStoreEngine.from_url``: ``endpoint=``, ``region=``, and
            ``client.*`` / ``retry.*`` keys passed as ``**{"client.allow_http": "true"}``.

    Raises:
        ValueError: a malformed URL or store option, an empty path, an option
            that does not apply to ``target``'s kind (naming both).
        TypeError: ``target`` is none of the three kinds, or a factory that
            needs arguments.
        ImportError: a URL without ``obstore`` installed (``segwal[cloud]``).

    Durability: none by itself (it only describes the journal; it opens no
    connection).  O(1).
    """
    install()
    if sync not in ("always", "flush"):
        raise ValueError(f"sync must be 'always' or 'flush', got {sync!r}")
    if isinstance(target, (str, os.PathLike)):
        path = os.fspath(target)
        if not isinstance(path, str):
            raise TypeError(f"segwal_journal: target must be a text path or URL, got bytes {path!r}")
        if not path:
            raise ValueError("segwal_journal: target is an empty string (expected a directory path or a URL)")
        if has_scheme(path):
            return _url_spec(path, segment_size, sync, fs, cache_entries, engine_options, store_options)
        _only_for_urls(path, engine_options, store_options)
        size = DEFAULT_SEGMENT_SIZE if segment_size is None else segment_size
        return SegwalJournalFile(path, size, sync, fs, cache_entries)
    if isinstance(target, StorageEngine):
        raise TypeError(
            f"segwal_journal: target is an open {type(target).__name__}; pass a zero-argument factory "
            "returning one (e.g. lambda: engine), called at each SyncObj construction"
        )
    if callable(target):
        try:
            inspect.signature(target).bind()
        except TypeError:
            raise TypeError(f"segwal_journal: a factory target must take no arguments, {target!r} needs some") from None
        except ValueError:
            pass  # no signature to check (a builtin): it is called as it is
        _only_for_urls(target, engine_options, store_options)
        if segment_size is not None:
            raise ValueError("segwal_journal: segment_size applies to a directory path, not to a factory target")
        return SegwalJournalFile(target, DEFAULT_SEGMENT_SIZE, sync, fs, cache_entries)
    raise TypeError(
        "segwal_journal: target must be a directory path, a URL (s3://bucket/prefix, file:///dir, ...) or a "
        f"zero-argument factory returning a StorageEngine, got {type(target).__name__} {target!r}"
    )


def _only_for_urls(
    target: object, engine_options: Mapping[str, Any] | None, store_options: Mapping[str, object]
) -> None:
    given = sorted(store_options) + (["engine_options"] if engine_options else [])
    if given:
        raise ValueError(f"segwal_journal: {', '.join(given)} apply to a URL target only, not to {target!r}")


def _url_spec(
    url: str,
    segment_size: int | None,
    sync: Literal["always", "flush"],
    fs: FileSystem | None,
    cache_entries: int,
    engine_options: Mapping[str, Any] | None,
    store_options: Mapping[str, object],
) -> SegwalJournalFile:
    try:
        split_url(url)
    except ValueError as e:
        raise ValueError(f"segwal_journal: target {e}") from None
    if segment_size is not None:
        raise ValueError(f"segwal_journal: segment_size applies to a directory path, not to the URL {url!r}")
    unknown = sorted(set(engine_options or {}) - ENGINE_OPTIONS)
    if unknown:
        raise ValueError(
            f"segwal_journal: unknown engine_options {unknown} (expected some of {sorted(ENGINE_OPTIONS)})"
        )
    try:
        store_from_url(url, **store_options)  # checks the options now (opens no connection)
    except ImportError as e:
        raise ImportError(f"segwal_journal({url!r}) needs obstore: pip install 'segwal[cloud]' ({e})") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"segwal_journal({url!r}): bad store option: {e}") from None
    return SegwalJournalFile(
        url,
        DEFAULT_SEGMENT_SIZE,
        sync,
        fs,
        cache_entries,
        tuple(sorted(store_options.items())),
        tuple(sorted((engine_options or {}).items())),
    )


# ------------------------------------------------------------------ the hooks

_install_lock = threading.Lock()
_installed = False


def _spec_of(conf: Any) -> SegwalJournalFile | None:
    jf = getattr(conf, "journalFile", None)
    return jf if isinstance(jf, SegwalJournalFile) else None


def _check_conf(conf: Any, spec: SegwalJournalFile) -> None:
    if spec.kind == "url" and conf.fullDumpFile is None:
        raise ValueError(
            f"segwal_journal({spec.target!r}) needs SyncObjConf(fullDumpFile=...): the dump is kept in the "
            "object store beside the log, and log compaction purges nothing before it is there"
        )
    if spec.sync == "always" and conf.fullDumpFile is None:
        raise ValueError(
            "segwal_journal(sync='always') needs SyncObjConf(fullDumpFile=...): without a dump file "
            "PySyncObj keeps its snapshot in memory only, and log compaction would delete entries that "
            "nothing durable holds any more (or use sync='flush', which makes no power-loss promise)"
        )
    if spec.kind == "url" and (conf.serializer is not None or conf.deserializer is not None):
        raise ValueError(
            f"segwal_journal({spec.target!r}) needs SyncObjConf(serializer=None, deserializer=None): "
            "the dump is kept in the object store and its journal index is read from PySyncObj's own "
            "dump format; a custom serializer's file cannot be read without running the application's "
            "deserializer, which would load a received state before it is stored"
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
                _ctx.journal = journalFile.open(dump_file=dump)
                return _ctx.journal
            return orig_create(journalFile)

        def Serializer(fileName: Any, transmissionBatchSize: Any, *args: Any, **kwargs: Any) -> Any:
            spec = _spec_of(getattr(_ctx, "conf", None))
            if spec is not None and spec.fs is not None:
                inner: Any = FsSerializer(spec.fs, fileName, transmissionBatchSize)
            else:
                inner = orig_serializer(fileName, transmissionBatchSize, *args, **kwargs)
            j = getattr(_ctx, "journal", None)
            if spec is not None and isinstance(j, SegwalJournal) and j.dumps is not None:
                conf = _ctx.conf
                if conf.serializer is not None or conf.deserializer is not None:  # a factory's object store
                    j._destroy()
                    raise ValueError(
                        f"segwal_journal({spec.target!r}) opened an engine in an object store, which needs "
                        "SyncObjConf(serializer=None, deserializer=None): the dump's journal index is read "
                        "from PySyncObj's own dump format (a custom serializer's file cannot be read without "
                        "running the application's deserializer)"
                    )
                return UploadingSerializer(inner, j.dumps)  # a received dump goes to the store first
            return inner

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
                _ctx.journal = None

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
