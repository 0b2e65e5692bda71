"""segwal.testing: crash simulation and fault injection for segwal and its users.

Record a workload on a :class:`RecordingFS`, generate the disk states a crash
could leave with :class:`CrashSimulator`, and check each with
:func:`check_recording`; or inject I/O errors with :class:`FaultyFS`.  The
``crash_fs`` pytest fixture (:mod:`segwal.testing.pytest_plugin`) wires the three
together.  See ``docs/crash-testing.md``.  For real processes,
:class:`VolatileFileSystem` keeps unsynced writes in process memory only, so
that ``kill -9`` of the process loses what a power cut would.
"""

from segwal.testing.checker import (
    CheckReport,
    CrashCheckFailed,
    Failure,
    ScratchFS,
    check_recording,
    check_state,
    scratch_root,
)
from segwal.testing.crash import GENERATORS, CrashSimulator, CrashState, SimulationStats, generate_states
from segwal.testing.faults import OP_CLASSES, Fault, FaultyFile, FaultyFS, InjectedFault
from segwal.testing.invariants import (
    DEFAULT_INVARIANTS,
    CheckContext,
    Invariant,
    acknowledged_state,
    log_contiguous,
    terms_non_decreasing,
)
from segwal.testing.logmodel import LogModel, Snapshot, candidates_at, snapshot_engine
from segwal.testing.recording import Mark, Op, OpKind, Recording, RecordingFile, RecordingFS, StartImage
from segwal.testing.tracking import TrackedEngine
from segwal.testing.volatile import VolatileFile, VolatileFileSystem

__all__ = [
    # recording
    "RecordingFS",
    "RecordingFile",
    "Recording",
    "StartImage",
    "Op",
    "OpKind",
    "Mark",
    # crash states
    "CrashSimulator",
    "CrashState",
    "SimulationStats",
    "GENERATORS",
    "generate_states",
    # power loss of real processes
    "VolatileFileSystem",
    "VolatileFile",
    # faults
    "FaultyFS",
    "FaultyFile",
    "Fault",
    "InjectedFault",
    "OP_CLASSES",
    # checking
    "check_recording",
    "check_state",
    "candidates_at",
    "snapshot_engine",
    "scratch_root",
    "ScratchFS",
    "TrackedEngine",
    "LogModel",
    "Snapshot",
    "CheckContext",
    "CheckReport",
    "Failure",
    "CrashCheckFailed",
    "Invariant",
    "DEFAULT_INVARIANTS",
    "acknowledged_state",
    "log_contiguous",
    "terms_non_decreasing",
]
