"""Saying that a disk is full, in one place (the prefetcher and wal-fetch, which starts light)."""

from __future__ import annotations

import shutil
from pathlib import Path

# below this much free space, a failed write is taken for a full disk
FULL_BELOW_BYTES = 16 * 1024 * 1024


def disk_full(path: Path) -> str:
    """The reason a WAL file could not be spooled when the file system of ``path`` is full."""
    return (
        f"the disk is full (No space left on device) at {path}: the restore cannot write the WAL it "
        f"fetched. Free space there (or restore onto a larger file system) and restore again"
    )


def full_reason(path: Path) -> str:
    """``disk_full`` when ``path``'s file system has (almost) no free space left, else ''."""
    try:
        return disk_full(path) if shutil.disk_usage(path).free < FULL_BELOW_BYTES else ""
    except OSError:
        return ""
