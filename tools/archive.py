"""``segwal archive run|verify|retain`` and ``segwal restore``: the command-line side of :mod:`segwal.storage.archive`.

``archive run DIR URL`` is the sidecar: it opens the node's directory as a
read-only view (no lock: it never blocks or slows the node's writer), ships
it every ``--tail-interval`` seconds and shows its position, lag and
throughput as a status line (a line per pass when stderr is not a terminal).
It cannot hold the node's purges: what the node purges before it is shipped
becomes a gap in the archive (the status line counts them).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from segwal.engine import WalEngine
from segwal.storage.archive import Archiver, restore
from segwal.storage.archive.retention import apply_retention
from segwal.storage.archive.verify import ArchiveReport, verify_archive
from segwal.storage.objectstore.urls import store_from_url

__all__ = ["restore_url", "retain_url", "run_sidecar", "status_line", "verify_url"]


def _store(url: str, options: Mapping[str, object]) -> tuple[Any, str]:
    return store_from_url(url, **options)


def status_line(st: Any, rate: float) -> str:
    """The sidecar's status line for an :class:`~segwal.storage.archive.ArchiveStatus`.  Pure."""
    ratio = st.bytes_uploaded / st.bytes_written_by_node if st.bytes_written_by_node else 0.0
    gaps = f"  GAPS {len(st.gaps)}" if st.gaps else ""
    err = f"  error: {st.last_error}" if st.last_error else ""
    return (
        f"archived {st.shipped_index} of {st.node_index}  lag {st.lag_seconds:5.1f} s  "
        f"{st.bytes_uploaded / 1e6:9.2f} MB up ({rate / 1e6:6.2f} MB/s, {ratio:.2f} B/B){gaps}{err}"
    )


def run_sidecar(
    path: str,
    url: str,
    options: Mapping[str, object],
    *,
    tail_interval: float = 1.0,
    kv_snapshot_interval: float | None = 60.0,
    retain: float | None = None,
    passes: int | None = None,
    out: TextIO = sys.stderr,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Run the sidecar until SIGTERM/SIGINT (or ``passes`` passes); returns the exit status.

    Each pass ships what the node wrote since the last (module docstring) and
    prints the status line; with ``retain`` (seconds) a retention pass runs
    every 60 passes.  Read-only on ``path``.
    """
    store, prefix = _store(url, options)
    eng = WalEngine(path, readonly=True)
    arch = Archiver(eng, store, prefix, tail_interval=tail_interval, kv_snapshot_interval=kv_snapshot_interval)
    done = [False]

    def _term(_sig: int, _frame: object) -> None:
        done[0] = True

    old = signal.signal(signal.SIGTERM, _term)
    tty = out.isatty()
    n = 0
    prev_bytes, prev_t = 0, time.monotonic()
    try:
        while not done[0] and (stop is None or not stop()):
            t0 = time.monotonic()
            try:
                arch.sync_now()
            except Exception:  # noqa: BLE001, S110 - shown in the status line; the next pass re-seeds
                pass
            st = arch.status()
            now = time.monotonic()
            rate = (st.bytes_uploaded - prev_bytes) / max(now - prev_t, 1e-9)
            prev_bytes, prev_t = st.bytes_uploaded, now
            line = status_line(st, rate)
            out.write(("\r" + line + "\x1b[K") if tty else line + "\n")
            out.flush()
            n += 1
            if retain is not None and n % 60 == 1:
                try:
                    apply_retention(store, prefix, retain)
                except Exception as e:  # noqa: BLE001
                    out.write(f"\nretention pass failed: {e}\n")
            if passes is not None and n >= passes:
                break
            time.sleep(max(0.0, tail_interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        if tty:
            out.write("\n")
        eng.close()
    return 0


def verify_url(url: str, options: Mapping[str, object]) -> ArchiveReport:
    """:func:`~segwal.storage.archive.verify.verify_archive` on a URL.  Read-only."""
    store, prefix = _store(url, options)
    return verify_archive(store, prefix)


def restore_url(url: str, dest: str, options: Mapping[str, object], to_index: int | None) -> list[str]:
    """Restore ``dest`` from the archive at ``url``; returns the lines to print."""
    store, prefix = _store(url, options)
    res = restore(store, prefix, dest, to_index=to_index)
    done = (
        f"first index {res.first_index}, last index {res.last_index}, "
        f"{res.objects_read} objects, {res.bytes_read} bytes read and verified"
    )
    return [res.message, done]


def retain_url(url: str, options: Mapping[str, object], retain: float) -> list[str]:
    """One retention pass; returns the lines to print."""
    store, prefix = _store(url, options)
    r = apply_retention(store, prefix, retain)
    return [f"removed {len(r.deleted)} objects, spared {len(r.spared)} named by restore leases, floor {r.floor}"]
