"""Typed settings shared by the library, the CLI and the Ansible modules.

Every name of the Weltgewebe contract (tables, stream, subjects) is a setting, so the tool can
follow the upstream repository as it moves (see docs/upstream.md) by changing variables only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import codec
from .files import write_private

ARCHIVE_METHODS = ("classic", "streaming", "barman_cloud", "pgbackrest")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and what to do."""


@dataclass(frozen=True)
class S3Location:
    """Where the WAL archive and the base backups live, and how to reach them."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    prefix: str = "weltgewebe/pg-primary"
    kms_key_id: str = ""
    # how WAL files, streamed chunks and base backups are stored from now on (core.codec: zstd, lz4,
    # none); each object records its own, so an archive written with another (or before there was
    # compression) restores as it is
    compression: str = codec.DEFAULT

    def __post_init__(self) -> None:
        try:
            codec.check(self.compression)
        except codec.CodecError as exc:
            raise SettingsError(f"the archive's compression: {exc}") from exc

    def redacted(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["secret_key"] = "********"  # noqa: S105 - the redaction mask, not a password
        return data


@dataclass(frozen=True)
class ContractNames:
    """Names of the Weltgewebe data contract (tables, stream, subjects, message ids, consumers).

    ``tool_schema`` is this tool's own schema on a recovery database (checkpoints, quarantine, the
    ids excluded after a restore): never part of the application's migrations."""

    accounts_table: str = "domain_accounts"
    nodes_table: str = "domain_nodes"
    edges_table: str = "domain_edges"
    # a Knoten's conversation and its messages (the sandbox's schema writes their events)
    conversations_table: str = "domain_conversations"
    messages_table: str = "domain_messages"
    outbox_table: str = "domain_outbox"
    consumptions_table: str = "domain_event_consumptions"
    projection_state_table: str = "domain_projection_state"
    migrations_table: str = "_sqlx_migrations"
    receipts_consumer: str = "weltgewebe-api-domain-receipts-v1"
    faden_view: str = "faden_view"
    tool_schema: str = "wgops"
    stream: str = "WELTGEWEBE_DOMAIN"
    subject_prefix: str = "weltgewebe"
    msg_id_prefix: str = "domain-outbox-"
    duplicate_window_seconds: int = 120

    @property
    def stream_subjects(self) -> str:
        return f"{self.subject_prefix}.domain.>"

    def subject_for(self, event_type: str) -> str:
        return f"{self.subject_prefix}.{event_type}"

    def msg_id(self, outbox_id: int) -> str:
        return f"{self.msg_id_prefix}{outbox_id}"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the sandbox. 0 means: choose a free one when the sandbox first starts."""

    s3: int = 18333
    kms: int = 18334
    s3_master: int = 19333
    s3_volume: int = 18380
    s3_filer: int = 18888
    s3_admin: int = 18646
    # HTTPS beside HTTP, for pgBackRest (it speaks HTTPS only): used with archive_method pgbackrest
    s3_https: int = 18443
    postgres: int = 15432
    nats: int = 14222
    api: int = 18081


@dataclass(frozen=True)
class SandboxSettings:
    """Everything the embedded sandbox needs; persisted in ``<state_dir>/sandbox.json``."""

    state_dir: str
    ports: Ports = field(default_factory=Ports)
    names: ContractNames = field(default_factory=ContractNames)
    bucket: str = "weltgewebe-wal"
    archive_prefix: str = "weltgewebe/pg-primary"
    region: str = "us-east-1"
    kms_key_id: str = "alias/weltgewebe-wal"
    # how the archive stores what it writes (core.codec): zstd, lz4 or none
    compression: str = codec.DEFAULT
    object_lock_days: int = 7
    archive_timeout_seconds: int = 60
    # classic: archive_command (wgops wal-push) with archive_timeout | streaming: pg_receivewal on a
    # slot, the segment being written archived in chunks every stream_interval_seconds (walstream)
    archive_method: str = "classic"
    stream_interval_seconds: float = 2.0
    # classic and streaming: how often the coverage service records that the archive holds all WAL
    # the server wrote (coverage.py; a quiet database's RPO); 0: no coverage service
    coverage_interval_seconds: float = 60.0
    # barman_cloud: barman-cloud-wal-archive --gzip as archive_command and barman-cloud-backup, as
    # CloudNativePG's Barman Cloud plugin archives, into <archive_prefix>/barman, server name
    # barman_server; barman_bindir is barman[cloud]'s bin directory (make barman)
    barman_bindir: str = ""
    barman_server: str = "pg-primary"
    # pgbackrest: pgbackrest archive-push as archive_command and pgbackrest backup, into a
    # repository at <archive_prefix>/pgbackrest through SeaweedFS's HTTPS port (self-signed)
    pgbackrest_stanza: str = "pg-primary"
    # wal-push gives up (non-zero exit; PostgreSQL keeps the segment and retries) after this long.
    wal_push_deadline_seconds: int = 60
    pg_bindir: str = ""
    pg_os_user: str = "wgsandbox"
    # the role the services log in as (a recovery from a dump: the dump's owner, e.g. welt)
    pg_user: str = "postgres"
    database: str = "weltgewebe"
    # A directory of sqlx-style <version>_<name>.up.sql migrations to build the schema from, instead
    # of the built-in contract (a team's own schema). "" = the built-in contract.
    migrations_dir: str = ""
    # What the projector service keeps up to date (receipts, projection_state, faden_view).
    projections: tuple[str, ...] = ("receipts", "projection_state", "faden_view")
    # the ports picked free when the sandbox was made (asked for as 0, e.g. PORTS=auto): the sandbox
    # may move one of them when another program holds it by the next start (Sandbox.claim_port)
    auto_ports: tuple[str, ...] = ()
    # Generated on first start, kept in the state file (mode 0600), never printed by Ansible.
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_readonly_access_key: str = ""
    s3_readonly_secret_key: str = ""
    pg_password: str = ""

    # --- derived paths ---------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def settings_file(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pg_data_dir(self) -> Path:
        return self.root / "pg" / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.root / "pg" / "socket"

    @property
    def archive_config_file(self) -> Path:
        return self.root / "pg" / "archive.json"

    @property
    def dump_dir(self) -> Path:
        """Where the sandbox's daily dumps land (Weltgewebe's /var/backups/weltgewebe/postgres,
        as copied off the host: the disaster leaves it)."""
        return self.root / "backups" / "postgres"

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / "ground-truth"

    # --- derived connection settings --------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports.nats}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def dsn(self, database: str | None = None) -> str:
        return (
            f"host=127.0.0.1 port={self.ports.postgres} dbname={database or self.database} "
            f"user={self.pg_user} password={self.pg_password} connect_timeout=5"
        )

    def s3_location(self, readonly: bool = False) -> S3Location:
        return S3Location(
            endpoint_url=self.s3_endpoint,
            bucket=self.bucket,
            access_key=self.s3_readonly_access_key if readonly else self.s3_access_key,
            secret_key=self.s3_readonly_secret_key if readonly else self.s3_secret_key,
            region=self.region,
            prefix=self.archive_prefix,
            kms_key_id=self.kms_key_id,
            compression=self.compression,
        )

    def barman_location(self, readonly: bool = False) -> S3Location:
        """Where the sandbox's Barman Cloud archive is (archive_method barman_cloud)."""
        loc = self.s3_location(readonly)
        return S3Location(**{**loc.__dict__, "prefix": f"{self.archive_prefix}/barman"})

    @property
    def barman_hook(self) -> Path:
        """The 0700 script that runs barman-cloud with the archive's credentials."""
        return self.root / "pg" / "barman-cloud"

    def pgbackrest_location(self, readonly: bool = False) -> S3Location:
        """The sandbox's pgBackRest repository (archive_method pgbackrest): S3 over HTTPS."""
        loc = self.s3_location(readonly)
        return S3Location(
            **{**loc.__dict__, "endpoint_url": f"https://127.0.0.1:{self.ports.s3_https}",
               "prefix": f"{self.archive_prefix}/pgbackrest"}
        )  # fmt: skip

    @property
    def pgbackrest_config(self) -> Path:
        """pgBackRest's configuration of the primary (0600: it holds the archive's credentials)."""
        return self.root / "pg" / "pgbackrest" / "pgbackrest.conf"

    def postgresql_conf(self, wrapper: Path) -> dict[str, Any]:
        """The sandbox primary's settings; ``wrapper`` runs this library's CLI (its archive hook)."""
        return {
            "listen_addresses": "127.0.0.1",
            "port": self.ports.postgres,
            "unix_socket_directories": str(self.pg_socket_dir),
            "wal_level": "replica",
            # streaming: pg_receivewal archives every segment (archive_command would race it with
            # other bytes after a segment switch)
            "archive_mode": "off" if self.archive_method == "streaming" else "on",
            "archive_command": (
                f"'{self.barman_hook}' wal-archive --gzip s3://{self.bucket}/{self.archive_prefix}/barman "
                f"{self.barman_server} %p"
                if self.archive_method == "barman_cloud"
                else f"pgbackrest --config='{self.pgbackrest_config}' --stanza={self.pgbackrest_stanza} archive-push %p"
                if self.archive_method == "pgbackrest"
                else f"'{wrapper}' wal-push --config '{self.archive_config_file}' "
                f"--deadline {self.wal_push_deadline_seconds} %p"
            ),
            "archive_timeout": self.archive_timeout_seconds,
            "max_wal_senders": 5,
            "track_commit_timestamp": "on",
            "log_line_prefix": "%m [%p] ",
        }

    def env_lines(self) -> list[str]:
        """The connection settings as shell KEY=VALUE lines (`make sandbox-env`)."""
        values = {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{self.ports.kms}",
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "WGOPS_S3_BUCKET": self.bucket,
            "WGOPS_S3_PREFIX": self.archive_prefix,
            "WGOPS_S3_READONLY_ACCESS_KEY_ID": self.s3_readonly_access_key,
            "WGOPS_S3_READONLY_SECRET_ACCESS_KEY": self.s3_readonly_secret_key,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.ports.postgres),
            "PGUSER": self.pg_user,
            "PGPASSWORD": self.pg_password,
            "PGDATABASE": self.database,
            "DATABASE_URL": f"postgresql://postgres:{self.pg_password}@127.0.0.1:{self.ports.postgres}/{self.database}",
            "NATS_URL": self.nats_url,
            "WGOPS_API_URL": self.api_url,
            "WGOPS_SANDBOX_STATE_DIR": str(self.root),
        }
        return [f"{key}={shlex.quote(value)}" for key, value in values.items()]

    # --- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxSettings:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown sandbox settings: {', '.join(unknown)}")
        if "state_dir" not in data or not data["state_dir"]:
            raise SettingsError("state_dir is required")
        data["state_dir"] = str(Path(data["state_dir"]).expanduser().resolve())
        if data.get("migrations_dir"):
            data["migrations_dir"] = str(Path(data["migrations_dir"]).expanduser().resolve())
        data["ports"] = settings_part(Ports, data.get("ports") or {}, "ports")
        if data.get("archive_method", "classic") not in ARCHIVE_METHODS:
            raise SettingsError(f"archive_method {data['archive_method']!r}: choose {' or '.join(ARCHIVE_METHODS)}")
        if "checkpoints_table" in (data.get("names") or {}):
            raise SettingsError(
                f"the sandbox in {data['state_dir']} was made by weltgewebe.ops 0.1, whose schema is not "
                "Weltgewebe's: re-create it (make sandbox-down PURGE=1, then make sandbox-up)"
            )
        data["names"] = settings_part(ContractNames, data.get("names") or {}, "names")
        if "projections" in data:
            data["projections"] = tuple(data["projections"] or ())
        data["auto_ports"] = tuple(data.get("auto_ports") or ())
        return cls(**data)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.settings_file.with_suffix(".tmp")
        write_private(tmp, json.dumps(self.to_dict(), indent=2, sort_keys=True))
        os.replace(tmp, self.settings_file)

    @classmethod
    def load(cls, state_dir: str | os.PathLike[str]) -> SandboxSettings:
        path = Path(state_dir) / "sandbox.json"
        if not path.exists():
            raise SettingsError(f"no sandbox in {state_dir} (missing {path.name}); start one with `make sandbox-up`")
        return cls.from_dict(json.loads(path.read_text()))


def settings_part(kind: type, value: Any, label: str) -> Any:
    """``kind`` (a settings dataclass) from a mapping; unknown keys are a SettingsError naming them."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise SettingsError(f"{label} must be a mapping")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SettingsError(f"unknown {label} settings: {', '.join(unknown)}")
    return kind(**value)
