"""Row 7: an event a projection cannot apply. Before, the projector retried it forever, nothing
after it reached the read model, /health/ready stayed 200, and a rebuild emptied faden_view and
then failed. Now it is quarantined by name, later events flow, readiness and the drill's checks
fail naming it, and a rebuild that fails leaves the read model as it was."""

from __future__ import annotations

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
    names = box.s.names
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        return drill.read_model_digest(conn, names.faden_view), drill.read_model_digest(conn, names.edges_table)


def ready(box) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{box.s.api_url}/health/ready", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def poisoned(event_site):
    """Fäden, then an outbox row the faden_view handler cannot apply (its id is no uuid), then more."""
    write_faeden(event_site, 40)
    with psycopg.connect(event_site.s.dsn(), autocommit=True) as conn:
        poison_id = conn.execute(
            "INSERT INTO domain_outbox (aggregate_type, aggregate_id, event_type, payload) "
            "VALUES ('edge', gen_random_uuid(), 'domain.edge.created', '{\"id\": \"not-a-uuid\"}') RETURNING id"
        ).fetchone()[0]
    write_faeden(event_site, 40)
    return poison_id


def test_the_running_projector_quarantines_the_event_and_later_ones_flow(event_site, poisoned):
    wait_for(lambda: digests(event_site)[0] == digests(event_site)[1], 60, "faden_view to catch up past the poison")
    with psycopg.connect(event_site.s.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT event_id, event_type, attempts, error FROM projection_quarantine").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(poisoned, "domain.edge.created", 3)]
    assert "uuid" in rows[0][3]


def test_readiness_and_the_drill_checks_fail_naming_the_event(event_site, poisoned):
    wait_for(lambda: ready(event_site)[0] == 503, 60, "readiness to see the quarantine")
    _, body = ready(event_site)
    projections = body["checks"]["projections"]
    assert projections["ok"] is False and projections["quarantined_events"] == 1
    assert f"event {poisoned} " in projections["quarantined"][0]
    checks = {
        c.name: c
        for c in drill.verify(event_site.s.dsn(), event_site.s.nats_url, event_site.s.api_url, event_site.s.names)
    }
    assert checks["no_quarantined_events"].status == "failed"
    assert f"event {poisoned} " in checks["no_quarantined_events"].detail
    assert checks["faden_view_matches_domain_edges"].status == "passed"


def test_a_rebuild_passes_over_the_event_and_a_failing_rebuild_leaves_the_read_model(event_site, poisoned):
    event_site.services["projector"].stop()
    try:
        rebuilt = replay(event_site, "rebuild")
        assert [q["event_id"] for q in rebuilt["quarantined_events"]] == [poisoned]
        before = digests(event_site)
        assert rebuilt["quarantined"] == 1 and rebuilt["applied"] >= before[0][0] > 60
        assert before[0] == before[1]
        with psycopg.connect(event_site.s.dsn(), autocommit=True) as conn:
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
            with psycopg.connect(event_site.s.dsn(), autocommit=True) as conn:
                conn.execute("DROP TRIGGER wgops_test_refuse ON faden_view")
                conn.execute("DROP FUNCTION wgops_test_refuse()")
    finally:
        event_site.up("projector")
