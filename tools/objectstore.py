"""``segwal inspect|verify|dump`` on an object-store prefix (``s3://bucket/node1``...): read-only, so they never fence the live node they look at.

Each opens :class:`~segwal.storage.objectstore.ObjectStoreEngine` with
``readonly=True`` (no epoch bump, no manifest, no compaction).  ``options``
are store options as ``segwal ... --store-option key=value`` gives them
(:func:`segwal.storage.objectstore.urls.parse_store_options`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from segwal.errors import CorruptionError
from segwal.storage.objectstore import ObjectStoreEngine
from segwal.storage.objectstore.layout import K_CHUNK, decode_object_header, parse_id
from segwal.storage.objectstore.urls import store_from_url
from segwal.storage.objectstore.view import decode_runs

__all__ = ["inspect_prefix", "verify_prefix", "dump_prefix_lines"]

_CHUNK = 4096


def _open(url: str, options: Mapping[str, object]) -> ObjectStoreEngine:
    store, prefix = store_from_url(url, **options)
    return ObjectStoreEngine(store, prefix, readonly=True)


def _asdict(value: Any) -> Any:
    return None if value is None else dataclasses.asdict(value)


def inspect_prefix(url: str, options: Mapping[str, object]) -> dict[str, Any]:
    """Manifest, log bounds, purge boundary, hard state, objects of the prefix at ``url``.

    Read-only.  Cost: one open (manifest, chunk tables, slots since the
    manifest) and one LIST per folder.
    """
    with _open(url, options) as eng:
        m = eng._manifest
        io = eng._io
        folders = {f: io.list_folder(f) for f in ("manifest", "log", "chunk", "kv")}
        return {
            "url": url,
            "manifest": {"id": m.mid, "epoch": m.epoch, "replay_after": m.replay_after, "chunks": len(m.chunks)},
            "first_index": eng.first_index(),
            "last_index": eng.last_index(),
            "purge_boundary": _asdict(eng.purge_boundary()),
            "hard_state": _asdict(eng.load_hard_state()),
            "last_applied": _asdict(eng.last_applied()),
            "keys": len(eng.keys()),
            "slots_after_manifest": len(eng._tail),
            "objects": {f: {"count": len(v), "bytes": sum(i.size for i in v)} for f, v in folders.items()},
        }


def format_prefix_inspection(info: dict[str, Any]) -> list[str]:
    """The lines ``segwal inspect URL`` prints.  Pure."""
    m = info["manifest"]
    lines = [
        f"prefix         {info['url']}",
        f"manifest       id {m['id']}  writer epoch {m['epoch']}  replay after slot {m['replay_after']}  "
        f"chunks {m['chunks']}",
        f"log            first {info['first_index']}  last {info['last_index']}  "
        f"purge boundary {info['purge_boundary']}",
        f"hard state     {info['hard_state']}",
        f"last applied   {info['last_applied']}",
        f"key/value      {info['keys']} keys",
        f"slots          {info['slots_after_manifest']} after the manifest",
    ]
    for folder, o in info["objects"].items():
        lines.append(f"  {folder + '/':<10} {o['count']:>8} objects  {o['bytes']:>12} bytes")
    return lines


@dataclasses.dataclass
class PrefixReport:
    """What :func:`verify_prefix` found: exit status 0 clean, 2 corruption."""

    exit_status: int
    objects: int
    entries: int
    bytes_scanned: int
    findings: list[str]


def verify_prefix(url: str, options: Mapping[str, object]) -> PrefixReport:
    """Read every live object of the prefix at ``url`` whole and check every checksum.

    The open checks the manifest, the slots after it and the chunk tables;
    then each chunk is read whole (frame body CRC and every entry's check
    value) and every entry of the log is read.  Read-only.  O(bytes).
    """
    findings: list[str] = []
    objects = entries = scanned = 0
    try:
        with _open(url, options) as eng:
            io = eng._io
            for name in list(eng._chunks):
                data = io.seam.get(name)
                objects += 1
                if data is None:
                    findings.append(f"{name}: missing")
                    continue
                scanned += len(data.data)
                try:
                    hdr = decode_object_header(data.data, name)
                    if hdr.kind != K_CHUNK:
                        raise CorruptionError(f"object kind {hdr.kind} is not a chunk", path=name, offset=6)
                    decode_runs(data.data, hdr, name)
                except CorruptionError as e:
                    findings.append(str(e))
            objects += len(eng._tail) + 1
            first, last = eng.first_index(), eng.last_index()
            i = first
            while i <= last:
                try:
                    entries += len(eng.get_entries_range(i, min(last, i + _CHUNK - 1)))
                except CorruptionError as e:
                    findings.append(str(e))
                i += _CHUNK
            for info in io.list_folder("log"):
                if parse_id(info.name, "log", ".slot") is None:
                    findings.append(f"{info.name}: not a slot name")
    except CorruptionError as e:
        findings.append(str(e))
    return PrefixReport(2 if findings else 0, objects, entries, scanned, findings)


def dump_prefix_lines(url: str, options: Mapping[str, object], lo: int | None = None, hi: int | None = None,
                      encoding: Literal["base64", "hex"] = "base64") -> Iterator[str]:
    """One JSON object per entry from ``lo`` to ``hi`` (clipped to the log), read-only, verified.

    Memory: one chunk of 4,096 entries at a time.
    """
    if encoding not in ("base64", "hex"):
        raise ValueError(f"encoding must be 'base64' or 'hex', got {encoding!r}")

    def enc(b: bytes) -> str:
        return base64.b64encode(b).decode() if encoding == "base64" else b.hex()

    with _open(url, options) as eng:
        first, last = eng.first_index(), eng.last_index()
        i = first if lo is None else max(lo, first)
        end = last if hi is None else min(hi, last)
        while i <= end:
            for e in eng.get_entries_range(i, min(end, i + _CHUNK - 1)):
                yield json.dumps({"index": e.index, "term": e.term, "payload": enc(e.payload)})
            i += _CHUNK
