"""The DR drill end to end (playbooks/drill.yml) against real SeaweedFS, PostgreSQL and NATS:
sandbox mode through ansible-runner (.ci/drill.py), a missed RPO objective, a phase run alone, and
live mode with the read-only identity against a running "production" it must not change."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
import pytest
from botocore.exceptions import ClientError

from tests.conftest import FREE_PORTS, MIGRATIONS_FIXTURE, REPO, ansible_env, new_state_dir, run_owning_its_group
from tests.integration.test_event_audit import wait_published
from tests.integration.test_pitr import archive_now
from weltgewebe_ops import sandbox
from weltgewebe_ops.core import progress
from weltgewebe_ops.drill.metrics import parse_text
from weltgewebe_ops.events import envelope, natsio
from weltgewebe_ops.sandbox import workload

pytestmark = pytest.mark.integration

REPORT_KEYS = {
    "drill_id",
    "started_at",
    "failure_at",
    "ended_at",
    "restored_to",
    "rto_seconds",
    "rto_objective_seconds",
    "rto_met",
    "rpo_seconds",
    "rpo_objective_seconds",
    "rpo_met",
    "lost_events",
    "phases",
    "checks",
}


def load_ci_drill():
    spec = importlib.util.spec_from_file_location("ci_drill", REPO / ".ci" / "drill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def drill_dirs():
    root = new_state_dir("wgops-test-drill-")
    dirs = {"state": root / "sandbox", "reports": root / "reports", "recovery": root / "recovery"}
    yield dirs
    for state_dir in (dirs["state"], *sorted(dirs["recovery"].glob("*"))):
        if (state_dir / "sandbox.json").exists():
            sandbox.load(state_dir).down()
    shutil.rmtree(root, ignore_errors=True)


def sandbox_vars(dirs: dict, archive_timeout: int, workload_seconds: float, **extra) -> dict:
    return {
        "drill_sandbox_state_dir": str(dirs["state"]),
        "drill_reports_dir": str(dirs["reports"]),
        "drill_recovery_root": str(dirs["recovery"]),
        "drill_sandbox_archive_timeout_seconds": archive_timeout,
        "drill_workload_seconds": workload_seconds,
        "sandbox_ports": FREE_PORTS,
        "sandbox_wal_push_deadline_seconds": 5,
        **extra,
    }


def ansible_playbook(extra_vars: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # the whole group is stopped on a timeout: the drill's restore job and services with it
    return run_owning_its_group(
        ["ansible-playbook", "playbooks/drill.yml", "-e", json.dumps(extra_vars), *args],
        cwd=REPO,
        env={**ansible_env(), **(env or {})},
        timeout=840,
    )


def why_failed(report: dict, proc: subprocess.CompletedProcess) -> str:
    """A failed drill's message in full - a string: pytest cuts any other object at 240
    characters -, each failure on a line, the failed phases' details whole, the run's last lines."""
    details = [f"{p['name']}: {p.get('detail')}" for p in report.get("phases") or () if p.get("status") == "failed"]
    return "\n".join([*report.get("failures", []), *details, proc.stdout[-3000:]])


def latest_report(reports: Path) -> dict:
    drill_id = (reports / "LATEST").read_text().strip()
    return json.loads((reports / drill_id / "report.json").read_text())


def test_sandbox_drill_through_ansible_runner(drill_dirs, tmp_path, webhook):
    """The whole default drill, its "production" built from migrations shaped like Weltgewebe's
    real ones (nullable timestamps, two outbox rows per node insert, conversation events)."""
    hook_url, hook_calls = webhook
    ci_drill = load_ci_drill()
    code, stats = ci_drill.run(
        sandbox_vars(
            drill_dirs,
            archive_timeout=5,
            workload_seconds=12,
            drill_webhook_url=hook_url,
            drill_forecast_database_bytes=50 * 10**9,
            drill_sandbox_migrations_dir=str(MIGRATIONS_FIXTURE),
        ),
        str(REPO / "inventories" / "sandbox"),
        tmp_path / "artifacts",
        quiet=True,
    )
    report = latest_report(drill_dirs["reports"])
    assert code == 0, report.get("failures")
    # the ansible-runner entry exposes the set_stats data
    assert stats["drill_id"] == report["drill_id"] and stats["passed"] is True
    assert stats["rto_seconds"] == report["rto_seconds"] and stats["rpo_seconds"] == report["rpo_seconds"]
    assert (tmp_path / "artifacts" / report["drill_id"] / "junit.xml").exists()

    assert set(report) >= REPORT_KEYS
    assert [p["name"] for p in report["phases"]] == [
        "disaster",
        "preflight",
        "provision",
        "restore",
        "replay",
        "verify",
    ]
    assert all(p["status"] == "passed" for p in report["phases"])
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "sql_smoke": "passed",
        "migrations_applied": "passed",
        "row_counts": "passed",
        "api_live": "passed",
        "api_ready": "passed",
        "no_quarantined_events": "passed",
        "api_create_and_read_faden": "passed",
        "faden_view_matches_domain_edges": "passed",
        "receipts_complete": "passed",
        "stream_matches_outbox": "passed",
    }
    projections = {p["projection"]: p for p in report["replay"]["projectors"]}
    assert set(projections) == {"weltgewebe-api-domain-receipts-v1", "projection_state", "faden_view"}
    assert projections["weltgewebe-api-domain-receipts-v1"]["excluded"] == report["lost_events"]
    # RTO: the failure instant to the end of verify, and the recovery phases add up to it
    assert 0 < report["rto_seconds"] < 600
    assert abs(report["rto_seconds"] - report["rto_phase_seconds"]) < 1.0
    # RPO and lost events agree with the ground truth the workload and the relay wrote
    truth = report["ground_truth"]
    assert truth["lost_writes"] > 0 and report["lost_events"] > 0, "the disaster must have lost something"
    assert report["lost_events"] == truth["lost_events"]
    # the RPO errs high, never low, and stays within a second of the truth
    assert truth["rpo_seconds"] <= report["rpo_seconds"] <= truth["rpo_seconds"] + 1.0, (report["rpo_seconds"], truth)
    assert report["rpo_method"].startswith("upper bound") and "surviving stream shows" in report["rpo_method"]
    assert report["clock_warnings"] == [], "one host, one clock: the archive's times bound nothing here"
    assert 0 < report["rpo_stream_seconds"] <= report["rpo_seconds"]

    # the forecast scales the measured base backup throughput to the 50 GB given, WAL as restored
    forecast, restored = report["rto_forecast"], report["restore"]
    assert forecast["database_bytes"] == 50 * 10**9 and forecast["wal_bytes"] == restored["wal_bytes"]
    base_seconds = restored["base_backup_download_extract_seconds"]
    assert forecast["base_seconds_per_gb"] == pytest.approx(base_seconds / (restored["base_backup_bytes"] / 1e9), 1e-3)
    assert forecast["predicted_rto_seconds"] > report["rto_seconds"]

    drill_dir = drill_dirs["reports"] / report["drill_id"]
    markdown = (drill_dir / "report.md").read_text()
    assert "| Startzeit | Endzeit | RTO erreicht? | RPO erreicht? |" in markdown
    assert "RTO forecast at 50.00 GB database" in markdown and "(drill_forecast_database_bytes)" in markdown
    assert "timeline.svg" in markdown and (drill_dir / "timeline.svg").read_text().startswith("<svg")
    suite = ET.parse(drill_dir / "junit.xml").getroot()
    names = {case.get("name") for case in suite.iter("testcase")}
    assert {"RTO", "RPO", "api_create_and_read_faden", "restore"} <= names
    assert suite.get("failures") == "0"
    history = [json.loads(line) for line in (drill_dirs["reports"] / "history.jsonl").read_text().splitlines()]
    assert history[-1]["drill_id"] == report["drill_id"] and history[-1]["passed"] is True
    # the history page and the metrics, beside the reports (the browser and the rules: test_drill_monitoring)
    assert f'href="{report["drill_id"]}/report.md"' in (drill_dirs["reports"] / "index.html").read_text()
    prom = (drill_dirs["reports"] / "wgops_drill.prom").read_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=prom, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    series = parse_text(prom)
    assert series["wgops_drill_passed"] == 1 and series["wgops_drill_rto_seconds"] == report["rto_seconds"]
    assert series['wgops_drill_check_passed{check="api_create_and_read_faden"}'] == 1

    # the webhook heard the start and the result
    assert [c["event"] for c in hook_calls] == ["drill_started", "drill_finished"]
    assert hook_calls[1]["drill_id"] == report["drill_id"] and hook_calls[1]["passed"] is True
    assert "s3cr3t-hook-token" not in (drill_dir / "record.json").read_text()

    # the drill read the archive with the read-only identity; that identity cannot write
    box = sandbox.load(drill_dirs["state"])
    with pytest.raises(ClientError) as refused:
        box.s3(readonly=True).put_object(Bucket=box.settings.bucket, Key="drill-write-probe", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert box.settings.s3_secret_key not in (drill_dir / "record.json").read_text()

    # a phase alone: the report of the newest drill, written again from its record
    again = ansible_playbook(sandbox_vars(drill_dirs, 5, 12), "--tags", "report")
    assert again.returncode == 0, again.stdout[-3000:]
    assert latest_report(drill_dirs["reports"])["rto_seconds"] == report["rto_seconds"]
    assert len((drill_dirs["reports"] / "history.jsonl").read_text().splitlines()) == 1


def test_missed_rpo_objective_fails_the_drill(drill_dirs):
    # archive_timeout 60 s: nothing written in the 4 s of workload reaches the archive; the stream
    # is lost too, so the recovery republishes the restored outbox into a stream of its own
    proc = ansible_playbook(
        sandbox_vars(
            drill_dirs,
            archive_timeout=60,
            workload_seconds=4,
            drill_rpo_objective_seconds=1,
            drill_lose_jetstream=True,
        )
    )
    report = latest_report(drill_dirs["reports"])
    assert proc.returncode != 0
    assert report["rpo_met"] is False and report["rto_met"] is True
    assert report["rpo_seconds"] > 1 and report["passed"] is False
    assert any(f.startswith("RPO") for f in report["failures"])
    assert report["rpo_method"].startswith("upper bound"), "no surviving stream: a bound, and it says so"
    assert report["ground_truth"]["rpo_seconds"] <= report["rpo_seconds"] + 1.0, "the bound is not below the truth"
    assert all(c["status"] == "passed" for c in report["checks"]), report["checks"]
    assert "The drill failed: RPO" in proc.stdout
    # the run ends with the table and the verdict as plain lines (callback weltgewebe.ops.drill_summary)
    last = proc.stdout.rstrip().splitlines()
    assert last[-1].startswith("FAILED: RPO"), last[-8:]
    assert last[-2] == f"report: {drill_dirs['reports'] / report['drill_id'] / 'report.md'}", last[-8:]
    assert "| Startzeit | Endzeit | RTO erreicht? | RPO erreicht? |" in last[-10:], last[-10:]
    suite = ET.parse(drill_dirs["reports"] / report["drill_id"] / "junit.xml").getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["RPO"]


def live_inventory(tmp_path: Path, box, recovery_root: Path, reports: Path) -> Path:
    """The documented example inventory, copied and filled in as an operator would: this
    "production"'s endpoints in its group_vars; secrets stay in the environment."""
    import yaml

    inventory = tmp_path / "production"
    shutil.copytree(REPO / "inventories" / "production.example", inventory)
    group_vars = inventory / "group_vars" / "all" / "main.yml"
    values = yaml.safe_load(group_vars.read_text())
    ro = box.settings.s3_location(readonly=True)
    values.update(
        drill_s3_endpoint_url=ro.endpoint_url,
        drill_s3_region=ro.region,
        drill_s3_bucket=ro.bucket,
        drill_s3_prefix=box.settings.archive_prefix,
        drill_s3_kms_key_id=box.settings.kms_key_id,  # the alias, resolved by the preflight
        drill_recovery_inventory_host="",  # recover on this machine
        drill_migrations_dir=str(MIGRATIONS_FIXTURE),
        drill_reports_dir=str(reports),
        drill_recovery_root=str(recovery_root),
        drill_keep_recovery=True,  # the test reads the recovery's stream, then removes it
    )
    group_vars.write_text(yaml.safe_dump(values, sort_keys=False))
    return inventory


def recovery_messages(recovery_root: Path) -> list:
    """Every message of the kept recovery site's stream."""
    state = next(p.parent for p in recovery_root.glob("*/sandbox.json"))
    box = sandbox.load(state)

    async def read():
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await nats.connect(box.settings.nats_url)
        try:
            sub = await nc.jetstream().pull_subscribe(
                box.settings.names.stream_subjects,
                stream=box.settings.names.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE),
            )
            return await sub.fetch(100000, timeout=3)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_live_mode_through_the_example_inventory_reads_only(migrated_sandbox, drill_dirs, tmp_path):
    """The documented live drill against a running "production" built from sqlx migrations: it
    passes, and production is unchanged (no object version gone, source outbox and stream as
    they were); what the recovery published is Weltgewebe's envelope."""
    box = migrated_sandbox
    client = box.s3()

    def versions() -> set[tuple[str, str]]:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=box.settings.bucket)
        return {(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", [])}

    def outbox() -> list[tuple]:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            return conn.execute(
                "SELECT id, event_type, published_at, attempt_count FROM domain_outbox ORDER BY id"
            ).fetchall()

    workload.run(
        workload.WorkloadConfig(dsn=box.settings.dsn(), names=box.settings.names, rate_per_second=0, max_writes=20)
    )
    wait_published(box)
    with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
        archive_now(box, db)
    before_objects, before_rows = versions(), outbox()
    before_stream = asyncio.run(natsio.stream_state(box.settings.nats_url, box.settings.names))
    ro = box.settings.s3_location(readonly=True)
    inventory = live_inventory(tmp_path, box, drill_dirs["recovery"], drill_dirs["reports"])
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "playbooks/drill.yml"],
        cwd=REPO,
        env={
            **ansible_env(),
            "WGOPS_S3_ACCESS_KEY_ID": ro.access_key,
            "WGOPS_S3_SECRET_ACCESS_KEY": ro.secret_key,
            "WGOPS_PG_PASSWORD": box.settings.pg_password,
            "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{box.settings.ports.kms}",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = latest_report(drill_dirs["reports"])
    assert proc.returncode == 0, why_failed(report, proc)
    assert report["mode"] == "live" and report["passed"]
    checks = {c["name"]: c for c in report["checks"]}
    assert "faden_view_matches_domain_edges" not in checks, "faden_view is off by default in live mode"
    assert checks["migrations_applied"]["status"] == "passed"
    assert f"all 6 of {MIGRATIONS_FIXTURE}" in checks["migrations_applied"]["detail"]
    assert "passkey_credentials 0" in checks["row_counts"]["detail"]
    assert checks["receipts_complete"]["status"] == "passed"
    assert report["rpo_method"].startswith("upper bound"), "no surviving stream: the RPO is a bound, said so"
    assert "ground_truth" not in report
    # production untouched: no object version gone, the source database and its stream unchanged
    assert before_objects <= versions()
    assert outbox() == before_rows
    assert asyncio.run(natsio.stream_state(box.settings.nats_url, box.settings.names)) == before_stream
    # the recovery had its own NATS, the restored outbox reached it (republished), as envelopes
    assert report["event_log"]["unstreamed_events"] == len(before_rows) > 0
    messages = recovery_messages(drill_dirs["recovery"])
    assert len(messages) >= len(before_rows)
    for msg in messages:
        body = envelope.parse(msg.data)
        assert msg.headers["Nats-Msg-Id"] == f"domain-outbox-{body['event_id']}"
        assert msg.subject == f"weltgewebe.{body['event_type']}"
    assert "domain.conversation.created" in {envelope.parse(m.data)["event_type"] for m in messages}
    # the drain and the rebuild ran in the background, saying their progress, to the end
    kept = next(drill_dirs["recovery"].glob("*/progress"))
    drained, rebuilt = progress.read(kept / "outbox-drain.json"), progress.read(kept / "projections.json")
    assert drained["phase"] == "outbox drain" and drained["done"] == drained["total"] == len(before_rows)
    assert rebuilt["phase"].endswith(" rebuild") and rebuilt["done"] == rebuilt["total"] > 0
    for secret in (ro.secret_key, box.settings.pg_password, box.settings.s3_secret_key):
        assert secret not in proc.stdout
