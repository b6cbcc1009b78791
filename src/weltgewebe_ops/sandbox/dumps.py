"""The sandbox's daily dump, written as Weltgewebe's production writes it (the contract
``weltgewebe-postgres-backup-v1``, ``restore/pgdump.py``): the label taken before pg_dump starts,
``pg_dump --format=plain --no-owner --no-privileges`` gzipped into a 0600 file in a 0700
directory, then the manifest with ``created_at`` taken after the dump finished. Our own
implementation of the contract, so a drill can test the restore path production has."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core import pg
from ..core.files import write_private
from ..core.settings import SandboxSettings
from ..restore import pgdump

# the tables production's weekly restore proof looks for (those the sandbox has go in the manifest)
RESTORE_PROOF_TABLES = (
    "domain_accounts",
    "domain_nodes",
    "domain_edges",
    "sessions",
    "passkey_credentials",
    "_sqlx_migrations",
)


def _present(settings: SandboxSettings, tables: tuple[str, ...]) -> list[str]:
    import psycopg

    with psycopg.connect(settings.dsn(), autocommit=True) as conn:
        return [t for t in tables if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()[0]]


class _Hashing:
    """A file object that feeds what is written to it into ``digest`` too."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def write_dump(settings: SandboxSettings, directory: Path | None = None) -> dict[str, Any]:
    directory = directory or settings.dump_dir
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    label = pgdump.utc_label(dt.datetime.now(dt.UTC))
    while (directory / pgdump.dump_name(label)).exists():  # one per second at most, never overwritten
        time.sleep(0.2)
        label = pgdump.utc_label(dt.datetime.now(dt.UTC))
    target = directory / pgdump.dump_name(label)
    partial = target.with_name("." + target.name + ".partial")
    argv = [
        str(pg.resolve_bindir(settings.pg_bindir) / "pg_dump"),
        "--format=plain",
        "--no-owner",
        "--no-privileges",
        "-h",
        "127.0.0.1",
        "-p",
        str(settings.ports.postgres),
        "-U",
        "postgres",
        "-d",
        settings.database,
    ]
    started = time.monotonic()
    digest = hashlib.sha256()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # stderr into a file, not a pipe nobody reads while the dump streams (a full pipe would stall it)
    with tempfile.TemporaryFile() as errors, os.fdopen(fd, "wb") as raw:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errors, env={**pg.user_env(), "PGPASSWORD": settings.pg_password}
        )
        # the SHA-256 of the file as it is written: no second read of a dump that may be large
        with gzip.GzipFile(fileobj=_Hashing(raw, digest), mode="wb", compresslevel=6, mtime=0) as out:
            while chunk := proc.stdout.read(1 << 20):
                out.write(chunk)
        if proc.wait() != 0:
            errors.seek(0)
            partial.unlink(missing_ok=True)
            raise RuntimeError(
                f"pg_dump failed (exit {proc.returncode}): {errors.read().decode(errors='replace')[-1500:]}"
            )
    os.replace(partial, target)
    fields = {
        "contract": pgdump.CONTRACT,
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file": target.name,
        "sha256": digest.hexdigest(),
        "bytes": str(target.stat().st_size),
        "tables": ",".join(_present(settings, RESTORE_PROOF_TABLES)),
    }
    write_private(directory / pgdump.manifest_name(label), pgdump.manifest_text(fields))
    return {**fields, "path": str(target), "label": label, "seconds": round(time.monotonic() - started, 3)}
