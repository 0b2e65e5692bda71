"""``segwal repair --force`` on a damaged key/value store: keep what precedes the damage, roll back, rebuild.

The records of the key/value files the manifest lists are read in order, each
frame checked (its CRC and chain, each value's xxh3), up to the first damage: a
missing or foreign file, a sealed file cut short, a frame that does not check.
What came before is a consistent prefix of the applies the node made, and its
``last_applied`` tells from which log index the state machine must apply
again.  That prefix becomes a new key/value generation, written and synced
beside the old one and switched to with one manifest write (as a snapshot
install does); the damaged generation's files are kept as ``*.broken``.  When
the log no longer holds the entries to apply again (purged), the store is
emptied instead and the node must install a snapshot from a peer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import xxhash

from segwal.engine.manifest import MANIFEST_NAME, Manifest, encode_manifest
from segwal.errors import CorruptionError
from segwal.fs import FileSystem, replace_file
from segwal.kv.codec import TOMBSTONE, decode_kv_body
from segwal.kv.files import KVFile, file_name
from segwal.kv.store import KVStore
from segwal.types import LogId
from segwal.wal.format import FRAME_HEADER_SIZE, KIND_KV, SEGMENT_HEADER_SIZE, decode_segment_header, scan_frames

__all__ = ["Salvage", "salvage_kv", "rebuild_kv"]

_NAME = re.compile(r"^kv-([0-9a-f]{16})-([0-9a-f]{16})\.(log|merged)$")
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class Salvage:
    """What the undamaged prefix of a key/value store holds.

    Attributes:
        state: every live key and its value after the last record kept.
        applied: ``last_applied`` as of that record (``None``: no apply recorded one).
        damage: where reading stopped (file and why), ``None`` if nothing was damaged.
    """

    state: dict[bytes, bytes]
    applied: LogId | None
    damage: str | None


def _find(fs: FileSystem, kvdir: str, generation: int, seq: int) -> str | None:
    for kind in ("log", "merged"):
        p = os.path.join(kvdir, file_name(generation, seq, kind))
        if fs.exists(p):
            return p
    return None


def _listed(fs: FileSystem, kvdir: str, m: Manifest) -> list[KVFile | int]:
    """The files to read: the manifest's list, or (a manifest before the list) the sequences present."""
    if m.kv_files is not None:
        return list(m.kv_files)
    seqs = sorted(int(mt.group(2), 16) for n in (fs.listdir(kvdir) if fs.exists(kvdir) else [])
                  if (mt := _NAME.match(n)) and int(mt.group(1), 16) == m.kv_generation)
    return list(seqs)


def salvage_kv(fs: FileSystem, path: str, m: Manifest) -> Salvage:
    """Read the key/value store of the engine directory ``path`` up to its first damage.  Changes nothing.

    Complexity: O(bytes of the key/value files); memory O(live keys and values).
    """
    kvdir = os.path.join(path, "kv")
    state: dict[bytes, bytes] = {}
    applied: LogId | None = None
    files = _listed(fs, kvdir, m)
    for k, rec in enumerate(files):
        seq = rec if isinstance(rec, int) else rec.seq
        p = _find(fs, kvdir, m.kv_generation, seq)
        if p is None:
            return Salvage(state, applied, f"key/value file {seq} is missing")
        f = fs.open(p, readonly=True)
        try:
            buf = f.pread(f.size(), 0)
        finally:
            f.close()
        try:
            h = decode_segment_header(buf[:SEGMENT_HEADER_SIZE], p) if len(buf) >= SEGMENT_HEADER_SIZE else None
        except CorruptionError:
            h = None
        if h is None or h.engine_id != m.engine_id or h.seq != seq or (isinstance(rec, KVFile) and h.uid != rec.uid):
            return Salvage(state, applied, f"{p}: missing, damaged or foreign header")
        res = scan_frames(buf, SEGMENT_HEADER_SIZE, h.crc)
        for off, fh in res.frames:
            if fh.kind != KIND_KV:
                return Salvage(state, applied, f"{p} at offset {off}: not a key/value frame")
            try:
                body = decode_kv_body(buf, off + FRAME_HEADER_SIZE, off + fh.frame_len, fh.count, p)
            except CorruptionError as e:
                return Salvage(state, applied, f"{p} at offset {off}: {e.reason}")
            batch: dict[bytes, bytes | None] = {}
            for key, vs, ve, vl, c in zip(body.keys, body.vstarts, body.vends, body.vlens, body.checks):
                if vl == TOMBSTONE:
                    batch[key] = None
                    continue
                value = bytes(buf[vs:ve])
                if xxhash.xxh3_64_intdigest(value) != c:
                    return Salvage(state, applied, f"{p} at offset {vs}: value checksum mismatch")
                batch[key] = value
            for key, change in batch.items():  # a frame is one apply: all of it or none
                if change is None:
                    state.pop(key, None)
                else:
                    state[key] = change
            if body.applied is not None:
                applied = body.applied
        sealed_len = rec.length if isinstance(rec, KVFile) and k < len(files) - 1 else None
        if sealed_len is not None and (res.end != len(buf) or len(buf) != sealed_len):
            return Salvage(state, applied, f"{p} at offset {res.end}: sealed file damaged or cut short")
        claim = rec.length if isinstance(rec, KVFile) and k == len(files) - 1 else 0
        if res.end < claim:
            return Salvage(state, applied, f"{p} at offset {res.end}: damaged below its durable claim {claim}")
        if k < len(files) - 1 and res.stop != "end":
            return Salvage(state, applied, f"{p} at offset {res.end}: damaged frame")
    return Salvage(state, applied, None)


def rebuild_kv(fs: FileSystem, path: str, m: Manifest, state: dict[bytes, bytes], applied: LogId | None,
               segment_size: int) -> Manifest:
    """Write ``state`` (and ``applied``) as a new key/value generation and switch the
    manifest to it; the old generation's files are renamed ``*.broken``.

    Durable on return; the manifest write is the commit point (a crash before it
    leaves the old, damaged store as it was).  O(bytes of ``state``).
    """
    kvdir = os.path.join(path, "kv")
    if not fs.exists(kvdir):
        fs.mkdir(kvdir)
        fs.fsync_dir(path)
    new_gen = m.kv_generation + 1
    for name in fs.listdir(kvdir):
        if name.startswith(f"kv-{new_gen:016x}-"):  # leftovers of a repair that failed
            fs.unlink(os.path.join(kvdir, name))
    listed: list[tuple[KVFile, ...]] = [()]
    staged = KVStore.open(fs, kvdir, engine_id=m.engine_id, generation=new_gen, sync=False,
                          file_size=segment_size, keep_other_generations=True, files=(),
                          commit=lambda files: listed.__setitem__(0, files))
    try:
        items = list(state.items())
        for i in range(0, len(items), _CHUNK):
            staged.apply(items[i : i + _CHUNK])
        if applied is not None:
            staged.apply([], applied=applied)
        staged.flush()
    finally:
        staged.close()
    nm = replace(m, revision=m.revision + 1, kv_generation=new_gen, kv_files=listed[0])
    replace_file(fs, path, MANIFEST_NAME, encode_manifest(nm))
    old = f"kv-{m.kv_generation:016x}-"
    for name in sorted(fs.listdir(kvdir)):
        if name.startswith(old) and not name.endswith(".broken"):
            fs.rename(os.path.join(kvdir, name), os.path.join(kvdir, name + ".broken"))
    fs.fsync_dir(kvdir)
    return nm
