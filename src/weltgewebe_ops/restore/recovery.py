"""Recovery itself: the restored cluster's settings, PostgreSQL started on the verified base backup,
followed until it reaches the target, and proven to have reached what the plan says (a restore
that ends short is an error, never a success)."""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ..archive import basebackup
from ..archive.fetch import write_restore_command
from ..archive.names import WAL_SEGMENT_SIZE, lsn_to_int, segment_number
from ..core import pg
from ..core.files import write_private
from ..core.procs import free_port, process_identity
from ..core.progress import PROGRESS_FILE, ProgressFile
from . import guard
from .download import Prefetcher
from .markers import INCOMPLETE_MARKER, RESTORE_PID_FILE, signals_held, stop_postgres, write_marker
from .target import RestoreError, Target

if TYPE_CHECKING:
    from .plan import Plan
    from .request import RestoreRequest


# A cluster whose configuration lives outside its data directory (Debian's /etc/postgresql/...)
# has none in its base backup: the restored one gets these, and the restore's own settings.
MINIMAL_CONFIG = {
    "postgresql.conf": "# weltgewebe.ops wal_restore: the base backup had no postgresql.conf (the source keeps its\n"
    "# configuration outside the data directory); recovery settings are in postgresql.auto.conf\n",
    "pg_hba.conf": "# weltgewebe.ops wal_restore: the base backup had no pg_hba.conf. Loopback only: the\n"
    "# restore's socket directory (private to the OS user) trusted, TCP with the source's passwords\n"
    "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
}


def write_missing_config(data_dir: Path) -> list[str]:
    """Write the configuration files a base backup lacks; the names of those written."""
    written = []
    for name, text in MINIMAL_CONFIG.items():
        if not (data_dir / name).exists():
            (data_dir / name).write_text(text)
            written.append(name)
    return written


def write_recovery_config(req: RestoreRequest, restore_command: str, port: int) -> None:
    settings: dict[str, Any] = {
        "restore_command": restore_command,
        "archive_mode": "off",
        "archive_command": "",
        "listen_addresses": "127.0.0.1",
        "port": port,
        "unix_socket_directories": str(req.work / "socket"),
        "hot_standby": "on",
        **req.target.recovery_settings(),
    }
    lines = ["", "# weltgewebe.ops wal_restore: recovery settings (win over postgresql.conf)"]
    for key, value in settings.items():
        lines.append(f"{key} = {pg.conf_value(value)}")
    with open(req.data_dir / "postgresql.auto.conf", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    (req.data_dir / "recovery.signal").write_text("")
    (req.data_dir / "standby.signal").unlink(missing_ok=True)


def recover(
    req: RestoreRequest,
    plan: Plan,
    staging: Path,
    log=lambda _m: None,
    *,
    prefetcher: Prefetcher | None = None,
    restore_command: str = "",
    secrets: Sequence[Path] = (),
) -> dict[str, Any]:
    """Move the verified base backup from ``staging`` into ``data_dir`` and replay WAL to the target.

    From the moment ``data_dir`` exists until the restore is proven complete, it carries
    ``INCOMPLETE_MARKER``; whatever goes wrong (PostgreSQL stops, a fetch aborts, recovery ends
    short of the plan, an interrupt) stops PostgreSQL, keeps the marker with the reason and raises.
    The file holding the S3 credentials is removed either way.

    ``restore_command`` replaces ``wgops wal-fetch`` (a source's own tool, the benchmark's baselines;
    without a prefetcher); ``secrets`` are the files that tool reads its credentials from. A guard
    process (``guard.py``) stops PostgreSQL and removes the credentials should this process be
    killed before it could.
    """
    bindir, os_user = req.bindir, req.run_as
    write_marker(staging, plan, reason="")
    if req.data_dir.exists():
        req.data_dir.rmdir()
    os.replace(staging, req.data_dir)
    req.data_dir.chmod(0o700)
    spool = req.work / "spool"
    for sub in (spool, req.work / "socket", req.work / "bin"):
        sub.mkdir(parents=True, exist_ok=True)
    wrapper = pg.write_hook_wrapper(req.work / "bin", os_user)
    fetch_config, fetch_log = req.work / "wal-fetch.json", req.work / "fetched.jsonl"
    write_private(
        fetch_config,
        json.dumps(
            {
                "location": req.loc.__dict__,
                "spool": str(spool),
                "planned": plan.segments,
                "partial": plan.partial,
                "newest_by_timeline": {str(k): v for k, v in plan.newest_by_timeline.items()},
                "versions": plan.versions,
                "fetch_deadline_seconds": req.fetch_deadline_seconds,
                "log": str(fetch_log),
                "owner": process_identity(),  # wal-fetch aborts recovery once this restore is gone
            }
        ),
    )
    watcher = guard.start(req.data_dir, bindir, os_user, [fetch_config, *secrets], req.work / "guard.log")
    port = req.port or free_port()
    command = restore_command or write_restore_command(
        req.work / "bin", spool=spool, log=fetch_log, wrapper=wrapper, config=fetch_config
    )
    config_written = write_missing_config(req.data_dir)
    if config_written:
        log(f"the base backup has no {' and no '.join(config_written)} (kept outside the data directory): wrote them")
    write_recovery_config(req, command, port)
    pg.chown_tree(req.data_dir, os_user)
    pg.chown_tree(req.work, os_user, contents_not_of=spool)  # the prefetcher gives its files away itself
    replay_started = time.monotonic()
    log_file = req.work / "postgres.log"
    fetched_log: list[dict] = []
    try:
        pg.run([str(bindir / "pg_ctl"), "start", "-D", str(req.data_dir), "-l", str(log_file), "-W"], os_user)
        try:
            superuser = basebackup.superuser(plan.backup)
            try:
                reached = follow_recovery(req, port, log_file, log, superuser, planned=plan.segments)
            except RestoreError:
                if not no_commit_after_target(req.target, log_file):
                    raise
                reached = recover_to_archive_end(req, plan, port, log_file, log, superuser)
        finally:
            fetched_log = _read_fetch_log(fetch_log)
        # with another restore_command (the benchmark's baselines) there is no fetch log to read
        check_reached(plan, reached, fetched_log if not restore_command else None)
    except BaseException as exc:
        with signals_held():  # a second Ctrl-C must not cut the clean-up short
            fetch_config.unlink(missing_ok=True)  # first: it holds the S3 secret
            reason = failure_reason(exc, fetched_log, log_file, plan.target)
            write_marker(req.data_dir, plan, reason)
            stopped = stop_postgres(bindir, req.data_dir, os_user)
            guard.reap(watcher)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: cleaned up, passed on
            raise
        raise RestoreError(
            f"{reason}\nThe new data directory {req.data_dir} is INCOMPLETE and marked so "
            f"({req.data_dir / INCOMPLETE_MARKER}); {stopped}. Do not start it (nor remove "
            f"backup_label, as PostgreSQL's log may suggest: that starts a corrupt cluster). Fix the cause, "
            f"remove '{req.data_dir}' and '{req.work}', and restore again. Kept for diagnosis: {log_file}, "
            f"{fetch_log}."
        ) from exc
    finally:
        fetch_config.unlink(missing_ok=True)  # it holds the S3 secret
        (req.work / RESTORE_PID_FILE).unlink(missing_ok=True)
        if prefetcher:
            prefetcher.close()
        for leftover in spool.iterdir():
            leftover.unlink()
    (req.data_dir / INCOMPLETE_MARKER).unlink()
    guard.reap(watcher)
    replay_seconds = round(time.monotonic() - replay_started, 3)
    return {
        **plan.as_dict(),
        **reached,
        "port": port,
        "data_dir": str(req.data_dir),
        "wal_segments_fetched": sum(1 for e in fetched_log if e.get("source")),
        # the shell's fast path does not stat what it hands over: the prefetcher knows the sizes
        "wal_bytes_fetched": sum(
            e.get("size") or (prefetcher.sizes.get(e["name"], 0) if prefetcher else 0) for e in fetched_log
        ),
        "wal_segments_prefetched": prefetcher.downloaded if prefetcher else 0,
        "wal_fetch_direct": sum(1 for e in fetched_log if e.get("source") == "s3"),
        # segments replay asked for before the prefetcher had them, and the seconds it waited: how
        # far the download (the link, S3, the CPU) rather than replay set the pace
        "wal_replay_waits": sum(1 for e in fetched_log if e.get("source") and not e.get("fast")),
        "wal_replay_wait_seconds": round(
            sum(e.get("seconds", 0.0) for e in fetched_log if e.get("source") and not e.get("fast")), 3
        ),
        "wal_fetch_retries": sum(e.get("retries", 0) for e in fetched_log) + (prefetcher.retries if prefetcher else 0),
        "replay_seconds": replay_seconds,
        "wal_download_seconds": prefetcher.seconds() if prefetcher else 0.0,
        # every planned segment reached PostgreSQL (check_reached), so a prefetch error here was
        # overcome by wal-fetch's own download; it is still said
        "wal_prefetch_error": prefetcher.error if prefetcher else "",
        "config_written": config_written,
    }


def no_commit_after_target(target: Target, log_file: Path) -> bool:
    """Recovery to a time replayed all archived WAL without meeting a commit after that time:
    PostgreSQL ends with FATAL, although the state at that time is exactly the archive's end."""
    return target.kind == "time" and target.action == "promote" and NO_TARGET in _tail(log_file, 40)


def recover_to_archive_end(
    req: RestoreRequest, plan: Plan, port: int, log_file: Path, log, superuser: str
) -> dict[str, Any]:
    """The archive holds no commit after the target time (a quiet tail, or a time drawn there):
    nothing after the last archived commit changes the state at that time, so recovery goes on to
    the archive's end without a target, from where PostgreSQL stopped. The result says so, and it
    is checked like a restore to latest: every planned segment replayed."""
    log(
        f"no commit after {req.target.value} in the archive (PostgreSQL: {NO_TARGET}): its state at that time "
        "is the archive's end; recovering to the end"
    )
    with open(req.data_dir / "postgresql.auto.conf", "a") as fh:
        fh.write(
            "# weltgewebe.ops wal_restore: no commit after the target time in the archive, so its end is the "
            "state at that time\nrecovery_target_time = ''\n"
        )
    # the first run's log moves aside: should this run fail, its cause is read from its own log,
    # not the FATAL above (which failure_reason would take for the cause)
    log_file.replace(log_file.with_name("postgres-to-target.log"))
    pg.run([str(req.bindir / "pg_ctl"), "start", "-D", str(req.data_dir), "-l", str(log_file), "-W"], req.run_as)
    reached = follow_recovery(req, port, log_file, log, superuser, planned=plan.segments)
    return {**reached, "target_after_last_commit": True}


def check_reached(plan: Plan, reached: dict[str, Any], fetched_log: list[dict] | None) -> None:
    """A recovery to ``latest`` (or on to the archive's end, ``recover_to_archive_end``) must have
    replayed every planned segment: PostgreSQL ends recovery at the first file it cannot get, so
    ending early looks like success from its side. The reached LSN must lie in the newest planned
    segment, and (with wal-fetch's log) every planned segment must have been delivered."""
    to_end = plan.target.kind == "latest" or reached.get("target_after_last_commit")
    if not to_end or not plan.segments or reached.get("reached_lsn") is None:
        return
    last = plan.segments[-1]
    short = lsn_to_int(reached["reached_lsn"]) <= segment_number(last) * WAL_SEGMENT_SIZE
    delivered = {entry["name"] for entry in fetched_log or [] if entry.get("source")}
    never = [name for name in plan.segments if name not in delivered] if fetched_log is not None else []
    if plan.partial and fetched_log is not None and plan.partial["name"] not in delivered:
        raise RestoreError(
            f"recovery ended at {reached['reached_lsn']} without the streamed part of {plan.partial['name']} "
            f"({plan.partial['bytes']} bytes in the archive): PostgreSQL never asked for it, so the restore is "
            f"short of what the archive holds"
        )
    if short or last in never:
        raise RestoreError(
            f"recovery ended at {reached['reached_lsn']}, short of the plan: the archive holds WAL through {last}"
            + (
                f", but PostgreSQL never received {', '.join(never[:5])}{' ...' if len(never) > 5 else ''} "
                f"({len(never)} of {len(plan.segments)} planned segments)"
                if never
                else ""
            )
        )


# What PostgreSQL's log says when recovery fails, and what it means for this restore.
NO_TARGET = "recovery ended before configured recovery target was reached"
POSTGRES_FAILURES = {
    NO_TARGET: (
        "the archive does not contain the recovery target ({target}): PostgreSQL replayed all archived WAL "
        "without reaching it. Check the transaction id or restore point name, or restore to target latest"
    ),
    "No space left on device": "the disk ran full during recovery",
    "terminating connection due to unexpected postmaster exit": "PostgreSQL was killed during recovery",
}


def failure_reason(exc: BaseException, fetched_log: list[dict], log_file: Path, target: Target) -> str:
    """One sentence that names the cause of a failed recovery, from the fetch log and PostgreSQL's."""
    if not isinstance(exc, Exception):
        return f"the restore was interrupted ({type(exc).__name__})"
    aborted = [entry for entry in fetched_log if entry.get("abort") or entry.get("gap")]
    if aborted:
        entry = aborted[-1]
        if entry.get("gap"):
            return (
                f"recovery aborted at a gap in the WAL archive: {entry['name']} is missing although newer "
                f"segments are archived"
            )
        return f"recovery aborted: WAL file {entry['name']} could not be fetched: {entry['abort']}"
    tail = _tail(log_file, 40)
    for needle, meaning in POSTGRES_FAILURES.items():
        if needle in tail:
            wanted = f"{target.kind} {target.value}".strip()
            return f"{meaning.format(target=wanted)}; PostgreSQL said: {_last_fatal(tail) or needle}"
    return str(exc)


def _last_fatal(text: str) -> str:
    lines = [line for line in text.splitlines() if "FATAL" in line or "PANIC" in line]
    return lines[-1].strip() if lines else ""


def follow_recovery(
    req: RestoreRequest, port: int, log_file: Path, log, superuser: str = "postgres", planned: list[str] = ()
) -> dict[str, Any]:
    """Wait for recovery to end as the target's action says; report what was reached, and how far
    replay is through the ``planned`` segments while it runs (``progress.json``)."""
    # the socket directory: local connections are trusted, TCP ones need the source's passwords
    dsn = pg.conninfo(str(req.work / "socket"), port, superuser)
    started = time.monotonic()
    deadline = started + req.timeout_seconds
    last_report = 0.0
    seen_running = False
    progress = ProgressFile(req.work / PROGRESS_FILE)
    planned_numbers = sorted(segment_number(name) for name in planned)
    while time.monotonic() < deadline:
        if pg.postmaster_pid(req.data_dir) is not None:
            seen_running = True
        elif seen_running or time.monotonic() - started > 60:
            if req.target.action == "shutdown" and "database system is shut down" in _tail(log_file, 50):
                return {
                    "recovery_state": "shut down",
                    "reached_lsn": None,
                    "last_replayed_commit_time": None,
                    "timeline": None,
                }
            raise RestoreError(f"PostgreSQL stopped during recovery; the end of {log_file}:\n{_tail(log_file, 12)}")
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
                    "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'done' END"
                ).fetchone()
                in_recovery, replay_lsn, replay_ts, pause = row
                now = time.monotonic()
                ended = not in_recovery or (req.target.action == "pause" and pause == "paused")
                if replay_lsn:
                    # planned segments up to the one being replayed (timelines aside: numbers grow);
                    # the state at the end is always written (the file's last word is where it ended)
                    at = lsn_to_int(replay_lsn) // WAL_SEGMENT_SIZE
                    done = bisect.bisect_right(planned_numbers, at)
                    detail = f"replayed to {replay_lsn}, last commit {replay_ts or '-'}"
                    progress.update("WAL replay", done, len(planned_numbers), "segments", force=ended, detail=detail)
                if now - last_report > 5:
                    log(f"recovery: replayed to {replay_lsn}, last commit {replay_ts}")
                    last_report = now
                if ended:
                    timeline = conn.execute(
                        "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) "
                        "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
                    ).fetchone()[0]
                    return {
                        "recovery_state": "promoted" if not in_recovery else "paused",
                        "reached_lsn": replay_lsn,
                        "last_replayed_commit_time": replay_ts.isoformat() if replay_ts else None,
                        "timeline": timeline,
                    }
        except psycopg.OperationalError as exc:
            if f'role "{superuser}" does not exist' in str(exc):
                # waiting would not help (until the timeout, hours): say it now
                raise RestoreError(
                    f"the restored cluster has no role {superuser!r} to log in as: the base backup does not "
                    "record its superuser (taken by an older weltgewebe.ops). Take a new base backup "
                    "(wgops base-backup records it), or restore from one that does"
                ) from exc
        time.sleep(0.2)
    raise RestoreError(f"recovery did not finish within {req.timeout_seconds:.0f}s; see {log_file}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _read_fetch_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
