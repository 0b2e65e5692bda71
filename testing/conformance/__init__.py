"""Conformance kit: hold any :class:`~segwal.types.StorageEngine` to segwal's contract.

Strategy: :class:`EngineContract` is a pytest test class without a ``Test``
prefix, so pytest does not collect it by itself.  Subclass it in a test
module, say how to open your engine on a directory, and pytest runs every
check below against it: each method of the contract, every edge case of its
table, errors that must change nothing, and, when ``persistent`` is true,
that every effect survives ``close()`` and a reopen on the same path.

Example (``tests/test_my_engine.py``)::

    from segwal.testing.conformance import EngineContract
    from mypackage import MyEngine

    class TestMyEngine(EngineContract):
        persistent = True            # False for an engine that forgets on close

        def open_engine(self, path: str) -> MyEngine:
            return MyEngine(path)    # open or create the engine at ``path``

Then ``pytest tests/test_my_engine.py``.  ``path`` is a directory under
pytest's ``tmp_path`` that does not exist yet at the first open; the kit
closes every engine it opened at the end of each test.  An engine that is not
persistent is opened once per test and never reopened.

The kit needs pytest (``pip install segwal[test]``).  Tests are grouped by area
and then by method, in the order of the contract; each name says what it checks.

The kit is split by area, one mixin class per module: :mod:`.base` (the
harness and the ``h`` fixture), :mod:`.durability` (a new engine, ``flush``,
close and reopen), :mod:`.log` (appends, reads, truncation, purge, reset),
:mod:`.hardstate` and :mod:`.kv` (key/value and ``last_applied``).
:class:`EngineContract` inherits them all.
"""

from __future__ import annotations

from segwal.testing.conformance.base import EngineState, Harness, make_entries, observe
from segwal.testing.conformance.durability import DurabilityContract
from segwal.testing.conformance.hardstate import HardStateContract
from segwal.testing.conformance.kv import KeyValueContract
from segwal.testing.conformance.log import LogContract

__all__ = ["EngineContract", "EngineState", "Harness", "observe", "make_entries"]


# pytest runs the tests of base classes in reverse MRO order, so the areas run
# as the contract reads: durability (a new engine first), log, hard state, key/value.
class EngineContract(KeyValueContract, HardStateContract, LogContract, DurabilityContract):
    """The contract of a segwal storage engine, as pytest tests.  Subclass, then
    implement :meth:`open_engine` (and set ``persistent = False`` if your engine
    forgets everything on close).  The switches, :meth:`open_engine` and the
    ``h`` fixture are those of :class:`~segwal.testing.conformance.base.ContractBase`."""
