"""A restore's PostgreSQL must not outlive the restore that started it.

A restore that fails, or is interrupted by a signal it can catch, stops its PostgreSQL, removes
the files that hold its credentials and writes the reason into ``WGOPS_RESTORE_INCOMPLETE``
(``recovery.recover``, ``pgdump.restore``). A restore that is killed outright (SIGKILL, the OOM
killer) can do none of that: its PostgreSQL would go on recovering, find the end of the archive,
and promote itself while the marker still says "never start this cluster", with the read-only S3
secret left on disk.

So every restore starts a guard beside it: a small process in its own session that watches the
restore's process (by PID and start time, so a recycled PID does not fool it). When the restore is
gone while its data directory is still marked incomplete, the guard removes the secrets, stops
PostgreSQL (``-m immediate``) and writes the reason into the marker. It ends by itself as soon as
the restore has finished (marker removed) or has cleaned up after its own failure (a reason in the
marker and no PostgreSQL running). ``wal-fetch`` checks the same owner, so a recovery whose guard
was killed too still aborts instead of ending at the next file it asks for.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.5
# run as -c, not -m: the package imports this module before runpy would run it as __main__
GUARD_MAIN = "import sys; from weltgewebe_ops.restore.guard import main; sys.exit(main())"


def marker_reason(marker: Path) -> str | None:
    """The reason written in the marker, '' while the restore runs, None when there is no marker."""
    try:
        return json.loads(marker.read_text()).get("reason") or ""
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return ""


def mark_killed(marker: Path, reason: str) -> None:
    """Write ``reason`` into the marker unless the restore wrote its own (the first cause wins)."""
    from .markers import write_marker_file

    with contextlib.suppress(OSError, ValueError):
        record = json.loads(marker.read_text())
        if not record.get("reason"):
            write_marker_file(marker.parent, {**record, "reason": reason})


def killed_reason(owner: dict) -> str:
    return (
        f"the restore process (PID {owner['pid']}) ended without finishing or cleaning up: it was killed "
        f"(SIGKILL, the OOM killer, a lost session?)"
    )


def start(data_dir: Path, bindir: Path, os_user: str | None, secrets: list[Path], log_file: Path) -> subprocess.Popen:
    """Start the guard of the restore running in this process, for ``data_dir`` (which carries the
    marker by now); ``secrets`` are removed if the restore dies."""
    from ..core import procs

    config = {
        "owner": procs.process_identity(),
        "data_dir": str(data_dir),
        "bindir": str(bindir),
        "os_user": os_user,
        "secrets": [str(path) for path in secrets],
    }
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", GUARD_MAIN, json.dumps(config)],
            env=procs.library_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill of the restore's process group must not reach it
            close_fds=True,
            cwd="/",
        )


def reap(watcher: subprocess.Popen, timeout: float = 10.0) -> None:
    """Collect the guard once the restore has finished or cleaned up (it then ends by itself)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        watcher.wait(timeout)


def watch(config: dict, poll: float = POLL_SECONDS) -> str:
    """Wait until the restore has finished, has cleaned up itself, or is gone; act in the last case.
    Returns what happened (one line, for the guard's log)."""
    from ..core import pg
    from ..core.procs import identity_alive
    from .markers import INCOMPLETE_MARKER, stop_postgres

    owner, data_dir = config["owner"], Path(config["data_dir"])
    marker = data_dir / INCOMPLETE_MARKER
    while True:
        reason = marker_reason(marker)
        if reason is None:
            return "the restore finished: nothing to do"
        if reason and pg.postmaster_pid(data_dir) is None:
            return f"the restore cleaned up after its own failure: {reason[:200]}"
        if not identity_alive(owner):
            break
        time.sleep(poll)
    for secret in config["secrets"]:  # first: they hold the S3 secret
        Path(secret).unlink(missing_ok=True)
    # the reason before PostgreSQL stops: whoever sees it stopped finds the marker saying why
    mark_killed(marker, f"{killed_reason(owner)}; its guard removed the credentials and stopped PostgreSQL")
    stopped = stop_postgres(Path(config["bindir"]), data_dir, config["os_user"])
    return f"the restore (PID {owner['pid']}) is gone: credentials removed, {stopped}; marker {marker}"


def main(argv: list[str] | None = None) -> int:
    config = json.loads((argv or sys.argv[1:])[0])
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} guard of restore PID {config['owner']['pid']}: watching", flush=True)
    outcome = watch(config)
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
