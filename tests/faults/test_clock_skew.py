"""#28 item 6, met as in life: the source's clock runs 30 s ahead of this host's (its PostgreSQL
restarted under libfaketime), so the commit times in its WAL are 30 s late. A restore to the end of
the archive then brings back a "last commit" after the failure instant; an RPO taken as failure
instant - that commit would be 0 s and hide the loss. With the source's clock measured before the
disaster (as a sandbox drill does), the figure stays at or above the truth (this host's clock) and
the report names the skew; without the measurement, no figure is given and the warning says why."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.faults.conftest import own_sandbox, request, wait_archived
from weltgewebe_ops import restore
from weltgewebe_ops.archive import preflight as archive
from weltgewebe_ops.core import pg
from weltgewebe_ops.drill.disaster import source_clock
from weltgewebe_ops.drill.objectives import Objective, measure

pytestmark = pytest.mark.integration

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
AHEAD_SECONDS = 30


def restart_with_clock_ahead(box, seconds: int) -> None:
    """Stop the sandbox's PostgreSQL and start it again with its clock ``seconds`` ahead (it and
    its children, the archive_command included; monotonic clocks left alone)."""
    s = box.settings
    bindir, os_user = pg.resolve_bindir(s.pg_bindir), pg.run_as_user(s.pg_os_user)
    pg.stop(bindir, s.pg_data_dir, os_user, "fast")
    env = {
        **pg.user_env(),
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": f"+{seconds}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }
    log = s.pg_data_dir.parent / "postgres.log"
    argv = [str(bindir / "pg_ctl"), "start", "-w", "-t", "120", "-D", str(s.pg_data_dir), "-l", str(log)]
    started = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/", **pg.as_user(os_user))
    assert started.returncode == 0, started.stderr or started.stdout


def test_a_source_clock_ahead_never_hides_loss(restore_dir):
    assert LIBFAKETIME.exists(), "libfaketime is missing: apt-get install libfaketime (.ci/run installs it)"
    with own_sandbox("wgops-test-skew-", ("s3", "postgres", "basebackup")) as box:
        restart_with_clock_ahead(box, AHEAD_SECONDS)
        with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
            db.execute("CREATE TABLE skewed (id int)")
            db.execute("INSERT INTO skewed VALUES (1)")
            committed = dt.datetime.now(dt.UTC)  # the last commit, by this host's clock: the truth
            wait_archived(db, db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])
        clock = source_clock(box.settings.dsn())  # what the drill's disaster measures before the kill
        assert AHEAD_SECONDS - 5 < clock["offset_seconds"] < AHEAD_SECONDS + 5, f"the source runs {clock} ahead"
        time.sleep(2)
        failure_at = dt.datetime.now(dt.UTC)
        preflight = archive.backup_info(box.s3(readonly=True), box.settings.s3_location(readonly=True))
        result = restore.restore(request(box, restore_dir))
        restored_to = dt.datetime.fromisoformat(result["last_replayed_commit_time"])
        # the WAL carries the source's clock: its last commit reads as after the failure instant
        assert restored_to > failure_at, (restored_to, failure_at)

    def figures(**more_facts) -> dict:
        facts = {"failure_at": failure_at.isoformat(), "restored_to": restored_to.isoformat(),
                 "stream_survived": False, "preflight": preflight, "restore": result, **more_facts}  # fmt: skip
        return measure(
            {"facts": facts, "phases": [{"name": "verify", "ended_at": dt.datetime.now(dt.UTC).isoformat()}]}
        )

    truth = (failure_at - committed).total_seconds()
    measured = figures(source_clock=clock)
    assert measured["rpo_seconds"] >= truth, (measured, truth)
    assert measured["rpo_seconds"] < truth + 1, "moved by the measured offset, not by a guess"
    assert measured["clock_warnings"][0].startswith(
        f"clock skew: the source's clock was {clock['offset_seconds']:.3f} s ahead"
    )

    unmeasured = figures()
    assert unmeasured["rpo_seconds"] is None and unmeasured["rpo_method"].startswith("not measured: the source's clock")
    warning = unmeasured["clock_warnings"][0]
    assert warning.startswith("clock skew: the last restored commit"), warning
    proven = float(warning.split(" s after the newest WAL")[0].rsplit(" ", 1)[-1])
    # the lead the archive proves: the clock's lead less the time the WAL took to reach the archive
    assert AHEAD_SECONDS - 15 < proven <= AHEAD_SECONDS + 5, warning
    assert not Objective("RPO", unmeasured["rpo_seconds"], 300).met
