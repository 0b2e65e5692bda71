"""The hard-state file: Raft's term, vote and commit index, apart from the log.

Replaced atomically (write ``HARDSTATE.tmp``, fsync, rename, fsync directory), so
a crash during a save leaves exactly the old or the new value, and any damage to
the file itself is corruption, never mistaken for a torn write.  Layout::

     0  magic           4s  b"SWHS"
     4  version         u16 FORMAT_VERSION
     6  flags           u16 bit 0: a vote is recorded; bit 1: the vote is committed
     8  current_term    u64
    16  voted_for_id    u64
    24  voted_for_term  u64
    32  commit_index    u64
    40  crc             u32 CRC32C of bytes 0..39
"""

from __future__ import annotations

import struct
from typing import Final

from segwal.errors import CorruptionError, FormatVersionError
from segwal.fs import FileSystem, read_file, replace_file
from segwal.types import HardState, VotedFor
from segwal.wal.format import FORMAT_VERSION, crc32c

__all__ = ["HARDSTATE_NAME", "encode_hard_state", "decode_hard_state", "load_hard_state", "save_hard_state"]

HARDSTATE_NAME: Final = "HARDSTATE"
_MAGIC: Final = b"SWHS"
_LAYOUT: Final = struct.Struct("<4sHHQQQQ")


def encode_hard_state(hs: HardState) -> bytes:
    """Serialise ``hs`` (44 bytes).  Pure."""
    vf = hs.voted_for
    flags = 0
    vid = vterm = 0
    if vf is not None:
        flags = 1 | (2 if vf.committed else 0)
        vid, vterm = vf.voted_for_id, vf.voted_for_term
    raw = _LAYOUT.pack(_MAGIC, FORMAT_VERSION, flags, hs.current_term, vid, vterm, hs.commit_index)
    return raw + crc32c(raw).to_bytes(4, "little")


def decode_hard_state(data: bytes, path: str) -> HardState:
    """Parse a hard-state file.  Pure.

    Raises:
        CorruptionError: wrong size, magic or checksum.
        FormatVersionError: written by a newer segwal.
    """
    if len(data) != _LAYOUT.size + 4:
        raise CorruptionError(f"hard state is {len(data)} bytes, expected {_LAYOUT.size + 4}", path=path, offset=0)
    magic, version, flags, term, vid, vterm, commit = _LAYOUT.unpack_from(data, 0)
    if magic != _MAGIC:
        raise CorruptionError(f"bad hard-state magic {magic!r}", path=path, offset=0)
    if crc32c(data[: _LAYOUT.size]) != int.from_bytes(data[_LAYOUT.size :], "little"):
        raise CorruptionError("hard-state checksum mismatch", path=path, offset=_LAYOUT.size)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"hard-state format version {version} is newer than the supported {FORMAT_VERSION}",
            path=path,
            offset=4,
        )
    vote = VotedFor(vid, vterm, bool(flags & 2)) if flags & 1 else None
    return HardState(term, vote, commit)


def load_hard_state(fs: FileSystem, directory: str) -> HardState | None:
    """The saved hard state, or ``None`` if none was ever saved.  One small read.

    Raises:
        CorruptionError: the file exists but is damaged (never a silent ``None``).
    """
    path = f"{directory}/{HARDSTATE_NAME}"
    data = read_file(fs, path)
    return None if data is None else decode_hard_state(data, path)


def save_hard_state(fs: FileSystem, directory: str, hs: HardState) -> None:
    """Durably replace the hard state.  Durable on return (two syncs and a rename)."""
    replace_file(fs, directory, HARDSTATE_NAME, encode_hard_state(hs))
