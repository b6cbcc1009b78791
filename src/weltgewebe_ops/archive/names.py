"""WAL file names and LSNs: pure functions on the standard library only (wal-fetch imports this
once per WAL file during recovery, so it must stay light)."""

from __future__ import annotations

import re

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\Z")
WAL_SEGMENT_SIZE = 16 * 1024 * 1024
WAL_FILE_RE = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?\Z|^[0-9A-F]{8}\.history\Z")


def segment_parts(name: str) -> tuple[int, int, int]:
    """(timeline, log, seg) of a 24-hex-digit segment name."""
    match = SEGMENT_RE.match(name[:24])
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name")
    return tuple(int(part, 16) for part in match.groups())  # type: ignore[return-value]


def segment_name(timeline: int, segno: int, segment_size: int = 16 * 1024 * 1024) -> str:
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def segment_number(name: str, segment_size: int = 16 * 1024 * 1024) -> int:
    _, log, seg = segment_parts(name)
    return log * (0x100000000 // segment_size) + seg


def lsn_to_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_of_lsn(timeline: int, lsn: str, segment_size: int = 16 * 1024 * 1024) -> str:
    return segment_name(timeline, lsn_to_int(lsn) // segment_size, segment_size)
