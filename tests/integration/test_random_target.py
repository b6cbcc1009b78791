"""Random within window (#29 item 4): a drill draws an older base backup and a point in time, and
restores exactly the commits before it. The sandbox has two base backups (its own, and one taken
between two workloads); the seed is one that draws the older backup and an instant in the middle of
the span from its end to the archive's end, where the drill's own workload writes, so writes lie on
both sides of the drawn instant and the ground truth can tell a restore that stopped there from
one that went on or stopped short."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FREE_PORTS
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars, why_failed  # noqa: F401 - fixture
from weltgewebe_ops import sandbox

pytestmark = pytest.mark.integration


def seed_drawing(index: int, of: int, low: float, high: float) -> int:
    """A seed whose draw (drill/draw.py: one choice among ``of`` candidates, then a fraction of
    the span) picks candidate ``index`` at a fraction between ``low`` and ``high``."""
    for seed in range(10_000):
        rng = random.Random(seed)
        if rng.choice(range(of)) == index and low <= rng.random() <= high:
            return seed
    raise AssertionError("no such seed")


def test_a_drawn_older_backup_and_instant_restore_exactly_the_commits_before_it(drill_dirs):  # noqa: F811 - fixture
    box = sandbox.Sandbox(
        sandbox.prepare({
            "state_dir": str(drill_dirs["state"]), "ports": FREE_PORTS, "wal_push_deadline_seconds": 5,
            "archive_timeout_seconds": 5,
        })
    )  # fmt: skip
    for result in box.up_all():
        print(result.line)
    wgops = str(Path(sys.executable).parent / "wgops")
    run = {"capture_output": True, "text": True, "check": True, "timeout": 300}
    subprocess.run([wgops, "workload", "--state-dir", str(drill_dirs["state"]), "--seconds", "3"], **run)
    subprocess.run([wgops, "base-backup", "--state-dir", str(drill_dirs["state"])], **run)

    seed = seed_drawing(0, 2, 0.55, 0.65)  # the older of the two backups, past the middle of its span
    drill_vars = sandbox_vars(drill_dirs, 5, 20, drill_restore_target="random", drill_restore_draw_seed=seed)
    proc = ansible_playbook(drill_vars)
    report = latest_report(drill_dirs["reports"])
    assert proc.returncode == 0, why_failed(report, proc)

    drawn = report["drawn"]
    assert drawn["seed"] == seed and len(drawn["candidates"]) == 2, drawn
    assert drawn["backup_id"] == drawn["candidates"][0], drawn
    assert report["restore"]["base_backup"] == drawn["backup_id"], report["restore"]
    assert f"drill_restore_draw_seed={seed}" in proc.stdout
    # the restore stopped at the drawn instant: exactly the writes before it, none begun after it
    truth = report["ground_truth"]
    assert truth["target_at"] == drawn["target_time"], (truth, drawn)
    assert truth["exact_at_target"], truth
    assert truth["writes_before_target"] > 0 and truth["writes_after_target"] > 0, truth
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["restored_to_target"]["status"] == "passed", checks["restored_to_target"]
    assert checks["ground_truth_at_target"]["status"] == "passed", checks["ground_truth_at_target"]
    # no RPO for a drill that loses what came after its target on purpose; the RTO still counts
    assert report["rpo_seconds"] is None and report["rpo_met"] is None, report["rpo_method"]
    assert "random within window" in report["rpo_method"]
    assert report["rto_met"] and report["passed"], report["failures"]
    metrics = (drill_dirs["reports"] / "wgops_drill.prom").read_text()
    assert "wgops_drill_rpo_met NaN" in metrics and "wgops_drill_passed 1" in metrics, metrics
    print(json.dumps({"drawn": drawn, "truth": truth}, indent=1))
