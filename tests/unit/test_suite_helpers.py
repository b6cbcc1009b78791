"""The suite's own guard: a long subprocess that outlives its timeout is stopped with everything it
started (its whole process group), and its clean-up commands run (#28 item 9: timed-out Molecule
scenarios kept their playbooks, services and containers running for the rest of the run)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import machine_slowness, pids_running, run_owning_its_group


def test_a_timed_out_command_is_stopped_with_its_children_and_cleaned_up(tmp_path):
    marker = f"{time.time_ns() % 10**6}.25"  # a sleep no one else runs
    cleaned = tmp_path / "cleaned"
    with pytest.raises(subprocess.TimeoutExpired):
        run_owning_its_group(
            ["sh", "-c", f"sleep {marker} & sleep {marker} & wait"],
            timeout=1,
            cleanup=[["touch", str(cleaned)]],
        )
    assert not pids_running(f"sleep {marker}"), "the command's children outlived its timeout"
    assert cleaned.exists(), "the clean-up command ran"
    done = run_owning_its_group(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert 1.0 <= machine_slowness() <= 2.5


def test_the_timeout_counts_idle_machine_seconds(monkeypatch):
    """On a machine loaded 2.5 times over, a 1 s budget lasts 2.5 s: a second there counts 0.4."""
    import tests.conftest as suite

    monkeypatch.setattr(suite, "machine_slowness", lambda: 2.5)
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        suite.run_owning_its_group(["sleep", "30"], timeout=1, slice_seconds=0.25)
    assert 2.3 <= time.monotonic() - started < 10
