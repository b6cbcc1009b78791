"""The restore source barman_cloud against real barman (3.19.1, as CloudNativePG's plugin runs it),
SeaweedFS and PostgreSQL: the sandbox archives as CloudNativePG does (barman-cloud-wal-archive
--gzip, barman-cloud-backup --gzip); the module restores with barman's own tools and the read-only
identity to a time (exactly the commits before it) and to latest (every archived commit); a gap in
the archive is named before anything is made."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, ansible_module, running_sandbox, s3_options
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars  # noqa: F401
from tests.integration.test_pitr import archive_now, commit, three_commits_archived
from weltgewebe_ops.core import pg
from weltgewebe_ops.restore import barmancloud
from weltgewebe_ops.restore.markers import INCOMPLETE_MARKER

pytestmark = pytest.mark.integration

BARMAN = REPO / ".cache" / "barman" / "bin"


@pytest.fixture(scope="module")
def barman_sandbox():
    assert (BARMAN / "barman-cloud-restore").exists(), f"no barman at {BARMAN}: run `make barman`"
    yield from running_sandbox(
        "wgops-test-barman-", archive_method="barman_cloud", barman_bindir=str(BARMAN), archive_timeout_seconds=10
    )


@pytest.fixture(scope="module")
def history(barman_sandbox):
    return three_commits_archived(barman_sandbox)


def module_args(box, restore_dir: Path, **extra) -> dict:
    return {
        "source": "barman_cloud",
        **s3_options(box.settings.barman_location(readonly=True)),
        "server_name": box.settings.barman_server,
        "barman_bindir": str(BARMAN),
        "data_dir": str(restore_dir / "data"),
        **extra,
    }


def accounts(box, result: dict) -> set[str]:
    dsn = pg.conninfo("127.0.0.1", result["port"], "postgres", box.settings.pg_password, "weltgewebe")
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT title FROM domain_accounts WHERE title LIKE 'pitr-%'")}


def test_preflight_reads_the_barman_layout(barman_sandbox, history, restore_dir):
    rc, info, out = ansible_module("weltgewebe.ops.restore_source", module_args(barman_sandbox, restore_dir))
    assert rc == 0, out
    assert info["problems"] == [] and info["source"] == "barman_cloud"
    assert info["chosen_backup"]["format"] == "barman_cloud" and info["chosen_backup"]["status"] == "DONE"
    assert info["continuity"]["missing"] == [] and info["continuity"]["segments"] >= 2
    assert info["chosen_backup_server_version_num"] >= 160000
    assert info["bucket"]["versioning"] == "Enabled" or info["warnings"], info["bucket"]
    assert barman_sandbox.settings.s3_readonly_secret_key not in out


def test_restore_to_a_time_has_exactly_the_commits_before_it(barman_sandbox, history, restore_dir):
    moment = history["b"]["ts"] + (history["c"]["ts"] - history["b"]["ts"]) / 2
    args = module_args(barman_sandbox, restore_dir, action="restore", target="time", target_value=moment.isoformat())
    rc, result, out = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc == 0, out
    assert accounts(barman_sandbox, result) == {"pitr-a", "pitr-b"}
    assert dt.datetime.fromisoformat(result["restored_to"]) <= moment
    assert result["tool"] == "barman-cloud-restore 3.19.1" and result["recovery_state"] == "promoted"
    assert not (restore_dir / "data" / INCOMPLETE_MARKER).exists()
    assert not list((restore_dir / "data.wgops").rglob("barman-cloud")), "the script with the secret is gone"
    assert barman_sandbox.settings.s3_readonly_secret_key not in out
    pg.stop(pg.resolve_bindir(), restore_dir / "data", pg.run_as_user("wgsandbox"), "immediate")


def test_restore_to_latest_has_every_archived_commit(barman_sandbox, history, restore_dir):
    rc, result, out = ansible_module(
        "weltgewebe.ops.restore_source", module_args(barman_sandbox, restore_dir, action="restore")
    )
    assert rc == 0, out
    assert accounts(barman_sandbox, result) == {"pitr-a", "pitr-b", "pitr-c"}
    assert dt.datetime.fromisoformat(result["restored_to"]) >= history["c"]["ts"]
    assert result["timeline"] >= 2
    pg.stop(pg.resolve_bindir(), restore_dir / "data", pg.run_as_user("wgsandbox"), "immediate")


def test_a_gap_in_the_archive_is_named_before_anything_is_made(barman_sandbox, history, restore_dir):
    """A copy of the archive without one segment between the base backup and the newest: the
    preflight names it and the restore makes nothing (the bucket is locked: the copy is how a
    segment goes missing here)."""
    box = barman_sandbox
    with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
        for label in ("gap-1", "gap-2"):  # segments after the dropped one: a gap, not a shorter archive
            commit(db, label)
            archive_now(box, db)
    client = box.s3()
    source = box.settings.barman_location()
    copy_prefix = f"{source.prefix}-gap-{time.time_ns()}"
    bc = barmancloud.BarmanCloud(source, box.settings.barman_server, BARMAN)
    inv, _ = barmancloud.list_inventory(client, bc)
    label = inv.labels[-1]
    segments = sorted(inv.segments[label["timeline"]].values(), key=lambda s: s.segno)
    after = [s.name for s in segments if s.name > label["start_wal_file"]]
    assert len(after) >= 3, after
    dropped = after[-2]
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=source.prefix + "/"):
        for obj in page.get("Contents", []):
            if dropped in obj["Key"]:
                continue
            key = copy_prefix + obj["Key"][len(source.prefix) :]
            client.copy_object(Bucket=source.bucket, Key=key, CopySource={"Bucket": source.bucket, "Key": obj["Key"]})
    args = {**module_args(box, restore_dir, action="restore"), "s3_prefix": copy_prefix}
    rc, result, _ = ansible_module("weltgewebe.ops.restore_source", args)
    assert rc != 0
    assert dropped in result["msg"] and "wal_gap" in {p["code"] for p in result["problems"]}, result["msg"]
    assert not (restore_dir / "data").exists()


def test_a_sandbox_drill_from_a_barman_cloud_archive(drill_dirs):  # noqa: F811 - fixture
    """The whole drill with drill_source barman_cloud: "production" archives as CloudNativePG does,
    the recovery restores with barman's tools; the figures hold against the ground truth."""
    proc = ansible_playbook(
        sandbox_vars(drill_dirs, archive_timeout=10, workload_seconds=10, drill_source="barman_cloud")
    )
    report = latest_report(drill_dirs["reports"])
    truth = report["ground_truth"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["passed"] and report["restore"]["source"] == "barman_cloud"
    assert report["restore"]["tool"] == "barman-cloud-restore 3.19.1"
    assert report["rpo_seconds"] >= truth["rpo_seconds"], "the bound is not below the truth"
    assert report["lost_events"] == truth["lost_events"]
    assert "barman-cloud-restore 3.19.1" in report["rpo_method"]
    md = (drill_dirs["reports"] / report["drill_id"] / "report.md").read_text()
    assert "- Source: Barman Cloud archive s3://" in md


def test_wal_that_vanishes_during_the_restore_is_a_loud_failure(barman_sandbox, history, restore_dir, monkeypatch):
    """The plan saw every segment; the newest one is gone when recovery asks for it (an outage, a
    deleted object: barman-cloud-wal-restore fails, and PostgreSQL takes a failing restore_command
    for the end of the archive and would promote). The restore must fail naming where it ended,
    never report success short of the archive. A copy in a bucket without Object Lock, so the
    object can vanish."""
    from weltgewebe_ops import restore
    from weltgewebe_ops.restore import sources

    box = barman_sandbox
    admin = box.s3()
    source = box.settings.barman_location()
    bucket = f"wgops-vanish-{time.time_ns()}"
    admin.create_bucket(Bucket=bucket)
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=source.prefix + "/"):
        for obj in page.get("Contents", []):
            body = admin.get_object(Bucket=source.bucket, Key=obj["Key"])["Body"].read()
            admin.put_object(Bucket=bucket, Key=obj["Key"], Body=body)
    loc = type(source)(**{**source.__dict__, "bucket": bucket})
    bc = barmancloud.BarmanCloud(loc, box.settings.barman_server, BARMAN)
    req = restore.RestoreRequest(loc=loc, data_dir=restore_dir / "data", target=restore.Target.parse("latest"))
    plan = barmancloud.make_plan(admin, bc, req.target)
    last = plan.segments[-1]
    real = sources.restore_with

    def restore_with(req, plan, *, put_base_backup, **kw):
        def then_vanish(staging):
            put_base_backup(staging)
            for key in [o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix=loc.prefix)["Contents"]]:
                if last in key:
                    admin.delete_object(Bucket=bucket, Key=key)

        return real(req, plan, put_base_backup=then_vanish, **kw)

    monkeypatch.setattr(sources, "restore_with", restore_with)
    with pytest.raises(restore.RestoreError, match=rf"short of the plan: the archive holds WAL through {last}"):
        barmancloud.restore(req, bc, admin)
    assert (restore_dir / "data" / INCOMPLETE_MARKER).exists()
    assert pg.postmaster_pid(restore_dir / "data") is None
