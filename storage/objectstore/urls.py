"""Turn store URLs and ``key=value`` options into object stores: the one place that knows ``s3://``, ``gs://``, ``az://``, ``file://`` and ``memory://``.

Shared by :meth:`ObjectStoreEngine.from_url`, ``segwal bench --cloud`` and
the command line's ``--store-option`` flags:

* ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix``:
  an obstore ``S3Store``/``GCSStore``/``AzureStore`` of the bucket, and the
  prefix, which the engine keeps its objects under.  Credentials and region
  come from the usual environment variables (``AWS_*``, ``GOOGLE_*``,
  ``AZURE_*``) unless given as options.
* ``file:///abs/dir``: a ``LocalStore`` rooted at that directory (created).
* ``memory://name``: a ``MemoryStore``, the same one for the same name in
  this process (so a test can reopen it); ``memory://`` alone is a new one.

Options: ``key=value`` sets store configuration (``endpoint``, ``region``,
``access_key_id`` ...); ``client.key=value`` sets client options
(``client.allow_http=true`` is needed for a plain-HTTP endpoint such as
SeaweedFS on 127.0.0.1, ``client.timeout=30s``); ``retry.max_retries=N`` and
``retry.retry_timeout=S`` (seconds) bound obstore's own retries.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

__all__ = ["SCHEMES", "has_scheme", "parse_store_options", "split_url", "store_from_url"]

SCHEMES: Final = ("s3", "gs", "az", "file", "memory")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MEMORY: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()

#: obstore's defaults retry for minutes; a Raft node wants an error it can act on.
DEFAULT_RETRY: Final = {"max_retries": 3, "retry_timeout": timedelta(seconds=15)}


def has_scheme(target: str) -> bool:
    """Whether ``target`` is a URL (``scheme://...``); a string without one is a local path.  O(len)."""
    return _SCHEME.match(target) is not None


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, prefix)`` of a store URL; ``bucket`` is the directory for ``file://``.

    Raises:
        ValueError: not a URL, or an unknown scheme (naming ``url``).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    m = _SCHEME.match(url)
    if m is None:
        raise ValueError(f"url {url!r} has no scheme (expected one of {', '.join(s + '://' for s in SCHEMES)})")
    scheme = m.group(1).lower()
    rest = url[m.end():]
    if scheme == "s3a":
        scheme = "s3"
    if scheme not in SCHEMES:
        raise ValueError(f"url {url!r}: unknown scheme {scheme!r} (expected one of {', '.join(SCHEMES)})")
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(f"url {url!r}: a file URL needs an absolute path (file:///dir)")
        return scheme, rest, ""
    bucket, _, prefix = rest.partition("/")
    if scheme != "memory" and not bucket:
        raise ValueError(f"url {url!r} names no bucket")
    return scheme, bucket, prefix.strip("/")


def parse_store_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["endpoint=http://...", "client.allow_http=true"]`` as a dict (later pairs win).

    Raises:
        ValueError: a pair without ``=`` or with an empty key (naming it).
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"store option {pair!r} is not key=value")
        out[key.strip()] = value
    return out


def _split_options(options: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    config: dict[str, object] = {}
    client: dict[str, object] = {}
    retry: dict[str, object] = dict(DEFAULT_RETRY)
    for key, value in options.items():
        if not isinstance(key, str):
            raise TypeError(f"store option names must be str, got {key!r}")
        if key.startswith("client."):
            v: object = value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                v = value.lower() == "true"
            client[key[7:]] = v
        elif key.startswith("retry."):
            name = key[6:]
            if name not in ("max_retries", "retry_timeout"):
                raise ValueError(f"store option {key!r}: only retry.max_retries and retry.retry_timeout exist")
            number = float(str(value))
            retry[name] = int(number) if name == "max_retries" else timedelta(seconds=number)
        else:
            config[key] = value
    return config, client, retry


def store_from_url(url: str, **options: object) -> tuple[Any, str]:
    """An obstore store for ``url`` and the prefix (without trailing ``/``) to keep objects under.

    ``options`` are store configuration, ``client.*`` client options and
    ``retry.*`` retry settings (see the module docs).  Needs ``obstore``
    (``pip install segwal[cloud]``).  Opens no connection.

    Raises:
        ValueError: a malformed URL or option; ImportError: obstore is missing.
    """
    scheme, bucket, prefix = split_url(url)
    from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

    config, client, retry = _split_options(options)
    if scheme == "memory":
        if config or client:
            raise ValueError(f"memory:// stores take no options, got {sorted(options)}")
        if not bucket:
            return MemoryStore(), prefix
        with _MEMORY_LOCK:
            store = _MEMORY.get(bucket)
            if store is None:
                store = _MEMORY[bucket] = MemoryStore()
        return store, prefix
    if scheme == "file":
        if config or client:
            raise ValueError(f"file:// stores take no options, got {sorted(options)}")
        os.makedirs(bucket, exist_ok=True)
        return LocalStore(bucket, mkdir=True), ""
    cls: Any = {"s3": S3Store, "gs": GCSStore, "az": AzureStore}[scheme]
    return cls(bucket, config=config or None, client_options=client or None, retry_config=retry), prefix
