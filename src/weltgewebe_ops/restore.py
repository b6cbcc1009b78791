"""Point-in-time recovery from the S3 archive: plan, stream the base backup, replay WAL, promote.

The restore never writes to S3 and never touches the source: it reads the archive with the
credentials it is given, builds a new data directory, and runs PostgreSQL there with
``archive_mode=off`` so the recovered cluster cannot archive into the source's prefix.

Speed: the base backup is read with parallel ranged GETs and extracted as it streams (no local
copy of the tar); WAL is prefetched into a bounded spool by parallel downloads ahead of replay, so
``restore_command`` (``wgops wal-fetch``) is mostly a local rename.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from . import archive, pg
from . import s3 as s3mod
from .procs import free_port, process_start
from .progress import PROGRESS_FILE, ProgressFile, restore_work_dir
from .settings import S3Location
from .walnames import WAL_SEGMENT_SIZE, int_to_lsn, lsn_to_int, segment_number

TARGET_KINDS = ("latest", "time", "lsn", "xid", "name", "immediate")
ACTIONS = ("promote", "pause", "shutdown")


class RestoreError(RuntimeError):
    """The restore cannot go on; the message says why and what to do. Raised before any change
    unless it says otherwise."""


@dataclass(frozen=True)
class Target:
    kind: str = "latest"
    value: str = ""
    inclusive: bool = True
    action: str = "promote"
    timeline: str = "latest"

    @classmethod
    def parse(
        cls,
        kind: str = "latest",
        value: Any = None,
        inclusive: bool = True,
        action: str = "promote",
        timeline: str = "latest",
    ) -> Target:
        if kind not in TARGET_KINDS:
            raise RestoreError(f"target kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
        if action not in ACTIONS:
            raise RestoreError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
        text = "" if value is None else str(value).strip()
        if kind in ("latest", "immediate"):
            if text:
                raise RestoreError(f"target {kind} takes no value (got {text!r})")
        elif not text:
            raise RestoreError(f"target {kind} needs a value")
        if kind == "time":
            moment = parse_time(text)
            text = moment.isoformat()
        elif kind == "lsn":
            try:
                lsn_to_int(text)
            except ValueError as exc:
                raise RestoreError(f"{text!r} is not an LSN like 0/3000028") from exc
        elif kind == "xid" and not text.isdigit():
            raise RestoreError(f"{text!r} is not a transaction id")
        if str(timeline) not in ("latest", "current") and not str(timeline).isdigit():
            raise RestoreError(f"timeline {timeline!r} must be latest, current or a number")
        return cls(kind, text, bool(inclusive), action, str(timeline))

    @property
    def moment(self) -> dt.datetime | None:
        return parse_time(self.value) if self.kind == "time" else None

    def recovery_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"recovery_target_timeline": self.timeline}
        if self.kind == "latest":
            return settings
        key = {
            "time": "recovery_target_time",
            "lsn": "recovery_target_lsn",
            "xid": "recovery_target_xid",
            "name": "recovery_target_name",
            "immediate": "recovery_target",
        }[self.kind]
        settings[key] = "immediate" if self.kind == "immediate" else self.value
        settings["recovery_target_action"] = self.action
        if self.kind in ("time", "lsn", "xid"):
            settings["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        return settings


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RestoreError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-27T08:15:00+00:00)") from exc
    if moment.tzinfo is None:
        raise RestoreError(
            f"target time {text!r} has no timezone: the same wall-clock time means different instants in "
            f"different zones. Add one, e.g. {text}+00:00 or {text}Z."
        )
    return moment


def choose_backup(labels: list[dict], target: Target, backup_id: str = "") -> dict:
    """The newest base backup that can reach ``target`` (consistent at or before it)."""
    if not labels:
        raise RestoreError("the archive holds no base backup: nothing to restore from")
    if backup_id:
        chosen = next((label for label in labels if label["backup_id"] == backup_id), None)
        if chosen is None:
            raise RestoreError(f"no base backup {backup_id}; have {', '.join(lb['backup_id'] for lb in labels)}")
        candidates = [chosen]
    else:
        candidates = labels
    if target.kind == "time":
        reachable = [lb for lb in candidates if dt.datetime.fromisoformat(lb["stop_time"]) <= target.moment]
        if not reachable:
            earliest = min(labels, key=lambda lb: lb["stop_time"])
            raise RestoreError(
                f"no base backup can reach {target.value}: the earliest reachable target is "
                f"{earliest['stop_time']} (base backup {earliest['backup_id']} is consistent from then on)"
            )
        return max(reachable, key=lambda lb: lb["stop_time"])
    if target.kind == "lsn":
        reachable = [lb for lb in candidates if lsn_to_int(lb["stop_lsn"]) <= lsn_to_int(target.value)]
        if not reachable:
            earliest = min(labels, key=lambda lb: lsn_to_int(lb["stop_lsn"]))
            raise RestoreError(
                f"no base backup can reach LSN {target.value}: the earliest reachable target is LSN "
                f"{earliest['stop_lsn']} (base backup {earliest['backup_id']})"
            )
        return max(reachable, key=lambda lb: lsn_to_int(lb["stop_lsn"]))
    return candidates[-1]


INCOMPLETE_MARKER = "WGOPS_RESTORE_INCOMPLETE"
RESTORE_PID_FILE = "restore.pid"  # in the work directory: which process runs the restore


def write_restore_pid(work_dir: Path) -> None:
    """Say which process runs this restore, so an interrupted drill's restore can be stopped."""
    tmp = work_dir / f".{RESTORE_PID_FILE}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "start": process_start(os.getpid())}))
    os.replace(tmp, work_dir / RESTORE_PID_FILE)


def stop_restore(work_dir: Path, timeout: float = 60.0) -> str:
    """SIGTERM the process of a restore still running in ``work_dir`` (the module then stops its
    PostgreSQL and marks the data directory incomplete); says what happened, '' when none runs."""
    try:
        recorded = json.loads((work_dir / RESTORE_PID_FILE).read_text())
    except (OSError, ValueError):
        return ""
    pid = int(recorded.get("pid", 0))
    if not pid or process_start(pid) != recorded.get("start"):
        return ""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_start(pid) == recorded.get("start") and time.monotonic() < deadline:
        time.sleep(0.2)
    if process_start(pid) == recorded.get("start"):
        return f"the restore job (PID {pid}) did NOT stop within {timeout:.0f}s of SIGTERM: kill -9 {pid}"
    return f"stopped the restore job (PID {pid})"


def check_empty_dir(path: Path) -> None:
    marker = path / INCOMPLETE_MARKER
    if marker.exists():
        try:
            reason = json.loads(marker.read_text()).get("reason") or "interrupted"
        except (OSError, ValueError):
            reason = "unknown"
        work = restore_work_dir(path)
        raise RestoreError(
            f"data_dir {path} holds an INCOMPLETE restore (marker {marker}; it failed: {reason}). It must never "
            f"be started. Remove it and its work directory (rm -rf '{path}' '{work}'), fix the cause, and run "
            f"the restore again."
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RestoreError(
            f"data_dir {path} is not empty: a restore never overwrites data. Choose a new directory, "
            f"or move this one away if you are sure it is not needed."
        )


def free_space_needed(plan: Plan, spool_segments: int) -> dict[str, int]:
    """Bytes a restore needs on the data directory's file system: the base backup extracted, the
    WAL PostgreSQL keeps in pg_wal between restartpoints (about max_wal_size; at most what is
    replayed), the spool, and a margin for logs and the first WAL after promotion."""
    base = int(plan.backup.get("tar_size") or 0)
    wal = min(plan.wal_bytes, 2 * 1024**3)
    spool = spool_segments * WAL_SEGMENT_SIZE
    margin = base // 10 + 128 * 1024**2
    return {"base_backup": base, "wal_in_pg_wal": wal, "spool": spool, "margin": margin}


def check_free_space(path: Path, plan: Plan, spool_segments: int) -> None:
    existing = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    needed = free_space_needed(plan, spool_segments)
    if free < sum(needed.values()):
        parts = ", ".join(f"{name.replace('_', ' ')} {size / 1e6:,.0f} MB" for name, size in needed.items())
        raise RestoreError(
            f"not enough free space for the restore at {existing}: {free / 1e6:,.0f} MB free, about "
            f"{sum(needed.values()) / 1e6:,.0f} MB needed ({parts}). Nothing was changed; free space or choose "
            f"a data_dir on a larger file system (check_free_space: false skips this check)."
        )


@dataclass
class Plan:
    backup: dict
    target: Target
    segments: list[str]
    wal_bytes: int
    newest_by_timeline: dict[int, int]
    missing: list[str]
    # WAL file name -> the archived version's id (every file archived when the plan was made): a
    # version written over it later is never read
    versions: dict[str, str] = field(default_factory=dict)
    # newest archive time of the planned WAL: no commit after it can be in the archive
    archive_end_time: dt.datetime | None = None
    # files someone wrote over or hid after archiving (the restore reads the archived versions)
    rewritten: list[str] = field(default_factory=list)
    # the segment after the newest planned one, as far as streamed chunks hold it (walstream)
    partial: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_backup": self.backup["backup_id"],
            "base_backup_bytes": self.backup.get("tar_size"),
            "base_backup_stop_time": self.backup["stop_time"],
            # who the restore logs in as: the cluster's bootstrap superuser, as the backup recorded it
            "superuser": self.backup.get("superuser") or "postgres",
            "target": {
                "kind": self.target.kind,
                "value": self.target.value,
                "inclusive": self.target.inclusive,
                "action": self.target.action,
                "timeline": self.target.timeline,
            },
            "wal_segments": len(self.segments),
            "wal_bytes": self.wal_bytes,
            "first_segment": self.segments[0] if self.segments else None,
            "last_segment": self.segments[-1] if self.segments else None,
            "archive_end_time": self.archive_end_time.isoformat() if self.archive_end_time else None,
            # xid and restore point targets are found only by replaying: the plan cannot prove them
            "target_checked_against_archive": self.target.kind in ("latest", "immediate", "time", "lsn"),
            "rewritten_files": self.rewritten,
            "partial_segment": self.partial["name"] if self.partial else None,
            "partial_segment_bytes": self.partial["bytes"] if self.partial else 0,
        }

    @property
    def archived(self) -> set[str]:
        """Every WAL file name archived when the plan was made."""
        return set(self.versions)

    @property
    def end_lsn(self) -> int | None:
        """The first LSN after the newest planned segment."""
        return (segment_number(self.segments[-1]) + 1) * WAL_SEGMENT_SIZE if self.segments else None


def make_plan(client, loc: S3Location, target: Target, backup_id: str = "") -> Plan:
    inv = archive.list_inventory(client, loc)
    backup = choose_backup(inv.labels, target, backup_id)
    # base.tar as archived under this prefix (the label's version id names the upload's version,
    # which a copied or replicated archive does not have); its content is checked against the
    # label's SHA-256 either way
    tar_key = s3mod.basebackup_prefix(loc, backup["backup_id"]) + "base.tar"
    backup = {**backup, "tar_version_id": inv.versions.get(tar_key) or backup.get("tar_version_id", "")}
    target_tli = int(target.timeline) if target.timeline.isdigit() else None
    if target.timeline == "current":
        target_tli = backup["timeline"]
    cont = archive.continuity(client, loc, inv, backup, target_tli)
    stop_needed = cont["consistent_needs_through"]
    missing = cont["missing"]
    if missing:
        raise RestoreError(
            f"the WAL archive has a gap after base backup {backup['backup_id']}: missing "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Recovery would stop before it "
            f"silently. Find the segment (the primary's pg_wal, another archive copy) or restore to a target "
            f"before it."
        )
    if stop_needed not in cont["needed"] and cont["needed"]:
        raise RestoreError(
            f"the archive lacks the WAL that makes base backup {backup['backup_id']} consistent (through {stop_needed})"
        )
    newest = {tli: max(by_no) for tli, by_no in inv.segments.items() if by_no}
    versions = {key.rsplit("/", 1)[1]: version for key, version in inv.versions.items() if "/wal/" in key}
    planned = [inv.segments[int(name[:8], 16)][segment_number(name)] for name in cont["needed"]]
    # streamed chunks of the segment being written when the primary was lost (streaming archiving)
    partial = (
        archive.streamed_segment(inv, cont["needed"][-1])
        if cont["needed"] and target.kind in ("latest", "time")
        else None
    )
    archive_end = max((seg.last_modified for seg in planned), default=None)
    if partial:
        archive_end = max(filter(None, (archive_end, dt.datetime.fromisoformat(partial["archived_at"]))))
    plan = Plan(
        backup,
        target,
        cont["needed"],
        cont["bytes"],
        newest,
        missing,
        versions,
        archive_end_time=archive_end,
        rewritten=[history.key for history in inv.rewritten],
        partial=partial,
    )
    check_target_within_archive(plan)
    return plan


def check_target_within_archive(plan: Plan) -> None:
    """Refuse, before anything is touched, a time or LSN target the archive cannot reach: recovery
    would replay everything and then fail (PostgreSQL ends with "recovery ended before configured
    recovery target was reached")."""
    target = plan.target
    if target.kind == "time" and plan.archive_end_time and target.moment > plan.archive_end_time:
        raise RestoreError(
            f"target time {target.value} is after the newest archived WAL ({plan.segments[-1]}, archived at "
            f"{plan.archive_end_time.isoformat()}): no commit after it is in the archive, so recovery cannot reach "
            f"the target. Restore to target latest for everything archived, or choose a time before "
            f"{plan.archive_end_time.isoformat()}."
        )
    if target.kind == "lsn" and plan.end_lsn is not None and lsn_to_int(target.value) >= plan.end_lsn:
        raise RestoreError(
            f"target LSN {target.value} is beyond the newest archived WAL ({plan.segments[-1]} ends at "
            f"{int_to_lsn(plan.end_lsn)}): recovery cannot reach it. Restore to target latest, or choose an LSN "
            f"before {int_to_lsn(plan.end_lsn)}."
        )


class ParallelRangeReader:
    """Read one S3 object front to back with parallel ranged GETs (bounded read-ahead), hashing it."""

    def __init__(
        self,
        client,
        bucket: str,
        key: str,
        size: int,
        *,
        version_id: str = "",
        part_size: int = 8 * 1024 * 1024,
        workers: int = 8,
        window: int = 16,
    ):
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.version = s3mod.version_arg(version_id)
        self.part_size = part_size
        self.pool = ThreadPoolExecutor(workers)
        self.pending: deque[Future] = deque()
        self.next_offset = 0
        self.window = window
        self.buffer = memoryview(b"")
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self._fill()

    def _get(self, start: int, end: int) -> bytes:
        resp = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}", **self.version)
        return resp["Body"].read()

    def _fill(self) -> None:
        while len(self.pending) < self.window and self.next_offset < self.size:
            end = min(self.next_offset + self.part_size, self.size) - 1
            self.pending.append(self.pool.submit(self._get, self.next_offset, end))
            self.next_offset = end + 1

    def read(self, n: int = -1) -> bytes:
        if not self.buffer:
            if not self.pending:
                return b""
            chunk = self.pending.popleft().result()
            self._fill()
            self.sha256.update(chunk)
            self.bytes_read += len(chunk)
            self.buffer = memoryview(chunk)
        if n is None or n < 0 or n >= len(self.buffer):
            out, self.buffer = self.buffer, memoryview(b"")
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return bytes(out)

    def close(self) -> None:
        for fut in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


class StreamReader:
    """Read one S3 object with a single GET, a thread keeping up to ``window`` chunks ahead of the
    consumer (so the download and ``tar -x`` overlap), hashing it. The same interface as
    ParallelRangeReader."""

    def __init__(
        self, client, bucket: str, key: str, *, version_id: str = "", chunk: int = 8 * 1024 * 1024, window: int = 8
    ):
        import queue

        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self._queue: queue.Queue = queue.Queue(maxsize=window)
        self._stop = threading.Event()
        version = s3mod.version_arg(version_id)

        def pump() -> None:
            try:
                body = client.get_object(Bucket=bucket, Key=key, **version)["Body"]
                for piece in body.iter_chunks(chunk):
                    if self._stop.is_set():
                        return
                    self.sha256.update(piece)  # here, so hashing overlaps tar's writes
                    self.bytes_read += len(piece)
                    self._queue.put(piece)
                self._queue.put(b"")
            except Exception as exc:  # noqa: BLE001 - handed to the reader
                self._queue.put(exc)

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()

    def read(self, n: int = -1) -> bytes:
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        if not item:
            self._queue.put(b"")  # stay at the end for further reads
        return item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            while True:
                self._queue.get_nowait()


class Prefetcher:
    """Downloads the planned WAL segments (their archived versions) into ``spool`` ahead of replay,
    ``workers`` at a time, never holding more than ``window`` segments (downloaded or in flight)
    that replay has not taken. Each file is checked against its archived SHA-256 before it enters
    the spool. A transient failure (S3 or KMS away) is retried until ``deadline_seconds``; a segment
    that cannot be had leaves ``.<name>.failed`` with the reason, which makes wal-fetch abort
    recovery instead of ending it early."""

    def __init__(
        self,
        client,
        loc: S3Location,
        names: list[str],
        spool: Path,
        *,
        versions: dict[str, str] | None = None,
        workers: int = 8,
        window: int = 16,
        owner: tuple[int, int] | None = None,
        deadline_seconds: float = 300.0,
    ):
        self.client, self.loc, self.names, self.spool = client, loc, names, spool
        self.versions = versions or {}
        self.owner = owner  # PostgreSQL's uid/gid when we run as root: it opens restored WAL read-write
        self.workers, self.window = workers, window
        self.deadline_seconds = deadline_seconds
        # fewer downloads at once while the base backup streams (they share CPU and network)
        self.active_workers = workers
        self.stop = threading.Event()
        self.bytes = 0
        self.downloaded = 0
        self.retries = 0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def error(self) -> str:
        return "; ".join(self.errors)

    def start(self) -> None:
        self._thread.start()

    def _note_retry(self, _message: str) -> None:
        with self._lock:
            self.retries += 1

    def _download(self, name: str) -> None:
        key = s3mod.wal_key(self.loc, name)
        try:
            body = s3mod.with_retries(
                lambda: s3mod.get_verified(self.client, self.loc.bucket, key, self.versions.get(name, "")),
                name,
                deadline_seconds=self.deadline_seconds,
                cancelled=self.stop.is_set,
                log=self._note_retry,
            )
            if body is None:  # closing
                return
            tmp = self.spool / f".{name}.tmp"
            tmp.write_bytes(body)
            if self.owner:
                os.chown(tmp, *self.owner)
            os.replace(tmp, self.spool / name)
            with self._lock:
                self.bytes += len(body)
                self.downloaded += 1
                self.last_end = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - handed to wal-fetch, which aborts recovery with it
            reason = str(exc) if isinstance(exc, s3mod.IntegrityError | s3mod.FetchError) else f"{name}: {exc}"
            failed = self.spool / f".{name}.failed"
            failed.write_text(reason)
            if self.owner:
                os.chown(failed, *self.owner)
            with self._lock:
                self.errors.append(reason)

    def _run(self) -> None:
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(self.workers) as pool:
            index = 0
            while not self.stop.is_set() and index < len(self.names):
                in_flight = {f for f in in_flight if not f.done()}
                spooled = sum(1 for p in self.spool.iterdir() if not p.name.startswith("."))
                if len(in_flight) < self.active_workers and spooled + len(in_flight) < self.window:
                    if self.first_start is None:
                        self.first_start = time.monotonic()
                    in_flight.add(pool.submit(self._download, self.names[index]))
                    index += 1
                else:
                    time.sleep(0.005)

    def seconds(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return round(self.last_end - self.first_start, 3)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


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

    @property
    def work(self) -> Path:
        return restore_work_dir(self.data_dir, self.work_dir)


def fetch_base_backup(
    client, loc: S3Location, backup: dict, staging: Path, workers: int, progress: ProgressFile | None = None
) -> dict[str, Any]:
    """Stream base.tar from S3 into ``staging``: one streaming GET or parallel ranged GETs, hashed
    here and fed to ``tar -x`` as they arrive (no local copy of the tar; C does the extraction)."""
    key = s3mod.basebackup_prefix(loc, backup["backup_id"]) + "base.tar"
    version = s3mod.version_arg(backup.get("tar_version_id", ""))
    size = client.head_object(Bucket=loc.bucket, Key=key, **version)["ContentLength"]
    version_id = backup.get("tar_version_id", "")
    if workers > 1:
        # ranges as large as the upload's parts (64 MiB): smaller ones made SeaweedFS read and
        # decrypt the same SSE-KMS part several times
        reader = ParallelRangeReader(
            client,
            loc.bucket,
            key,
            size,
            version_id=version_id,
            part_size=64 * 1024 * 1024,
            workers=workers,
            window=workers,
        )
    else:
        reader = StreamReader(client, loc.bucket, key, version_id=version_id)
    started = time.monotonic()
    # GNU tar refuses absolute member names and names with "..", and --no-same-owner keeps
    # ownership ours (chowned to PostgreSQL's user afterwards).
    tar = subprocess.Popen(
        ["tar", "-x", "-f", "-", "-C", str(staging), "--no-same-owner"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while chunk := reader.read():
            tar.stdin.write(chunk)
            if progress:
                progress.update("base backup", reader.bytes_read, size, "bytes")
        tar.stdin.close()
    except BrokenPipeError:
        pass
    finally:
        reader.close()
    errors = tar.stderr.read().decode(errors="replace").strip()
    if tar.wait() != 0:
        raise RestoreError(f"tar could not extract base.tar of {backup['backup_id']}: {errors[-1000:]}")
    tablespaces = staging / "pg_tblspc"
    if tablespaces.exists() and any(tablespaces.iterdir()):
        raise RestoreError("the base backup uses tablespaces, which this restore does not support yet")
    digest = reader.sha256.hexdigest()
    return {
        "bytes": reader.bytes_read,
        "sha256": digest,
        "seconds": round(time.monotonic() - started, 3),
        "sha256_ok": digest == backup.get("tar_sha256"),
    }


def verify_backup(bindir: Path, staging: Path) -> str:
    tool = bindir / "pg_verifybackup"
    if not tool.exists():
        return "skipped: pg_verifybackup not in pg_bindir"
    result = subprocess.run([str(tool), "--no-parse-wal", "--quiet", str(staging)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RestoreError(
            f"the base backup does not match its backup_manifest: {(result.stderr or result.stdout).strip()[:1500]}. "
            f"Nothing was started; use another base backup (backup_id) or investigate the archive."
        )
    return "ok"


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
        text = str(value).replace("'", "''")
        lines.append(f"{key} = '{text}'" if not isinstance(value, int) else f"{key} = {value}")
    with open(req.data_dir / "postgresql.auto.conf", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    (req.data_dir / "recovery.signal").write_text("")
    (req.data_dir / "standby.signal").unlink(missing_ok=True)


def restore(req: RestoreRequest, client=None, log=lambda _m: None) -> dict[str, Any]:
    """Run the whole restore; returns what was reached and how long each step took."""
    client = client or s3mod.client(req.loc, read_timeout=60)
    check_empty_dir(req.data_dir)
    if req.work.exists() and any(req.work.iterdir()):
        raise RestoreError(f"work_dir {req.work} is not empty; remove it or choose another")
    bindir = pg.resolve_bindir(req.pg_bindir)
    plan = make_plan(client, req.loc, req.target, req.backup_id)
    log(
        f"plan: base backup {plan.backup['backup_id']}, "
        f"{len(plan.segments)} WAL segments ({plan.wal_bytes / 1e6:.0f} MB)"
    )
    if req.check_free_space:
        check_free_space(req.data_dir, plan, req.spool_segments)
    timings: dict[str, float] = {}
    staging = staging_dir(req.data_dir)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    # WAL downloads start now, overlapping the base backup's download and extraction.
    prefetcher = start_prefetcher(req, plan, client, active_workers=req.prefetch_workers_during_base)
    write_restore_pid(req.work)
    progress = ProgressFile(req.work / PROGRESS_FILE)
    try:
        fetched = fetch_base_backup(client, req.loc, plan.backup, staging, req.download_workers, progress)
        timings["base_backup_download_extract_seconds"] = fetched["seconds"]
        log(f"base backup: {fetched['bytes'] / 1e6:.0f} MB downloaded and extracted in {fetched['seconds']:.1f}s")
        if not fetched["sha256_ok"] and plan.backup.get("tar_sha256"):
            raise RestoreError(
                f"base.tar of {plan.backup['backup_id']} has SHA-256 {fetched['sha256']}, its label says "
                f"{plan.backup['tar_sha256']}: the object changed after the backup. Nothing was started."
            )
        started = time.monotonic()
        verified = verify_backup(bindir, staging) if req.verify else "skipped"
        timings["verify_seconds"] = round(time.monotonic() - started, 3)
    except BaseException:
        prefetcher.close()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(req.work, ignore_errors=True)
        raise
    prefetcher.active_workers = req.prefetch_workers
    result = recover(req, plan, staging, log, prefetcher=prefetcher)
    result.update(verify=verified, base_backup_sha256_ok=fetched["sha256_ok"], **timings)
    return result


def staging_dir(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".wgops-staging")


def pg_owner(os_user: str | None) -> tuple[int, int] | None:
    if not os_user:
        return None
    entry = pwd.getpwnam(os_user)
    return entry.pw_uid, entry.pw_gid


def start_prefetcher(req: RestoreRequest, plan: Plan, client, active_workers: int) -> Prefetcher:
    spool = req.work / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    prefetcher = Prefetcher(
        client,
        req.loc,
        plan.segments,
        spool,
        versions=plan.versions,
        workers=req.prefetch_workers,
        window=req.spool_segments,
        owner=pg_owner(pg.run_as_user(req.os_user)),
        deadline_seconds=req.fetch_deadline_seconds,
    )
    prefetcher.active_workers = min(active_workers, req.prefetch_workers)
    prefetcher.start()
    return prefetcher


def recover(
    req: RestoreRequest,
    plan: Plan,
    staging: Path,
    log=lambda _m: None,
    *,
    prefetcher: Prefetcher | None = None,
    restore_command: str = "",
) -> dict[str, Any]:
    """Move the verified base backup from ``staging`` into ``data_dir`` and replay WAL to the target.

    From the moment ``data_dir`` exists until the restore is proven complete, it carries
    ``INCOMPLETE_MARKER``; whatever goes wrong (PostgreSQL stops, a fetch aborts, recovery ends
    short of the plan, an interrupt) stops PostgreSQL, keeps the marker with the reason and raises.
    The file holding the S3 credentials is removed either way.

    ``restore_command`` replaces ``wgops wal-fetch`` (the benchmark's baselines, without a prefetcher).
    """
    bindir = pg.resolve_bindir(req.pg_bindir)
    os_user = pg.run_as_user(req.os_user)
    write_marker(staging, plan, reason="")
    if req.data_dir.exists():
        req.data_dir.rmdir()
    os.replace(staging, req.data_dir)
    req.data_dir.chmod(0o700)
    spool = req.work / "spool"
    for sub in (spool, req.work / "socket", req.work / "bin"):
        sub.mkdir(parents=True, exist_ok=True)
    wrapper = pg.write_hook_wrapper(req.work / "bin", os_user)
    fetch_config = req.work / "wal-fetch.json"
    fd = os.open(fetch_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "location": req.loc.__dict__,
                "spool": str(spool),
                "planned": plan.segments,
                "partial": plan.partial,
                "newest_by_timeline": {str(k): v for k, v in plan.newest_by_timeline.items()},
                "versions": plan.versions,
                "fetch_deadline_seconds": req.fetch_deadline_seconds,
                "log": str(req.work / "fetched.jsonl"),
            },
            fh,
        )
    port = req.port or free_port()
    command = restore_command or f"'{wrapper}' wal-fetch --config '{fetch_config}' %f %p"
    config_written = write_missing_config(req.data_dir)
    if config_written:
        log(f"the base backup has no {' and no '.join(config_written)} (kept outside the data directory): wrote them")
    write_recovery_config(req, command, port)
    pg.chown_tree(req.data_dir, os_user)
    pg.chown_tree(req.work, os_user)
    replay_started = time.monotonic()
    log_file = req.work / "postgres.log"
    fetched_log: list[dict] = []
    try:
        pg.run([str(bindir / "pg_ctl"), "start", "-D", str(req.data_dir), "-l", str(log_file), "-W"], os_user)
        try:
            reached = follow_recovery(req, port, log_file, log, plan.as_dict()["superuser"], planned=plan.segments)
        finally:
            fetched_log = _read_fetch_log(req.work / "fetched.jsonl")
        # with another restore_command (the benchmark's baselines) there is no fetch log to read
        check_reached(plan, reached, fetched_log if not restore_command else None)
    except BaseException as exc:
        with signals_held():  # a second Ctrl-C must not cut the clean-up short
            fetch_config.unlink(missing_ok=True)  # first: it holds the S3 secret
            reason = failure_reason(exc, fetched_log, log_file, plan.target)
            write_marker(req.data_dir, plan, reason)
            stopped = stop_postgres(bindir, req.data_dir, os_user)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: cleaned up, passed on
            raise
        raise RestoreError(
            f"{reason}\nThe new data directory {req.data_dir} is INCOMPLETE and marked so "
            f"({req.data_dir / INCOMPLETE_MARKER}); {stopped}. Do not start it (nor remove "
            f"backup_label, as PostgreSQL's log may suggest: that starts a corrupt cluster). Fix the cause, "
            f"remove '{req.data_dir}' and '{req.work}', and restore again. Kept for diagnosis: {log_file}, "
            f"{req.work / 'fetched.jsonl'}."
        ) from exc
    finally:
        fetch_config.unlink(missing_ok=True)  # it holds the S3 secret
        (req.work / RESTORE_PID_FILE).unlink(missing_ok=True)
        if prefetcher:
            prefetcher.close()
        for leftover in spool.iterdir():
            leftover.unlink()
    (req.data_dir / INCOMPLETE_MARKER).unlink()
    replay_seconds = round(time.monotonic() - replay_started, 3)
    return {
        **plan.as_dict(),
        **reached,
        "port": port,
        "data_dir": str(req.data_dir),
        "wal_segments_fetched": sum(1 for e in fetched_log if e.get("source")),
        "wal_bytes_fetched": sum(e.get("size", 0) for e in fetched_log),
        "wal_segments_prefetched": prefetcher.downloaded if prefetcher else 0,
        "wal_fetch_direct": sum(1 for e in fetched_log if e.get("source") == "s3"),
        "wal_fetch_retries": sum(e.get("retries", 0) for e in fetched_log) + (prefetcher.retries if prefetcher else 0),
        "replay_seconds": replay_seconds,
        "wal_download_seconds": prefetcher.seconds() if prefetcher else 0.0,
        # every planned segment reached PostgreSQL (check_reached), so a prefetch error here was
        # overcome by wal-fetch's own download; it is still said
        "wal_prefetch_error": prefetcher.error if prefetcher else "",
        "config_written": config_written,
    }


def stop_postgres(bindir: Path, data_dir: Path, os_user: str | None) -> str:
    """Stop the restore's PostgreSQL whatever state it is in; says how that went."""
    with contextlib.suppress(Exception):  # it may be going down by itself (Ctrl-C reached it too)
        pg.stop(bindir, data_dir, os_user, "immediate")
    pid = pg.postmaster_pid(data_dir)
    if pid is None:
        return "PostgreSQL was stopped"
    return f"PostgreSQL (PID {pid}) could NOT be stopped: stop it (pg_ctl stop -D '{data_dir}' -m immediate)"


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


def write_marker(data_dir: Path, plan: Plan, reason: str) -> None:
    (data_dir / INCOMPLETE_MARKER).write_text(
        json.dumps(
            {
                "what": "an incomplete weltgewebe.ops restore: never start this cluster",
                "written_at": dt.datetime.now(dt.UTC).isoformat(),
                "base_backup": plan.backup["backup_id"],
                "target": plan.as_dict()["target"],
                "reason": reason,
            },
            indent=2,
        )
        + "\n"
    )


def check_reached(plan: Plan, reached: dict[str, Any], fetched_log: list[dict] | None) -> None:
    """A recovery to ``latest`` must have replayed every planned segment: PostgreSQL ends recovery
    at the first file it cannot get, so ending early looks like success from its side. The reached
    LSN must lie in the newest planned segment, and (with wal-fetch's log) every planned segment
    must have been delivered."""
    if plan.target.kind != "latest" or not plan.segments or reached.get("reached_lsn") is None:
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
POSTGRES_FAILURES = {
    "recovery ended before configured recovery target was reached": (
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
                if replay_lsn:
                    # planned segments up to the one being replayed (timelines aside: numbers grow)
                    at = lsn_to_int(replay_lsn) // WAL_SEGMENT_SIZE
                    done = bisect.bisect_right(planned_numbers, at)
                    detail = f"replayed to {replay_lsn}, last commit {replay_ts or '-'}"
                    progress.update("WAL replay", done, len(planned_numbers), "segments", detail=detail)
                if now - last_report > 5:
                    log(f"recovery: replayed to {replay_lsn}, last commit {replay_ts}")
                    last_report = now
                if not in_recovery or (req.target.action == "pause" and pause == "paused"):
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
