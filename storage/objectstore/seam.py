"""The object-store seam: the six calls segwal makes to an object store, as a protocol, and its obstore adapter.

Like :mod:`segwal.fs` for files, this seam is the only way the object-store
engine touches storage, so a test can wrap it to inject timeouts, 5xx replies
and lost replies (obstore's functions take only obstore stores, never a
Python object).  The calls:

* :meth:`ObjectStoreSeam.get` and :meth:`ObjectStoreSeam.get_range`: read a
  whole object (with the write id kept in its metadata) or a byte range;
* :meth:`ObjectStoreSeam.put`: write a whole object, unconditionally or only
  if the name is free (``If-None-Match: *``); the write id goes into the
  object's user metadata (``segwal-write-id``) where the store keeps any;
* :meth:`ObjectStoreSeam.list`, :meth:`ObjectStoreSeam.head`,
  :meth:`ObjectStoreSeam.delete`.

Contract of every implementation: a missing object is ``None`` (never an
exception); a failed create-if-absent condition raises
:class:`ObjectExistsError`; any other failure (timeout, refused connection,
5xx, permission) raises :class:`~segwal.errors.StorageIOError` naming the
object.  A write that raised may or may not have happened (a lost reply):
callers decide by reading the write id back, never by content or ETag.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from segwal.errors import StorageIOError

__all__ = [
    "ObjectStoreSeam",
    "ObjectInfo",
    "StoredObject",
    "ObjectExistsError",
    "ObstoreAdapter",
    "WRITE_ID_KEY",
    "as_seam",
]

#: The user-metadata key that carries a write's unique id.
WRITE_ID_KEY = "segwal-write-id"


class ObjectInfo(NamedTuple):
    """One listed object: its full name in the store and its size in bytes."""

    name: str
    size: int


class StoredObject(NamedTuple):
    """A whole object read back: its bytes and the write id found in its metadata (or ``None``)."""

    data: bytes
    write_id: str | None


class ObjectExistsError(Exception):
    """A create-if-absent put found the name taken (HTTP 412 / AlreadyExists).

    Part of the seam's contract, not a segwal error: the engine turns it into
    "my own earlier attempt" or a fence by reading the write id back.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"object {name!r} already exists")


@runtime_checkable
class ObjectStoreSeam(Protocol):
    """What segwal needs from an object store.  Names are full keys (no leading ``/``)."""

    def get(self, name: str) -> StoredObject | None:
        """The whole object ``name`` with its write id, or ``None`` if absent.  One GET."""
        ...

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of ``name`` (fewer if the object is shorter), or ``None`` if absent.

        One ranged GET; ``start < end`` is required.
        """
        ...

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        """Write the whole object atomically.

        ``create=True``: only if no object has that name, else
        :class:`ObjectExistsError`.  ``write_id``, when given, is kept in the
        object's user metadata where the store supports it.  Durable on
        return: the store acknowledged the write.  One PUT.
        """
        ...

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (and sorts after ``after``), by name.

        One LIST request per 1000 names or so.
        """
        ...

    def head(self, name: str) -> ObjectInfo | None:
        """Name and size of ``name``, or ``None`` if absent.  One HEAD."""
        ...

    def delete(self, names: Sequence[str]) -> None:
        """Delete the objects (absent names are not an error).  One request per name or batch."""
        ...


def _io_error(op: str, name: str, exc: BaseException) -> StorageIOError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StorageIOError(errno.EIO, f"object store {op} failed: {text}", name)


class ObstoreAdapter:
    """An :class:`ObjectStoreSeam` over an ``obstore`` store (S3, GCS, Azure, local, memory).

    ``LocalStore`` keeps no user metadata: there the write id lives only in
    the object's own header (segwal writes it there too), which is enough
    because a local filesystem has no lost replies.  Each method is one
    request (``list`` one per page); thread-safe as obstore is.
    """

    __slots__ = ("store", "_obs", "_exc", "_metadata")

    def __init__(self, store: Any) -> None:
        import obstore
        import obstore.exceptions as exc

        self.store = store
        self._obs = obstore
        self._exc = exc
        self._metadata = type(store).__name__ != "LocalStore"

    def __repr__(self) -> str:
        return f"ObstoreAdapter({self.store!r})"

    def get(self, name: str) -> StoredObject | None:
        """See :meth:`ObjectStoreSeam.get`."""
        try:
            result = self._obs.get(self.store, name)
            data = bytes(result.bytes())
            attrs = result.attributes
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - every other failure is an I/O error of the store
            raise _io_error("GET", name, e) from e
        wid = attrs.get(WRITE_ID_KEY)
        return StoredObject(data, wid if isinstance(wid, str) else None)

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        """See :meth:`ObjectStoreSeam.get_range`."""
        try:
            return bytes(self._obs.get_range(self.store, name, start=start, end=end))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise _io_error("ranged GET", name, e) from e

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        """See :meth:`ObjectStoreSeam.put`."""
        attrs: dict[str, str] | None = None
        if write_id is not None and self._metadata:
            attrs = {WRITE_ID_KEY: write_id}
        try:
            self._obs.put(
                self.store, name, data, mode="create" if create else "overwrite", attributes=attrs, use_multipart=False
            )
        except (self._exc.AlreadyExistsError, self._exc.PreconditionError):
            raise ObjectExistsError(name) from None
        except NotImplementedError:
            if attrs is None:
                raise
            self._metadata = False  # a store without user metadata: the object header carries the id
            self.put(name, data, create=create, write_id=write_id)
        except Exception as e:  # noqa: BLE001
            raise _io_error("PUT", name, e) from e

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        """See :meth:`ObjectStoreSeam.list`."""
        out: list[ObjectInfo] = []
        try:
            stream = self._obs.list(self.store, prefix, offset=after, chunk_size=1000)
            for chunk in stream:
                out.extend(ObjectInfo(m["path"], m["size"]) for m in chunk)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001
            raise _io_error("LIST", prefix, e) from e
        out.sort()
        return out

    def head(self, name: str) -> ObjectInfo | None:
        """See :meth:`ObjectStoreSeam.head`."""
        try:
            meta = self._obs.head(self.store, name)
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise _io_error("HEAD", name, e) from e
        return ObjectInfo(meta["path"], meta["size"])

    def delete(self, names: Sequence[str]) -> None:
        """See :meth:`ObjectStoreSeam.delete`."""
        if not names:
            return
        try:
            self._obs.delete(self.store, list(names))
        except FileNotFoundError:
            for name in names:  # LocalStore refuses a batch with a missing name: one by one
                try:
                    self._obs.delete(self.store, name)
                except FileNotFoundError:
                    pass
                except Exception as e:  # noqa: BLE001
                    raise _io_error("DELETE", name, e) from e
        except Exception as e:  # noqa: BLE001
            raise _io_error("DELETE", names[0], e) from e


def as_seam(store: object) -> ObjectStoreSeam:
    """``store`` itself if it implements the seam, else an :class:`ObstoreAdapter` over it.

    Raises:
        TypeError: ``store`` is neither (naming the argument).
    """
    module = type(store).__module__ or ""
    if module.startswith("obstore"):  # obstore stores have methods of these names, with other signatures
        return ObstoreAdapter(store)
    if isinstance(store, ObjectStoreSeam):
        return store
    raise TypeError(f"store must be an obstore store or implement ObjectStoreSeam, got {type(store).__name__}")
