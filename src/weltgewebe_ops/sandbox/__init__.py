"""The embedded sandbox: a miniature of Weltgewebe's production on 127.0.0.1, from wheels.

Components, in start order (each idempotent: starting what runs already changes nothing):

``s3``         SeaweedFS (``weed mini``): WAL bucket with versioning, Object Lock (COMPLIANCE,
               default retention) and default SSE-KMS through SeaweedFS's local KMS provider.
``postgres``   the primary, archive_mode=on, archive_command = ``wgops wal-push``.
``walstream``  pg_receivewal on a slot, when ``archive_method`` is ``streaming``.
``nats``       nats-server with JetStream and the stream ``WELTGEWEBE_DOMAIN``.
``schema``     Weltgewebe's data contract (or a team's own sqlx migrations) and this tool's
               ``wgops`` bookkeeping schema; a new database next to an older stream (the primary
               re-created after a drill) gets the event-log remedy first, so its outbox ids never
               collide with the stream's.
``basebackup`` a base backup in S3 when the cluster has none yet.
``relay``, ``projector``, ``api``  the long-running services.

State lives under ``state_dir``; ``down`` stops only what the sandbox started (recorded PIDs) and
removes state only when asked (``purge``).

Layout: ``box`` (the ``Sandbox``: which component, in which order, start and stop, status),
``storage`` (S3, PostgreSQL, schema, base backup, WAL stream), ``events`` (NATS and the
services), ``seaweed`` (SeaweedFS's configuration), ``result`` (what each step returns); what
runs in it: ``services`` (each service in the foreground), ``api`` (the stand-in for Weltgewebe's
API), ``workload`` and ``domain`` (writes, recorded as ground truth), ``contract`` (the schema:
Weltgewebe's data contract or a team's migrations), ``kms`` (a small KMS for SSE-KMS).

The names below load on first use: ``wgops`` imports ``sandbox.services`` for every command, and
the rest of the sandbox (boto3, psycopg) only when a command needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COMPONENTS": "box", "Sandbox": "box", "drifted_settings": "box", "load": "box", "prepare": "box",
    "Result": "result", "SandboxError": "result", "STREAM_SLOT": "storage",
}  # fmt: skip

__all__ = ["COMPONENTS", "STREAM_SLOT", "Result", "Sandbox", "SandboxError", "drifted_settings", "load", "prepare"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
