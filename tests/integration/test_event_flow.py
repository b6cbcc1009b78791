"""A Faden created through the API reaches faden_view: API -> outbox -> relay -> JetStream -> projector."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from weltgewebe_ops.events import natsio
from weltgewebe_ops.sandbox import domain

pytestmark = pytest.mark.integration


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_endpoints(sandbox):
    assert http("GET", f"{sandbox.settings.api_url}/health/live") == (200, {"status": "ok"})
    status, body = http("GET", f"{sandbox.settings.api_url}/health/ready")
    assert status == 200, body
    passed = {name for name, check in body["checks"].items() if check["ok"]}
    assert passed == {"database", "event_chain", "nats"}, body


def test_faden_reaches_faden_view_end_to_end(sandbox, db):
    status, created = http(
        "POST", f"{sandbox.settings.api_url}/faeden", {"source": "Ahorn", "target": "Birke", "note": "e2e"}
    )
    assert status == 201
    deadline = time.monotonic() + 20
    while True:
        status, faden = http("GET", f"{sandbox.settings.api_url}/faeden/{created['id']}")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200, faden
    edge = db.execute(
        "SELECT source_id, target_id, edge_kind, payload FROM domain_edges WHERE id = %s", (created["id"],)
    ).fetchone()
    assert (faden["source_id"], faden["target_id"], faden["edge_kind"], faden["payload"]) == edge
    assert edge[3] == {"note": "e2e"}
    outbox = db.execute(
        "SELECT id, published_at IS NOT NULL FROM domain_outbox "
        "WHERE aggregate_id = %s AND event_type = 'domain.edge.created'",
        (created["id"],),
    ).fetchone()
    assert outbox[1], "the relay marked the event published"
    assert faden["last_event_id"] == outbox[0]
    truth = domain.GroundTruth(sandbox.settings.ground_truth_dir)
    assert created["id"] in {w["edge_id"] for w in truth.writes()}
    assert outbox[0] in {p["event_id"] for p in truth.published()}
    state = asyncio.run(natsio.stream_state(sandbox.settings.nats_url, sandbox.settings.names))
    assert state["duplicate_window_seconds"] == 120
    assert state["subjects"] == ["weltgewebe.domain.>"]
    assert state["last_seq"] >= 3
