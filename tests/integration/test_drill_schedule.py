"""Two nights and a morning after, unattended (#29 items 2 and 6): playbooks/schedule.yml installs
the schedule (idempotent; systemd units that systemd-analyze accepts), and the timer's command is
run three times as systemd would run it: a good night, a night that fails (its RPO objective set
below what any drill reaches), a good night again. Each shows in the metrics, the history page,
the webhook (on the failure and on the recovery only) and the retention of the reports."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import REPO, ansible_env, run_owning_its_group
from tests.integration.test_drill import drill_dirs, sandbox_vars  # noqa: F401 - fixture
from weltgewebe_ops.drill.metrics import parse_text

pytestmark = pytest.mark.integration


def schedule(extra: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "playbooks/schedule.yml", "-e", json.dumps(extra), *args],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def night(service: str) -> subprocess.CompletedProcess:
    """The service's ExecStart, as systemd runs it when the timer fires."""
    exec_start = next(line.split("=", 1)[1] for line in service.splitlines() if line.startswith("ExecStart="))
    return run_owning_its_group(shlex.split(exec_start), cwd=REPO, env=ansible_env(), timeout=900)


def test_two_nights_and_a_recovery_unattended(drill_dirs, tmp_path, webhook):  # noqa: F811 - fixture
    hook_url, hook_calls = webhook
    etc, units, reports = tmp_path / "etc", tmp_path / "systemd", drill_dirs["reports"]
    good = sandbox_vars(drill_dirs, 60, 5)
    extra = {
        "ansible_become": False, "drill_schedule_scheduler": "systemd", "drill_schedule_enable": False,
        "drill_schedule_systemd_dir": str(units), "drill_schedule_config_dir": str(etc),
        "drill_schedule_reports_dir": str(reports), "drill_schedule_extra_vars": good,
        "drill_schedule_webhook_url": hook_url, "drill_schedule_keep_reports": 2,
        "drill_schedule_environment": {"WGOPS_EXAMPLE_SECRET": "not-in-ps \"quoted\""},
    }  # fmt: skip
    units.mkdir()
    first = schedule(extra)
    assert first.returncode == 0, first.stdout[-3000:]
    again = schedule(extra)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-2000:]
    assert hook_url not in first.stdout + again.stdout and "not-in-ps" not in first.stdout
    env_file = etc / "drill.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    service, timer = (units / "wgops-drill.service").read_text(), (units / "wgops-drill.timer").read_text()
    assert "RandomizedDelaySec=1800" in timer and "OnCalendar=*-*-* 02:30:00" in timer
    assert hook_url not in service and "not-in-ps" not in service
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(units / "wgops-drill.service"),
                                 str(units / "wgops-drill.timer")], capture_output=True, text=True)  # fmt: skip
        assert "wgops-drill" not in verify.stderr.replace(str(units), ""), verify.stderr

    # night 1: a good drill; nothing to tell the webhook
    assert night(service).returncode == 0, (reports / "nightly.log").read_text()[-3000:]
    metrics = parse_text((reports / "wgops_drill.prom").read_text())
    assert metrics["wgops_drill_passed"] == 1.0
    assert hook_calls == []

    # night 2: the drill fails (an objective no drill meets): metrics, page and webhook say so
    (etc / "drill-vars.json").write_text(json.dumps({**good, "drill_rpo_objective_seconds": 0.001}))
    assert night(service).returncode != 0
    metrics = parse_text((reports / "wgops_drill.prom").read_text())
    assert metrics["wgops_drill_passed"] == 0.0
    failed = [c for c in hook_calls if c.get("event") == "drill_failed"]
    assert len(failed) == 1 and failed[0]["drill"]["passed"] is False
    assert "RPO" in failed[0]["drill"]["first_failure"], failed[0]

    # night 3: good again: the webhook hears of the recovery; retention keeps the newest two
    (etc / "drill-vars.json").write_text(json.dumps(good))
    assert night(service).returncode == 0, (reports / "nightly.log").read_text()[-3000:]
    metrics = parse_text((reports / "wgops_drill.prom").read_text())
    assert metrics["wgops_drill_passed"] == 1.0
    recovered = [c for c in hook_calls if c.get("event") == "drill_recovered"]
    assert len(recovered) == 1 and recovered[0]["previous"]["passed"] is False
    history = [json.loads(line) for line in (reports / "history.jsonl").read_text().splitlines()]
    assert [h["passed"] for h in history] == [True, False, True]
    page = (reports / "index.html").read_text()
    assert all(h["drill_id"] in page for h in history)
    kept = sorted(p.name for p in reports.iterdir() if (p / "report.json").exists())
    assert kept == [h["drill_id"] for h in history[1:]], kept
    log = (reports / "nightly.log").read_text()
    assert hook_url not in log and "not-in-ps" not in log
