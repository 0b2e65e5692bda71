"""``segwal inspect``: what an engine directory holds, as a dict or as text."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from segwal.engine import WalEngine
from segwal.fs import OsFileSystem, lock_held

__all__ = ["inspect_dir", "format_inspection"]


def _asdict(value: Any) -> Any:
    return None if value is None else dataclasses.asdict(value)


def inspect_dir(path: str) -> dict[str, Any]:
    """Segments, first/last index, purge boundary, hard state and key/value stats of ``path``.

    Opens the directory read-only, without a lock, and changes nothing: on a
    running node (``writer`` says whether one holds the directory) it shows one
    consistent view.  Cost: one engine open
    (the tail segment is scanned from its last checkpoint); no sealed segment
    is read.
    """
    writer = lock_held(OsFileSystem(), os.path.join(path, "LOCK"))
    with WalEngine(path, readonly=True) as eng:
        stats = eng.kv_stats()
        return {
            "directory": eng.path,
            "writer": {True: "running", False: "none", None: "unknown"}[writer],
            "first_index": eng.first_index(),
            "last_index": eng.last_index(),
            "purge_boundary": _asdict(eng.purge_boundary()),
            "hard_state": _asdict(eng.load_hard_state()),
            "segments": [
                {"file": os.path.basename(s.path), "first": s.first, "last": s.last, "size": s.size,
                 "state": "sealed" if s.sealed else "tail"}
                for s in eng.segments()
            ],
            "kv": dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else str(stats),  # type: ignore[arg-type]
            "last_applied": _asdict(eng.last_applied()),
            "notes": list(eng.notes),
        }


def format_inspection(info: dict[str, Any]) -> list[str]:
    """The lines ``segwal inspect`` prints for ``info`` (from :func:`inspect_dir`).  Pure."""
    lines = [
        f"directory      {info['directory']}",
        f"writer         {info.get('writer', 'unknown')}" + (" (a live view: as of the moment it was read)"
                                                          if info.get("writer") != "none" else ""),
        f"log            first {info['first_index']}  last {info['last_index']}  "
        f"purge boundary {info['purge_boundary']}",
        f"hard state     {info['hard_state']}",
        f"last applied   {info['last_applied']}",
        f"key/value      {info['kv']}",
        f"segments       {len(info['segments'])}",
    ]
    for s in info["segments"]:
        rng = f"{s['first']}..{s['last']}" if s["last"] >= s["first"] else "(empty)"
        lines.append(f"  {s['file']}  {rng:>24}  {s['size']:>12} bytes  {s['state']}")
    lines.extend(f"note: {n}" for n in info["notes"])
    return lines
