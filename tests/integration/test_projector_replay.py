"""Projector replay: a rebuild yields faden_view equal to what domain_edges derive, and a rebuild
killed midway resumes to the same result."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import psycopg
import pytest

from weltgewebe_ops import workload
from weltgewebe_ops.projector import Projection, Projector, ProjectorConfig
from weltgewebe_ops.relay import Relay, RelayConfig

pytestmark = pytest.mark.integration

DERIVED = "SELECT count(*), md5(coalesce(string_agg(row_text, ',' ORDER BY row_text), '')) FROM ({rows}) r"
EDGES = "SELECT concat_ws('|', id, source_id, target_id, kind, note) AS row_text FROM domain_edges"
VIEW = "SELECT concat_ws('|', id, source_id, target_id, kind, note) AS row_text FROM faden_view"


def fingerprint(box, rows: str) -> tuple[int, str]:
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        return conn.execute(DERIVED.format(rows=rows)).fetchone()


def checkpoint(box) -> int:
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_sequence FROM projection_checkpoints WHERE projection = 'faden_view'"
        ).fetchone()
        return row[0] if row else 0


@pytest.fixture()
def projector_paused(sandbox):
    """Events written and relayed, the sandbox's own projector stopped: the replay is the only writer."""
    workload.run(
        workload.WorkloadConfig(
            dsn=sandbox.s.dsn(), names=sandbox.s.names, rate_per_second=0, seconds=60, max_writes=1500, update_every=4
        )
    )
    sandbox.services["relay"].stop()
    asyncio.run(Relay(RelayConfig(dsn=sandbox.s.dsn(), nats_url=sandbox.s.nats_url, names=sandbox.s.names)).drain(60))
    sandbox.services["projector"].stop()
    yield sandbox
    sandbox.up("relay")
    sandbox.up("projector")


def replay(box, mode: str) -> dict:
    projector = Projector(
        ProjectorConfig(
            dsn=box.s.dsn(), nats_url=box.s.nats_url, names=box.s.names, projection=Projection.faden_view(box.s.names)
        )
    )
    return asyncio.run(projector.replay(mode))


def test_rebuild_equals_what_the_source_tables_derive(projector_paused):
    box = projector_paused
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE faden_view SET note = 'tampered' WHERE id IN (SELECT id FROM faden_view LIMIT 5)")
    assert fingerprint(box, VIEW) != fingerprint(box, EDGES)
    result = replay(box, "rebuild")
    assert result["applied"] > 1000 and result["last_sequence"] == result["stream_last_sequence"]
    assert fingerprint(box, VIEW) == fingerprint(box, EDGES)
    again = replay(box, "catch_up")
    assert again["applied"] == 0, "nothing new: a catch-up changes nothing"


def test_a_killed_rebuild_resumes_to_the_same_result(projector_paused):
    box = projector_paused
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weltgewebe_ops.cli",
            "projector-replay",
            "--state-dir",
            str(box.s.root),
            "--mode",
            "rebuild",
            "--batch-size",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    reset_seen = False  # the rebuild first empties the checkpoint, then commits batch after batch
    while proc.poll() is None and time.monotonic() < deadline:
        current = checkpoint(box)
        reset_seen = reset_seen or current == 0
        if reset_seen and current > 0:
            break
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    midway = checkpoint(box)
    assert midway > 0, "the rebuild had committed some batches"
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        last = conn.execute("SELECT max(last_event_id) FROM faden_view").fetchone()[0]
    assert fingerprint(box, VIEW) != fingerprint(box, EDGES), f"killed midway (checkpoint {midway}, last {last})"
    result = replay(box, "catch_up")
    assert result["last_sequence"] == result["stream_last_sequence"]
    assert fingerprint(box, VIEW) == fingerprint(box, EDGES)
