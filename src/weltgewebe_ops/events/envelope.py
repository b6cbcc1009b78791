"""The message body Weltgewebe's relay publishes and its receipts consumer parses (see
``docs/upstream.md``), written here from those facts:

    {"schema_version": 1, "event_id": <outbox id>, "aggregate_type": ..., "aggregate_id": ...,
     "event_type": ..., "payload": <the outbox row's payload column>, "created_at": <RFC 3339 UTC>}

The relay builds it in SQL (one expression, next to the claim, no JSON round trip in Python);
consumers (the projector's handlers, the audit) take the event's data from ``payload``.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_VERSION = 1
FIELDS = ("schema_version", "event_id", "aggregate_type", "aggregate_id", "event_type", "payload", "created_at")

# The envelope of an outbox row as JSON text, for a SELECT over the outbox table.
SQL_EXPRESSION = f"""jsonb_build_object(
    'schema_version', {SCHEMA_VERSION}, 'event_id', id, 'aggregate_type', aggregate_type,
    'aggregate_id', aggregate_id::text, 'event_type', event_type, 'payload', payload,
    'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text"""


class EnvelopeError(ValueError):
    """A message body that is not an envelope of this schema version."""


def parse(data: bytes | str) -> dict[str, Any]:
    """The envelope as a dict; EnvelopeError names what is wrong with it."""
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EnvelopeError(f"not a JSON object but {type(body).__name__}")
    missing = [name for name in FIELDS if name not in body]
    if missing:
        raise EnvelopeError(f"not an event envelope: {', '.join(missing)} missing")
    if body["schema_version"] != SCHEMA_VERSION:
        raise EnvelopeError(f"envelope schema_version {body['schema_version']!r}, expected {SCHEMA_VERSION}")
    return body
