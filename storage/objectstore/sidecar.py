"""Where a companion of an :class:`ObjectStoreEngine` keeps its own objects: the engine's store and a folder under its prefix.

A companion is code that must keep objects durable *beside* an engine's
objects, in the same store and under the same prefix, without going through
the engine's log -- e.g. the PySyncObj integration keeps its full dump there
(``segwal.integrations.pysyncobj``).  The engine never lists, reads or deletes
a folder it does not own (``manifest/``, ``log/``, ``chunk/``, ``kv/``,
``probe/``), so a companion folder survives compaction and garbage collection
untouched; its objects are the companion's to name, version and fence.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from segwal.storage.objectstore.engine import ObjectStoreEngine
from segwal.storage.objectstore.seam import ObjectStoreSeam

__all__ = ["ENGINE_FOLDERS", "Sidecar", "sidecar"]

#: The folders an ObjectStoreEngine owns under its prefix (docs/format-objectstore.md §1).
ENGINE_FOLDERS = frozenset({"manifest", "log", "chunk", "kv", "probe"})
_FOLDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class Sidecar(NamedTuple):
    """The store (as the seam) and the folder (``<prefix>folder/``, ending in ``/``) of a companion."""

    seam: ObjectStoreSeam
    folder: str


def sidecar(engine: ObjectStoreEngine, folder: str) -> Sidecar:
    """The store of ``engine`` and the companion folder ``folder`` under its prefix.

    Nothing is read or written (durability: none).  O(1).

    Raises:
        TypeError: ``engine`` is not an ObjectStoreEngine.
        ValueError: ``folder`` is not a lower-case name of 1-64 characters
            (``[a-z0-9._-]``, no ``/``), or is one of the engine's own folders.
    """
    if not isinstance(engine, ObjectStoreEngine):
        raise TypeError(f"engine must be an ObjectStoreEngine, got {type(engine).__name__}")
    if not isinstance(folder, str) or _FOLDER.fullmatch(folder) is None:
        raise ValueError(f"folder must be a name of 1-64 characters [a-z0-9._-], got {folder!r}")
    if folder in ENGINE_FOLDERS:
        raise ValueError(f"folder {folder!r} belongs to the engine itself ({', '.join(sorted(ENGINE_FOLDERS))})")
    io = engine._io
    return Sidecar(io.seam, f"{io.prefix}{folder}/")
