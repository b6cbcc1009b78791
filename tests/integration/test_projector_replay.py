"""Projector replay: a rebuild yields faden_view equal to what domain_edges derive, and a rebuild
killed midway leaves faden_view as it was."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import psycopg
import pytest

from weltgewebe_ops.core import progress
from weltgewebe_ops.core.progress import ProgressFile
from weltgewebe_ops.events.projections import Projection
from weltgewebe_ops.events.projector import Projector, ProjectorConfig
from weltgewebe_ops.events.relay import Relay, RelayConfig
from weltgewebe_ops.sandbox import workload

pytestmark = pytest.mark.integration

DERIVED = "SELECT count(*), md5(coalesce(string_agg(row_text, ',' ORDER BY row_text), '')) FROM ({rows}) r"
EDGES = "SELECT concat_ws('|', id, source_id, target_id, edge_kind, payload) AS row_text FROM domain_edges"
VIEW = "SELECT concat_ws('|', id, source_id, target_id, edge_kind, payload) AS row_text FROM faden_view"


def fingerprint(box, rows: str) -> tuple[int, str]:
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        return conn.execute(DERIVED.format(rows=rows)).fetchone()


@pytest.fixture()
def projector_paused(sandbox):
    """Events written and relayed, the sandbox's own projector stopped: the replay is the only writer."""
    workload.run(
        workload.WorkloadConfig(
            dsn=sandbox.settings.dsn(),
            names=sandbox.settings.names,
            rate_per_second=0,
            seconds=60,
            max_writes=1500,
            update_every=4,
        )
    )
    sandbox.services["relay"].stop()
    asyncio.run(
        Relay(
            RelayConfig(dsn=sandbox.settings.dsn(), nats_url=sandbox.settings.nats_url, names=sandbox.settings.names)
        ).drain(60)
    )
    sandbox.services["projector"].stop()
    yield sandbox
    sandbox.up("relay")
    sandbox.up("projector")


def replay(box, mode: str, progress: ProgressFile | None = None) -> dict:
    projector = Projector(
        ProjectorConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            names=box.settings.names,
            projection=Projection.declared("faden_view", box.settings.names),
        )
    )
    return asyncio.run(projector.replay(mode, progress))


def test_rebuild_equals_what_the_source_tables_derive(projector_paused, tmp_path):
    box = projector_paused
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE faden_view SET payload = '{\"x\": 1}' WHERE id IN (SELECT id FROM faden_view LIMIT 5)")
    assert fingerprint(box, VIEW) != fingerprint(box, EDGES)
    result = replay(box, "rebuild", ProgressFile(tmp_path / "replay.json"))
    assert result["applied"] > 1000 and result["last_sequence"] == result["stream_last_sequence"]
    said = progress.read(tmp_path / "replay.json")
    assert said["phase"] == "faden_view rebuild" and said["done"] == said["total"] == result["stream_last_sequence"]
    assert fingerprint(box, VIEW) == fingerprint(box, EDGES)
    again = replay(box, "catch_up")
    assert again["applied"] == 0, "nothing new: a catch-up changes nothing"


def test_a_killed_rebuild_leaves_the_read_model_as_it_was(projector_paused):
    """A rebuild runs in one transaction: killed midway (after it emptied the table and applied
    batches), the read model is exactly what it was before, never emptier; running it again
    completes it."""
    box = projector_paused
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        conn.execute("UPDATE faden_view SET payload = '{\"y\": 1}' WHERE id IN (SELECT id FROM faden_view LIMIT 5)")
    before = fingerprint(box, VIEW)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weltgewebe_ops.cli",
            "projector-replay",
            "--state-dir",
            str(box.settings.root),
            "--mode",
            "rebuild",
            "--batch-size",
            "20",
            "--projection",
            "faden_view",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        # midway: the rebuild's transaction holds the TRUNCATE's lock and has written rows since
        while proc.poll() is None and time.monotonic() < deadline:
            locked = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'faden_view'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if locked:
                time.sleep(0.3)  # some batches into it
                break
            time.sleep(0.005)
    assert proc.poll() is None, "the rebuild ended before it could be killed midway"
    proc.kill()
    proc.wait()
    assert fingerprint(box, VIEW) == before, "a killed rebuild must leave faden_view as it was"
    result = replay(box, "rebuild")
    assert result["last_sequence"] == result["stream_last_sequence"]
    assert fingerprint(box, VIEW) == fingerprint(box, EDGES)
