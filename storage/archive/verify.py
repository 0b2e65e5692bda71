"""``segwal archive verify``: read every object of an archive whole and check it: names, hashes, checksums, the log sequence, gaps.

Exit status of the report: 0 clean, 1 gaps only (entries the node dropped
before they were archived: restores cannot cross them), 2 damage (a missing,
doubled or damaged object, named).  Everything restore refuses is reported: a
header that disagrees with its name (sequence number, entries, kind), two objects
for one sequence number with different content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segwal.errors import CorruptionError
from segwal.storage.archive.catalog import read_catalog, replay, restorable_end
from segwal.storage.archive.format import (
    HEADER_SIZE,
    K_DELTA,
    K_GAP,
    K_KV,
    K_STATE,
    MAX_OBJECT,
    decode_delta,
    decode_object,
    object_hash,
)
from segwal.storage.objectstore.seam import as_seam

__all__ = ["ArchiveReport", "verify_archive"]


@dataclass
class ArchiveReport:
    """What :func:`verify_archive` found."""

    exit_status: int = 0
    objects: int = 0
    entries: int = 0
    bytes_checked: int = 0
    last_index: int = 0
    restorable_index: int = 0
    gaps: list[tuple[int, int, str]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def verify_archive(store: Any, prefix: str = "") -> ArchiveReport:
    """Check every archive object under ``prefix`` (module docstring).  Read-only.
    Complexity: one LIST and one GET per object, O(bytes)."""
    seam = as_seam(store)
    rep = ArchiveReport()
    cat = read_catalog(seam, prefix)
    for name in cat.unknown:
        rep.findings.append(f"{name}: not an archive object name (ignored by restore)")
    try:
        rp = replay(cat)
        rep.last_index = rp.last
        rep.restorable_index = restorable_end(cat, rp) or 0
        rep.gaps = [(r.first, r.last, cat.full(r.obj.name)) for r in rp.gaps() if r.obj.seq]
    except CorruptionError as e:
        rep.findings.append(str(e))
        rep.exit_status = 2
    # (full name, digest, kind, the header's (seq, first, count) its name says, the object its twin of)
    checks: list[tuple[str, int, int, tuple[int, int, int] | None, str | None]] = []
    for o in cat.logs:
        if o.seq < cat.floor:
            continue
        for t in [o, *cat.twins.get(o.name, [])]:
            twin_of = None if t is o else cat.full(o.name)
            checks.append((cat.full(t.name), t.digest, K_GAP if t.gap else K_DELTA, (t.seq, t.first, t.count), twin_of))
    checks += [(name, digest, K_STATE, (n, seq, 0), None) for n, seq, name, digest in cat.states]
    checks += [(k.name, k.digest, K_KV, (k.seq, k.index, k.term), None) for k in cat.kvs]
    bodies: dict[str, bytes] = {}
    for name, digest, kind, says, twin_of in checks:
        rep.objects += 1
        size = cat.sizes.get(name, 0)
        if kind != K_KV and not HEADER_SIZE <= size <= MAX_OBJECT:  # not fetched: no archiver writes it
            rep.findings.append(f"{name}: listed at {size} bytes, expected {HEADER_SIZE} to {MAX_OBJECT}")
            rep.exit_status = 2
            continue
        got = seam.get(name)
        if got is None:
            rep.findings.append(f"{name}: missing (listed but not found)")
            rep.exit_status = 2
            continue
        rep.bytes_checked += len(got.data)
        try:
            if object_hash(got.data) != digest:
                raise CorruptionError("content does not match the hash in its name", path=name, offset=0)
            if kind == K_DELTA:
                head, entries = decode_delta(got.data, name)
                rep.entries += len(entries)
            else:
                head = decode_object(got.data, name, kind)[0]
            if says is not None and (head.seq, head.first, head.count) != says:
                raise CorruptionError(
                    f"object header says seq {head.seq} entries {head.first}+{head.count}, "
                    f"its name seq {says[0]} entries {says[1]}+{says[2]}",
                    path=name,
                    offset=8,
                )
            if twin_of is None:
                bodies[name] = got.data[HEADER_SIZE:]
            elif twin_of in bodies and bodies[twin_of] != got.data[HEADER_SIZE:]:
                raise CorruptionError(
                    f"a second object for one sequence number, content differs from {twin_of}", path=name
                )
        except CorruptionError as e:
            rep.findings.append(str(e))
            rep.exit_status = 2
    if rep.exit_status == 0 and rep.gaps:
        rep.exit_status = 1
    return rep
