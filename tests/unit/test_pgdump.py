"""Weltgewebe's daily dump as a restore source (restore/pgdump.py): what the preflight finds in a
dump set, on real files (gzip, SHA-256, manifests) - no database needed."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from pathlib import Path

import pytest

from weltgewebe_ops.drill.forecast import rto_forecast
from weltgewebe_ops.restore import pgdump
from weltgewebe_ops.restore.target import RestoreError

SQL = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"-- Dumped from database version 16.14 (Debian 16.14-1.pgdg120+1)\n"
    b"-- Dumped by pg_dump version 16.14 (Debian 16.14-1.pgdg120+1)\n\n"
    b"SET statement_timeout = 0;\nCREATE TABLE domain_outbox (id bigint);\n"
    + b"INSERT INTO domain_outbox VALUES (1);\n" * 2000
    + b"\n--\n-- PostgreSQL database dump complete\n--\n\n"
)


def write_set(directory: Path, label: str, sql: bytes = SQL, *, members: int = 1, **manifest) -> pgdump.Dump:
    """A dump and its manifest as production writes them (``manifest`` overrides fields)."""
    path = directory / pgdump.dump_name(label)
    step = len(sql) // members + 1
    path.write_bytes(b"".join(gzip.compress(sql[i : i + step]) for i in range(0, len(sql), step)))
    data = path.read_bytes()
    fields = {
        "contract": pgdump.CONTRACT,
        "created_at": (pgdump.label_time(label) + dt.timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": str(len(data)),
        "tables": "domain_accounts,domain_nodes,domain_edges",
        **manifest,
    }
    (directory / pgdump.manifest_name(label)).write_text(pgdump.manifest_text(fields))
    return pgdump.Dump(label, path)


def codes(checked: dict) -> list[str]:
    return [p["code"] for p in checked["problems"]]


def test_an_intact_dump_has_no_problems_and_its_versions(tmp_path):
    dump = write_set(tmp_path, "20261202T021500Z")
    checked = pgdump.check(dump)
    assert codes(checked) == []
    assert checked["sql_bytes"] == len(SQL) and checked["server_version"] == "16.14"
    assert checked["pg_dump_version"] == "16.14" and checked["tables"][0] == "domain_accounts"
    assert pgdump.version_num(checked["server_version"]) == 160014


def test_a_gzip_of_several_members_is_read_to_its_end(tmp_path):
    dump = write_set(tmp_path, "20261202T021500Z", members=3)
    stream = pgdump.SqlStream(dump.path)
    assert b"".join(stream) == SQL and stream.complete


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-20]), "dump_unreadable"),  # truncated gzip
        (lambda p: p.write_bytes(p.read_bytes()[:40] + b"\xff" * 8 + p.read_bytes()[48:]), "dump_unreadable"),
    ],
)
def test_a_damaged_gzip_is_named(tmp_path, damage, code):
    dump = write_set(tmp_path, "20261202T021500Z")
    damage(dump.path)
    checked = pgdump.check(dump)
    assert code in codes(checked) and "checksum_mismatch" in codes(checked)
    assert dump.path.name in " ".join(p["message"] for p in checked["problems"])
    with pytest.raises(RestoreError, match=dump.path.name):
        b"".join(pgdump.SqlStream(dump.path))


def test_a_dump_cut_short_before_gzip_is_named(tmp_path):
    """pg_dump died mid-way but the gzip closed cleanly: only the missing closing line tells."""
    dump = write_set(tmp_path, "20261202T021500Z", sql=SQL[: len(SQL) // 2])
    assert codes(pgdump.check(dump)) == ["dump_cut_short"]


def test_manifest_faults_are_named(tmp_path):
    dump = write_set(tmp_path, "20261202T021500Z", sha256="0" * 64, contract="something-else", bytes="12")
    assert set(codes(pgdump.check(dump))) == {"checksum_mismatch", "manifest_contract", "size_mismatch"}
    dump.manifest.unlink()
    assert codes(pgdump.check(dump)) == ["manifest_missing"]
    dump.manifest.write_text("contract weltgewebe-postgres-backup-v1\n")
    assert codes(pgdump.check(dump)) == ["manifest_unreadable"]


def test_preflight_chooses_the_newest_and_says_its_age(tmp_path):
    write_set(tmp_path, "20261201T021500Z")
    write_set(tmp_path, "20261202T021500Z")
    (tmp_path / "notes.txt").write_text("not a dump")
    now = dt.datetime(2026, 12, 2, 14, 15, tzinfo=dt.UTC)
    info = pgdump.preflight(tmp_path, now, recovery_major=16)
    assert info["problems"] == [] and info["chosen_backup"]["backup_id"] == "20261202T021500Z"
    assert [d["backup_id"] for d in info["dumps"]] == ["20261201T021500Z", "20261202T021500Z"]
    assert info["rpo_exposure_seconds"] == 12 * 3600
    assert info["chosen_backup_server_version_num"] == 160014
    older = pgdump.preflight(tmp_path, now, 16, backup_id="20261201T021500Z")
    assert older["chosen_backup"]["backup_id"] == "20261201T021500Z"
    missing = pgdump.preflight(tmp_path, now, 16, backup_id="20261130T021500Z")
    assert [p["code"] for p in missing["problems"]] == ["no_such_dump"]


def test_preflight_of_an_empty_or_missing_directory(tmp_path):
    now = dt.datetime.now(dt.UTC)
    assert [p["code"] for p in pgdump.preflight(tmp_path, now)["problems"]] == ["no_dumps"]
    with pytest.raises(RestoreError, match="drill_pg_dump_dir"):
        pgdump.preflight(tmp_path / "absent", now)


def test_a_dump_newer_than_the_recovery_postgres_is_refused_by_name(tmp_path):
    newer = SQL.replace(b"pg_dump version 16.14", b"pg_dump version 18.6")
    write_set(tmp_path, "20261202T021500Z", sql=newer)
    info = pgdump.preflight(tmp_path, dt.datetime.now(dt.UTC), recovery_major=16)
    assert [p["code"] for p in info["problems"]] == ["postgres_too_old"]
    assert (
        "pg_dump 18.6" in info["problems"][0]["message"] and "PostgreSQL 18 or newer" in info["problems"][0]["message"]
    )
    assert pgdump.preflight(tmp_path, dt.datetime.now(dt.UTC), recovery_major=18)["problems"] == []


def test_the_forecast_of_a_dump_restore_has_no_wal():
    restore = {
        "parts": [
            {"name": "SQL load", "bytes": 2_000_000_000, "seconds": 100.0, "grows_with": "database"},
            {"name": "ANALYZE", "bytes": 2_000_000_000, "seconds": 20.0, "grows_with": "database"},
        ]
    }
    f = rto_forecast(restore, 300.0, 14400, database_bytes=10_000_000_000)
    assert f["base_seconds_per_gb"] == 60.0 and f["fixed_seconds"] == 180.0
    assert f["predicted_rto_seconds"] == 180 + 600 and f["complete"] and f["wal_bytes"] == 0
    assert f["basis"][0].startswith("SQL load + ANALYZE 60.0 s/GB")
    assert not any("WAL" in line for line in f["basis"]), f["basis"]
