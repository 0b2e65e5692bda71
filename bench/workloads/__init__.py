"""The benchmark's workloads by name: each a ``run_<name>(ctx)`` that times one kind of operation on every store.

Strategy: each workload is a function ``run_<name>(ctx)`` that, for every
repetition, visits the stores in a rotated order (peers interleaved, so a noisy
minute hurts everyone alike), times only the operation under test, and adds one
sample per store to ``ctx.res``.  Building the data and opening stores are never
timed unless the open *is* the measurement (reopen).  A store that raises is
dropped from that workload with a note; the run goes on.

Entries are the same for every store: index ``1..N``, term ``1 + index // 10000``,
a 256-byte payload drawn from a seeded pool of incompressible bytes.

By kind: :mod:`.log` (1. append, 2-3. point and range reads), :mod:`.lifecycle`
(4. reopen + RSS, 5. purge / truncate), :mod:`.kv` (6. key/value), :mod:`.sweep`
(7. segment-size sweep); :mod:`.context` holds the sizes, :class:`Config` and
:class:`Ctx` they share.
"""

from __future__ import annotations

from collections.abc import Callable

from .context import SIZES, Config, Ctx
from .kv import run_kv
from .lifecycle import run_delete, run_reopen
from .log import run_append, run_read
from .sweep import run_sweep

__all__ = ["Config", "Ctx", "WORKLOADS", "SIZES"]

WORKLOADS: dict[str, Callable[[Ctx], None]] = {
    "append": run_append,
    "read": run_read,
    "reopen": run_reopen,
    "delete": run_delete,
    "kv": run_kv,
    "sweep": run_sweep,
}
