"""Row 7: an event a projection cannot apply. Before, the projector retried it forever, nothing
after it reached the read model, /health/ready stayed 200, and a rebuild emptied faden_view and
then failed. Now it is quarantined by name, later events flow, readiness and the drill's checks
fail naming it, and a rebuild that fails leaves the read model as it was.

The poison is what Weltgewebe's own consumer meets: a message in the stream that does not parse
(another publisher's), between Fäden the relay published."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.faults.conftest import wait_for
from tests.integration.test_projector_replay import replay
from tests.integration.test_relay_drain import write_faeden
from weltgewebe_ops import drill

pytestmark = pytest.mark.integration


def digests(box) -> tuple[tuple, tuple]:
    names = box.settings.names
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        return drill.read_model_digest(conn, names.faden_view), drill.read_model_digest(conn, names.edges_table)


def ready(box) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{box.settings.api_url}/health/ready", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def publish_unparsable(box) -> int:
    """A message that is not JSON on an edge subject; its stream sequence. Its message id is not
    the outbox's (the relay's later ids must not be taken as duplicates of it)."""
    import nats

    nc = await nats.connect(box.settings.nats_url)
    try:
        ack = await nc.jetstream().publish(
            box.settings.names.subject_for("domain.edge.created"),
            b"{not json",
            headers={"Nats-Msg-Id": "wgops-poison-1"},
        )
        return ack.seq
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def poisoned(event_site):
    """Fäden, then a message no handler can read, then more Fäden; the poison's stream sequence."""
    write_faeden(event_site, 40)
    sequence = asyncio.run(publish_unparsable(event_site))
    write_faeden(event_site, 40)
    return sequence


def test_the_running_projector_quarantines_the_event_and_later_ones_flow(event_site, poisoned):
    wait_for(lambda: digests(event_site)[0] == digests(event_site)[1], 60, "faden_view to catch up past the poison")
    with psycopg.connect(event_site.settings.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT projection, stream_sequence, event_type, attempts, error FROM wgops.projection_quarantine "
            "ORDER BY projection"
        ).fetchall()
    # both projections that read edge events met it: the receipts consumer and faden_view
    assert [r[:4] for r in rows] == [
        ("faden_view", poisoned, "domain.edge.created", 3),
        ("weltgewebe-api-domain-receipts-v1", poisoned, "domain.edge.created", 3),
    ]
    assert "json" in rows[0][4]


def test_readiness_and_the_drill_checks_fail_naming_the_event(event_site, poisoned):
    wait_for(lambda: ready(event_site)[0] == 503, 60, "readiness to see the quarantine")
    _, body = ready(event_site)
    chain = body["checks"]["event_chain"]
    assert chain["ok"] is False and chain["quarantined_events"] == 2
    assert f"stream sequence {poisoned}, " in " ".join(chain["problems"])
    options = drill.VerifyOptions(api_url=event_site.settings.api_url, smoke_timeout_seconds=5)
    checks = {
        c.name: c
        for c in drill.verify(
            event_site.settings.dsn(), event_site.settings.nats_url, event_site.settings.names, options
        )
    }
    assert checks["no_quarantined_events"].status == "failed"
    assert f"(seq {poisoned}, " in checks["no_quarantined_events"].detail
    assert checks["faden_view_matches_domain_edges"].status == "passed"


def test_a_rebuild_passes_over_the_event_and_a_failing_rebuild_leaves_the_read_model(event_site, poisoned):
    event_site.services["projector"].stop()
    try:
        rebuilt = replay(event_site, "rebuild")
        assert [q["stream_sequence"] for q in rebuilt["quarantined_events"]] == [poisoned]
        before = digests(event_site)
        assert rebuilt["quarantined"] == 1 and rebuilt["applied"] >= before[0][0] > 60
        assert before[0] == before[1]
        with psycopg.connect(event_site.settings.dsn(), autocommit=True) as conn:
            # a failure that is no event's fault (here a trigger refusing every write) stops the rebuild
            conn.execute(
                "CREATE FUNCTION wgops_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$BEGIN RAISE EXCEPTION 'read model locked for the test'; END$$"
            )
            conn.execute(
                "CREATE TRIGGER wgops_test_refuse BEFORE INSERT ON faden_view FOR EACH ROW "
                "EXECUTE FUNCTION wgops_test_refuse()"
            )
        try:
            with pytest.raises(psycopg.Error, match="read model locked for the test"):
                replay(event_site, "rebuild")
            assert digests(event_site) == before, "a failed rebuild must leave faden_view as it was"
        finally:
            with psycopg.connect(event_site.settings.dsn(), autocommit=True) as conn:
                conn.execute("DROP TRIGGER wgops_test_refuse ON faden_view")
                conn.execute("DROP FUNCTION wgops_test_refuse()")
    finally:
        event_site.up("projector")
