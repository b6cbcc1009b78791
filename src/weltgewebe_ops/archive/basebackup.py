"""Base backups into S3: pg_basebackup streamed as tar, never a full local copy.

``pg_basebackup -D - -Ft -X none`` writes one tar to stdout, ``backup_manifest`` inside it. We
stream that tar to S3 as a multipart upload (SSE-KMS) while a tap reads ``backup_label`` and
``backup_manifest`` out of the same bytes. WAL comes from the archive (``-X none``): PostgreSQL
waits until the backup's last segment is archived before pg_basebackup returns.

Objects, uploaded in this order (the label last: a backup without a label is incomplete)::

    <prefix>/basebackups/<id>/base.tar, backup_manifest, label.json
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from ..core import codec
from ..core import s3 as s3mod
from ..core.pg import conninfo
from ..core.settings import S3Location
from .names import segment_of_lsn

WANTED = ("backup_label", "backup_manifest")


class BaseBackupError(RuntimeError):
    pass


class TarTap:
    """A file-like reader over ``source`` that also parses the tar it carries in a thread and
    keeps the members named in ``wanted`` (small files only)."""

    def __init__(self, source, wanted=WANTED):
        self._source = source
        self.members: dict[str, bytes] = {}
        self.error: BaseException | None = None
        read_fd, write_fd = os.pipe()
        self._writer = os.fdopen(write_fd, "wb")
        self._thread = threading.Thread(target=self._parse, args=(os.fdopen(read_fd, "rb"), set(wanted)), daemon=True)
        self._thread.start()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._writer.write(data)
        else:
            self._close_writer()
        return data

    def _close_writer(self) -> None:
        if not self._writer.closed:
            self._writer.close()

    def _parse(self, reader, wanted: set[str]) -> None:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if member.name in wanted and member.isfile():
                        self.members[member.name] = tar.extractfile(member).read()
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
        finally:
            while reader.read(1 << 20):  # drain so the writer never blocks
                pass
            reader.close()

    def finish(self) -> dict[str, bytes]:
        self._close_writer()
        self._thread.join()
        if self.error:
            raise BaseBackupError(f"could not read the backup's tar stream: {self.error}")
        return self.members


def parse_backup_label(text: str) -> dict[str, str]:
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    start = re.match(r"([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", fields.get("START WAL LOCATION", ""))
    if not start:
        raise BaseBackupError("backup_label has no START WAL LOCATION")
    return {
        "start_lsn": start.group(1),
        "start_wal_file": start.group(2),
        "start_time": fields.get("START TIME", ""),
        "label": fields.get("LABEL", ""),
        "start_timeline": fields.get("START TIMELINE", ""),
    }


def take_base_backup(
    bindir: Path,
    port: int,
    password: str,
    loc: S3Location,
    *,
    host: str = "127.0.0.1",
    user: str = "postgres",
    dbname: str = "postgres",
    log=lambda _m: None,
) -> dict:
    """Take a base backup of the cluster on ``host``:``port`` into S3; returns its label. ``host``
    may be a socket directory and ``password`` empty (peer authentication, as the OS user)."""
    with psycopg.connect(conninfo(host, port, user, password, dbname), autocommit=True) as conn:
        # the bootstrap superuser (OID 10): a restore logs in as it. It is not always "postgres":
        # the official image names it after POSTGRES_USER (Weltgewebe's: welt)
        version, version_num, system_id, superuser = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
            "(SELECT system_identifier::text FROM pg_control_system()), "
            "(SELECT rolname FROM pg_roles WHERE oid = 10)"
        ).fetchone()
    backup_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    prefix = s3mod.basebackup_prefix(loc, backup_id)
    client = s3mod.client(loc, read_timeout=120)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    proc = subprocess.Popen(
        [
            str(bindir / "pg_basebackup"),
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            user,
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "-c",
            "fast",
            "-l",
            f"wgops {backup_id}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **({"PGPASSWORD": password} if password else {})},
    )
    tap = TarTap(proc.stdout)
    # stored as loc.compression says (the label records it); the tar's own size and SHA-256 are
    # counted before compression: a restore checks what it extracted, not only what it downloaded
    stored = codec.CompressingReader(tap, loc.compression)
    try:
        uploaded = s3mod.upload_stream(client, loc, prefix + "base.tar", stored, metadata=stored.metadata())
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise BaseBackupError(f"pg_basebackup failed (exit {proc.returncode}): {stderr.strip()[-1500:]}")
    members = tap.finish()
    stopped_at = datetime.now(UTC)
    if "backup_manifest" not in members or "backup_label" not in members:
        raise BaseBackupError(f"the backup's tar lacks {[m for m in WANTED if m not in members]}")
    manifest = json.loads(members["backup_manifest"])
    wal_range = manifest["WAL-Ranges"][-1]
    label_fields = parse_backup_label(members["backup_label"].decode())
    timeline = int(wal_range["Timeline"])
    label = {
        "backup_id": backup_id,
        "format": "tar",
        "start_lsn": wal_range["Start-LSN"],
        "stop_lsn": wal_range["End-LSN"],
        "start_wal_file": label_fields["start_wal_file"],
        "stop_wal_file": segment_of_lsn(timeline, wal_range["End-LSN"]),
        "timeline": timeline,
        "start_time": started_at.isoformat(),
        "stop_time": stopped_at.isoformat(),
        "server_start_time": label_fields["start_time"],
        "server_version": version,
        "server_version_num": version_num,
        "system_identifier": system_id,
        "superuser": superuser,
        "tar_size": stored.raw_size,
        "tar_sha256": stored.raw_sha256.hexdigest(),
        # how base.tar is stored (core.codec), and the stored object's own size and SHA-256
        "compression": loc.compression,
        "stored_size": uploaded["size"],
        "stored_sha256": uploaded["sha256"],
        # the restore reads exactly this (locked) version, whatever is uploaded over it later
        "tar_version_id": uploaded["version_id"],
        "manifest_sha256": s3mod.sha256_b64(members["backup_manifest"]),
        "seconds": round(time.monotonic() - started, 3),
    }
    s3mod.put_bytes(client, loc, prefix + "backup_manifest", members["backup_manifest"], "application/json")
    s3mod.put_bytes(client, loc, prefix + "label.json", json.dumps(label, indent=2).encode(), "application/json")
    log(
        f"base backup {backup_id}: {stored.raw_size / 1e6:.1f} MB, stored {loc.compression} "
        f"{uploaded['size'] / 1e6:.1f} MB, in {label['seconds']:.1f}s"
    )
    return label


def superuser(label: dict) -> str:
    """Who a restore of this backup logs in as: the bootstrap superuser its label recorded
    (labels written before it was recorded: postgres)."""
    return label.get("superuser") or "postgres"


def list_labels(client, loc: S3Location) -> list[dict]:
    """Every complete base backup's label, oldest first."""
    labels = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=loc.bucket, Prefix=s3mod.basebackup_prefix(loc)):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/label.json"):
                body = client.get_object(Bucket=loc.bucket, Key=obj["Key"])["Body"].read()
                labels.append(json.loads(body))
    return sorted(labels, key=lambda label: label["backup_id"])
