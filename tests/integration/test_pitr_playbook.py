"""backup_info and the pg_pitr role through ansible-playbook: check mode plans only, a real run
restores, and the credentials never appear in the output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, ansible_env, new_state_dir
from weltgewebe_ops.core import pg

pytestmark = pytest.mark.integration


def pitr_vars(box, data_dir: Path, **more) -> dict:
    """Extra vars for tests/playbooks/pitr.yml: the box's archive with its read-only identity."""
    loc = box.settings.s3_location(readonly=True)
    return {
        "pg_pitr_s3_endpoint_url": loc.endpoint_url,
        "pg_pitr_s3_bucket": loc.bucket,
        "pg_pitr_s3_prefix": loc.prefix,
        "pg_pitr_s3_access_key": loc.access_key,
        "pg_pitr_s3_secret_key": loc.secret_key,
        "pg_pitr_data_dir": str(data_dir),
        **more,
    }


def run(sandbox, data_dir: Path, *extra: str, **more_vars) -> tuple[subprocess.CompletedProcess, dict]:
    loc = sandbox.settings.s3_location(readonly=True)
    variables = json.dumps(pitr_vars(sandbox, data_dir, **more_vars))
    proc = subprocess.run(
        ["ansible-playbook", "tests/playbooks/pitr.yml", "-e", variables, *extra],
        cwd=REPO,
        env=ansible_env(json_output=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loc.secret_key not in proc.stdout + proc.stderr
    return proc, report(proc.stdout)


def report(stdout: str) -> dict:
    """The test report task's message, read from the json callback's output."""
    try:
        doc, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])
    except ValueError:
        return {}
    for task in doc["plays"][0]["tasks"]:
        msg = task["hosts"].get("sandbox-local", {}).get("msg", "")
        if isinstance(msg, str) and msg.startswith("RESULT "):
            return json.loads(msg[len("RESULT ") :])
    return {}


def test_check_mode_plans_and_touches_nothing(sandbox):
    where = new_state_dir("wgops-test-pitr-check-")
    try:
        proc, result = run(sandbox, where / "data", "--check")
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert result["problems"] == [] and result["state"] == "planned" and result["planned"] >= 1
        assert list(where.iterdir()) == []
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_role_restores_and_refuses_a_second_time(sandbox):
    where = new_state_dir("wgops-test-pitr-role-")
    try:
        proc, result = run(sandbox, where / "data")
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert result["state"] == "promoted" and result["port"] > 0
        again, _ = run(sandbox, where / "data")
        assert again.returncode != 0
        assert "is not empty" in again.stdout
    finally:
        pg.stop(pg.resolve_bindir(), where / "data", pg.run_as_user("wgsandbox"), "immediate")
        shutil.rmtree(where, ignore_errors=True)


def progress_lines(output: str, data_dir: Path) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"restore of {data_dir}: ")]


def test_a_restore_in_the_background_is_followed_to_its_result(sandbox):
    # pg_pitr_background (a recovery host): restore_wait follows the job and hands over its result
    where = new_state_dir("wgops-test-pitr-background-")
    try:
        proc, result = run(sandbox, where / "data", pg_pitr_background=True)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert result["state"] == "promoted" and result["port"] > 0
        state = json.loads((where / "data.wgops" / "progress.json").read_text())
        assert state["phase"] == "WAL replay" and state["done"] == state["total"] > 0, state
    finally:
        pg.stop(pg.resolve_bindir(), where / "data", pg.run_as_user("wgsandbox"), "immediate")
        shutil.rmtree(where, ignore_errors=True)


def test_restore_wait_says_the_progress_of_a_slow_job_and_returns_its_result(tmp_path):
    # a fake slow restore: an async job that writes the restore's progress file in three steps
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        ["ansible-playbook", "tests/playbooks/slow_job.yml", "-e", json.dumps({"data_dir": str(data_dir)})],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    # by content, not by the moment: a busy machine may let the waiter first look at the second step
    said = {line.split(": ", 1)[1] for line in progress_lines(proc.stdout, data_dir)}
    assert said and said <= {
        "base backup: 4.0 MB of 16.0 MB (25%), 4.0 MB/s, about 3 s left (running 1 s)",
        "WAL replay: 3 of 4 segments (75%), 1.5/s, about 1 s left (running 2 s)",
    }, said
    assert "FAKE RESTORE DONE" in proc.stdout, "the job's own result is handed over"


def test_job_wait_says_the_progress_of_a_slow_drain_and_rebuild(tmp_path):
    # the same fake job saying an outbox drain's, then a projection rebuild's progress
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        ["ansible-playbook", "tests/playbooks/slow_job.yml",
         "-e", json.dumps({"data_dir": str(data_dir), "waiter": "job"})],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    said = {line for line in proc.stdout.splitlines() if line.startswith("replay: ")}
    assert said and said <= {
        "replay: outbox drain: 5000 of 20000 events (25%), 2500.0/s, about 6 s left (running 2 s)",
        "replay: receipts rebuild: 90 of 120 events (75%), 30.0/s, about 1 s left (running 3 s)",
    }, said
    assert "FAKE RESTORE DONE" in proc.stdout, "the job's own result is handed over"


def test_restore_wait_fails_when_the_job_fails(tmp_path):
    proc = subprocess.run(
        ["ansible-playbook", "tests/playbooks/slow_job.yml",
         "-e", json.dumps({"data_dir": str(tmp_path / "data"), "fail": True})],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "FAKE RESTORE FAILED" in proc.stdout
