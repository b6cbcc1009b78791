"""What every restore source of a base backup and its WAL shares, whatever wrote it.

A source answers inventory, preflight, plan and restore (DESIGN.md). This collection's own archive
(``archive.py``, ``restore/__init__.py``), a Barman Cloud archive (``barmancloud.py``) and a
pgBackRest repository (``pgbackrest.py``) map what they list onto one ``archive.Inventory``; from
there the preflight's findings, the plan and its checks, the staging directory, the following of
recovery and the check that it reached its target are the same code (here and in ``plan.py`` and
``recovery.py``). A source brings only what is its own: how to list, how to put a base backup into
a directory, and the ``restore_command``. A daily dump (``pgdump.py``) has no WAL: it answers the
same questions its own way.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..archive import preflight as archive
from ..core import pg
from ..core.settings import S3Location
from .markers import check_empty_dir, staging_dir, write_restore_pid
from .plan import Plan
from .recovery import recover
from .request import RestoreRequest
from .target import RestoreError

BACKUP_FACTS = ("backup_id", "type", "start_lsn", "stop_lsn", "start_time", "stop_time", "timeline")


def preflight_facts(
    client,
    loc: S3Location,
    inv: archive.Inventory,
    *,
    now: dt.datetime,
    recovery_major: int,
    backup_id: str,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """The preflight of an archive as listed: ``facts`` (the source's own: name, location, bucket,
    problems found listing it, what it could not check) completed with the backups, the newest WAL
    and the RPO exposure, the chosen backup, WAL continuity from it and its major version against
    the recovery's. Problems are added, never raised."""
    newest = inv.newest_segment()
    info: dict[str, Any] = {
        "backups": [
            {
                k: lb.get(k)
                for k in ("backup_id", "type", "start_lsn", "stop_lsn", "start_time", "stop_time", "timeline")
            }
            for lb in inv.labels
        ],
        "newest_segment": newest.name if newest else None,
        "newest_segment_at": newest.last_modified.isoformat() if newest else None,
        "timelines": sorted(inv.segments),
        "chosen_backup": None,
        "chosen_backup_server_version_num": 0,
        "chosen_backup_superuser": "postgres",
        "rpo_exposure_seconds": round((now - newest.last_modified).total_seconds(), 3) if newest else None,
        "streamed_segment": None,
        **facts,
    }
    info["problems"] = list(facts.get("problems", [])) + [p.as_dict() for p in archive.rewritten_problems(inv)]
    if not inv.labels:
        info["problems"].append({"code": "no_base_backup", "message": f"{info['location']} holds no complete backup"})
        return info
    chosen = next((lb for lb in inv.labels if lb["backup_id"] == backup_id), None) if backup_id else inv.labels[-1]
    if chosen is None:
        info["problems"].append(
            {"code": "no_such_backup", "message": f"{info['location']} holds no backup {backup_id}"}
        )
        return info
    cont = archive.continuity(client, loc, inv, chosen)
    info["chosen_backup"] = chosen
    info["chosen_backup_server_version_num"] = chosen["server_version_num"]
    info["continuity"] = {k: v for k, v in cont.items() if k != "needed"}
    if cont["missing"]:
        info["problems"].append(
            {
                "code": "wal_gap",
                "message": f"WAL missing after backup {chosen['backup_id']}: {', '.join(cont['missing'][:5])}",
            }
        )
    major = chosen["server_version_num"] // 10000
    if recovery_major and major and recovery_major != major:
        info["problems"].append(
            {
                "code": "postgres_major_differs",
                "message": f"backup {chosen['backup_id']} is PostgreSQL {major}; the recovery host's is "
                f"{recovery_major}: a physical backup restores only with its own major version (drill_pg_bindir)",
            }
        )
    return info


def restore_with(
    req: RestoreRequest,
    plan: Plan,
    *,
    prepare: Callable[[], str],
    put_base_backup: Callable[[Path], None],
    tool: str,
    log: Callable[[str], None] = lambda _m: None,
    secrets: Sequence[Path] = (),
) -> dict[str, Any]:
    """The work directory made (``prepare`` writes what the source's tool needs there and returns
    its ``restore_command``), the base backup put into a staging directory by the tool
    (``put_base_backup``), then recovery with that command, followed and checked
    (``recovery.recover``: the marker, stopping PostgreSQL on any failure). What fails before
    recovery leaves nothing behind, so the restore can simply run again. ``secrets`` (the files
    ``prepare`` writes the credentials into) are removed when the restore ends, either way, and by
    its guard should this process be killed."""
    backup_id = plan.backup["backup_id"]
    req.work.mkdir(parents=True, exist_ok=True)
    write_restore_pid(req.work)
    staging = staging_dir(req.data_dir)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    pg.chown_tree(staging, req.run_as)
    started = time.monotonic()
    try:
        try:
            restore_command = prepare()
            put_base_backup(staging)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(req.work, ignore_errors=True)
            if isinstance(exc, RestoreError):
                raise RestoreError(
                    f"{tool} could not restore base backup {backup_id}: {exc}. Nothing was started."
                ) from exc
            raise
        base_seconds = time.monotonic() - started
        log(f"base backup {backup_id}: restored by {tool} in {base_seconds:.1f}s")
        reached = recover(req, plan, staging, log, restore_command=restore_command, secrets=secrets)
    finally:
        for secret in secrets:
            secret.unlink(missing_ok=True)
    return {
        **reached,
        "base_backup_download_extract_seconds": round(base_seconds, 3),
        "base_backup_stored_bytes": plan.backup.get("stored_bytes"),
        "system_identifier": plan.backup.get("system_identifier"),
    }


def refuse_used_dirs(req: RestoreRequest) -> None:
    """A restore never writes into a data or work directory that holds anything; nothing is made."""
    check_empty_dir(req.data_dir)
    if req.work.exists() and any(req.work.iterdir()):
        raise RestoreError(f"work_dir {req.work} is not empty; remove it or choose another")
