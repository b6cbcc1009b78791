"""The Molecule scenarios, run as the README's test command runs everything: `molecule test -s X`
against containers from the local base image (Docker without bridge, host networking)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("scenario", ["drill", "onboard", "archive"])
def test_molecule_scenario(scenario):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "ANSIBLE_FORCE_COLOR": "0"}
    env.pop("ANSIBLE_CONFIG", None)  # Molecule makes its own configuration
    proc = subprocess.run(
        ["molecule", "test", "-s", scenario],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
