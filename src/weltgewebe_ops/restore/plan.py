"""The restore's plan: the base backup and every WAL segment from it to the target, checked against
the archive (no gap, the target within reach) and against the free space before anything is written."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..archive import basebackup
from ..archive import preflight as archive
from ..archive.names import WAL_SEGMENT_SIZE, int_to_lsn, lsn_to_int, segment_number
from ..core import s3 as s3mod
from ..core.settings import S3Location
from .target import RestoreError, Target, choose_backup


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
    # what the archive stores of the planned WAL (compressed): what crosses the link
    wal_stored_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_backup": self.backup["backup_id"],
            "base_backup_bytes": self.backup.get("tar_size"),
            "base_backup_stop_time": self.backup["stop_time"],
            "superuser": basebackup.superuser(self.backup),
            "target": {
                "kind": self.target.kind,
                "value": self.target.value,
                "inclusive": self.target.inclusive,
                "action": self.target.action,
                "timeline": self.target.timeline,
            },
            "wal_segments": len(self.segments),
            "wal_bytes": self.wal_bytes,
            "wal_stored_bytes": self.wal_stored_bytes,
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
    return plan_from_inventory(client, loc, archive.list_inventory(client, loc), target, backup_id)


def plan_from_inventory(client, loc: S3Location, inv: archive.Inventory, target: Target, backup_id: str = "") -> Plan:
    """The plan from an archive as listed: this collection's (``make_plan``) or another format's
    mapped onto the same inventory (a Barman Cloud archive), so both get the same checks."""
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
    versions = {key.rsplit("/", 1)[1]: version for key, version in inv.versions.items() if f"/{inv.wal_dir}/" in key}
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
        wal_stored_bytes=cont["stored_bytes"],
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
