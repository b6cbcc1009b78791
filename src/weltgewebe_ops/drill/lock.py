"""One drill at a time per reports directory, and what an interrupted drill left running.

A drill holds ``<reports_dir>/.drill.lock`` from its first play to its report. The holder is the
``ansible-playbook`` process (not the module that wrote the lock, which ends with its task), named
by PID and start time so a recycled PID is never mistaken for it. A second drill is refused with
who holds the lock; a lock whose holder is gone (Ctrl-C, a killed CI job) is taken over, and the
drill it belonged to is *reclaimed*: what its record says it started (the restore job, the
recovery's PostgreSQL, NATS, relay, projector, API, a recovery container) is stopped, and its
record says it was interrupted. ``make sandbox-down`` reclaims too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.procs import cmdline, process_start
from ..core.progress import restore_work_dir

LOCK_NAME = ".drill.lock"


class DrillLockError(RuntimeError):
    """Another drill runs; the message says which and what to do."""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def controller_pid() -> int:
    """The outermost ``ansible-playbook`` (or ad hoc ``ansible``) above this process: Ansible's
    workers are forks with the same command line, so the last match walking up is the one."""
    found, pid = 0, os.getpid()
    while pid > 1:
        command = cmdline(pid)
        if "ansible-playbook" in command or "/ansible " in command or command.startswith("ansible "):
            found = pid
        pid = _parent(pid)
    return found or os.getppid()


@dataclass(frozen=True)
class Holder:
    drill_id: str
    pid: int
    start: str | None
    host: str
    command: str
    since: str

    def alive(self) -> bool:
        return self.start is not None and process_start(self.pid) == self.start

    def describe(self) -> str:
        return (
            f"drill {self.drill_id}, held since {self.since} by PID {self.pid} on {self.host} "
            f"({self.command[:200] or 'command unknown'})"
        )


class DrillLock:
    def __init__(self, reports_dir: str | os.PathLike[str]):
        self.file = Path(reports_dir) / LOCK_NAME

    def holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def acquire(self, drill_id: str) -> Holder | None:
        """Take the lock for ``drill_id``; returns the holder of a stale lock taken over (None when
        it was free or is ours). Raises DrillLockError when a live drill holds it."""
        from . import iso, now

        pid = controller_pid()
        me = Holder(drill_id, pid, process_start(pid), socket.gethostname(), cmdline(pid), iso(now()))
        self.file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            held = self.holder()
            if held is not None and (held.pid, held.start) == (me.pid, me.start):
                if held.drill_id != drill_id:
                    self._write(me)
                return None
            if held is not None and held.alive():
                raise DrillLockError(
                    f"another drill is running in {self.file.parent}: {held.describe()}. Wait until it has "
                    f"written its report, or stop it (kill {held.pid}); the next drill then stops what it left "
                    f"running."
                ) from None
            self._write(me)
            return held
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(me), fh)
        return None

    def release(self, drill_id: str) -> bool:
        held = self.holder()
        if held is not None and held.drill_id == drill_id and held.pid == controller_pid():
            self.file.unlink(missing_ok=True)
            return True
        return False

    def _write(self, holder: Holder) -> None:
        tmp = self.file.with_name(self.file.name + f".{os.getpid()}")
        tmp.write_text(json.dumps(asdict(holder)))
        os.replace(tmp, self.file)


def stop_recovery(recovery: dict[str, Any]) -> list[str]:
    """Stop what a drill's recovery environment runs, as its record describes it; one line per
    thing stopped, and one per thing that could NOT be stopped (with what to do)."""
    from .. import sandbox
    from ..restore import stop_restore

    done: list[str] = []
    kind, where = recovery.get("kind"), Path(recovery.get("dir", ""))
    data_dir = recovery.get("endpoints", {}).get("pg_data_dir")
    if kind == "container" and recovery.get("own_container") is False:
        return [f"left the container {recovery.get('host', '')} alone: it is an inventory host, not the drill's own"]
    if kind == "container":
        name = recovery.get("host", "")
        docker = shutil.which("docker")
        if not docker:
            return [f"could NOT remove the recovery container {name}: no docker command here; docker rm -f {name}"]
        gone = subprocess.run([docker, "rm", "-f", name], capture_output=True, text=True, check=False)
        if gone.returncode == 0:
            return [f"removed the recovery container {name}"]
        if "No such container" in gone.stderr:
            return []
        return [f"could NOT remove the recovery container {name}: {gone.stderr.strip()[:300]}"]
    if not where.is_dir():
        return done
    if data_dir:
        line = stop_restore(restore_work_dir(data_dir))
        if line:
            done.append(line)
    try:
        results = sandbox.load(where).down(purge=False)
    except Exception as exc:  # noqa: BLE001 - said in the record and the output, never swallowed
        return [*done, f"could NOT stop the recovery in {where}: {type(exc).__name__}: {exc}"]
    done += [f"stopped the recovery's {r.component}" for r in results if r.changed]
    return done


def stop_app_stack(project: str) -> list[str]:
    """Remove the application stack a drill's recovery started (role app_stack), if it still runs."""
    from .. import appstack

    try:
        if not appstack.containers(project):
            return []
        removed = appstack.remove(project)
    except Exception as exc:  # noqa: BLE001 - said in the record and the output, never swallowed
        return [f"could NOT remove the application stack {project}: {exc}; docker compose -p {project} down"]
    return [f"removed the application stack {project} ({', '.join(removed['removed'])})"]


def reclaim(reports_dir: str | os.PathLike[str], current_drill_id: str = "") -> list[str]:
    """Stop what earlier drills that never reached their report left running, by their records,
    and record that they were interrupted. A recovery kept on purpose (its report was written
    with drill_keep_recovery) is left alone."""
    from . import Record, iso, now

    lines: list[str] = []
    held = DrillLock(reports_dir).holder()
    for record_file in sorted(Path(reports_dir).glob("*/record.json")):
        drill_id = record_file.parent.name
        if drill_id == current_drill_id or (held and held.drill_id == drill_id and held.alive()):
            continue
        record = Record(reports_dir, drill_id)
        if not record.data.get("drill_id") or record.data.get("finished_at") or record.data.get("interrupted"):
            continue
        recovery = record.data.get("facts", {}).get("recovery")
        stopped = stop_recovery(recovery) if recovery else []
        project = (record.data.get("facts", {}).get("app_stack") or {}).get("project")
        if project:
            stopped = stop_app_stack(project) + stopped
        for phase in record.data.get("phases", []):
            if phase.get("status") == "running":
                phase.update(status="failed", detail="interrupted: the drill ended before this phase did")
        record.data["interrupted"] = {"found_at": iso(now()), "stopped": stopped}
        record.save(point_latest=False)
        lines.append(f"drill {drill_id} was interrupted: " + ("; ".join(stopped) or "nothing was left running"))
    return lines
