"""The sandbox's schema, modelled on Weltgewebe's data contract; every name comes from settings.

Domain tables (accounts, nodes, edges = Fäden) are written by the API and the workload. Triggers
write one ``domain_outbox`` row per change with event type ``domain.<node|edge|account>.<created|
updated|deleted>``; the relay publishes those rows to JetStream, the projector builds ``faden_view``.
"""

from __future__ import annotations

from psycopg import sql

from .settings import ContractNames

DDL = """
CREATE TABLE IF NOT EXISTS {accounts} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {nodes} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id uuid REFERENCES {accounts} (id),
    title text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {edges} (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source_id uuid NOT NULL REFERENCES {nodes} (id),
    target_id uuid NOT NULL REFERENCES {nodes} (id),
    kind text NOT NULL DEFAULT 'faden',
    note text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {outbox} (
    id bigserial PRIMARY KEY,
    aggregate_type text NOT NULL,
    aggregate_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempt_count integer NOT NULL DEFAULT 0,
    published_at timestamptz,
    quarantined_at timestamptz,
    last_error text
);
CREATE INDEX IF NOT EXISTS {outbox_pending_idx} ON {outbox} (id)
    WHERE published_at IS NULL AND quarantined_at IS NULL;
CREATE TABLE IF NOT EXISTS {consumptions} (
    consumer_name text NOT NULL,
    event_id bigint NOT NULL,
    consumed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_name, event_id)
);
CREATE TABLE IF NOT EXISTS {faden_view} (
    id uuid PRIMARY KEY,
    source_id uuid NOT NULL,
    target_id uuid NOT NULL,
    kind text NOT NULL,
    note text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_event_id bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {checkpoints} (
    projection text PRIMARY KEY,
    stream text NOT NULL,
    last_sequence bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION {outbox_fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    row_data jsonb;
    verb text := CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
BEGIN
    row_data := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    INSERT INTO {outbox} (aggregate_type, aggregate_id, event_type, payload)
    VALUES (TG_ARGV[0], (row_data ->> 'id')::uuid, 'domain.' || TG_ARGV[0] || '.' || verb, row_data);
    RETURN NULL;
END
$fn$;
"""

TRIGGER = """
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {trigger_name_literal}
                   AND tgrelid = {table_literal}::regclass) THEN
        CREATE TRIGGER {trigger_name} AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {outbox_fn}({aggregate});
    END IF;
END $do$;
"""

AGGREGATES = (("accounts_table", "account"), ("nodes_table", "node"), ("edges_table", "edge"))


def identifiers(names: ContractNames) -> dict[str, sql.Composable]:
    return {
        "accounts": sql.Identifier(names.accounts_table),
        "nodes": sql.Identifier(names.nodes_table),
        "edges": sql.Identifier(names.edges_table),
        "outbox": sql.Identifier(names.outbox_table),
        "outbox_pending_idx": sql.Identifier(f"{names.outbox_table}_pending_idx"),
        "consumptions": sql.Identifier(names.consumptions_table),
        "faden_view": sql.Identifier(names.faden_view),
        "checkpoints": sql.Identifier(names.checkpoints_table),
        "outbox_fn": sql.Identifier(f"{names.outbox_table}_capture"),
    }


def statements(names: ContractNames) -> list[sql.Composed]:
    ids = identifiers(names)
    out = [sql.SQL(DDL).format(**ids)]
    for attr, aggregate in AGGREGATES:
        table = getattr(names, attr)
        trigger = f"{table}_outbox"
        out.append(
            sql.SQL(TRIGGER).format(
                trigger_name=sql.Identifier(trigger),
                trigger_name_literal=sql.Literal(trigger),
                table=sql.Identifier(table),
                table_literal=sql.Literal(table),
                outbox_fn=ids["outbox_fn"],
                aggregate=sql.Literal(aggregate),
            )
        )
    return out


def apply(conn, names: ContractNames) -> bool:
    """Create what is missing; True when the schema changed (the tables were not all there)."""
    before = _missing_tables(conn, names)
    with conn.transaction():
        for stmt in statements(names):
            conn.execute(stmt)
    return bool(before)


def _missing_tables(conn, names: ContractNames) -> list[str]:
    wanted = [
        names.accounts_table,
        names.nodes_table,
        names.edges_table,
        names.outbox_table,
        names.consumptions_table,
        names.faden_view,
        names.checkpoints_table,
    ]
    rows = conn.execute("SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relkind = 'r'", (wanted,))
    present = {row[0] for row in rows}
    return [name for name in wanted if name not in present]
