"""The tools bench/restore.py --peers measures ours against: pgBackRest and barman-cloud, each
archiving the same WAL stream (one archive_command runs all three) of the same cluster to the same
SeaweedFS bucket (default SSE-KMS, Object Lock) under a prefix of its own, each taking its own base
backup right after ours, each restoring with its own restore and restore_command.

A peer that is not installed is reported as skipped with the command that installs it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from weltgewebe_ops.archive.names import WAL_SEGMENT_SIZE
from weltgewebe_ops.core import pg, procs

STANZA = "bench"
# a WAL segment as the peers store it: pgBackRest adds -<sha1>, both add their compression's suffix
# (not a .backup or .history file)
SEGMENT_OBJECT = re.compile(r"^[0-9A-F]{24}(-[0-9a-f]{40})?(\.(gz|lz4|zst|bz2|snappy|xz))?$")


def stored_totals(client, bucket: str, prefix: str, wal_part: str) -> dict:
    """Bytes stored under ``prefix``: ``wal`` (the stored size of each WAL segment under
    ``/<wal_part>/`` by its 24-digit name, not .backup or .history files) and ``base`` (everything
    else). Ours and every peer are counted by this one function."""
    totals: dict = {"wal": {}, "base": 0}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if f"/{wal_part}/" not in obj["Key"]:
                totals["base"] += obj["Size"]
            elif SEGMENT_OBJECT.match(name):
                totals["wal"][name[:24]] = obj["Size"]
    return totals


def wal_per_gb(stored_by_segment: dict[str, int], segments: set[str]) -> float:
    """MB stored per GB of WAL over ``segments`` (compare tools over the same segments: each starts
    archiving at another moment, and a cluster's first WAL compresses unlike its later WAL)."""
    return 1000 * sum(stored_by_segment[name] for name in segments) / max(len(segments) * WAL_SEGMENT_SIZE, 1)


def run_as(user: str, argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    result = subprocess.run(
        argv, user=user, env={**pg.user_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout)[-2000:]
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({result.returncode}): {detail}")
    return result.stdout


def private_script(path: Path, text: str, owner: str) -> Path:
    """A 0700 script of ``owner``'s (PostgreSQL's user runs the peers' hooks; they hold credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


class Peer:
    tool_name = ""
    install = ""
    # the peer's own default compression (what a team that sets nothing gets)
    default_compression = ""

    def __init__(self, box, root: Path, compression: str = ""):
        self.compression = compression or self.default_compression
        self.name = f"{self.tool_name} ({self.compression})"
        self.slug = f"{self.tool_name.lower()}-{self.compression}"
        self.box, self.settings, self.root = box, box.settings, root / self.slug
        self.user = self.settings.pg_os_user

    def stored(self, client) -> dict:
        """Bytes this peer stored in S3, as stored_totals counts them."""
        raise NotImplementedError

    def missing(self) -> str:
        """Why the peer cannot run here, with the install command; "" when it can."""
        raise NotImplementedError

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam(self.user)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def archive_command(self) -> str:
        raise NotImplementedError

    def backup(self) -> None:
        raise NotImplementedError

    def restore_base(self, staging: Path) -> None:
        raise NotImplementedError

    def restore_command(self, data_dir: Path) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PgBackRest(Peer):
    """pgBackRest from Debian: S3 through a TLS endpoint (pgBackRest speaks HTTPS only), a second
    SeaweedFS S3 gateway on the same filer; process-max 2, asynchronous archive-get with a 256 MiB
    queue; compress-type as given (its default gz, or lz4, zst, none), each into its own repository."""

    tool_name = "pgBackRest"
    install = "apt-get install pgbackrest"
    default_compression = "gz"
    compressions = ("gz", "lz4", "zst", "none")

    def missing(self) -> str:
        return "" if shutil.which("pgbackrest") else f"not installed: {self.install}"

    def prepare(self) -> None:
        super().prepare()
        self.port = procs.free_port()
        cert, key = self.root / "tls.crt", self.root / "tls.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        log = self.root / "gateway.log"
        with open(log, "w") as out:
            self.gateway = subprocess.Popen(
                [weed, "s3", f"-filer=127.0.0.1:{self.settings.ports.s3_filer}", "-ip.bind=127.0.0.1",
                 f"-port={self.port}", f"-port.grpc={procs.free_port()}", "-port.iceberg=0", "-port.lance=0",
                 f"-config={self.settings.root / 's3' / 's3.json'}",
                 f"-cert.file={cert}", f"-key.file={key}"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not procs.port_open(self.port):
            if time.monotonic() > deadline or self.gateway.poll() is not None:
                raise RuntimeError(f"the TLS S3 gateway did not start: {log.read_text()[-1500:]}")
            time.sleep(0.2)
        loc = self.settings.s3_location()
        self.config = self.root / "pgbackrest.conf"
        for sub in ("spool", "log", "lock"):
            (self.root / sub).mkdir(exist_ok=True)
            shutil.chown(self.root / sub, self.user, self.user)
        private_script(
            self.config,
            "\n".join([
                "[global]", "repo1-type=s3", f"repo1-path=/{self.slug}", f"repo1-s3-bucket={loc.bucket}",
                "repo1-s3-endpoint=127.0.0.1", f"repo1-storage-port={self.port}", f"repo1-s3-region={loc.region}",
                f"repo1-s3-key={loc.access_key}", f"repo1-s3-key-secret={loc.secret_key}", "repo1-s3-uri-style=path",
                "repo1-storage-verify-tls=n", "repo1-retention-full=99", "process-max=2", "archive-async=y",
                "archive-get-queue-max=256MiB", f"compress-type={self.compression}", "start-fast=y",
                "log-level-console=warn", "log-level-file=off", f"spool-path={self.root / 'spool'}",
                f"lock-path={self.root / 'lock'}", f"log-path={self.root / 'log'}", "",
                f"[{STANZA}]", f"pg1-path={self.settings.pg_data_dir}", f"pg1-port={self.settings.ports.postgres}",
                f"pg1-socket-path={self.settings.pg_socket_dir}", "pg1-user=postgres", "",
            ]),
            self.user,
        )  # fmt: skip
        run_as(self.user, self._cmd("stanza-create"))

    def _cmd(self, *args: str) -> list[str]:
        return ["pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *args]

    def stored(self, client) -> dict:
        return stored_totals(client, self.settings.bucket, f"{self.slug}/", "archive")

    def archive_command(self) -> str:
        return shlex.join(self._cmd("archive-push")) + " %p"

    def backup(self) -> None:
        run_as(self.user, self._cmd("--type=full", "backup"))

    def restore_base(self, staging: Path) -> None:
        shutil.chown(staging, self.user, self.user)
        run_as(self.user, self._cmd(f"--pg1-path={staging}", "restore"))

    def restore_command(self, data_dir: Path) -> str:
        return shlex.join(self._cmd(f"--pg1-path={data_dir}", "archive-get")) + ' %f "%p"'

    def close(self) -> None:
        if getattr(self, "gateway", None):
            self.gateway.terminate()
            self.gateway.wait(timeout=30)


class BarmanCloud(Peer):
    """barman-cloud from PyPI, the version and venv ``make barman`` installs (the drill's source
    barman_cloud uses the same): barman-cloud-restore
    for the base backup, barman-cloud-wal-restore with 8 parallel downloads into its spool; WAL and
    base backup compressed as given (gzip, as CloudNativePG's Barman Cloud plugin archives, or none,
    its own default)."""

    tool_name = "barman-cloud"
    # from the system's Python, in the checkout (which PostgreSQL's user, who runs the hooks, must read)
    venv = Path(__file__).resolve().parent.parent / ".cache" / "barman"
    install = "make barman"
    default_compression = "none"
    compressions = ("gzip", "none")

    def _compress(self) -> list[str]:
        return [] if self.compression == "none" else [f"--{self.compression}"]

    def stored(self, client) -> dict:
        return stored_totals(client, self.settings.bucket, f"{self.slug}/", "wals")

    def missing(self) -> str:
        try:
            run_as(self.user, [str(self.venv / "bin" / "barman-cloud-wal-archive"), "--version"], timeout=60)
        except (OSError, RuntimeError) as exc:
            return f"{self.user} cannot run it ({str(exc)[-200:]}): {self.install}"
        return ""

    def prepare(self) -> None:
        super().prepare()
        loc = self.settings.s3_location()
        self.url = f"s3://{loc.bucket}/{self.slug}"
        (self.root / "spool").mkdir(exist_ok=True)
        shutil.chown(self.root / "spool", self.user, self.user)
        # the hooks run in PostgreSQL's environment: the credentials come with them, readable by it alone
        self.tool = private_script(
            self.root / "barman-cloud",
            "#!/bin/sh\n"
            f"export AWS_ACCESS_KEY_ID={shlex.quote(loc.access_key)} "
            f"AWS_SECRET_ACCESS_KEY={shlex.quote(loc.secret_key)} AWS_DEFAULT_REGION={shlex.quote(loc.region)} "
            f"PGPASSWORD={shlex.quote(self.settings.pg_password)} PGUSER=postgres\n"
            f'tool="$1"; shift\nexec {self.venv}/bin/barman-cloud-"$tool" --endpoint-url {loc.endpoint_url} "$@"\n',
            self.user,
        )

    def archive_command(self) -> str:
        return shlex.join([str(self.tool), "wal-archive", *self._compress(), self.url, STANZA]) + " %p"

    def backup(self) -> None:
        run_as(self.user, [str(self.tool), "backup", *self._compress(), "-h", "127.0.0.1", "-p",
                           str(self.settings.ports.postgres), "-d", "postgres", self.url, STANZA])  # fmt: skip

    def restore_base(self, staging: Path) -> None:
        shutil.chown(staging, self.user, self.user)
        backups = run_as(self.user, [str(self.tool), "backup-list", "--format", "json", self.url, STANZA])
        backup_id = json.loads(backups)["backups_list"][-1]["backup_id"]
        run_as(self.user, [str(self.tool), "restore", self.url, STANZA, backup_id, str(staging)])

    def restore_command(self, data_dir: Path) -> str:
        return f"{self.tool} wal-restore -p 8 --spool-dir {self.root / 'spool'} {self.url} {STANZA} %f %p"


PEERS = (PgBackRest, BarmanCloud)


def peers_at_their_best(box, root: Path) -> list[Peer]:
    """Every peer with each compression a team would choose: pgBackRest gz (its default), lz4, zst
    and none; barman-cloud gzip (CloudNativePG's) and none (its default)."""
    return [cls(box, root, compression) for cls in PEERS for compression in cls.compressions]
