"""A Barman Cloud archive as a restore source: CloudNativePG's (its Barman Cloud plugin runs
barman 3.19.1), and anyone's who archives with ``barman-cloud-wal-archive`` and
``barman-cloud-backup``.

The layout under the destination path (``s3://bucket/<path>``), per server name:
``<server>/base/<backup id>/backup.info`` (``key=value``: begin/end WAL, LSN and time, timeline,
server version, system id, status) beside ``data.tar[.gz]``; WAL under
``<server>/wals/<timeline+log, 16 hex>/<segment>[.gz]``, ``.history`` files at the root of ``wals/``.

The inventory is read in Python from the listing and each ``backup.info`` and mapped onto this
collection's own archive inventory, so the plan gets the same checks (the backup that reaches the
target, WAL continuity from it along the timelines, a time or LSN target beyond the archive
refused). The restore uses barman's own tools, the code path production uses:
``barman-cloud-restore`` for the base backup, ``barman-cloud-wal-restore`` (parallel, spooled) as
``restore_command``; recovery is followed and checked as for this collection's archive
(``recovery.recover``). Credentials reach barman through a 0700 script of PostgreSQL's user,
never a command line, and the script is removed when the restore ends.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import archive, pg
from .. import s3 as s3mod
from ..compliance import bucket_facts
from ..settings import S3Location
from ..walnames import SEGMENT_RE, segment_number
from .markers import check_empty_dir, staging_dir, write_restore_pid
from .plan import Plan, plan_from_inventory
from .recovery import recover
from .request import RestoreRequest
from .target import RestoreError, Target


@dataclass(frozen=True)
class BarmanCloud:
    """Where the archive is (``loc.prefix`` is the destination path inside the bucket), the server
    name (CloudNativePG: the source cluster's name) and barman's bin directory."""

    loc: S3Location
    server: str
    bindir: Path

    @property
    def url(self) -> str:
        return f"s3://{self.loc.bucket}/{self.loc.prefix}".rstrip("/")

    @property
    def server_prefix(self) -> str:
        return f"{self.loc.prefix.strip('/')}/{self.server}/".lstrip("/")

    def tool(self, name: str) -> Path:
        path = self.bindir / f"barman-cloud-{name}"
        if not path.exists():
            raise RestoreError(
                f"{path} does not exist: barman_bindir must be the bin directory of barman[cloud] "
                "(make barman builds one in .cache/barman)"
            )
        return path

    def version(self) -> str:
        out = subprocess.run([str(self.tool("restore")), "--version"], capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip()

    def write_hook(self, path: Path, os_user: str | None) -> Path:
        """A 0700 script of PostgreSQL's user that runs ``barman-cloud-<tool>`` with the
        credentials in its environment (``<script> <tool> args...``): it holds the secret."""
        lines = [
            "#!/bin/sh",
            "# weltgewebe.ops: barman-cloud with this archive's credentials (removed when the restore ends)",
            f"export AWS_ACCESS_KEY_ID={shlex.quote(self.loc.access_key)}",
            f"export AWS_SECRET_ACCESS_KEY={shlex.quote(self.loc.secret_key)}",
            f"export AWS_DEFAULT_REGION={shlex.quote(self.loc.region)}",
            'tool="$1"; shift',
            f'exec {shlex.quote(str(self.bindir))}/barman-cloud-"$tool"'
            + (f" --endpoint-url {shlex.quote(self.loc.endpoint_url)}" if self.loc.endpoint_url else "")
            + ' "$@"',
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        pg.chown_tree(path, os_user)
        return path


# ---------------------------------------------------------------------------------- the inventory
def parse_backup_info(text: str) -> dict[str, str]:
    """``backup.info``: ``key=value`` lines (values as barman writes them, quotes kept)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith((" ", "#")):
            fields[key.strip()] = value.strip()
    return fields


def _time(text: str) -> str:
    """barman's ``2026-12-02 14:35:18.665246+00:00`` as ISO 8601."""
    return dt.datetime.fromisoformat(text).isoformat()


def label_of(info: dict[str, str], key: str, size: int) -> dict[str, Any]:
    """A ``backup.info`` as this collection's base backup label (what the plan reads)."""
    return {
        "backup_id": key.rstrip("/").split("/")[-2],
        "format": "barman_cloud",
        "start_wal_file": info["begin_wal"],
        "start_lsn": info["begin_xlog"],
        "stop_lsn": info["end_xlog"],
        "start_time": _time(info["begin_time"]),
        "stop_time": _time(info["end_time"]),
        "timeline": int(info["timeline"]),
        "server_version_num": int(info["version"]),
        "system_identifier": info.get("systemid", ""),
        "status": info.get("status", ""),
        # what a restore writes to disk (the data directory's size), for the free space check
        "tar_size": int(info.get("cluster_size") or 0) or size,
        "stored_bytes": size,
        "compression": info.get("compression", ""),
    }


def list_inventory(client, bc: BarmanCloud) -> tuple[archive.Inventory, list[dict[str, str]]]:
    """The archive as listed (versions considered, as for this collection's), and problems found
    reading it (a backup.info that cannot be read, a backup that is not DONE)."""
    inv = archive.Inventory(wal_dir="wals")
    problems: list[dict[str, str]] = []
    listed = s3mod.list_versions(client, bc.loc.bucket, bc.server_prefix)
    data_sizes: dict[str, int] = {}
    for key, history in sorted(listed.items()):
        original = history.original
        if original is None:
            continue
        rest = key[len(bc.server_prefix) :]
        if rest.endswith("/backup.info"):
            # barman writes it at the start (STARTED) and again at the end (DONE): the newest counts
            newest = next((v for v in reversed(history.versions) if not v.delete_marker), original)
            inv.versions[key] = newest.version_id
            continue
        inv.versions[key] = original.version_id
        if history.later:
            inv.rewritten.append(history)
        name = rest.rsplit("/", 1)[-1]
        if rest.startswith("base/") and name.startswith("data"):
            backup_id = rest.split("/")[1]
            data_sizes[backup_id] = data_sizes.get(backup_id, 0) + original.size
        elif rest.startswith("wals/"):
            plain = name.removesuffix(".gz").removesuffix(".bz2").removesuffix(".snappy")
            if SEGMENT_RE.match(plain):
                tli, segno = int(plain[:8], 16), segment_number(plain)
                inv.segments.setdefault(tli, {})[segno] = archive.Segment(
                    plain, tli, segno, original.size, original.last_modified
                )
            elif plain.endswith(".history"):
                inv.histories[int(plain[:8], 16)] = key
            elif plain.endswith(".partial"):
                inv.partials.append(plain)
    for key in (
        k for k in inv.versions if k.endswith("/backup.info") and k[len(bc.server_prefix) :].startswith("base/")
    ):
        try:
            info = parse_backup_info(inv.read(client, bc.loc, key).decode())
            label = label_of(info, key, 0)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            problems.append({"code": "backup_info_unreadable", "message": f"{key}: {exc}"})
            continue
        label["stored_bytes"] = data_sizes.get(label["backup_id"], 0)
        label["tar_size"] = label["tar_size"] or label["stored_bytes"]
        if label["status"] != "DONE":
            problems.append(
                {
                    "code": "backup_not_done",
                    "message": f"base backup {label['backup_id']} has status {label['status']}: not used",
                }
            )
            continue
        if not label["stored_bytes"]:
            problems.append(
                {"code": "backup_data_missing", "message": f"base backup {label['backup_id']} has no data.tar*"}
            )
            continue
        inv.labels.append(label)
    inv.labels.sort(key=lambda label: label["backup_id"])
    return inv, problems


# ---------------------------------------------------------------------------------- preflight
NOT_CHECKED = [
    "each object's encryption and retention: the preflight lists the archive, it does not HEAD every object",
    "barman's own checksums of the base backup: barman-cloud-restore reads the tar as it is",
]


def preflight(client, bc: BarmanCloud, now: dt.datetime, recovery_major: int = 0, backup_id: str = "") -> dict:
    bucket, bucket_problems, warnings = bucket_facts(client, bc.loc)
    inv, problems = list_inventory(client, bc)
    newest = inv.newest_segment()
    info: dict[str, Any] = {
        "bucket": bucket,
        "warnings": warnings,
        "source": "barman_cloud",
        "location": f"{bc.url}/{bc.server}",
        "backups": [
            {k: lb[k] for k in ("backup_id", "start_lsn", "stop_lsn", "start_time", "stop_time", "timeline")}
            for lb in inv.labels
        ],
        "newest_segment": newest.name if newest else None,
        "newest_segment_at": newest.last_modified.isoformat() if newest else None,
        "timelines": sorted(inv.segments),
        "problems": problems + [p.as_dict() for p in bucket_problems + archive.rewritten_problems(inv)],
        "not_checked": list(NOT_CHECKED),
        "chosen_backup": None,
        "chosen_backup_server_version_num": 0,
        "chosen_backup_superuser": "postgres",
        "rpo_exposure_seconds": round((now - newest.last_modified).total_seconds(), 3) if newest else None,
        "archive_method": "barman-cloud-wal-archive",
        "streamed_segment": None,
    }
    if not inv.labels:
        info["problems"].append(
            {"code": "no_base_backup", "message": f"{bc.url}/{bc.server} holds no complete base backup"}
        )
        return info
    chosen = next((lb for lb in inv.labels if lb["backup_id"] == backup_id), None) if backup_id else inv.labels[-1]
    if chosen is None:
        info["problems"].append({"code": "no_such_backup", "message": f"no base backup {backup_id}"})
        return info
    cont = archive.continuity(client, bc.loc, inv, chosen)
    info["chosen_backup"] = chosen
    info["chosen_backup_server_version_num"] = chosen["server_version_num"]
    info["continuity"] = {k: v for k, v in cont.items() if k != "needed"}
    if cont["missing"]:
        info["problems"].append(
            {
                "code": "wal_gap",
                "message": f"WAL missing after base backup {chosen['backup_id']}: {', '.join(cont['missing'][:5])}",
            }
        )
    major = chosen["server_version_num"] // 10000
    if recovery_major and major and recovery_major != major:
        info["problems"].append(
            {
                "code": "postgres_major_differs",
                "message": f"base backup {chosen['backup_id']} is PostgreSQL {major}; the recovery host's is "
                f"{recovery_major}: a physical backup restores only with its own major version (drill_pg_bindir)",
            }
        )
    return info


# ---------------------------------------------------------------------------------- restore
def make_plan(client, bc: BarmanCloud, target: Target, backup_id: str = "") -> Plan:
    inv, _problems = list_inventory(client, bc)
    return plan_from_inventory(client, bc.loc, inv, target, backup_id)


def restore(req: RestoreRequest, bc: BarmanCloud, client=None, log=lambda _m: None, parallel: int = 8) -> dict:
    """Restore with barman's own tools into ``req.data_dir`` and follow recovery to the target."""
    client = client or s3mod.client(bc.loc, read_timeout=60)
    check_empty_dir(req.data_dir)
    if req.work.exists() and any(req.work.iterdir()):
        raise RestoreError(f"work_dir {req.work} is not empty; remove it or choose another")
    os_user = req.run_as
    version = bc.version()
    plan = make_plan(client, bc, req.target, req.backup_id)
    backup_id = plan.backup["backup_id"]
    log(f"plan: base backup {backup_id} (barman), {len(plan.segments)} WAL segments")
    staging = staging_dir(req.data_dir)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    pg.chown_tree(staging, os_user)
    req.work.mkdir(parents=True, exist_ok=True)
    write_restore_pid(req.work)
    hook = bc.write_hook(req.work / "bin" / "barman-cloud", os_user)
    spool = req.work / "barman-spool"
    spool.mkdir(parents=True, exist_ok=True)
    pg.chown_tree(req.work, os_user)
    try:
        started = time.monotonic()
        result = subprocess.run(
            [str(hook), "restore", bc.url, bc.server, backup_id, str(staging)],
            capture_output=True,
            text=True,
            env=pg.user_env(),
            cwd="/",
            **_as(os_user),
        )
        base_seconds = time.monotonic() - started
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RestoreError(
                f"barman-cloud-restore of base backup {backup_id} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-1500:]}. Nothing was started."
            )
        log(f"base backup {backup_id}: restored by barman-cloud-restore in {base_seconds:.1f}s")
        command = f"{shlex.quote(str(hook))} wal-restore --parallel {parallel} --spool-dir {shlex.quote(str(spool))} "
        command += f"{shlex.quote(bc.url)} {shlex.quote(bc.server)} %f %p"
        reached = recover(req, plan, staging, log, restore_command=command)
    finally:
        hook.unlink(missing_ok=True)  # it holds the secret
        shutil.rmtree(spool, ignore_errors=True)
    return {
        **reached,
        "source": "barman_cloud",
        "tool": version,
        "location": f"{bc.url}/{bc.server}",
        "base_backup_download_extract_seconds": round(base_seconds, 3),
        "base_backup_stored_bytes": plan.backup.get("stored_bytes"),
        "system_identifier": plan.backup.get("system_identifier"),
    }


def _as(os_user: str | None) -> dict:
    from ..procs import as_user

    return as_user(os_user)
