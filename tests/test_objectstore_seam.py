"""The object-store seam without obstore: a plain-Python store implementing the protocol runs the
engine, and the core install imports ``segwal.storage`` without obstore.

``DictSeam`` is also the smallest example of a custom store behind the seam.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from segwal.storage.objectstore.seam import ObjectExistsError, ObjectInfo, ObjectStoreSeam, StoredObject
from segwal.testing.conformance import EngineContract
from segwal.types import StorageEngine


class DictSeam:
    """Objects in a dict, with create-if-absent and write ids: a complete ObjectStoreSeam."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str | None]] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> StoredObject | None:
        with self.lock:
            found = self.objects.get(name)
        return None if found is None else StoredObject(*found)

    def get_range(self, name: str, start: int, end: int) -> bytes | None:
        with self.lock:
            found = self.objects.get(name)
        return None if found is None else found[0][start:end]

    def put(self, name: str, data: bytes, *, create: bool = False, write_id: str | None = None) -> None:
        with self.lock:
            if create and name in self.objects:
                raise ObjectExistsError(name)
            self.objects[name] = (bytes(data), write_id)

    def list(self, prefix: str, after: str | None = None) -> list[ObjectInfo]:
        with self.lock:
            return sorted(ObjectInfo(n, len(d)) for n, (d, _w) in self.objects.items()
                          if n.startswith(prefix) and (after is None or n > after))

    def head(self, name: str) -> ObjectInfo | None:
        with self.lock:
            found = self.objects.get(name)
        return None if found is None else ObjectInfo(name, len(found[0]))

    def delete(self, names: Sequence[str]) -> None:
        with self.lock:
            for n in names:
                self.objects.pop(n, None)


_SEAMS: dict[str, DictSeam] = {}


class TestObjectStoreOnAPlainPythonSeam(EngineContract):
    def open_engine(self, path: str) -> StorageEngine:
        from segwal.storage.objectstore import ObjectStoreEngine

        return ObjectStoreEngine(_SEAMS.setdefault(path, DictSeam()), "p", compact_slots=5)


def test_dict_seam_is_a_seam() -> None:
    assert isinstance(DictSeam(), ObjectStoreSeam)


def test_the_core_install_needs_no_obstore(tmp_path: Path) -> None:
    """With obstore unimportable, segwal.storage imports and the engine runs on a custom seam."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["obstore"] = None  # import obstore -> ImportError
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import segwal.storage
        from segwal.storage import ObjectStoreEngine, InMemoryEngine
        from segwal.types import Entry
        from test_objectstore_seam import DictSeam
        with ObjectStoreEngine(DictSeam()) as e:
            e.persist_entries([Entry(1, 1, b"x")])
            assert e.entry(1) == Entry(1, 1, b"x")
        try:
            ObjectStoreEngine.from_url("memory://x")
        except ImportError:
            print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
