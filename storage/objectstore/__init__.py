"""segwal.storage.objectstore: the storage engine that keeps a Raft node's log, hard state and key/value data in an object store.

:class:`ObjectStoreEngine` (also ``segwal.storage.ObjectStoreEngine``), the
object-store seam (:mod:`~segwal.storage.objectstore.seam`) and the URL module
(:mod:`~segwal.storage.objectstore.urls`).  Talking to a real store needs the
``obstore`` package (``pip install segwal[cloud]``); importing this package
does not.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segwal.storage.objectstore.engine import ObjectStoreEngine
    from segwal.storage.objectstore.seam import ObjectExistsError, ObjectInfo, ObjectStoreSeam, StoredObject, as_seam
    from segwal.storage.objectstore.sidecar import Sidecar, sidecar
    from segwal.storage.objectstore.urls import parse_store_options, store_from_url

__all__ = [
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectStoreEngine",
    "ObjectStoreSeam",
    "Sidecar",
    "StoredObject",
    "as_seam",
    "parse_store_options",
    "sidecar",
    "store_from_url",
]

#: Where each name lives: imported on first use, so that a module that needs only
#: the seam (the archive) does not import the engine, its compaction and asyncio.
_LAZY = {
    "ObjectStoreEngine": "engine",
    "ObjectStoreSeam": "seam",
    "ObjectInfo": "seam",
    "StoredObject": "seam",
    "ObjectExistsError": "seam",
    "as_seam": "seam",
    "parse_store_options": "urls",
    "store_from_url": "urls",
    "Sidecar": "sidecar",
    "sidecar": "sidecar",
}


def __getattr__(name: str) -> Any:
    """The names of ``__all__`` on first use (their modules are imported only then).  O(1) after."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    mod = import_module(f"{__name__}.{where}")
    # bind every name of that module: ``sidecar`` is also a sub-module's name, which
    # the import just bound here; the function must win, as it did when eager
    for n, w in _LAZY.items():
        if w == where:
            globals()[n] = getattr(mod, n)
    return globals()[name]
