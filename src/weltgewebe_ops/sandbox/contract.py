"""The sandbox's schema: Weltgewebe's data contract (docs/upstream.md), or a
team's own sqlx migrations.

The built-in contract, written from the facts of Weltgewebe's schema (no upstream code):
``domain_nodes``, ``domain_edges`` (a Faden is an edge row), ``domain_accounts``, the outbox with
every column and check of the real one, the receipts table ``domain_event_consumptions`` and the
singleton ``domain_projection_state``. Triggers write one outbox row per change, event type
``domain.<node|edge|account>.<created|updated|deleted>``, with a thin metadata payload (no row
data); an UPDATE that changes nothing writes no row. As in Weltgewebe, every Knoten has a
conversation: a node insert first creates it (``domain.conversation.created``), then writes its own
``domain.node.created``, so one insert is two outbox rows; deleting a node archives its conversation
(``domain.conversation.archived``); messages have their events too. ``created_at``/``updated_at``
of nodes, edges and accounts are nullable without a default, as in Weltgewebe: its API sets them,
the database guarantees nothing, so whatever reads them must take a NULL.

Either way the applied migrations are recorded in ``_sqlx_migrations`` as sqlx does (version,
description, success, SHA-384 checksum, execution time in ns), so the drill's migration check reads
the same table on the sandbox as on Weltgewebe.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from ..core.settings import ContractNames


class MigrationError(RuntimeError):
    """A migration could not be applied, or an applied one changed; the message names the file."""


CONTRACT = """
CREATE TABLE IF NOT EXISTS {accounts} (
    id text PRIMARY KEY,
    kind text NOT NULL DEFAULT 'garnrolle',
    title text NOT NULL DEFAULT '',
    mode text NOT NULL DEFAULT 'verortet',
    radius_m bigint NOT NULL DEFAULT 0,
    disabled boolean NOT NULL DEFAULT false,
    location_lat double precision,
    location_lon double precision,
    role text NOT NULL DEFAULT 'user',
    email text,
    webauthn_user_id uuid,
    created_at timestamptz,
    updated_at timestamptz,
    public_payload jsonb NOT NULL DEFAULT '{{}}',
    private_payload jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {nodes} (
    id text PRIMARY KEY,
    kind text NOT NULL DEFAULT 'Unknown',
    title text NOT NULL DEFAULT 'Untitled',
    lat double precision,
    lon double precision,
    created_at timestamptz,
    updated_at timestamptz,
    payload jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {edges} (
    id text PRIMARY KEY,
    source_id text NOT NULL,
    target_id text NOT NULL,
    edge_kind text NOT NULL DEFAULT '',
    created_at timestamptz,
    payload jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {outbox} (
    id bigserial PRIMARY KEY,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempt_count integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    published_at timestamptz,
    quarantined_at timestamptz,
    last_error text,
    CHECK (NOT (published_at IS NOT NULL AND quarantined_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS {outbox_due_idx} ON {outbox} (available_at, id)
    WHERE published_at IS NULL AND quarantined_at IS NULL;
CREATE TABLE IF NOT EXISTS {consumptions} (
    consumer_name text NOT NULL,
    event_id bigint NOT NULL,
    consumed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_name, event_id)
);
CREATE TABLE IF NOT EXISTS {projection_state} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL DEFAULT 0
);
INSERT INTO {projection_state} (singleton) VALUES (true) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION {outbox_fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    aggregate_id text;
    event_type text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NULL;  -- an UPDATE that changes nothing is no event
    END IF;
    aggregate_id := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    event_type := 'domain.' || TG_ARGV[0] || '.'
        || CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
    INSERT INTO {outbox} (aggregate_type, aggregate_id, event_type, payload)
    VALUES (TG_ARGV[0], aggregate_id, event_type, jsonb_build_object(
        'schema_version', 1, 'aggregate_type', TG_ARGV[0], 'aggregate_id', aggregate_id, 'event_type', event_type));
    RETURN NULL;
END
$fn$;
CREATE TABLE IF NOT EXISTS {conversations} (
    id text PRIMARY KEY,
    node_id text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);
CREATE TABLE IF NOT EXISTS {messages} (
    id text PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES {conversations} (id),
    content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- a conversation's events: created, archived (when its node goes), else updated
CREATE OR REPLACE FUNCTION {conversation_fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    event_type text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NULL;
    END IF;
    event_type := 'domain.conversation.' || CASE
        WHEN TG_OP = 'INSERT' THEN 'created'
        WHEN TG_OP = 'UPDATE' AND OLD.archived_at IS NULL AND NEW.archived_at IS NOT NULL THEN 'archived'
        ELSE 'updated' END;
    INSERT INTO {outbox} (aggregate_type, aggregate_id, event_type, payload)
    VALUES ('conversation', NEW.id, event_type, jsonb_build_object(
        'schema_version', 1, 'aggregate_type', 'conversation', 'aggregate_id', NEW.id, 'event_type', event_type));
    RETURN NULL;
END
$fn$;
-- a node's conversation: opened with the node (before the node's own event), archived when it goes
CREATE OR REPLACE FUNCTION {node_conversation_fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {conversations} (id, node_id) VALUES ('conversation-' || NEW.id, NEW.id);
        RETURN NULL;
    END IF;
    UPDATE {conversations} SET archived_at = now() WHERE node_id = OLD.id AND archived_at IS NULL;
    RETURN OLD;
END
$fn$;
DO $do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {conversations_trigger_literal}) THEN
        CREATE TRIGGER {conversations_trigger} AFTER INSERT OR UPDATE ON {conversations}
            FOR EACH ROW EXECUTE FUNCTION {conversation_fn}();
    END IF;
    -- named to sort before the node's outbox trigger: the conversation's event comes first
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {node_opens_literal}) THEN
        CREATE TRIGGER {node_opens} AFTER INSERT ON {nodes}
            FOR EACH ROW EXECUTE FUNCTION {node_conversation_fn}();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = {node_archives_literal}) THEN
        CREATE TRIGGER {node_archives} BEFORE DELETE ON {nodes}
            FOR EACH ROW EXECUTE FUNCTION {node_conversation_fn}();
    END IF;
END $do$;
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

AGGREGATES = (
    ("accounts_table", "account"),
    ("nodes_table", "node"),
    ("edges_table", "edge"),
    ("messages_table", "message"),
)

# The built-in contract's entry in _sqlx_migrations (a version no sqlx timestamp will reach).
CONTRACT_VERSION = 1
CONTRACT_DESCRIPTION = "weltgewebe ops sandbox contract"

MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS {t} (
    version bigint PRIMARY KEY,
    description text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(),
    success boolean NOT NULL,
    checksum bytea NOT NULL,
    execution_time bigint NOT NULL
)
"""
# sqlx's file names: <version>_<description>.up.sql (reversible) or <version>_<description>.sql
MIGRATION_FILE = re.compile(r"^(\d+)_(.+?)(\.up)?\.sql$")


def _trigger_names(**names: str) -> dict[str, sql.Composable]:
    """Each trigger name as an identifier (to create it) and a literal (to look it up)."""
    out: dict[str, sql.Composable] = {}
    for key, name in names.items():
        out[key] = sql.Identifier(name)
        out[f"{key}_literal"] = sql.Literal(name)
    return out


def contract_sql(names: ContractNames) -> sql.Composed:
    outbox_fn = sql.Identifier(f"{names.outbox_table}_capture")
    parts = [
        sql.SQL(CONTRACT).format(
            accounts=sql.Identifier(names.accounts_table),
            nodes=sql.Identifier(names.nodes_table),
            edges=sql.Identifier(names.edges_table),
            outbox=sql.Identifier(names.outbox_table),
            outbox_due_idx=sql.Identifier(f"{names.outbox_table}_due_idx"),
            consumptions=sql.Identifier(names.consumptions_table),
            projection_state=sql.Identifier(names.projection_state_table),
            outbox_fn=outbox_fn,
            conversations=sql.Identifier(names.conversations_table),
            messages=sql.Identifier(names.messages_table),
            conversation_fn=sql.Identifier(f"{names.conversations_table}_capture"),
            node_conversation_fn=sql.Identifier(f"{names.nodes_table}_conversation"),
            **_trigger_names(
                conversations_trigger=f"{names.conversations_table}_outbox",
                node_opens=f"{names.nodes_table}_conversation_opens",
                node_archives=f"{names.nodes_table}_conversation_archives",
            ),
        )
    ]
    for attr, aggregate in AGGREGATES:
        table = getattr(names, attr)
        trigger = f"{table}_outbox"
        parts.append(
            sql.SQL(TRIGGER).format(
                trigger_name=sql.Identifier(trigger),
                trigger_name_literal=sql.Literal(trigger),
                table=sql.Identifier(table),
                table_literal=sql.Literal(table),
                outbox_fn=outbox_fn,
                aggregate=sql.Literal(aggregate),
            )
        )
    return sql.Composed(parts)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    path: Path | None
    text: str

    @property
    def checksum(self) -> bytes:
        return hashlib.sha384(self.text.encode()).digest()


def read_migrations(directory: str | Path) -> list[Migration]:
    """The migrations of a sqlx-style directory, by version; ``.down.sql`` files are not applied."""
    folder = Path(directory)
    if not folder.is_dir():
        raise MigrationError(f"migrations directory {folder} does not exist (sandbox_migrations_dir)")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".down.sql"):
            continue
        match = MIGRATION_FILE.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {found[version].path.name} and {path.name}")
        found[version] = Migration(version, match.group(2).replace("_", " "), path, path.read_text())
    if not found:
        raise MigrationError(f"no <version>_<name>.up.sql files in {folder}")
    return [found[v] for v in sorted(found)]


def apply(conn, names: ContractNames, migrations_dir: str = "") -> list[str]:
    """Apply what is not applied yet, each migration in its own transaction, recorded in
    ``_sqlx_migrations``; returns what was applied (empty: nothing to do). Raises
    ``MigrationError`` naming the file when one fails (its transaction is rolled back) or when an
    applied one has changed since."""
    if migrations_dir:
        migrations = read_migrations(migrations_dir)
    else:
        text = contract_sql(names).as_string(conn)
        migrations = [Migration(CONTRACT_VERSION, CONTRACT_DESCRIPTION, None, text)]
    table = sql.Identifier(names.migrations_table)
    conn.execute(sql.SQL(MIGRATIONS_DDL).format(t=table))
    applied = {
        row[0]: (row[1], bytes(row[2]))
        for row in conn.execute(sql.SQL("SELECT version, success, checksum FROM {t}").format(t=table))
    }
    done: list[str] = []
    for migration in migrations:
        label = migration.path.name if migration.path else migration.description
        if migration.version in applied:
            success, checksum = applied[migration.version]
            if not success:
                raise MigrationError(
                    f"migration {label} is recorded as failed in {names.migrations_table}; fix it first"
                )
            if checksum != migration.checksum:
                raise MigrationError(
                    f"migration {label} was changed after it was applied (checksum differs from "
                    f"{names.migrations_table}); restore the file or start a new sandbox"
                )
            continue
        started = time.perf_counter_ns()
        try:
            with conn.transaction():
                conn.execute(migration.text.encode())
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {t} (version, description, success, checksum, execution_time) "
                        "VALUES (%s, %s, true, %s, %s)"
                    ).format(t=table),
                    (migration.version, migration.description, migration.checksum, time.perf_counter_ns() - started),
                )
        except Exception as exc:
            raise MigrationError(f"migration {label} failed and was rolled back: {str(exc).strip()}") from exc
        done.append(label)
    return done


def missing_object(exc: Exception, who: str) -> str | None:
    """For an error about a missing table or column (SQLSTATE 42P01, 42703): what is missing, who
    needed it and what to configure. None for any other error."""
    state = getattr(exc, "sqlstate", None)
    if state not in ("42P01", "42703"):
        return None
    what = "table" if state == "42P01" else "column"
    return (
        f"{who}: the database has no such {what}: {str(exc).strip().splitlines()[0]}. It is not Weltgewebe's "
        f"schema as this tool knows it: apply the application's migrations to it, or set the contract's "
        f"names (drill_names / names) to the tables it has."
    )


def missing_tables(conn, names: ContractNames) -> list[str]:
    """Tables the sandbox's API, workload and relay write that the database does not have."""
    wanted = [
        names.nodes_table,
        names.edges_table,
        names.outbox_table,
        names.consumptions_table,
        names.projection_state_table,
    ]
    present = {row[0] for row in conn.execute("SELECT to_regclass(t)::text FROM unnest(%s::text[]) t", (wanted,))}
    return [name for name in wanted if name not in present]
