"""segwal.storage: what works for any :class:`~segwal.types.StorageEngine`.

The contract rules every engine shares (:mod:`segwal.storage.rules`), the
other engines beside ``WalEngine`` (:class:`InMemoryEngine`,
:class:`SqliteEngine`, :class:`RocksDBEngine`) and the asyncio facade that
wraps any engine (:class:`AsyncWalEngine`).
"""

from segwal.storage.aio import AsyncWalEngine
from segwal.storage.memory import InMemoryEngine
from segwal.storage.rocksdb import RocksDBEngine
from segwal.storage.sqlite import SqliteEngine

__all__ = ["AsyncWalEngine", "InMemoryEngine", "RocksDBEngine", "SqliteEngine"]
