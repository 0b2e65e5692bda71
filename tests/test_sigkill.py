"""``sync="flush"``: every acknowledged append survives a real process killed with SIGKILL.

Strategy: a child process (``python -c CHILD``) opens a ``WalEngine`` in
``sync="flush"`` mode and appends batches forever, printing the last index of
each batch after ``persist_entries`` and an ``apply`` recording it have
returned (an acknowledgement).  The parent
waits for a fixed number of acknowledgements, kills the child with SIGKILL
(no cleanup, no close), then reopens the directory and checks:

* every acknowledged entry is there, with its exact payload;
* the log is contiguous from 1 and ends on a batch boundary (a batch is
  atomic: all of it or none of it);
* the key/value change and ``last_applied()`` recorded by the ``apply``
  after each batch are there too, and agree (apply is atomic);
* the engine accepts the next append (the next round appends to it).

Several rounds run on the same directory, so recovery also happens after a
log that was itself recovered.  Batch sizes and payloads are a pure function
of the index, so the parent knows what each entry must hold.  Deterministic:
the parent waits for N acknowledgement lines, not for a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from segwal.types import LogId

try:
    from segwal.engine import WalEngine
except ImportError:  # the engine is not there yet
    WalEngine = None  # type: ignore[assignment,misc]

pytestmark = [
    pytest.mark.skipif(WalEngine is None, reason="segwal.engine.WalEngine is not available"),
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]

SEGMENT_SIZE = 4096
ACKS_PER_ROUND = (40, 75, 120)
TIMEOUT = 60.0


def batch_size(start: int) -> int:
    """Entries in the batch that starts at ``start`` (1..17)."""
    return 1 + (start * 31) % 17


def payload(index: int) -> bytes:
    """The payload of entry ``index`` (3..~300 bytes, so segments rotate often)."""
    return (b"%d;" % index) * (1 + (index * 7919) % 40)


def term(index: int) -> int:
    """The term of entry ``index``: rises every 50 entries, never decreases."""
    return 1 + index // 50


# The child rebuilds the same three functions from their source, so the two
# sides cannot disagree.
CHILD = textwrap.dedent(
    """
    import sys
    from segwal.engine import Entry, LogId, WalEngine

    def batch_size(start):
        return 1 + (start * 31) % 17

    def payload(index):
        return (b"%d;" % index) * (1 + (index * 7919) % 40)

    def term(index):
        return 1 + index // 50

    engine = WalEngine(sys.argv[1], segment_size=int(sys.argv[2]), sync="flush")
    next_index = engine.last_index() + 1
    out = sys.stdout
    out.write("ready %d\\n" % (next_index - 1))
    out.flush()
    while True:
        size = batch_size(next_index)
        batch = [Entry(i, term(i), payload(i)) for i in range(next_index, next_index + size)]
        engine.persist_entries(batch)
        last = next_index + size - 1
        engine.apply([(b"applied", b"%d" % last)], applied=LogId(term(last), last))
        next_index = last + 1
        out.write("ack %d\\n" % last)
        out.flush()
    """
)


def _run_child_until(path: str, acks: int) -> tuple[int, int]:
    """Start the child, wait for ``acks`` acknowledgements, SIGKILL it.

    Returns ``(start, acked)``: the last index the child found when it opened,
    and the highest index it acknowledged before it died.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, str(SEGMENT_SIZE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline().split()
        assert first[:1] == [b"ready"], f"child did not start: {first!r} {proc.stderr.read() if proc.stderr else b''!r}"
        start = int(first[1])
        acked = start
        seen = 0
        while seen < acks:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else b""
                pytest.fail(f"child exited early after {seen} acks: {err.decode(errors='replace')}")
            kind, value = line.split()
            assert kind == b"ack"
            acked = int(value)
            seen += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        # Lines written before the kill were acknowledged too.
        for line in proc.stdout.read().splitlines():
            kind, _, value = line.partition(b" ")
            if kind == b"ack" and value.strip().isdigit():
                acked = max(acked, int(value))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return start, acked


def _batch_ends(start: int, upto: int) -> set[int]:
    """Last indexes of the batches the child writes after opening at ``start``, up to ``upto``."""
    ends = {start}
    next_index = start + 1
    while next_index <= upto:
        next_index += batch_size(next_index)
        ends.add(next_index - 1)
    return ends


def test_flush_mode_acknowledged_appends_survive_sigkill(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(os.fspath(tmp_path), "engine")
    for acks in ACKS_PER_ROUND:
        start, acked = _run_child_until(path, acks)
        assert acked > start
        engine = WalEngine(path, segment_size=SEGMENT_SIZE, sync="flush")
        try:
            last = engine.last_index()
            assert last >= acked, f"acknowledged up to {acked} but recovered only up to {last}"
            assert last in _batch_ends(start, last), f"recovered log ends inside a batch, at {last}"
            assert engine.first_index() == 1
            entries = engine.get_entries_range(1, last)
            assert [e.index for e in entries] == list(range(1, last + 1)), "log is not contiguous"
            for e in entries:
                assert e.term == term(e.index) and e.payload == payload(e.index), f"entry {e.index} damaged"
            assert engine.entry(last + 1) is None
            applied = engine.last_applied()
            assert applied is not None and applied.index >= acked, f"last_applied {applied} < acked {acked}"
            assert applied == LogId(term(applied.index), applied.index) and applied.index <= last
            assert engine.get(b"applied") == b"%d" % applied.index, "apply was not atomic"
        finally:
            engine.close()
