"""Projections, declared as data: what Weltgewebe derives from its events.

A projection is declared (``DECLARED`` below, or a mapping a user passes): a name, SQL per event
type (exact, or a pattern such as ``domain.*``), and optionally the table it owns (``create`` makes
it, a rebuild empties it) and ``finish`` (run once after a replay, in its transaction). Weltgewebe
today has two: the receipts consumer ``weltgewebe-api-domain-receipts-v1`` (one row per event in
``domain_event_consumptions``) and ``domain_projection_state`` (its version bumped so the API's
caches reload). ``faden_view`` is the runbook's example read model, built from ``domain_edges``:
Weltgewebe's events carry only metadata (type, aggregate), the row is read from its table.
``projector`` applies them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ..core.settings import ContractNames

# Handlers are set-based: each takes %(batch)s, a JSON array of {"ord", "event_id", "envelope"}
# (the message body, Weltgewebe's envelope) for a run of events with the same handler, in stream
# order, and applies the run in one statement. %(projection)s is the projection's name.
# Placeholders in braces are the contract's tables ({edges}, {consumptions}, ...) and {table}, the
# projection's own.
# A receipt for the event id its envelope carries (as Weltgewebe's consumer reads it); a message
# without one breaks the NOT NULL and is quarantined, never receipted under another id.
RECEIPT = """
INSERT INTO {consumptions} (consumer_name, event_id)
SELECT %(projection)s, (e.envelope ->> 'event_id')::bigint
FROM jsonb_to_recordset(%(batch)s::jsonb) AS e(envelope jsonb)
ON CONFLICT DO NOTHING
"""
# faden_view: the edge as domain_edges has it now (the event names it; within a run the last event
# of an edge decides, DISTINCT ON, as ON CONFLICT may not touch a row twice). An edge the database
# no longer has (deleted since) is left out, as its deleted event removes it. created_at takes
# what the edge has, NULL included: Weltgewebe's schema allows it (its API sets the column, a row
# written otherwise may lack it), and a view made by an older version without NULLs is relaxed.
FADEN_VIEW_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    id text PRIMARY KEY,
    source_id text NOT NULL,
    target_id text NOT NULL,
    edge_kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz,
    last_event_id bigint NOT NULL
);
ALTER TABLE {table} ALTER COLUMN created_at DROP NOT NULL
"""
FADEN_VIEW_UPSERT = """
INSERT INTO {table} (id, source_id, target_id, edge_kind, payload, created_at, last_event_id)
SELECT DISTINCT ON (d.id) d.id, d.source_id, d.target_id, d.edge_kind, d.payload, d.created_at, e.event_id
FROM jsonb_to_recordset(%(batch)s::jsonb) AS e(ord int, event_id bigint, envelope jsonb)
JOIN {edges} d ON d.id = e.envelope ->> 'aggregate_id'
ORDER BY d.id, e.ord DESC
ON CONFLICT (id) DO UPDATE SET source_id = EXCLUDED.source_id, target_id = EXCLUDED.target_id,
    edge_kind = EXCLUDED.edge_kind, payload = EXCLUDED.payload, last_event_id = EXCLUDED.last_event_id
"""
FADEN_VIEW_DELETE = """
DELETE FROM {table} v USING jsonb_to_recordset(%(batch)s::jsonb) AS e(envelope jsonb)
WHERE v.id = e.envelope ->> 'aggregate_id'
"""

# What Weltgewebe derives from its events, as data. "name" may be a contract name (receipts_consumer).
DECLARED: dict[str, dict[str, Any]] = {
    "receipts": {
        "name": "{receipts_consumer}",
        "handlers": {"domain.*": RECEIPT},
        # a receipt is kept once written: a rebuild adds what is missing, deletes nothing
        "reset": "",
    },
    "projection_state": {
        "handlers": {},
        "finish": "UPDATE {projection_state} SET version = version + 1",
    },
    "faden_view": {
        "name": "{faden_view}",
        "table": "{faden_view}",
        "create": FADEN_VIEW_CREATE,
        "handlers": {
            "domain.edge.created": FADEN_VIEW_UPSERT,
            "domain.edge.updated": FADEN_VIEW_UPSERT,
            "domain.edge.deleted": FADEN_VIEW_DELETE,
        },
    },
}


def _contract_identifiers(names: ContractNames) -> dict[str, sql.Identifier]:
    return {
        key.removesuffix("_table"): sql.Identifier(getattr(names, key))
        for key in (
            "accounts_table",
            "nodes_table",
            "edges_table",
            "outbox_table",
            "consumptions_table",
            "projection_state_table",
        )
    }


@dataclass(frozen=True)
class Projection:
    key: str
    name: str
    handlers: dict[str, str]
    table: str = ""
    create: str = ""
    finish: str = ""
    reset: str | None = None  # None: TRUNCATE the table (when there is one); "": nothing to empty

    @classmethod
    def declared(cls, key: str, names: ContractNames, spec: dict[str, Any] | None = None) -> Projection:
        """A projection from its declaration (``DECLARED[key]`` unless ``spec`` is given)."""
        if spec is None:
            if key not in DECLARED:
                raise ValueError(f"no projection {key!r}: declared are {', '.join(DECLARED)}")
            spec = DECLARED[key]
        unknown = set(spec) - {"name", "handlers", "table", "create", "finish", "reset"}
        if unknown:
            raise ValueError(f"projection {key!r}: unknown keys {', '.join(sorted(unknown))}")
        text = {f.name: getattr(names, f.name) for f in ContractNames.__dataclass_fields__.values()}
        projection = cls(
            key=key,
            name=str(spec.get("name") or key).format(**text),
            handlers=dict(spec.get("handlers") or {}),
            table=str(spec.get("table") or "").format(**text),
            create=spec.get("create") or "",
            finish=spec.get("finish") or "",
            reset=spec.get("reset"),
        )
        for statement in [*projection.handlers.values(), projection.create, projection.finish, projection.reset or ""]:
            try:
                projection.compose(statement, names)
            except (KeyError, IndexError, ValueError) as exc:
                known = ", ".join(f"{{{k}}}" for k in [*_contract_identifiers(names), "table"])
                raise ValueError(
                    f"projection {key!r}: a placeholder in its SQL is unknown ({exc}); known are {known} "
                    f"(and {{table}} only with a table); write a literal brace as {{{{ or }}}}"
                ) from exc
        return projection

    def compose(self, text: str, names: ContractNames) -> sql.Composed:
        ids = _contract_identifiers(names)
        if self.table:
            ids["table"] = sql.Identifier(self.table)
        return sql.SQL(text).format(**ids)

    def handler_for(self, event_type: str) -> str | None:
        """The key of the handler for ``event_type``: its own, else the first matching pattern."""
        if event_type in self.handlers:
            return event_type
        return next((key for key in self.handlers if fnmatch.fnmatchcase(event_type, key)), None)


def projections(selected, names: ContractNames, declarations: dict[str, dict] | None = None) -> list[Projection]:
    """The selected projections (keys of ``DECLARED`` or of ``declarations``, a user's own)."""
    own = declarations or {}
    return [Projection.declared(key, names, own.get(key)) for key in selected]
