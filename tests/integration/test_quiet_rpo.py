"""A quiet database is not data loss (#29): the sandbox's coverage service records when the archive
held all the WAL the source had written, and a drill after a quiet spell bounds its RPO from that
instant instead of from the last commit. Nothing was lost (the ground truth says so); the RPO stays
an upper bound (at least the truth) and meets an objective the quiet spell alone would miss."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FREE_PORTS
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars, why_failed  # noqa: F401 - fixture
from weltgewebe_ops import sandbox
from weltgewebe_ops.archive import coverage

pytestmark = pytest.mark.integration

QUIET_SECONDS = 45
OBJECTIVE_SECONDS = 30
COVERAGE_EVERY = 3


@pytest.mark.parametrize("method", ["classic", "streaming"])
def test_a_quiet_spell_before_the_disaster_is_not_counted_as_loss(drill_dirs, method):  # noqa: F811 - fixture
    box = sandbox.Sandbox(
        sandbox.prepare({
            "state_dir": str(drill_dirs["state"]), "ports": FREE_PORTS, "wal_push_deadline_seconds": 5,
            "archive_timeout_seconds": 10, "archive_method": method, "coverage_interval_seconds": COVERAGE_EVERY,
        })
    )  # fmt: skip
    for result in box.up_all():
        print(result.line)
    wgops = str(Path(sys.executable).parent / "wgops")
    workload = subprocess.run(
        [wgops, "workload", "--state-dir", str(drill_dirs["state"]), "--seconds", "5"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    last_commit = dt.datetime.now(dt.UTC)
    assert json.loads(workload.stdout)["writes"] > 0, workload.stdout

    # quiet: no writes; the coverage service finds the archive caught up and says when
    time.sleep(QUIET_SECONDS)
    client, loc = box.s3(readonly=True), box.settings.s3_location(readonly=True)
    recorded = coverage.read(client, loc)
    assert recorded and recorded["method"] == method, recorded
    assert dt.datetime.fromisoformat(recorded["at"]) > last_commit + dt.timedelta(seconds=QUIET_SECONDS - 25), (
        recorded,
        last_commit,
    )

    drill_vars = sandbox_vars(drill_dirs, 10, 0, drill_sandbox_archive_method=method)
    drill_vars.update(drill_rpo_objective_seconds=OBJECTIVE_SECONDS, sandbox_coverage_interval_seconds=COVERAGE_EVERY)
    proc = ansible_playbook(drill_vars)
    report = latest_report(drill_dirs["reports"])
    assert proc.returncode == 0, why_failed(report, proc)
    truth = report["ground_truth"]
    assert truth["lost_writes"] == 0 and truth["writes_before_failure"] > 0, truth
    # the coverage counted, and it dates from the quiet spell, well after the workload's last commit
    # (PostgreSQL's own commits - autovacuum's, a late autoanalyze - may fall into the spell: they
    # are commits too, and the coverage is only ever used when it is later than the last of them)
    assert report["coverage"]["counted"], report["coverage"]
    covered_at = dt.datetime.fromisoformat(report["coverage"]["covered_at"])
    assert covered_at > last_commit + dt.timedelta(seconds=QUIET_SECONDS - 25), (covered_at, last_commit)
    restored_to = dt.datetime.fromisoformat(report["restored_to"])
    used = "coverage instant" if covered_at > restored_to else "last restored commit"
    assert used in report["rpo_method"], report["rpo_method"]
    # the bound: how often coverage is recorded, plus an archive_timeout after a checkpoint, plus slack
    assert truth["rpo_seconds"] <= report["rpo_seconds"] <= COVERAGE_EVERY + 10 + 10, (report["rpo_seconds"], report)
    assert report["rpo_met"]
    print(json.dumps({"method": method, "rpo_seconds": report["rpo_seconds"], "truth_rpo_seconds": truth["rpo_seconds"],
                      "lost_writes": truth["lost_writes"], "rpo_method": report["rpo_method"]}))  # fmt: skip
