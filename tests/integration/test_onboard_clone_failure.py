"""Onboarding when the clone fails: the checklist is still written and names the first cause; the
steps that need the checkout say they did not run and why, instead of failing on a missing file."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO, ansible_env


def test_a_failed_clone_is_the_named_cause_and_the_checklist_is_written(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    extra = {"onboard_workspace_repo": str(tmp_path / "no-such-repo.git"), "onboard_workspace_dest": str(home / "wg")}
    proc = subprocess.run(
        [
            "ansible-playbook",
            "playbooks/onboard.yml",
            "-l",
            "laptop",
            "--tags",
            "workspace,core_stack,hygiene",
            "-e",
            json.dumps(extra),
        ],
        cwd=REPO,
        env={**ansible_env(), "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0, "a failed step fails the play at the end"
    checklist = (home / "ONBOARDING.md").read_text()  # no checkout: beside it, in the home directory
    rows = [line for line in checklist.splitlines() if line.startswith("| ") and " | Step |" not in line]
    assert rows[0].startswith("| ✗ | Repository cloned or updated |") and "no-such-repo" in rows[0]
    not_run = [r for r in rows[1:] if "not run: the clone failed" in r]
    assert len(not_run) == len(rows) - 1 and len(not_run) >= 6, checklist
    assert all(r.startswith("| – |") for r in not_run)
    assert "Repository cloned or updated failed" in proc.stdout and "Destination directory" not in proc.stdout
