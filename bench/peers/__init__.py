"""The peer adapters' registry: every store the benchmark drives, by name, all through the same calls.

Strategy: every workload talks to a store only through :class:`Peer`
(:mod:`.base`).  An adapter turns the benchmark's neutral inputs (lists of
:class:`Entry`, lists of ``(key, value)`` changes) into the store's own calls,
and its outputs back into ``Entry`` objects, so the cost of that translation is
inside the timed loop for every store, as it would be in a real Raft node.  The
one exception is the raw limit, whose :meth:`Peer.prepare` encodes the bytes
*outside* the timed loop: it is the ceiling, the cost of the write and the sync
alone.

Conventions (the same as ``shared/reference/peer-baseline.md`` so numbers can be
compared): key/value stores use key = 8-byte big-endian index and value =
8-byte big-endian term + payload; raw records are a ``<IIQQ`` header (payload
length, crc32c(payload), index, term) then the payload, 280 bytes per entry.

The adapters, by family: :mod:`.segwal_engine` (segwal), :mod:`.raw` (the
``os.write`` + ``fdatasync`` limit), :mod:`.sql` (sqlite3), :mod:`.kv` (lmdb,
rocksdict, plyvel), :mod:`.journal` (PySyncObj's journal), :mod:`.memory` (the
dict ceiling).  A peer whose package is missing reports why from
:meth:`Peer.unavailable` and is skipped with a note; nothing here imports an
optional package at module import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import BasePeer, Change, Entry, Peer, term_of
from .journal import PysyncobjNoSyncPeer, PysyncobjPeer
from .kv import LmdbPeer, PlyvelPeer, RocksdictPeer
from .memory import DictPeer
from .raw import RawAppendPeer, RawPrezeroedPeer
from .segwal_engine import SegwalPeer
from .sql import SqlitePeer

__all__ = [
    "Entry",
    "Change",
    "Peer",
    "BasePeer",
    "ALL_PEERS",
    "make_peer",
    "peer_names",
    "term_of",
]

ALL_PEERS: dict[str, Callable[[], BasePeer]] = {
    "segwal": SegwalPeer,
    "raw": RawAppendPeer,
    "raw_prezeroed": RawPrezeroedPeer,
    "sqlite": SqlitePeer,
    "lmdb": LmdbPeer,
    "rocksdict": RocksdictPeer,
    "plyvel": PlyvelPeer,
    "pysyncobj": PysyncobjPeer,
    "pysyncobj_nosync": PysyncobjNoSyncPeer,
    "dict": DictPeer,
}


def peer_names() -> list[str]:
    """The registered peer names, in registration order."""
    return list(ALL_PEERS)


def make_peer(name: str, **kw: Any) -> BasePeer:
    """A new, unopened adapter for the peer ``name``; ``kw`` goes to its constructor (e.g. ``segment_size``)."""
    factory = ALL_PEERS[name]
    return factory(**kw) if kw else factory()
