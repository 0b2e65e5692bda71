"""segwal.storage.objectstore: the storage engine that keeps a Raft node's log, hard state and key/value data in an object store.

:class:`ObjectStoreEngine` (also ``segwal.storage.ObjectStoreEngine``), the
object-store seam (:mod:`~segwal.storage.objectstore.seam`) and the URL module
(:mod:`~segwal.storage.objectstore.urls`).  Talking to a real store needs the
``obstore`` package (``pip install segwal[cloud]``); importing this package
does not.
"""

from segwal.storage.objectstore.engine import ObjectStoreEngine
from segwal.storage.objectstore.seam import ObjectExistsError, ObjectInfo, ObjectStoreSeam, StoredObject, as_seam
from segwal.storage.objectstore.urls import parse_store_options, store_from_url

__all__ = [
    "ObjectStoreEngine",
    "ObjectStoreSeam",
    "ObjectInfo",
    "StoredObject",
    "ObjectExistsError",
    "as_seam",
    "parse_store_options",
    "store_from_url",
]
