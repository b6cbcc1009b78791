"""A pgBackRest repository in S3 as a restore source (pgBackRest is what most PostgreSQL teams run).

The backups come from ``pgbackrest info --output=json`` (each backup's label, start/stop time,
LSN and WAL, the stanza's PostgreSQL version and system id); the WAL from the repository's listing
(``<repo>/archive/<stanza>/<archive id>/<timeline+log>/<segment>-<sha1>[.gz|.lz4|.zst|...]``,
``.history`` files beside the folders). Both are mapped onto this collection's archive inventory,
so the plan gets the same checks as every source (the backup that reaches the target, WAL
continuity along the timelines, targets beyond the archive refused).

The restore is pgBackRest's own: ``pgbackrest restore --type=preserve`` writes the backup into the
staging directory (its checksums checked by pgBackRest), and ``pgbackrest archive-get`` is
``restore_command``; the recovery settings (target, ``archive_mode=off``) and the following of
recovery are this collection's (``recovery.recover``). The repository's credentials are in a 0600
configuration file of PostgreSQL's user in the restore's work directory, removed when it ends.
pgBackRest speaks S3 over HTTPS only; ``verify_tls`` false accepts a self-signed certificate.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..archive import preflight as archive
from ..archive.compliance import bucket_facts
from ..archive.names import segment_number
from ..core import pg
from ..core import s3 as s3mod
from ..core.files import write_private
from ..core.procs import as_user
from ..core.settings import S3Location
from . import sources
from .plan import Plan, plan_from_inventory
from .request import RestoreRequest
from .target import RestoreError, Target

ARCHIVED = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(\.[a-z0-9]+)?\Z")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history(\.[a-z0-9]+)?\Z")


@dataclass(frozen=True)
class PgBackRest:
    """The repository (``loc.prefix`` is its ``repo1-path`` inside the bucket; ``loc.endpoint_url``
    its HTTPS endpoint) and the stanza."""

    loc: S3Location
    stanza: str
    verify_tls: bool = True

    def config_text(self, pg_path: Path | None, work: Path, pg_options: dict[str, str] | None = None) -> str:
        url = urlsplit(self.loc.endpoint_url or f"https://s3.{self.loc.region}.amazonaws.com")
        if url.scheme != "https":
            raise RestoreError(f"pgBackRest speaks S3 over HTTPS only: {self.loc.endpoint_url} is not an https:// URL")
        lines = [
            "[global]",
            "repo1-type=s3",
            f"repo1-path=/{self.loc.prefix.strip('/')}",
            f"repo1-s3-bucket={self.loc.bucket}",
            f"repo1-s3-endpoint={url.hostname}",
            f"repo1-storage-port={url.port or 443}",
            f"repo1-s3-region={self.loc.region}",
            f"repo1-s3-key={self.loc.access_key}",
            f"repo1-s3-key-secret={self.loc.secret_key}",
            "repo1-s3-uri-style=path",
            f"repo1-storage-verify-tls={'y' if self.verify_tls else 'n'}",
            "log-level-console=warn",
            "log-level-file=off",
            f"lock-path={work / 'lock'}",
            f"spool-path={work / 'spool'}",
            f"log-path={work / 'log'}",
            "",
            f"[{self.stanza}]",
        ]
        if pg_path:
            lines.append(f"pg1-path={pg_path}")
        lines += [f"pg1-{key}={value}" for key, value in (pg_options or {}).items()]
        return "\n".join(lines) + "\n"

    def write_config(
        self, work: Path, os_user: str | None, pg_path: Path | None = None, pg_options: dict[str, str] | None = None
    ) -> Path:
        """A 0600 configuration of ``os_user``'s in ``work`` (it holds the credentials)."""
        for sub in ("lock", "spool", "log"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        path = work / "pgbackrest.conf"
        write_private(path, self.config_text(pg_path, work, pg_options))
        pg.chown_tree(work, os_user)
        return path

    def argv(self, config: Path, *args: str) -> list[str]:
        return [_binary(), f"--config={config}", f"--stanza={self.stanza}", *args]

    def run(self, config: Path, *args: str, os_user: str | None = None, timeout: float = 3600) -> str:
        result = subprocess.run(
            self.argv(config, *args), capture_output=True, text=True, cwd="/", timeout=timeout,
            env=pg.user_env(), **as_user(os_user),
        )  # fmt: skip
        if result.returncode != 0:
            raise RestoreError(
                f"pgbackrest {' '.join(args)} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
            )
        return result.stdout

    def info(self) -> dict[str, Any]:
        """``pgbackrest info --output=json`` of the stanza (read-only)."""
        with tempfile.TemporaryDirectory(prefix="wgops-pgbackrest-") as tmp:
            config = self.write_config(Path(tmp), None)
            stanzas = json.loads(self.run(config, "--output=json", "info", timeout=300))
        stanza = next((s for s in stanzas if s.get("name") == self.stanza), None)
        if stanza is None:
            raise RestoreError(f"pgBackRest knows no stanza {self.stanza} in s3://{self.loc.bucket}/{self.loc.prefix}")
        return stanza

    def version(self) -> str:
        return subprocess.run([_binary(), "version"], capture_output=True, text=True, timeout=60).stdout.strip()


def _binary() -> str:
    found = shutil.which("pgbackrest")
    if not found:
        raise RestoreError("pgbackrest is not installed: apt-get install pgbackrest")
    return found


def _client(pb: PgBackRest):
    if not pb.verify_tls:  # said once in the preflight's facts, not once per request
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return s3mod.client(pb.loc, read_timeout=60, verify=pb.verify_tls)


# ---------------------------------------------------------------------------------- the inventory
def list_inventory(client, pb: PgBackRest, stanza: dict[str, Any]) -> tuple[archive.Inventory, list[dict]]:
    """The backups ``info`` gave and the WAL of the stanza's current database as listed."""
    inv = archive.Inventory(wal_dir="archive")
    problems: list[dict[str, str]] = []
    status = stanza.get("status", {})
    if status.get("code", 0) not in (0, 2):  # 2: no backup yet (said below)
        problems.append({"code": "stanza_status", "message": f"pgBackRest says: {status.get('message')}"})
    dbs = {db["id"]: db for db in stanza.get("db", [])}
    current = max(dbs.values(), key=lambda db: db["id"], default=None)
    for backup in stanza.get("backup", []):
        db = dbs.get(backup["database"]["id"], {})
        if backup.get("error"):
            problems.append({"code": "backup_error", "message": f"backup {backup['label']} has errors: not used"})
            continue
        if backup["database"]["id"] != (current or {}).get("id"):
            continue  # of an earlier cluster (stanza-upgrade): not restorable onto this archive's WAL
        inv.labels.append(
            {
                "backup_id": backup["label"],
                "format": "pgbackrest",
                "type": backup.get("type"),
                "start_wal_file": backup["archive"]["start"],
                "start_lsn": backup["lsn"]["start"],
                "stop_lsn": backup["lsn"]["stop"],
                "start_time": dt.datetime.fromtimestamp(backup["timestamp"]["start"], dt.UTC).isoformat(),
                "stop_time": dt.datetime.fromtimestamp(backup["timestamp"]["stop"], dt.UTC).isoformat(),
                "timeline": int(backup["archive"]["start"][:8], 16),
                "server_version_num": int(str(db.get("version", "0")).split(".")[0]) * 10000,
                "system_identifier": str(db.get("system-id", "")),
                "tar_size": backup.get("info", {}).get("size") or 0,
                "stored_bytes": backup.get("info", {}).get("repository", {}).get("size") or 0,
            }
        )
    inv.labels.sort(key=lambda label: label["stop_time"])
    if current is None:
        return inv, problems
    archive_id = f"{current['version']}-{current['id']}"
    prefix = f"{pb.loc.prefix.strip('/')}/archive/{pb.stanza}/{archive_id}/".lstrip("/")
    for key, history in sorted(s3mod.list_versions(client, pb.loc.bucket, prefix).items()):
        original = history.original
        if original is None:
            continue
        inv.versions[key] = original.version_id
        if history.later:
            inv.rewritten.append(history)
        name = key.rsplit("/", 1)[1]
        if match := ARCHIVED.match(name):
            plain = match.group(1)
            tli, segno = int(plain[:8], 16), segment_number(plain)
            inv.segments.setdefault(tli, {})[segno] = archive.Segment(
                plain, tli, segno, original.size, original.last_modified
            )
        elif match := HISTORY.match(name):
            inv.histories[int(match.group(1), 16)] = key
    return inv, problems


# ---------------------------------------------------------------------------------- preflight
NOT_CHECKED = [
    "each object's encryption and retention: the preflight lists the repository, it does not HEAD every object",
    "the backup's files against pgBackRest's manifest: pgbackrest restore checks them while it restores",
]


def preflight(pb: PgBackRest, now: dt.datetime, recovery_major: int = 0, backup_id: str = "") -> dict[str, Any]:
    client = _client(pb)
    stanza = pb.info()
    bucket, bucket_problems, warnings = bucket_facts(client, pb.loc)
    inv, problems = list_inventory(client, pb, stanza)
    facts = {
        "source": "pgbackrest",
        "location": f"s3://{pb.loc.bucket}/{pb.loc.prefix} stanza {pb.stanza}",
        "bucket": bucket,
        "warnings": warnings,
        "cipher": stanza.get("cipher"),
        "problems": problems + [p.as_dict() for p in bucket_problems],
        "not_checked": list(NOT_CHECKED),
        "archive_method": "pgbackrest archive-push",
    }
    return sources.preflight_facts(
        client, pb.loc, inv, now=now, recovery_major=recovery_major, backup_id=backup_id, facts=facts
    )


# ---------------------------------------------------------------------------------- restore
def make_plan(pb: PgBackRest, target: Target, backup_id: str = "") -> Plan:
    client = _client(pb)
    inv, _problems = list_inventory(client, pb, pb.info())
    return plan_from_inventory(client, pb.loc, inv, target, backup_id)


def restore(req: RestoreRequest, pb: PgBackRest, log=lambda _m: None) -> dict[str, Any]:
    """``pgbackrest restore`` into staging, then recovery with ``pgbackrest archive-get``."""
    sources.refuse_used_dirs(req)
    version = pb.version()
    plan = make_plan(pb, req.target, req.backup_id)
    backup_id = plan.backup["backup_id"]
    log(f"plan: backup {backup_id} (pgBackRest), {len(plan.segments)} WAL segments")
    work = req.work / "pgbackrest"
    config = work / "pgbackrest.conf"

    def prepare() -> str:
        pb.write_config(work, req.run_as, pg_path=req.data_dir)
        return " ".join(pb.argv(config, "archive-get")) + ' %f "%p"'

    def put_base_backup(staging: Path) -> None:
        pb.run(config, f"--pg1-path={staging}", f"--set={backup_id}", "--type=preserve", "restore", os_user=req.run_as)

    result = sources.restore_with(
        req, plan, prepare=prepare, put_base_backup=put_base_backup, tool=version, log=log, secrets=[config]
    )
    location = f"s3://{pb.loc.bucket}/{pb.loc.prefix} stanza {pb.stanza}"
    return {**result, "source": "pgbackrest", "tool": version, "location": location}
