"""Point-in-time recovery from the S3 archive: plan, stream the base backup, replay WAL, promote.

The restore never writes to S3 and never touches the source: it reads the archive with the
credentials it is given, builds a new data directory, and runs PostgreSQL there with
``archive_mode=off`` so the recovered cluster cannot archive into the source's prefix.

Speed: the base backup is read with one streaming GET (or parallel ranged GETs) and extracted
from the download's buffers as it arrives, each file checked against the backup's manifest on the
way (no local copy of the tar, no second read); WAL is prefetched into a bounded spool by parallel
downloads ahead of replay, so ``restore_command`` is mostly a hard link made by a shell script.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..core import pg
from ..core import s3 as s3mod
from ..core.progress import PROGRESS_FILE, ProgressFile
from .download import fetch_base_backup, fetch_manifest, pg_owner, start_prefetcher
from .markers import INCOMPLETE_MARKER, check_empty_dir, staging_dir, stop_restore, write_restore_pid
from .plan import Plan, check_free_space, make_plan
from .recovery import follow_recovery, recover
from .request import RestoreRequest
from .target import ACTIONS, TARGET_KINDS, RestoreError, Target, choose_backup, parse_time

__all__ = [
    "ACTIONS", "INCOMPLETE_MARKER", "TARGET_KINDS", "Plan", "RestoreError", "RestoreRequest", "Target",
    "check_empty_dir", "choose_backup", "follow_recovery", "make_plan", "parse_time", "recover", "restore",
    "staging_dir", "stop_restore",
]  # fmt: skip


def restore(req: RestoreRequest, client=None, log=lambda _m: None) -> dict[str, Any]:
    """Run the whole restore; returns what was reached and how long each step took."""
    client = client or s3mod.client(req.loc, read_timeout=60)
    check_empty_dir(req.data_dir)
    if req.work.exists() and any(req.work.iterdir()):
        raise RestoreError(f"work_dir {req.work} is not empty; remove it or choose another")
    # missing binaries and a PostgreSQL user that cannot be made fail now, not after the download
    os_user, _ = req.run_as, req.bindir
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
    pg.chown_tree(staging, os_user)  # files are extracted as PostgreSQL's: no ownership pass afterwards
    # prefetch_workers_during_base WAL downloads run beside the base backup, all of them after it
    prefetcher = start_prefetcher(req, plan, active_workers=req.prefetch_workers_during_base)
    write_restore_pid(req.work)
    progress = ProgressFile(req.work / PROGRESS_FILE)
    backup_id = plan.backup["backup_id"]
    try:
        # before gigabytes are downloaded: PostgreSQL's user must be able to run restore_command's hook
        pg.write_hook_wrapper(req.work / "bin", os_user)
        manifest = fetch_manifest(client, req.loc, plan.backup) if req.verify else None
        fetched = fetch_base_backup(
            client, req.loc, plan.backup, staging, req.download_workers, progress,
            manifest=manifest, owner=pg_owner(os_user),
        )  # fmt: skip
        timings["base_backup_download_extract_seconds"] = fetched["seconds"]
        tar = f" ({fetched['compression']}; {fetched['tar_bytes'] / 1e6:.0f} MB of tar)"
        log(
            f"base backup: {fetched['bytes'] / 1e6:.0f} MB{tar if fetched['compression'] != 'none' else ''} "
            f"downloaded and extracted in {fetched['seconds']:.1f}s, "
            f"{fetched['files']} files {'checked against backup_manifest' if manifest else 'not checked (verify off)'}"
        )
        # the spool fills while PostgreSQL starts: replay begins with WAL at hand
        prefetcher.active_workers = req.prefetch_workers
        if not fetched["sha256_ok"] and plan.backup.get("tar_sha256"):
            raise RestoreError(
                f"base.tar of {backup_id} has SHA-256 {fetched['sha256']}, its label says "
                f"{plan.backup['tar_sha256']}: the object changed after the backup. Nothing was started."
            )
        if fetched["problems"]:
            raise RestoreError(
                f"the base backup does not match its backup_manifest: {fetched['problems']}. Nothing was started; "
                f"use another base backup (backup_id) or investigate the archive."
            )
    except BaseException:
        prefetcher.close()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(req.work, ignore_errors=True)
        raise
    result = recover(req, plan, staging, log, prefetcher=prefetcher)
    result.update(
        verify=fetched["verify"],
        base_backup_sha256_ok=fetched["sha256_ok"],
        # what crossed the link for the base backup (less than its tar when compressed)
        base_backup_stored_bytes=fetched["bytes"],
        base_backup_compression=fetched["compression"],
        **timings,
    )
    return result
