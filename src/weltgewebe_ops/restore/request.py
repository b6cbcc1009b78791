"""What a restore is asked to do (module wal_restore's options, the drill's role pg_pitr)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..core import pg
from ..core.progress import restore_work_dir
from ..core.settings import S3Location
from .target import RestoreError, Target


@dataclass
class RestoreRequest:
    loc: S3Location
    data_dir: Path
    pg_bindir: str = ""
    os_user: str = "wgsandbox"
    port: int = 0
    target: Target = field(default_factory=Target)
    backup_id: str = ""
    work_dir: Path | None = None
    # 1: one streaming GET (measured fastest against S3 on the same machine); more: parallel ranged
    # GETs, for a remote S3 where one stream is held back by latency
    download_workers: int = 1
    prefetch_workers: int = 8
    # WAL downloads already running while the base backup streams; 0 (start them after it) was
    # faster in bench/restore.py on 2 cores with S3 on the same machine
    prefetch_workers_during_base: int = 0
    spool_segments: int = 16
    timeout_seconds: float = 4 * 3600
    verify: bool = True
    # how long one WAL file may take to fetch while S3 or its KMS do not answer, before recovery is
    # aborted (never ended early: a fetch that failed is not the end of the archive)
    fetch_deadline_seconds: float = 300.0
    check_free_space: bool = True

    def __post_init__(self):
        """Numbers a restore cannot run with are refused before anything is touched."""
        at_least_one = ("download_workers", "prefetch_workers", "spool_segments")
        bad = [f"{name}={getattr(self, name)}" for name in at_least_one if getattr(self, name) < 1]
        bad += [f"prefetch_workers_during_base={self.prefetch_workers_during_base}"] * (
            self.prefetch_workers_during_base < 0
        )
        bad += [f"{name}={getattr(self, name)}" for name in ("timeout_seconds", "fetch_deadline_seconds")
                if getattr(self, name) <= 0]  # fmt: skip
        if bad:
            raise RestoreError(
                f"{', '.join(bad)}: workers and spool segments must be at least 1 (prefetch during the base backup "
                "at least 0), timeouts above 0"
            )

    @property
    def work(self) -> Path:
        return restore_work_dir(self.data_dir, self.work_dir)

    @functools.cached_property
    def bindir(self) -> Path:
        """PostgreSQL's binaries, worked out once per restore (a missing one fails here)."""
        return pg.resolve_bindir(self.pg_bindir)

    @functools.cached_property
    def run_as(self) -> str | None:
        """The OS user PostgreSQL runs as (None: ourselves), worked out once per restore."""
        return pg.run_as_user(self.os_user)
