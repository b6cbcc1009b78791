"""The Molecule scenarios, run as the README's test command runs everything: `molecule test -s X`
against containers from the local base image (Docker without bridge, host networking)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_owning_its_group

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("scenario", ["drill", "onboard", "archive"])
@pytest.mark.timeout(3300)  # above the scenario's own, which stops everything the scenario started
def test_molecule_scenario(scenario):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ANSIBLE_FORCE_COLOR": "0"}
    env.pop("ANSIBLE_CONFIG", None)  # Molecule makes its own configuration
    # a scenario that runs out of time is stopped whole: its playbooks, then its cleanup playbook
    # (the sandbox, the compose stacks) and its containers, by molecule destroy
    proc = run_owning_its_group(
        ["molecule", "test", "-s", scenario],
        timeout=1000,  # idle-machine seconds: stretched while the machine is loaded
        cleanup=[["molecule", "destroy", "-s", scenario]],
        cwd=REPO,
        env=env,
    )
    output = proc.stdout + proc.stderr
    # the whole output stays for a failure's diagnosis (a scenario's own error may be far above its end)
    log = Path(os.environ.get("WGOPS_TEST_LOG_DIR", "/var/tmp")) / f"wgops-molecule-{scenario}.log"
    log.write_text(output)
    assert proc.returncode == 0, f"the whole output: {log}\n" + "\n".join(_failures(output)) + output[-6000:]


def _failures(output: str) -> list[str]:
    """The lines that name what failed (Ansible's 'fatal:' and 'FAILED' lines, with the next two)."""
    lines = output.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "failed:")) or "FAILED!" in line]
    return [line[:400] for i in marks[:10] for line in lines[i : i + 3]]
