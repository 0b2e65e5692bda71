"""Node ids of PySyncObj votes as the u64 that segwal's hard state stores.

``VotedFor.voted_for_id`` is a u64.  An id of the form ``"a.b.c.d:port"`` (a
canonical IPv4 address and a port -- what TCPNode ids look like) is encoded
reversibly in it: ``1 << 56 | ipv4 << 16 | port``.  Any other (picklable) id is
kept in the engine's key/value store under ``NODE_KEY + code`` (pickled), with
``code = 2 << 56 |`` 56 bits of its xxh64.
"""

from __future__ import annotations

import ipaddress
import pickle
import re
from typing import Any

import xxhash

__all__ = ["NODE_KEY", "decode_node_id", "encode_node_id", "node_key"]

_TAG_SHIFT = 56
_TAG_IPV4 = 1
_TAG_KV = 2
_LOW56 = (1 << _TAG_SHIFT) - 1
NODE_KEY = b"segwal.pysyncobj.node."
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})")


def node_key(code: int) -> bytes:
    """The key/value key under which the pickled id of ``code`` is kept.  O(1)."""
    return NODE_KEY + code.to_bytes(8, "big")


def encode_node_id(node_id: Any) -> tuple[int, bytes | None]:
    """``(code, blob)``: the u64 stored in ``VotedFor.voted_for_id`` and, when the
    id is not a canonical ``"ipv4:port"`` string, the pickled id to keep in the
    key/value store under :func:`node_key` (``None`` otherwise).  Pure; O(size of the id)."""
    if type(node_id) is str:
        m = _IPV4_PORT.fullmatch(node_id)
        if m is not None:
            host, port_s = m.groups()
            try:
                addr = ipaddress.IPv4Address(host)
            except ValueError:
                addr = None
            port = int(port_s)
            if addr is not None and str(addr) == host and str(port) == port_s and port <= 0xFFFF:
                return (_TAG_IPV4 << _TAG_SHIFT) | (int(addr) << 16) | port, None
    blob = pickle.dumps(node_id, protocol=2)
    return (_TAG_KV << _TAG_SHIFT) | (xxhash.xxh64_intdigest(blob) & _LOW56), blob


def decode_node_id(code: int, blob: bytes | None) -> Any:
    """Inverse of :func:`encode_node_id`.  ``blob`` is the stored mapping (only
    needed for non-IPv4 ids); a missing mapping gives a non-``None`` placeholder.
    Pure; O(size of the id)."""
    tag = code >> _TAG_SHIFT
    if tag == _TAG_IPV4:
        return f"{ipaddress.IPv4Address((code >> 16) & 0xFFFFFFFF)}:{code & 0xFFFF}"
    if blob is not None:
        return pickle.loads(blob)
    return f"<segwal: unknown node id {code:#018x}>"
