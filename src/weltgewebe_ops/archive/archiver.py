"""Production WAL archiving around a PostgreSQL server (role pg_archive): base backups on a
schedule, the archive's health as Prometheus metrics, and retention.

Retention never deletes an object that is still under Object Lock (S3 would refuse anyway, this
says so first), never a base backup among the newest ``keep``, and never a WAL file the oldest
kept backup needs (its start segment and everything after, on its timeline and later ones;
timeline history files always stay). It is a dry run unless told to apply, and it reports what it
would remove and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from ..core import s3 as s3mod
from ..core.pg import conninfo
from ..core.settings import S3Location
from . import basebackup
from .names import SEGMENT_RE, WAL_SEGMENT_SIZE, int_to_lsn, lsn_to_int, segment_name, segment_number, segment_parts


@dataclass(frozen=True)
class Server:
    """How the archive's jobs reach the PostgreSQL server: as its OS user through the socket
    directory (peer authentication), or over TCP with a password."""

    host: str = "/var/run/postgresql"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    bindir: str = ""

    def dsn(self, dbname: str = "postgres") -> str:
        return conninfo(self.host, self.port, self.user, self.password, dbname)


def system_identifier(server: Server) -> str:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]


def base_backup(loc: S3Location, server: Server, *, if_none: bool = False, log=lambda _m: None) -> dict[str, Any]:
    """A base backup into the archive; with ``if_none`` only when the archive has none of this
    cluster yet (the role's first backup: running it again changes nothing)."""
    from ..core.pg import resolve_bindir

    if if_none:
        system_id = system_identifier(server)  # once, not per label
        own = [lb for lb in basebackup.list_labels(s3mod.client(loc), loc) if lb["system_identifier"] == system_id]
        if own:
            return {
                "changed": False,
                "backup_id": own[-1]["backup_id"],
                "detail": f"{len(own)} base backup(s) of this cluster",
            }
    label = basebackup.take_base_backup(
        resolve_bindir(server.bindir), server.port, server.password, loc, host=server.host, user=server.user, log=log
    )
    return {
        "changed": True,
        "backup_id": label["backup_id"],
        "detail": f"{label['tar_size']} bytes in {label['seconds']} s",
    }


# ---------------------------------------------------------------------------------- metrics
def _epoch(moment: dt.datetime | None) -> float:
    return moment.timestamp() if moment else 0.0


def health(loc: S3Location, server: Server, now: dt.datetime | None = None, slot: str = "") -> dict[str, Any]:
    """The archive's health as figures: what PostgreSQL says it archived (pg_stat_archiver), how
    long written WAL has waited for the archive, and how old the newest base backup is.

    With ``slot`` (streaming: pg_receivewal archives, archive_mode is off and pg_stat_archiver
    says nothing) the archive itself is the witness: how far the objects of the segment being
    written reach, and when the newest of them arrived; plus whether the slot is in use and how
    much WAL it holds back on the server."""
    now = now or dt.datetime.now(dt.UTC)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # the look's instant and the transactions, read BEFORE the position: every commit before
        # the instant lies at or before the position, and every later one moves xmax (coverage.py)
        looked_at, xmin, xmax = conn.execute(
            "SELECT statement_timestamp(), pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text"
            " FROM pg_current_snapshot() AS s"
        ).fetchone()
        row = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal,"
            " last_failed_time, pg_is_in_recovery(),"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,"
            " current_setting('archive_mode'), current_setting('archive_timeout'),"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
            " (SELECT system_identifier::text FROM pg_control_system())"
            " FROM pg_stat_archiver"
        ).fetchone()
        in_recovery = row[6]
        position = _stream_position(conn, slot) if slot and not in_recovery else None
        archived, last_wal, last_time, failed, last_failed_wal, last_failed_time, in_recovery, current, mode = row[:9]
        timeout, lsn, system_id = row[9:]
        # WAL written since the last archived segment (a completed one not archived, or the current
        # one): the archive lags by the time since that last success; nothing waiting means 0
        waiting = bool(current) and (not last_wal or _segment_key(current) > _segment_key(last_wal))
        lag = round((now - last_time).total_seconds(), 3) if waiting and last_time else 0.0
        client = s3mod.client(loc)
        labels = basebackup.list_labels(client, loc)
        newest = max((dt.datetime.fromisoformat(lb["stop_time"]) for lb in labels), default=None)
        stream = _stream_health(client, loc, position, newest, now) if position else {}
        if stream:
            last_wal, last_time = stream.pop("last_archived"), stream.pop("last_archived_time")
            lag, archived_upto = stream["lag_seconds"], stream.pop("archived_upto")
        else:  # classic: the end of the newest segment PostgreSQL archived (it archives in order)
            archived_upto = _segment_end(last_wal) if last_wal and current and last_wal[:8] == current[:8] else None
        look = None
        if lsn and not in_recovery:
            look = {
                "at": looked_at.isoformat(), "lsn": lsn, "timeline": int(current[:8], 16),
                "system_identifier": system_id, "method": "streaming" if stream else "classic", "xmax": xmax,
                "idle": xmin == xmax, "archived_upto": archived_upto,
                **_tail_commits(conn, archived_upto, lsn),
            }  # fmt: skip
    return {
        "archive_mode": mode,
        "archive_timeout": timeout,
        "in_recovery": in_recovery,
        "archived_count": archived,
        "last_archived_wal": last_wal or "",
        "last_archived_time": last_time.isoformat() if last_time else None,
        "failed_count": failed,
        "last_failed_wal": last_failed_wal or "",
        "last_failed_time": last_failed_time.isoformat() if last_failed_time else None,
        "current_wal": current or "",
        "lag_seconds": lag if not in_recovery else 0.0,
        "base_backups": len(labels),
        "newest_base_backup_age_seconds": round((now - newest).total_seconds(), 3) if newest else None,
        "look": look,
        "_last_archived_epoch": _epoch(last_time),
        "_last_failed_epoch": _epoch(last_failed_time),
        **stream,
    }


def _tail_commits(conn, archived_upto: int | None, lsn: str) -> dict[str, Any]:
    """How many transaction records (commits, aborts, prepares) the WAL beyond the archive holds,
    read by pg_walinspect (PostgreSQL 15+; CREATE EXTENSION pg_walinspect in the database this
    connects to, and pg_read_server_files for a role that is not a superuser): 0 means the WAL the
    archive lacks carries no transaction, so the archive holds every commit. None when the tail
    could not be read (``tail``: why); something not yet flushed counts as a transaction."""
    if archived_upto is None or archived_upto >= lsn_to_int(lsn):
        return {"tail_commits": None, "tail": "no tail beyond the archive" if archived_upto is not None else ""}
    try:
        with conn.transaction():
            count, unflushed = conn.execute(
                "SELECT count(*) FILTER (WHERE resource_manager = 'Transaction'),"
                " pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn()"
                " FROM pg_get_wal_records_info(%s::pg_lsn, pg_current_wal_flush_lsn())",
                [int_to_lsn(archived_upto)],
            ).fetchone()
    except psycopg.Error as exc:
        return {"tail_commits": None, "tail": f"not inspected: {str(exc).strip().splitlines()[0]}"}
    return {"tail_commits": count + int(bool(unflushed)), "tail": "inspected with pg_walinspect"}


def _stream_position(conn, slot: str) -> dict[str, Any]:
    """Streaming, from the server: where it writes (segment and offset), since when it runs, and
    the slot (in use, WAL it holds back; -1: no such slot)."""
    current, offset, started = conn.execute(
        "SELECT file_name, file_offset, pg_postmaster_start_time() FROM pg_walfile_name_offset(pg_current_wal_lsn())"
    ).fetchone()
    row = conn.execute(
        "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()
    active, retained = row if row else (False, None)
    # exactly at a segment boundary PostgreSQL names the segment before, with offset 0: the
    # position is that segment's end, and the archive must hold all of it
    offset = offset or WAL_SEGMENT_SIZE
    return {"slot": slot, "active": bool(active), "retained": -1 if retained is None else int(retained),
            "current": current, "offset": offset, "started": started}  # fmt: skip


def _stream_health(
    client, loc: S3Location, position: dict[str, Any], newest_backup: dt.datetime | None, now: dt.datetime
) -> dict[str, Any]:
    """Streaming: how long the WAL written beyond what the archive holds has waited (an upper
    bound: since the newest object of the segment being written or the one before, else since the
    newest base backup, else since the server started)."""
    from .stream import contiguous, parse_chunk

    current, offset = position["current"], position["offset"]
    previous = _previous_segment(current)
    objects = []  # (name, when it arrived, the byte range of the current segment it holds)
    for name in (previous, current):
        prefix = s3mod.wal_key(loc, name)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                base = item["Key"].rsplit("/", 1)[-1]
                chunk = parse_chunk(base)
                covers = None
                if chunk and chunk[0] == current:
                    # a chunk ends at its last byte that is not zero; WAL records are 8-byte aligned,
                    # so the padding after the last one is held too (a restore that cannot reach
                    # that far shows it: coverage counts only where replay got to)
                    covers = (chunk[1], -(-chunk[2] // 8) * 8)
                elif base == current:
                    covers = (0, 1 << 30)
                objects.append((base, item["LastModified"], covers))
    archived_to = contiguous([covers for _n, _t, covers in objects if covers])
    # the segment before, streamed in chunks but not yet archived whole: its end is still waiting
    names = {name for name, _t, _c in objects}
    previous_waits = previous not in names and any(name.startswith(previous + ".partial.") for name in names)
    newest = max(objects, key=lambda o: o[1], default=None)
    waited_since = newest[1] if newest else (newest_backup or position["started"])
    caught_up = archived_to >= offset and not previous_waits
    # how far the archive holds the server's WAL from its start, as an LSN (None: a hole before)
    start = segment_number(current) * WAL_SEGMENT_SIZE
    archived_upto = None if previous_waits else start + min(archived_to, WAL_SEGMENT_SIZE)
    lag = 0.0 if caught_up else round(max(0.0, (now - waited_since).total_seconds()), 3)
    return {
        "slot": position["slot"],
        "slot_active": position["active"],
        "slot_retained_bytes": position["retained"],
        "unarchived_bytes": max(0, offset - archived_to),
        "lag_seconds": lag,
        "archived_upto": archived_upto,
        "last_archived": newest[0] if newest else "",
        "last_archived_time": newest[1] if newest else None,
    }


def _previous_segment(name: str) -> str:
    number = segment_number(name)
    return segment_name(segment_parts(name)[0], number - 1) if number > 0 else name


def _segment_end(name: str) -> int | None:
    """The LSN at the end of segment ``name`` (None for a history or other non-segment file; a
    backup history file names the segment it follows, archived before it)."""
    if not SEGMENT_RE.match(name[:24]) or name.endswith(".partial"):
        return None
    return (segment_number(name[:24]) + 1) * WAL_SEGMENT_SIZE


def _segment_key(name: str) -> tuple[int, int, int]:
    return segment_parts(name) if SEGMENT_RE.match(name[:24]) else (0, 0, 0)


METRICS = (
    ("wgops_archive_up", "1 when the figures below could be read", lambda h: 1),
    ("wgops_archive_last_archived_timestamp_seconds", "When PostgreSQL last archived a WAL file",
     lambda h: h["_last_archived_epoch"]),
    ("wgops_archive_lag_seconds", "Seconds written WAL has waited for the archive (0: nothing waits)",
     lambda h: h["lag_seconds"]),
    ("wgops_archive_failed_total", "WAL archiving failures since the statistics were reset",
     lambda h: h["failed_count"]),
    ("wgops_archive_last_failed_timestamp_seconds", "When archiving last failed", lambda h: h["_last_failed_epoch"]),
    ("wgops_archive_base_backups", "Base backups in the archive", lambda h: h["base_backups"]),
    ("wgops_archive_newest_base_backup_age_seconds", "Age of the newest base backup (-1: none)",
     lambda h: -1 if h["newest_base_backup_age_seconds"] is None else h["newest_base_backup_age_seconds"]),
)  # fmt: skip


STREAM_METRICS = (
    ("wgops_archive_stream_slot_active", "1 when the receiver is connected to its replication slot",
     lambda h: int(h["slot_active"])),
    ("wgops_archive_stream_slot_retained_bytes", "WAL the slot holds back on the server (-1: no such slot)",
     lambda h: h["slot_retained_bytes"]),
    ("wgops_archive_stream_unarchived_bytes", "Bytes of the segment being written that the archive does not hold",
     lambda h: h["unarchived_bytes"]),
)  # fmt: skip


def prometheus_text(figures: dict[str, Any] | None) -> str:
    """The Prometheus text format; ``None`` (the figures could not be read) gives wgops_archive_up 0.
    Streaming figures (``health(slot=...)``) add the slot's metrics."""
    lines = []
    metrics = (METRICS + (STREAM_METRICS if "slot" in figures else ())) if figures else METRICS[:1]
    for name, help_text, value in metrics:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value(figures) if figures else 0}"]
    if figures and figures["last_archived_wal"]:
        lines += [
            "# HELP wgops_archive_last_archived_wal_info The last archived WAL file",
            "# TYPE wgops_archive_last_archived_wal_info gauge",
            f'wgops_archive_last_archived_wal_info{{wal="{figures["last_archived_wal"]}"}} 1',
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- retention
def retention(loc: S3Location, keep: int, *, apply: bool = False, now: dt.datetime | None = None) -> dict[str, Any]:
    """What retention removes and keeps; with ``apply`` it removes it (object versions whose lock
    has expired, nothing else)."""
    if keep < 1:
        raise ValueError("keep must be at least 1: retention never removes the newest base backup")
    now = now or dt.datetime.now(dt.UTC)
    client = s3mod.client(loc, read_timeout=60)
    labels = sorted(basebackup.list_labels(client, loc), key=lambda lb: lb["stop_time"])
    kept, older = labels[-keep:], labels[:-keep]
    result: dict[str, Any] = {
        "applied": apply,
        "kept_backups": [lb["backup_id"] for lb in kept],
        "remove": [],
        "locked": [],
        "removed": [],
        "bytes": 0,
    }
    if not kept:
        result["detail"] = "no base backup in the archive: nothing is removed"
        return result
    oldest = kept[0]
    timeline, start = oldest["timeline"], _segment_key(oldest["start_wal_file"])
    candidates = []
    for label in older:
        prefix = s3mod.basebackup_prefix(loc, label["backup_id"])
        candidates += [(h, f"base backup {label['backup_id']} is older than the {keep} kept")
                       for h in s3mod.list_versions(client, loc.bucket, prefix).values()]  # fmt: skip
    for key, history in s3mod.list_versions(client, loc.bucket, s3mod.wal_prefix(loc)).items():
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".history") or not SEGMENT_RE.match(name[:24]):
            continue  # timeline histories stay: every later timeline's recovery reads them
        tli, log, seg = _segment_key(name)
        if tli <= timeline and (log, seg) < start[1:]:
            candidates.append((history, f"before {oldest['start_wal_file']}, where the oldest kept backup starts"))
    for history, reason in candidates:
        for version in history.versions:
            if version.delete_marker:
                continue
            head = client.head_object(Bucket=loc.bucket, Key=history.key, VersionId=version.version_id)
            until = head.get("ObjectLockRetainUntilDate")
            entry = {"key": history.key, "version_id": version.version_id, "size": version.size, "reason": reason}
            if until and until > now:
                result["locked"].append({**entry, "locked_until": until.isoformat()})
                continue
            result["remove"].append(entry)
            result["bytes"] += version.size
    if apply:
        for entry in result["remove"]:
            client.delete_object(Bucket=loc.bucket, Key=entry["key"], VersionId=entry["version_id"])
            result["removed"].append(entry["key"])
    result["detail"] = (
        f"{'removed' if apply else 'would remove'} {len(result['remove'])} object versions "
        f"({result['bytes']} bytes); {len(result['locked'])} older ones still locked; kept "
        f"{', '.join(result['kept_backups'])} and every WAL file from {oldest['start_wal_file']} on"
    )
    return result
