"""The message envelope: what a consumer accepts, and what it refuses by name."""

from __future__ import annotations

import json

import pytest

from weltgewebe_ops.events import envelope

GOOD = {
    "schema_version": 1,
    "event_id": 7,
    "aggregate_type": "edge",
    "aggregate_id": "e-1",
    "event_type": "domain.edge.created",
    "payload": {"schema_version": 1},
    "created_at": "2026-11-27T08:15:00.000000Z",
}


def test_an_envelope_is_parsed():
    assert envelope.parse(json.dumps(GOOD).encode()) == GOOD


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "payload"}).encode(), "payload missing"),
        (json.dumps({**GOOD, "schema_version": 2}).encode(), "schema_version 2, expected 1"),
        (json.dumps({"id": "a-bare-payload"}).encode(), "not an event envelope"),
    ],
)
def test_what_is_not_an_envelope_is_refused_by_name(body, says):
    with pytest.raises(envelope.EnvelopeError, match=says):
        envelope.parse(body)
