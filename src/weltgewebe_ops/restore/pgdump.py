"""Weltgewebe's daily dump as a restore source: the contract ``weltgewebe-postgres-backup-v1``.

Production dumps its database every night (``pg_dump --format=plain --no-owner --no-privileges``,
gzipped) into ``weltgewebe-postgres-<label>.sql.gz``, the label a UTC ``YYYYMMDDTHHMMSSZ`` taken
*before* the dump starts, and writes beside it ``…-<label>.sha256.manifest``: ``key=value`` lines
(``contract``, ``created_at`` written *after* the dump finished, ``file``, ``sha256``, ``bytes``,
optional ``git_commit`` and ``tables``). So the label time ≤ the dump's snapshot ≤ ``created_at``.

As a source of the drill:
- ``preflight``: the newest dump, its manifest, its SHA-256 and size, the gzip stream read to its
  end, pg_dump's closing line (a dump cut short has none), the server and pg_dump versions against
  the recovery host's PostgreSQL, and its age (the RPO exposure: everything after it is lost);
- ``restore``: a clean cluster whose superuser is the dump's owner, its database, the SQL applied
  by ``psql`` in one transaction with ``ON_ERROR_STOP`` (streamed from the gzip, its SHA-256
  checked again on the way: what is loaded is what was checked), then ``ANALYZE``.

The restored point is established as the later of the label time and the newest commit the
restored data proves (the outbox's ``created_at``/``published_at``, written by the source's
transactions, so never after its snapshot): both are at or before the snapshot, so an RPO taken
from it errs high, never low. Both are by the source host's clock.

A dump holds no roles and restores the sequences: the outbox id rewinds to the dump's value, and
every event published after the dump is an id the restored database will reuse. The event audit
and its remedy (``audit.py``) handle that as they do after a point-in-time restore.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import pg
from . import guard
from .markers import INCOMPLETE_MARKER, check_empty_dir, stop_postgres, write_marker_file
from .target import RestoreError

CONTRACT = "weltgewebe-postgres-backup-v1"
DUMP_RE = re.compile(r"^weltgewebe-postgres-(\d{8}T\d{6}Z)\.sql\.gz$")
COMPLETE_LINE = b"-- PostgreSQL database dump complete"
CHUNK = 1 << 20


def dump_name(label: str) -> str:
    return f"weltgewebe-postgres-{label}.sql.gz"


def manifest_name(label: str) -> str:
    return f"weltgewebe-postgres-{label}.sha256.manifest"


def label_time(label: str) -> dt.datetime:
    return dt.datetime.strptime(label, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def utc_label(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_manifest(text: str) -> dict[str, str]:
    """The manifest's ``key=value`` lines (blank lines and ``#`` comments skipped)."""
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"line {number} is no key=value line: {line[:80]!r}")
        fields[key.strip()] = value.strip()
    return fields


def manifest_text(fields: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in fields.items())


def parse_time(text: str) -> dt.datetime | None:
    """``created_at`` as the manifest writes it: ISO 8601 in UTC (``Z`` or an offset)."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None


@dataclass(frozen=True)
class Dump:
    label: str
    path: Path

    @property
    def label_at(self) -> dt.datetime:
        return label_time(self.label)

    @property
    def manifest(self) -> Path:
        return self.path.with_name(manifest_name(self.label))


def inventory(directory: Path) -> list[Dump]:
    """The dumps in ``directory``, oldest first (read-only)."""
    dumps = []
    for path in directory.iterdir():
        match = DUMP_RE.match(path.name)
        if match and path.is_file():
            dumps.append(Dump(match.group(1), path))
    return sorted(dumps, key=lambda d: d.label)


# ---------------------------------------------------------------------------------- reading a dump
class SqlStream:
    """The SQL of a gzipped dump, chunk by chunk, with the SHA-256 and size of the compressed
    file, the first lines (pg_dump's header) and whether pg_dump's closing line came. A gzip error
    or a stream that ends early raises ``RestoreError`` naming the file."""

    def __init__(self, path: Path):
        self.path = path
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.sql_bytes = 0
        self.head = b""
        self.tail = b""

    def __iter__(self) -> Iterator[bytes]:
        inflate = zlib.decompressobj(wbits=31)
        try:
            with open(self.path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    self.sha256.update(chunk)
                    self.bytes += len(chunk)
                    while chunk:
                        if inflate.eof:  # a gzip file may hold several members, one after the other
                            inflate = zlib.decompressobj(wbits=31)
                        out = inflate.decompress(chunk)
                        if out:
                            yield self._seen(out)
                        chunk = inflate.unused_data if inflate.eof else b""
        except zlib.error as exc:
            raise RestoreError(f"{self.path.name} is no intact gzip file: {exc} (at byte {self.bytes})") from exc
        if not inflate.eof:
            raise RestoreError(
                f"{self.path.name} ends in the middle of its gzip stream ({self.bytes} bytes): the file is truncated"
            )

    def _seen(self, out: bytes) -> bytes:
        self.sql_bytes += len(out)
        if len(self.head) < 8192:
            self.head += out[: 8192 - len(self.head)]
        self.tail = (self.tail + out)[-512:]
        return out

    @property
    def complete(self) -> bool:
        return COMPLETE_LINE in self.tail

    def version(self, what: str) -> str:
        """``database`` or ``pg_dump``: the version pg_dump wrote in its header, '' when absent."""
        prefix = rb"-- Dumped from database version " if what == "database" else rb"-- Dumped by pg_dump version "
        match = re.search(rb"^" + re.escape(prefix) + rb"(\S+)", self.head, re.MULTILINE)
        return match.group(1).decode() if match else ""


def major_of(version: str) -> int:
    """16 of ``16.14``, 9 of ``9.6.24``; 0 when unknown."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    if not match:
        return 0
    return int(match.group(1))


def version_num(version: str) -> int:
    """PostgreSQL's ``server_version_num`` of ``16.14`` (160014); 0 when unknown."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    if not match:
        return 0
    return int(match.group(1)) * 10000 + int(match.group(2) or 0)


# ---------------------------------------------------------------------------------- the checks
def check(dump: Dump) -> dict[str, Any]:
    """Everything that can be known about one dump without loading it: its manifest, SHA-256,
    size, gzip integrity, pg_dump's closing line and versions. ``problems`` names each fault."""
    problems: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    if not dump.manifest.exists():
        problems.append(_problem("manifest_missing", f"{dump.path.name} has no manifest ({dump.manifest.name})"))
    else:
        try:
            fields = parse_manifest(dump.manifest.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            problems.append(_problem("manifest_unreadable", f"{dump.manifest.name}: {exc}"))
    if fields:
        if fields.get("contract") != CONTRACT:
            problems.append(
                _problem(
                    "manifest_contract",
                    f"{dump.manifest.name} says contract={fields.get('contract', '')!r}, not {CONTRACT}",
                )
            )
        if fields.get("file") and fields["file"] != dump.path.name:
            problems.append(
                _problem("manifest_file", f"{dump.manifest.name} describes {fields['file']!r}, not {dump.path.name}")
            )
        for key in ("sha256", "bytes", "created_at"):
            if not fields.get(key):
                problems.append(_problem("manifest_incomplete", f"{dump.manifest.name} has no {key}"))
    stream = SqlStream(dump.path)
    started = time.monotonic()
    try:
        for _chunk in stream:
            pass
    except (OSError, RestoreError) as exc:
        problems.append(_problem("dump_unreadable", str(exc)))
    sha256 = stream.sha256.hexdigest()
    if fields.get("sha256") and fields["sha256"].lower() != sha256:
        problems.append(
            _problem(
                "checksum_mismatch",
                f"{dump.path.name}: SHA-256 {sha256} differs from the manifest's {fields['sha256']}: the file changed "
                "after the dump",
            )
        )
    if fields.get("bytes") and fields["bytes"] != str(stream.bytes):
        problems.append(
            _problem("size_mismatch", f"{dump.path.name} has {stream.bytes} bytes, the manifest says {fields['bytes']}")
        )
    if not any(p["code"] == "dump_unreadable" for p in problems) and not stream.complete:
        problems.append(
            _problem(
                "dump_cut_short",
                f"{dump.path.name} ends without pg_dump's closing line ({COMPLETE_LINE.decode()!r}): the dump "
                "was cut short",
            )
        )
    created_at = parse_time(fields.get("created_at", ""))
    if fields.get("created_at") and created_at is None:
        problems.append(_problem("manifest_time", f"{dump.manifest.name}: created_at {fields['created_at']!r}"))
    return {
        "backup_id": dump.label,
        "file": str(dump.path),
        "label_at": dump.label_at.isoformat(),
        "created_at": created_at.isoformat() if created_at else None,
        "sha256": sha256,
        "bytes": stream.bytes,
        "sql_bytes": stream.sql_bytes,
        "read_seconds": round(time.monotonic() - started, 3),
        "server_version": stream.version("database"),
        "pg_dump_version": stream.version("pg_dump"),
        "git_commit": fields.get("git_commit", ""),
        "tables": [t for t in fields.get("tables", "").split(",") if t],
        "problems": problems,
    }


def _problem(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def compatibility(checked: dict[str, Any], recovery_major: int) -> list[dict[str, str]]:
    """Whether the recovery host's PostgreSQL can load this dump: its server must be at least the
    dumped one's major version, and at least pg_dump's (a newer pg_dump writes settings an older
    server rejects, e.g. ``transaction_timeout`` from 17 on, and ON_ERROR_STOP stops there)."""
    problems = []
    name = Path(checked["file"]).name
    for what, version in (("from PostgreSQL", checked["server_version"]), ("by pg_dump", checked["pg_dump_version"])):
        major = major_of(version)
        if major and recovery_major and recovery_major < major:
            problems.append(
                _problem(
                    "postgres_too_old",
                    f"{name} was dumped {what} {version}; the recovery host's PostgreSQL is {recovery_major}, which "
                    f"cannot load it. Restore with PostgreSQL {major} or newer (drill_pg_bindir)",
                )
            )
    return problems


NOT_CHECKED = [
    "encryption: the dump format has none (the SQL is plaintext at rest; protect the directory and its copies)",
    "immutability: files on a host have no Object Lock; a copy can be changed or deleted with its manifest",
    "the dump's times: label and created_at are by the source host's clock (nothing independent to compare)",
    "older dumps: only the newest is read to its end",
]


def preflight(directory: Path, now: dt.datetime, recovery_major: int = 0, backup_id: str = "") -> dict[str, Any]:
    """The newest dump (or ``backup_id``) checked, the others listed; read-only."""
    if not directory.is_dir():
        raise RestoreError(
            f"{directory} is no directory: set drill_pg_dump_dir to where the dumps are (the off-host copy of "
            "/var/backups/weltgewebe/postgres)"
        )
    dumps = inventory(directory)
    info: dict[str, Any] = {
        "source": "pg_dump",
        "directory": str(directory),
        "dumps": [{"backup_id": d.label, "bytes": d.path.stat().st_size} for d in dumps],
        "not_checked": list(NOT_CHECKED),
        "problems": [],
        "chosen_backup": None,
        "chosen_backup_server_version_num": 0,
        "rpo_exposure_seconds": None,
    }
    if not dumps:
        info["problems"].append(
            _problem("no_dumps", f"{directory} holds no dump (weltgewebe-postgres-<YYYYMMDDTHHMMSSZ>.sql.gz)")
        )
        return info
    chosen = next((d for d in dumps if d.label == backup_id), None) if backup_id else dumps[-1]
    if chosen is None:
        info["problems"].append(_problem("no_such_dump", f"{directory} holds no dump labelled {backup_id}"))
        return info
    checked = check(chosen)
    info["problems"] = checked.pop("problems") + compatibility(checked, recovery_major)
    info["chosen_backup"] = checked
    info["chosen_backup_server_version_num"] = version_num(checked["server_version"])
    info["newest_backup_at"] = checked["created_at"]
    info["rpo_exposure_seconds"] = round((now - chosen.label_at).total_seconds(), 3)
    return info


# ---------------------------------------------------------------------------------- the restore
@dataclass(frozen=True)
class DumpRestore:
    dump: Dump
    expected_sha256: str
    data_dir: Path
    bindir: Path
    os_user: str | None
    port: int
    superuser: str
    password: str
    database: str
    evidence_table: str  # the outbox: its times prove commits the dump holds


def restore(req: DumpRestore, log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Load the dump into a new cluster in ``data_dir`` and leave it running on ``port``. On any
    failure PostgreSQL is stopped and the directory is marked incomplete, with the reason."""
    check_empty_dir(req.data_dir)
    try:
        psql = pg.client_tool(req.bindir, "psql")
    except pg.PostgresError as exc:
        raise RestoreError(f"{exc}: a plain dump is loaded with psql") from exc
    started = time.monotonic()
    marker = {
        "what": "an incomplete weltgewebe.ops restore of a dump: never use this cluster",
        "written_at": dt.datetime.now(dt.UTC).isoformat(),
        "dump": req.dump.path.name,
        "reason": "",  # while the restore runs; its guard or its failure fill it in
    }
    watcher = None
    try:
        pg.initdb(req.bindir, req.data_dir, req.password, req.os_user, superuser=req.superuser)
        write_marker_file(req.data_dir, marker)
        watcher = guard.start(req.data_dir, req.bindir, req.os_user, [], req.data_dir.parent / "guard.log")
        pg.write_config(
            req.data_dir,
            {"port": req.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": str(req.data_dir.parent)},
            req.os_user,
        )
        pg.start(req.bindir, req.data_dir, req.data_dir.parent / "postgres.log", req.os_user)
        init_seconds = time.monotonic() - started
        log(f"a clean PostgreSQL {pg.major_version(req.bindir)} on 127.0.0.1:{req.port} in {init_seconds:.1f} s")
        import psycopg
        from psycopg import sql

        login = {"host": "127.0.0.1", "port": req.port, "user": req.superuser, "password": req.password}
        with psycopg.connect(**login, dbname="postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(req.database), sql.Identifier(req.superuser)
                )
            )
        load_started = time.monotonic()
        stream = _load(req, psql, log)
        load_seconds = time.monotonic() - load_started
        analyze_started = time.monotonic()
        with psycopg.connect(**login, dbname=req.database, autocommit=True) as conn:
            conn.execute("ANALYZE")
            evidence = _newest_commit_evidence(conn, req.evidence_table)
        analyze_seconds = time.monotonic() - analyze_started
    except BaseException as exc:
        req.data_dir.mkdir(parents=True, exist_ok=True)
        write_marker_file(req.data_dir, {**marker, "reason": str(exc) or type(exc).__name__})
        stopped = stop_postgres(req.bindir, req.data_dir, req.os_user)
        if watcher:
            guard.reap(watcher)
        if isinstance(exc, RestoreError):
            raise RestoreError(f"{exc}; {stopped}") from exc
        raise
    (req.data_dir / INCOMPLETE_MARKER).unlink()
    guard.reap(watcher)
    label_at = req.dump.label_at
    restored_to = max(t for t in (label_at, evidence) if t is not None)
    method = (
        "the newest commit the restored outbox proves (created_at/published_at), later than the dump's label"
        if evidence and evidence > label_at
        else "the dump's label time (taken before the dump started)"
    )
    log(f"loaded {stream.sql_bytes / 1e6:.1f} MB of SQL in {load_seconds:.1f} s; restored to {restored_to.isoformat()}")
    return {
        "source": "pg_dump",
        "backup_id": req.dump.label,
        "dump_file": str(req.dump.path),
        "sha256": stream.sha256.hexdigest(),
        "dump_bytes": stream.bytes,
        "sql_bytes": stream.sql_bytes,
        "server_version": stream.version("database"),
        "pg_dump_version": stream.version("pg_dump"),
        "restored_to": restored_to.isoformat(),
        "restored_to_method": method,
        "label_at": label_at.isoformat(),
        "newest_commit_evidence": evidence.isoformat() if evidence else None,
        "init_seconds": round(init_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "analyze_seconds": round(analyze_seconds, 3),
        "load_bytes_per_second": round(stream.sql_bytes / load_seconds) if load_seconds else None,
        "parts": [
            {
                "name": "SQL load (psql, one transaction)",
                "bytes": stream.sql_bytes,
                "seconds": round(load_seconds, 3),
                "grows_with": "database",
            },
            {
                "name": "ANALYZE",
                "bytes": stream.sql_bytes,
                "seconds": round(analyze_seconds, 3),
                "grows_with": "database",
            },
        ],
        "tool": f"psql ({psql}) into PostgreSQL {pg.major_version(req.bindir)}",
        "port": req.port,
        "data_dir": str(req.data_dir),
    }


def _load(req: DumpRestore, psql: Path, log: Callable[[str], None]) -> SqlStream:
    """psql reads the SQL from its stdin, fed from the gzip as it is read; the SHA-256 of what was
    read must be the manifest's before the COMMIT is sent: on a mismatch (or any error reading)
    psql is killed first, so the transaction never commits."""
    argv = [
        str(psql),
        "-X",
        "-q",
        "--no-psqlrc",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(req.port),
        "-U",
        req.superuser,
        "-d",
        req.database,
        "-f",
        "-",
    ]
    env = {**pg.user_env(), "PGPASSWORD": req.password, "PGOPTIONS": "-c client_min_messages=warning"}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    stream = SqlStream(req.dump.path)
    fed, psql_gone, last_said = 0, False, time.monotonic()
    try:
        # one transaction, committed by us, not by psql at the end of its input (--single-transaction
        # would): if this process is killed, psql reads an end of input in an open transaction and
        # PostgreSQL rolls it back, instead of committing the part of the dump it had
        proc.stdin.write(b"BEGIN;\n")
        for chunk in stream:
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:  # psql stopped on an error: its message says which
                psql_gone = True
                break
            fed += len(chunk)
            if time.monotonic() - last_said > 10:
                log(f"loading: {fed / 1e6:.0f} MB of SQL so far")
                last_said = time.monotonic()
        if not psql_gone and stream.sha256.hexdigest() != req.expected_sha256.lower():
            raise RestoreError(
                f"{req.dump.path.name} changed since the preflight: SHA-256 {stream.sha256.hexdigest()} is not the "
                f"manifest's {req.expected_sha256}; nothing was committed"
            )
        if not psql_gone and not stream.complete:
            raise RestoreError(f"{req.dump.path.name} ends without pg_dump's closing line; nothing was committed")
        if not psql_gone:
            proc.stdin.write(b"\nCOMMIT;\n")
    except BrokenPipeError:
        psql_gone = True
    except BaseException:
        proc.kill()  # before its stdin closes: the transaction never commits
        proc.wait()
        raise
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    code = proc.wait()
    reader.join(10)
    text = b"".join(errors).decode(errors="replace").strip()
    if code != 0 or psql_gone:
        first = next((line for line in text.splitlines() if "ERROR" in line or "FATAL" in line), text[:500])
        raise RestoreError(
            f"psql stopped loading {req.dump.path.name} (exit {code}), nothing was committed: {first.strip()}"
        )
    return stream


def _newest_commit_evidence(conn, table: str) -> dt.datetime | None:
    from psycopg import sql

    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    if not exists:
        return None
    row = conn.execute(
        sql.SQL("SELECT greatest(max(created_at), max(published_at)) FROM {t}").format(t=sql.Identifier(table))
    ).fetchone()
    return row[0]
