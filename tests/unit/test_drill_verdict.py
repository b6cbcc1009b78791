"""The drill's verdict (objectives.build_report), how its recovery phases chain into the RTO
(record.Record.phase_started) and which checks a recovery gets (checks.planned_checks), from
hand-made records and options: no processes."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from weltgewebe_ops.core.settings import ContractNames
from weltgewebe_ops.drill.checks import Recovered, VerifyOptions, planned_checks
from weltgewebe_ops.drill.objectives import build_report
from weltgewebe_ops.drill.record import CHAIN_SECONDS, RTO_PHASES, Record, iso, now, parse_iso

FAILURE = "2026-11-28T03:00:00+00:00"
MINUTE = 60.0


def drill_record(
    phases: dict[str, str], *, verify_ends="03:10:00", checks=(), rto=4 * 3600.0, rpo=300.0, detail=""
) -> dict:
    """A record whose phases (name: status) ran one after another from the failure instant."""
    entries = []
    for i, (name, status) in enumerate(phases.items()):
        ended = f"2026-11-28T{verify_ends}+00:00" if name == "verify" else f"2026-11-28T03:0{i}:30+00:00"
        entries.append({"name": name, "started_at": f"2026-11-28T03:0{i}:00+00:00", "ended_at": ended,
                        "seconds": 30.0, "status": status, "detail": detail if status == "failed" else ""})  # fmt: skip
    return {
        "drill_id": "d1", "mode": "sandbox", "started_at": FAILURE,
        "rto_objective_seconds": rto, "rpo_objective_seconds": rpo,
        "settings": {}, "phases": entries,
        "facts": {"failure_at": FAILURE, "restored_to": "2026-11-28T02:59:57+00:00",
                  "checks": [{"name": n, "status": s} for n, s in checks]},
    }  # fmt: skip


ALL_PASSED = dict.fromkeys(RTO_PHASES, "passed")


@pytest.mark.parametrize(
    ("record", "failures"),
    [
        (drill_record(ALL_PASSED, checks=[("sql_smoke", "passed")]), []),
        # a failed phase: the later ones did not run, so nothing is measured and nothing passes
        (
            drill_record({"preflight": "passed", "provision": "failed"}),
            ["phase provision failed", "phase restore did not run", "phase replay did not run",
             "phase verify did not run", "RTO not measured > objective 4 h 00 min"],
        ),
        # the failure says why, on one line, cut short
        (
            drill_record({"preflight": "passed", "provision": "failed"},
                         detail="Cluster restored: WAL\nmissing " + "x" * 500),
            ["phase provision failed: " + ("Cluster restored: WAL missing " + "x" * 500)[:399] + "…",
             "phase restore did not run", "phase replay did not run",
             "phase verify did not run", "RTO not measured > objective 4 h 00 min"],
        ),
        (drill_record(ALL_PASSED, checks=[("sql_smoke", "passed"), ("receipts_complete", "failed")]),
         ["check receipts_complete failed"]),
        # every phase passed, but the recovery took longer than the objective
        (drill_record(ALL_PASSED, rto=5 * MINUTE), ["RTO 10 min 00 s > objective 5 min 00 s"]),
        (drill_record(ALL_PASSED, rpo=1.0), ["RPO 3.0 s > objective 1.0 s"]),
    ],
)  # fmt: skip
def test_the_drill_passes_only_with_every_phase_and_check_passed_and_both_objectives_met(record, failures):
    report = build_report(record)
    assert report.failures == failures
    assert report.passed is (failures == [])
    assert report.rto_phase_seconds == 30.0 * sum(p["name"] in RTO_PHASES for p in record["phases"])
    # report.json says the same, under the keys its readers (history, CI, the roles) use
    content = report.as_dict()
    assert (content["passed"], content["failures"]) == (report.passed, failures)
    assert (content["rto_met"], content["rpo_met"]) == (report.rto.met, report.rpo.met)


def begun(tmp_path, failure_seconds_ago: float) -> Record:
    record = Record(tmp_path, "chain")
    record.begin("sandbox", {"rto": 4 * 3600.0, "rpo": 300.0}, {})
    record.put({"failure_at": iso(now() - dt.timedelta(seconds=failure_seconds_ago)),
                "failure_monotonic": time.monotonic() - failure_seconds_ago})  # fmt: skip
    return record


def test_recovery_phases_start_where_the_failure_or_the_previous_phase_ended(tmp_path):
    record = begun(tmp_path, failure_seconds_ago=2.0)
    first = record.phase_started("preflight")
    assert first["started_at"] == record.data["facts"]["failure_at"]  # the time before it is recovery time too
    ended = record.phase_finished("preflight", "passed")
    time.sleep(0.05)
    second = record.phase_started("provision")
    assert second["started_at"] == ended["ended_at"] and second["started_monotonic"] == ended["ended_monotonic"]
    record.phase_finished("provision", "passed")
    # the recovery phases add up to the time from the failure instant: no gap is left out
    total = sum(p["seconds"] for p in record.data["phases"])
    assert total == pytest.approx(time.monotonic() - record.data["facts"]["failure_monotonic"], abs=0.05)


def test_a_phase_run_alone_long_after_starts_when_it_starts(tmp_path):
    record = begun(tmp_path, failure_seconds_ago=CHAIN_SECONDS + 60)
    failure = parse_iso(record.data["facts"]["failure_at"])
    entry = record.phase_started("restore")
    assert parse_iso(entry["started_at"]) - failure >= dt.timedelta(seconds=CHAIN_SECONDS + 60)


def test_a_phase_outside_the_recovery_never_chains(tmp_path):
    record = begun(tmp_path, failure_seconds_ago=2.0)
    failure = parse_iso(record.data["facts"]["failure_at"])
    assert parse_iso(record.phase_started("disaster")["started_at"]) - failure >= dt.timedelta(seconds=2)


BASE_CHECKS = ["sql_smoke", "migrations_applied", "row_counts", "api_live", "api_ready", "no_quarantined_events"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # the sandbox: its own API is the front door, every projection rebuilt
        (VerifyOptions(api_url="http://127.0.0.1:1/"),
         [*BASE_CHECKS, "api_create_and_read_faden", "faden_view_matches_domain_edges", "receipts_complete",
          "stream_matches_outbox"]),
        # Weltgewebe's own stack behind Caddy: its health and reads; no POST /faeden there
        (VerifyOptions(api_url="http://127.0.0.1:1", app_url="http://127.0.0.1:2", faden_smoke=False,
                       projections=("receipts",)),
         [*BASE_CHECKS, "app_stack_live", "app_stack_ready", "app_stack_reads", "receipts_complete",
          "stream_matches_outbox"]),
        # the front door is the API itself: not checked twice
        (VerifyOptions(api_url="http://127.0.0.1:1", app_url="http://127.0.0.1:1/", app_read_paths=(),
                       projections=()),
         [*BASE_CHECKS, "stream_matches_outbox"]),
    ],
)  # fmt: skip
def test_the_checks_a_recovery_gets_follow_its_options(options, expected):
    recovered = Recovered("host=127.0.0.1", "nats://127.0.0.1:1", ContractNames(), options)
    assert [name for name, _ in planned_checks(recovered)] == expected
