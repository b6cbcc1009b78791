"""The sandbox speaks Weltgewebe's data contract: its tables and checks, triggers writing thin
metadata events (none for an UPDATE that changes nothing), the receipts consumer writing each
receipt once, and a sandbox built from a directory of sqlx migrations instead."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import psycopg
import pytest

from tests.conftest import MIGRATIONS_FIXTURE, ansible_module
from weltgewebe_ops.core.settings import ContractNames
from weltgewebe_ops.events.projections import Projection
from weltgewebe_ops.events.projector import Projector, ProjectorConfig
from weltgewebe_ops.sandbox import contract as schema
from weltgewebe_ops.sandbox import workload

pytestmark = pytest.mark.integration

RECEIPTS = "weltgewebe-api-domain-receipts-v1"


def new_events(conn, after: int) -> list[tuple]:
    return conn.execute(
        "SELECT aggregate_type, aggregate_id, event_type, payload FROM domain_outbox WHERE id > %s ORDER BY id",
        (after,),
    ).fetchall()


def last_outbox_id(conn) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM domain_outbox").fetchone()[0]


def wait_for(probe, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def test_triggers_write_thin_metadata_events(db):
    start = last_outbox_id(db)
    account, node, edge, message = (str(uuid.uuid4()) for _ in range(4))
    db.execute(
        "INSERT INTO domain_accounts (id, title, email) VALUES (%s, 'Garnrolle', 'a@example.invalid')", (account,)
    )
    db.execute("INSERT INTO domain_nodes (id, title, lat, lon) VALUES (%s, 'Knoten', 53.5, 10.0)", (node,))
    db.execute(
        "INSERT INTO domain_edges (id, source_id, target_id, edge_kind) VALUES (%s, %s, %s, 'faden')",
        (edge, node, node),
    )
    db.execute("UPDATE domain_nodes SET title = 'Knoten 2', updated_at = updated_at WHERE id = %s", (node,))
    db.execute("UPDATE domain_nodes SET title = title WHERE id = %s", (node,))  # changes nothing: no event
    db.execute("DELETE FROM domain_edges WHERE id = %s", (edge,))
    conversation = f"conversation-{node}"
    db.execute(
        "INSERT INTO domain_messages (id, conversation_id, content) VALUES (%s, %s, 'Hallo')", (message, conversation)
    )
    db.execute("DELETE FROM domain_nodes WHERE id = %s", (node,))
    events = new_events(db, start)
    assert [(t, i, e) for t, i, e, _ in events] == [
        ("account", account, "domain.account.created"),
        # a node insert is two outbox rows, its conversation's first (as in Weltgewebe)
        ("conversation", conversation, "domain.conversation.created"),
        ("node", node, "domain.node.created"),
        ("edge", edge, "domain.edge.created"),
        ("node", node, "domain.node.updated"),
        ("edge", edge, "domain.edge.deleted"),
        ("message", message, "domain.message.created"),
        # deleting a node archives its conversation
        ("conversation", conversation, "domain.conversation.archived"),
        ("node", node, "domain.node.deleted"),
    ]
    # the timestamps are the API's to set: the schema has no default and takes NULL
    assert db.execute("SELECT created_at FROM domain_accounts WHERE id = %s", (account,)).fetchone() == (None,)
    for aggregate_type, aggregate_id, event_type, payload in events:
        # metadata only, no row data
        assert payload == {
            "schema_version": 1,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "event_type": event_type,
        }


def test_outbox_has_the_real_checks(db):
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO domain_outbox (aggregate_type, aggregate_id, event_type, payload, published_at, "
            "quarantined_at) VALUES ('node', 'x', 'domain.node.created', '{}', now(), now())"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO domain_outbox (aggregate_type, aggregate_id, event_type, payload, attempt_count) "
            "VALUES ('node', 'x', 'domain.node.created', '{}', -1)"
        )
    assert db.execute("SELECT version FROM domain_projection_state WHERE singleton").fetchone() is not None
    recorded = db.execute("SELECT version, success FROM _sqlx_migrations").fetchall()
    assert recorded == [(schema.CONTRACT_VERSION, True)]


def test_receipts_consumer_writes_each_event_once(sandbox, db):
    """The projector service acts as Weltgewebe's receipts consumer: every published event gets
    one receipt; a rebuild of the receipts adds none twice and deletes none."""
    workload.run(
        workload.WorkloadConfig(
            dsn=sandbox.settings.dsn(), names=sandbox.settings.names, rate_per_second=0, max_writes=30
        )
    )

    def unreceipted():
        return db.execute(
            "SELECT count(*) FROM domain_outbox o WHERE NOT EXISTS (SELECT 1 FROM domain_event_consumptions r "
            "WHERE r.consumer_name = %s AND r.event_id = o.id)",
            (RECEIPTS,),
        ).fetchone()[0]

    wait_for(lambda: unreceipted() == 0, 30, "a receipt for every event")
    before = db.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM domain_event_consumptions WHERE consumer_name = %s", (RECEIPTS,)
    ).fetchone()
    names = sandbox.settings.names
    projector = Projector(
        ProjectorConfig(
            dsn=sandbox.settings.dsn(),
            nats_url=sandbox.settings.nats_url,
            names=names,
            projection=Projection.declared("receipts", names),
        )
    )
    result = asyncio.run(projector.replay("rebuild"))
    assert result["projection"] == RECEIPTS and result["last_sequence"] == result["stream_last_sequence"]
    after = db.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM domain_event_consumptions WHERE consumer_name = %s", (RECEIPTS,)
    ).fetchone()
    assert after[0] == after[1] >= before[0], "one receipt per event, none removed"
    # the bookkeeping is this tool's, in its own schema, not in the application's tables
    assert db.execute("SELECT to_regclass('wgops.projection_checkpoints') IS NOT NULL").fetchone()[0]
    assert not db.execute("SELECT to_regclass('public.projection_checkpoints') IS NOT NULL").fetchone()[0]


def test_projection_state_is_bumped_by_a_replay(sandbox, db):
    before = db.execute("SELECT version FROM domain_projection_state").fetchone()[0]
    names = sandbox.settings.names
    config = ProjectorConfig(
        dsn=sandbox.settings.dsn(),
        nats_url=sandbox.settings.nats_url,
        names=names,
        projection=Projection.declared("projection_state", names),
    )
    result = asyncio.run(Projector(config).replay("rebuild"))
    assert result["finished"] is True
    assert db.execute("SELECT version FROM domain_projection_state").fetchone()[0] == before + 1


def test_a_projection_on_a_missing_table_names_it(sandbox):
    names = ContractNames(edges_table="no_such_edges", faden_view="faden_view_missing_edges")
    config = ProjectorConfig(
        dsn=sandbox.settings.dsn(),
        nats_url=sandbox.settings.nats_url,
        names=names,
        projection=Projection.declared("faden_view", names),
    )
    with pytest.raises(RuntimeError) as error:
        asyncio.run(Projector(config).replay("rebuild"))
    message = str(error.value)
    assert "no_such_edges" in message and "does not exist" in message
    assert "migrations" in message and "names" in message


def test_sandbox_from_a_migrations_directory(migrated_sandbox):
    box = migrated_sandbox
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        recorded = conn.execute(
            "SELECT version, description, success FROM _sqlx_migrations ORDER BY version"
        ).fetchall()
        files = schema.read_migrations(MIGRATIONS_FIXTURE)
        assert [(m.version, m.description, True) for m in files] == recorded
        assert conn.execute("SELECT to_regclass('passkey_credentials') IS NOT NULL").fetchone()[0]
        # the sandbox is up only once its projector follows the stream: its read model is there
        assert conn.execute("SELECT to_regclass('faden_view') IS NOT NULL").fetchone()[0]
        start = last_outbox_id(conn)
        workload.run(
            workload.WorkloadConfig(dsn=box.settings.dsn(), names=box.settings.names, rate_per_second=0, max_writes=5)
        )
        # an edge written by something other than the API: the real schema lets created_at be NULL
        conn.execute(
            "INSERT INTO domain_edges (id, source_id, target_id) VALUES (%s, 'elsewhere-a', 'elsewhere-b')",
            (str(uuid.uuid4()),),
        )
        types = {row[2] for row in new_events(conn, start)}
        # the fixture's later migration adds an event type the projections do not know: ignored, not an error
        assert {"domain.node.created", "domain.edge.created", "domain.conversation.created"} <= types

        def projected():
            return conn.execute(
                "SELECT (SELECT count(*) FROM faden_view) = (SELECT count(*) FROM domain_edges) "
                "AND NOT EXISTS (SELECT 1 FROM domain_outbox o WHERE NOT EXISTS (SELECT 1 FROM "
                "domain_event_consumptions r WHERE r.consumer_name = %s AND r.event_id = o.id))",
                (RECEIPTS,),
            ).fetchone()[0]

        wait_for(projected, 30, "faden_view and the receipts to catch up")
        assert conn.execute("SELECT count(*) FROM faden_view WHERE created_at IS NULL").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM wgops.projection_quarantine").fetchone()[0] == 0
    # applying again changes nothing; a changed migration is refused by name
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        assert schema.apply(conn, box.settings.names, str(MIGRATIONS_FIXTURE)) == []


def test_a_changed_or_failing_migration_is_refused_by_name(migrated_sandbox, tmp_path):
    box = migrated_sandbox
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in MIGRATIONS_FIXTURE.glob("*.sql"):
        (changed / path.name).write_text(path.read_text())
    first = sorted(changed.glob("*.up.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with (
        psycopg.connect(box.settings.dsn(), autocommit=True) as conn,
        pytest.raises(schema.MigrationError, match=re.escape(first.name) + ".*changed after it was applied"),
    ):
        schema.apply(conn, box.settings.names, str(changed))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "20250101000000_broken.up.sql").write_text("CREATE TABLE wgops_half (x int);\nSELECT no_such_column;\n")
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS wgops_broken_test")
        conn.execute("SET search_path = wgops_broken_test")
        with pytest.raises(
            schema.MigrationError, match=re.escape("20250101000000_broken.up.sql failed and was rolled back")
        ):
            schema.apply(conn, box.settings.names, str(broken))
        assert not conn.execute("SELECT to_regclass('wgops_half') IS NOT NULL").fetchone()[0]
        conn.execute("DROP SCHEMA wgops_broken_test CASCADE")


def test_a_projection_declared_as_data_through_the_module(sandbox, db):
    """A team's own read model, declared in the task: its table is created, every node event
    applied, and a rebuild gives the same table."""
    workload.run(
        workload.WorkloadConfig(
            dsn=sandbox.settings.dsn(), names=sandbox.settings.names, rate_per_second=0, max_writes=10
        )
    )
    args = {
        "dsn": sandbox.settings.dsn(),
        "nats_url": sandbox.settings.nats_url,
        "projections": ["node_titles"],
        "mode": "rebuild",
        "declarations": {
            "node_titles": {
                "table": "wgops_test_node_titles",
                "create": "CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, title text NOT NULL)",
                "handlers": {
                    "domain.node.*": "INSERT INTO {table} SELECT DISTINCT n.id, n.title FROM "
                    "jsonb_to_recordset(%(batch)s::jsonb) AS e(envelope jsonb) JOIN {nodes} n "
                    "ON n.id = e.envelope ->> 'aggregate_id' ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title"
                },
            }
        },
    }
    rc, result, out = ansible_module("weltgewebe.ops.projector_replay", args)
    assert rc == 0, out[-2000:]
    assert sandbox.settings.pg_password not in out
    (projection,) = result["projections"]
    assert projection["projection"] == "node_titles" and projection["applied"] > 0
    nodes = db.execute("SELECT count(*) FROM domain_nodes").fetchone()[0]
    assert db.execute("SELECT count(*) FROM wgops_test_node_titles").fetchone()[0] == nodes
    rc, result, out = ansible_module("weltgewebe.ops.projector_replay", {**args, "projections": ["nope"]})
    assert rc != 0 and "no projection 'nope'" in result["msg"]
    db.execute("DROP TABLE wgops_test_node_titles")
