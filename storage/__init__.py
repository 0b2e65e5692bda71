"""segwal.storage: what works for any :class:`~segwal.types.StorageEngine`.

The contract rules every engine shares (:mod:`segwal.storage.rules`), the
other engines beside ``WalEngine`` (:class:`InMemoryEngine`,
:class:`SqliteEngine`, :class:`RocksDBEngine`) and the asyncio facade that
wraps any engine (:class:`AsyncWalEngine`).  :class:`ObjectStoreEngine` (an
object store: S3, GCS, Azure...) is imported on first use, so that the core
install does not need ``obstore``.
"""

from typing import TYPE_CHECKING, Any

from segwal.storage.aio import AsyncWalEngine
from segwal.storage.memory import InMemoryEngine
from segwal.storage.rocksdb import RocksDBEngine
from segwal.storage.sqlite import SqliteEngine

if TYPE_CHECKING:
    from segwal.storage.objectstore import ObjectStoreEngine

__all__ = ["AsyncWalEngine", "InMemoryEngine", "ObjectStoreEngine", "RocksDBEngine", "SqliteEngine"]


def __getattr__(name: str) -> Any:
    """``ObjectStoreEngine`` on first use (lazy: its package is imported only then)."""
    if name == "ObjectStoreEngine":
        from segwal.storage.objectstore import ObjectStoreEngine

        return ObjectStoreEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
