"""segwal.storage: what works for any :class:`~segwal.types.StorageEngine`.

The contract rules every engine shares (:mod:`segwal.storage.rules`), the
other engines beside ``WalEngine`` (:class:`InMemoryEngine`,
:class:`SqliteEngine`, :class:`RocksDBEngine`) and the asyncio facade that
wraps any engine (:class:`AsyncWalEngine`), and :class:`ObjectStoreEngine` (an
object store: S3, GCS, Azure...).  Each is imported on first use: the core
install does not need ``obstore``, and a sub-package (a restore) does not pay
for the others.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segwal.storage.aio import AsyncWalEngine
    from segwal.storage.memory import InMemoryEngine
    from segwal.storage.objectstore import ObjectStoreEngine
    from segwal.storage.rocksdb import RocksDBEngine
    from segwal.storage.sqlite import SqliteEngine

__all__ = ["AsyncWalEngine", "InMemoryEngine", "ObjectStoreEngine", "RocksDBEngine", "SqliteEngine"]

#: Where each name lives: imported on first use, so that importing a sub-package
#: (``segwal.storage.archive`` for a restore) does not import asyncio, sqlite3 or
#: the object-store engine with it.
_LAZY = {
    "AsyncWalEngine": "segwal.storage.aio",
    "InMemoryEngine": "segwal.storage.memory",
    "ObjectStoreEngine": "segwal.storage.objectstore",
    "RocksDBEngine": "segwal.storage.rocksdb",
    "SqliteEngine": "segwal.storage.sqlite",
}


def __getattr__(name: str) -> Any:
    """The names of ``__all__`` on first use (their modules are imported only then).  O(1) after."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where), name)
    globals()[name] = value
    return value
