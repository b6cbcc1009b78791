"""The restore source pgbackrest against real pgBackRest (Debian's 2.45, S3 over HTTPS on
SeaweedFS's TLS port) and PostgreSQL 15 (the newest 2.45 supports that Debian has): the sandbox
archives with pgbackrest archive-push and a full backup; the module restores with pgBackRest's own
restore and archive-get, read-only, to a time (exactly the commits before it); a stanza that is
not there is named; a whole sandbox drill holds against the ground truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ansible_module, running_sandbox, s3_options
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars  # noqa: F401
from tests.integration.test_pitr import three_commits_archived
from weltgewebe_ops.core import pg
from weltgewebe_ops.restore.markers import INCOMPLETE_MARKER

pytestmark = pytest.mark.integration

PG15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def pgbackrest_sandbox():
    assert (PG15 / "postgres").exists(), f"no PostgreSQL 15 at {PG15}: apt-get install postgresql-15"
    yield from running_sandbox(
        "wgops-test-pgbackrest-", archive_method="pgbackrest", pg_bindir=str(PG15), archive_timeout_seconds=10
    )


@pytest.fixture(scope="module")
def history(pgbackrest_sandbox):
    return three_commits_archived(pgbackrest_sandbox)


def module_args(box, restore_dir: Path, **extra) -> dict:
    return {
        "source": "pgbackrest",
        **s3_options(box.settings.pgbackrest_location(readonly=True)),
        "stanza": box.settings.pgbackrest_stanza,
        "verify_tls": False,
        "pg_bindir": str(PG15),
        "data_dir": str(restore_dir / "data"),
        **extra,
    }


def test_preflight_reads_pgbackrest_info_and_the_repository(pgbackrest_sandbox, history, restore_dir):
    rc, info, out = ansible_module("weltgewebe.ops.restore_source", module_args(pgbackrest_sandbox, restore_dir))
    assert rc == 0, out
    assert info["problems"] == [] and info["source"] == "pgbackrest"
    assert info["chosen_backup"]["format"] == "pgbackrest" and info["chosen_backup"]["type"] == "full"
    assert info["chosen_backup_server_version_num"] == 150000
    assert info["continuity"]["missing"] == [] and info["continuity"]["segments"] >= 2
    assert pgbackrest_sandbox.settings.s3_readonly_secret_key not in out


def test_restore_to_a_time_has_exactly_the_commits_before_it(pgbackrest_sandbox, history, restore_dir):
    moment = history["a"]["ts"] + (history["b"]["ts"] - history["a"]["ts"]) / 2
    args = module_args(
        pgbackrest_sandbox, restore_dir, action="restore", target="time", target_value=moment.isoformat()
    )
    rc, result, out = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc == 0, out
    dsn = pg.conninfo("127.0.0.1", result["port"], "postgres", pgbackrest_sandbox.settings.pg_password, "weltgewebe")
    with psycopg.connect(dsn, autocommit=True) as conn:
        titles = {row[0] for row in conn.execute("SELECT title FROM domain_accounts WHERE title LIKE 'pitr-%'")}
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
    assert titles == {"pitr-a"}
    assert dt.datetime.fromisoformat(result["restored_to"]) <= moment
    assert result["tool"] == "pgBackRest 2.45" and result["recovery_state"] == "promoted"
    assert not (restore_dir / "data" / INCOMPLETE_MARKER).exists()
    assert not list((restore_dir / "data.wgops").rglob("pgbackrest.conf")), "the file with the secret is gone"
    assert pgbackrest_sandbox.settings.s3_readonly_secret_key not in out
    pg.stop(PG15, restore_dir / "data", pg.run_as_user("wgsandbox"), "immediate")


def test_a_stanza_that_is_not_there_is_named(pgbackrest_sandbox, history, restore_dir):
    args = module_args(pgbackrest_sandbox, restore_dir, action="restore", stanza="no-such-stanza")
    rc, result, _ = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc != 0 and "no-such-stanza" in result["msg"], result["msg"]
    assert not (restore_dir / "data").exists()


def test_a_sandbox_drill_from_a_pgbackrest_repository(drill_dirs):  # noqa: F811 - fixture
    proc = ansible_playbook(
        sandbox_vars(drill_dirs, archive_timeout=10, workload_seconds=10, drill_source="pgbackrest")
    )
    report = latest_report(drill_dirs["reports"])
    truth = report["ground_truth"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["passed"] and report["restore"]["source"] == "pgbackrest"
    assert report["restore"]["tool"] == "pgBackRest 2.45"
    assert report["rpo_seconds"] >= truth["rpo_seconds"], "the bound is not below the truth"
    assert report["lost_events"] == truth["lost_events"]
    md = (drill_dirs["reports"] / report["drill_id"] / "report.md").read_text()
    assert "- Source: pgBackRest repository s3://" in md
