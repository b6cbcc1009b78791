"""A restore's marks on disk: the marker of an incomplete data directory (never to be started),
the restore's own process id (so an interrupted drill's restore can be stopped), and stopping
PostgreSQL and the restore cleanly."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import pg
from ..core.procs import identity_alive, process_identity
from ..core.progress import restore_work_dir
from .target import RestoreError

if TYPE_CHECKING:
    from .plan import Plan


INCOMPLETE_MARKER = "WGOPS_RESTORE_INCOMPLETE"


RESTORE_PID_FILE = "restore.pid"  # in the work directory: which process runs the restore


def write_restore_pid(work_dir: Path) -> None:
    """Say which process runs this restore, so an interrupted drill's restore can be stopped."""
    tmp = work_dir / f".{RESTORE_PID_FILE}.tmp"
    tmp.write_text(json.dumps(process_identity()))
    os.replace(tmp, work_dir / RESTORE_PID_FILE)


def stop_restore(work_dir: Path, timeout: float = 60.0) -> str:
    """SIGTERM the process of a restore still running in ``work_dir`` (the module then stops its
    PostgreSQL and marks the data directory incomplete); says what happened, '' when none runs."""
    try:
        recorded = json.loads((work_dir / RESTORE_PID_FILE).read_text())
    except (OSError, ValueError):
        return ""
    if not identity_alive(recorded):
        return ""
    pid = int(recorded["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while identity_alive(recorded) and time.monotonic() < deadline:
        time.sleep(0.2)
    if identity_alive(recorded):
        return f"the restore job (PID {pid}) did NOT stop within {timeout:.0f}s of SIGTERM: kill -9 {pid}"
    return f"stopped the restore job (PID {pid})"


def check_empty_dir(path: Path) -> None:
    marker = path / INCOMPLETE_MARKER
    if marker.exists():
        try:
            reason = json.loads(marker.read_text()).get("reason") or "interrupted or killed before it could say why"
        except (OSError, ValueError):
            reason = "unknown"
        work = restore_work_dir(path)
        running = pg.postmaster_pid(path)
        stop_first = (
            f" PostgreSQL (PID {running}) is still RUNNING on it: stop it first "
            f"(pg_ctl stop -D '{path}' -m immediate, as its OS user)."
            if running
            else ""
        )
        raise RestoreError(
            f"data_dir {path} holds an INCOMPLETE restore (marker {marker}; it failed: {reason}). It must never "
            f"be started.{stop_first} Remove it and its work directory (rm -rf '{path}' '{work}'), fix the "
            f"cause, and run the restore again."
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RestoreError(
            f"data_dir {path} is not empty: a restore never overwrites data. Choose a new directory, "
            f"or move this one away if you are sure it is not needed."
        )


def staging_dir(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".wgops-staging")


def write_marker(data_dir: Path, plan: Plan, reason: str) -> None:
    write_marker_file(
        data_dir,
        {
            "what": "an incomplete weltgewebe.ops restore: never start this cluster",
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
            "base_backup": plan.backup["backup_id"],
            "target": plan.as_dict()["target"],
            "reason": reason,
        },
    )


def write_marker_file(data_dir: Path, record: dict) -> None:
    """Write (or rewrite, atomically) the marker of an incomplete restore; ``reason`` is '' while
    the restore runs."""
    tmp = data_dir / f".{INCOMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, data_dir / INCOMPLETE_MARKER)


@contextlib.contextmanager
def signals_held():
    """Defer SIGINT and SIGTERM while the block runs (in the main thread; elsewhere a no-op), so a
    second Ctrl-C cannot interrupt a clean-up; a signal that came meanwhile is raised afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def stop_postgres(bindir: Path, data_dir: Path, os_user: str | None) -> str:
    """Stop the restore's PostgreSQL whatever state it is in; says how that went."""
    with contextlib.suppress(Exception):  # it may be going down by itself (Ctrl-C reached it too)
        pg.stop(bindir, data_dir, os_user, "immediate")
    pid = pg.postmaster_pid(data_dir)
    if pid is None:
        return "PostgreSQL was stopped"
    return f"PostgreSQL (PID {pid}) could NOT be stopped: stop it (pg_ctl stop -D '{data_dir}' -m immediate)"
