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
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..archive import preflight as archive
from ..archive.compliance import bucket_facts
from ..archive.names import SEGMENT_RE, segment_number
from ..core import pg
from ..core import s3 as s3mod
from ..core.files import write_private
from ..core.procs import as_user
from ..core.settings import S3Location
from . import sources
from .plan import Plan, plan_from_inventory
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
        write_private(path, "\n".join(lines) + "\n", mode=0o700)
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


def label_of(info: dict[str, str], backup_id: str, stored_bytes: int) -> dict[str, Any]:
    """A ``backup.info`` as this collection's base backup label (what the plan reads)."""
    return {
        "backup_id": backup_id,
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
        "tar_size": int(info.get("cluster_size") or 0) or stored_bytes,
        "stored_bytes": stored_bytes,
        "compression": info.get("compression", ""),
    }


# barman's statuses of a backup being taken
IN_PROGRESS = ("STARTED", "WAITING_FOR_WALS", "EMPTY")


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
            backup_id = key.rsplit("/", 2)[-2]
            label = label_of(parse_backup_info(inv.read(client, bc.loc, key).decode()), backup_id,
                             data_sizes.get(backup_id, 0))  # fmt: skip
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            problems.append({"code": "backup_info_unreadable", "message": f"{key}: {exc}"})
            continue
        if label["status"] != "DONE":
            # one being taken now is not a fault (a scheduled backup may run during the drill)
            if label["status"] not in IN_PROGRESS:
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
    facts = {
        "source": "barman_cloud",
        "location": f"{bc.url}/{bc.server}",
        "bucket": bucket,
        "warnings": warnings,
        "problems": problems + [p.as_dict() for p in bucket_problems],
        "not_checked": list(NOT_CHECKED),
        "archive_method": "barman-cloud-wal-archive",
    }
    return sources.preflight_facts(
        client, bc.loc, inv, now=now, recovery_major=recovery_major, backup_id=backup_id, facts=facts
    )


# ---------------------------------------------------------------------------------- restore
def make_plan(client, bc: BarmanCloud, target: Target, backup_id: str = "") -> Plan:
    inv, _problems = list_inventory(client, bc)
    return plan_from_inventory(client, bc.loc, inv, target, backup_id)


def restore(req: RestoreRequest, bc: BarmanCloud, client=None, log=lambda _m: None, parallel: int = 8) -> dict:
    """Restore with barman's own tools into ``req.data_dir`` and follow recovery to the target."""
    client = client or s3mod.client(bc.loc, read_timeout=60)
    sources.refuse_used_dirs(req)
    version = bc.version()
    plan = make_plan(client, bc, req.target, req.backup_id)
    backup_id = plan.backup["backup_id"]
    log(f"plan: base backup {backup_id} (barman), {len(plan.segments)} WAL segments")
    hook, spool = req.work / "bin" / "barman-cloud", req.work / "barman-spool"

    def prepare() -> str:
        bc.write_hook(hook, req.run_as)
        spool.mkdir(parents=True, exist_ok=True)
        pg.chown_tree(req.work, req.run_as)
        return (
            f"{shlex.quote(str(hook))} wal-restore --parallel {parallel} --spool-dir {shlex.quote(str(spool))} "
            f"{shlex.quote(bc.url)} {shlex.quote(bc.server)} %f %p"
        )

    def put_base_backup(staging: Path) -> None:
        result = subprocess.run(
            [str(hook), "restore", bc.url, bc.server, backup_id, str(staging)],
            capture_output=True, text=True, env=pg.user_env(), cwd="/", **as_user(req.run_as),
        )  # fmt: skip
        if result.returncode != 0:
            raise RestoreError(f"exit {result.returncode}: {(result.stderr or result.stdout).strip()[-1500:]}")

    try:
        result = sources.restore_with(
            req, plan, prepare=prepare, put_base_backup=put_base_backup, tool=version, log=log, secrets=[hook]
        )
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return {**result, "source": "barman_cloud", "tool": version, "location": f"{bc.url}/{bc.server}"}
