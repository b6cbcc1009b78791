"""The sandbox playbook brings a sandbox up; a second run and a check-mode run change nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FREE_PORTS, REPO, ansible_env, new_state_dir

pytestmark = pytest.mark.integration


def playbook(*extra: str, state_dir: Path) -> subprocess.CompletedProcess:
    env = {**ansible_env(), "ANSIBLE_FORCE_COLOR": "0"}
    extra_vars = json.dumps({"sandbox_state_dir": str(state_dir), "sandbox_ports": FREE_PORTS})
    return subprocess.run(
        ["ansible-playbook", "playbooks/sandbox.yml", "-e", extra_vars, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def recap_changed(output: str) -> int:
    match = re.search(r"sandbox-local\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", output)
    assert match, output[-3000:]
    return int(match.group(1))


def test_sandbox_playbook_is_idempotent(capsys):
    state_dir = new_state_dir("wgops-test-playbook-")
    try:
        first = playbook(state_dir=state_dir)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert recap_changed(first.stdout) == 1
        second = playbook(state_dir=state_dir)
        assert second.returncode == 0, second.stdout[-3000:]
        assert recap_changed(second.stdout) == 0
        check = playbook("--check", state_dir=state_dir)
        assert recap_changed(check.stdout) == 0
        settings = json.loads((state_dir / "sandbox.json").read_text())
        for secret in (settings["s3_secret_key"], settings["pg_password"]):
            assert secret not in first.stdout + second.stdout, "secrets never appear in Ansible's output"
    finally:
        gone = playbook("-e", "sandbox_state=absent", state_dir=state_dir)
        assert gone.returncode == 0, gone.stdout[-3000:]
        assert not state_dir.exists()
        shutil.rmtree(state_dir, ignore_errors=True)
