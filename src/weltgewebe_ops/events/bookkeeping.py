"""This tool's own bookkeeping on a recovery database, in a schema of its own (``wgops``).

None of it is required of the application's migrations: the drill creates it on the restored
database when it first needs it, and nothing of the application reads it.

``projection_checkpoints``  the stream sequence each projection has applied
``projection_consumed``     event ids each projection has applied (each takes effect once)
``projection_quarantine``   events a projection could not apply, named and kept
``excluded_events``         events lost in a restore: in the stream, not in the restored database;
                            rebuilt read models leave them out
"""

from __future__ import annotations

from psycopg import sql

from ..core.settings import ContractNames

TABLES = {
    "projection_checkpoints": """
        projection text PRIMARY KEY,
        stream text NOT NULL,
        last_sequence bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()""",
    "projection_consumed": """
        projection text NOT NULL,
        event_id bigint NOT NULL,
        PRIMARY KEY (projection, event_id)""",
    "projection_quarantine": """
        projection text NOT NULL,
        stream_sequence bigint NOT NULL,
        event_id bigint,
        event_type text NOT NULL,
        attempts integer NOT NULL,
        error text NOT NULL,
        quarantined_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (projection, stream_sequence)""",
    "excluded_events": """
        event_id bigint PRIMARY KEY,
        reason text NOT NULL,
        stream_sequence bigint,
        recorded_at timestamptz NOT NULL DEFAULT now()""",
}


def table(names: ContractNames, name: str) -> sql.Identifier:
    if name not in TABLES:
        raise KeyError(f"no bookkeeping table {name!r}")
    return sql.Identifier(names.tool_schema, name)


EXISTS = "SELECT to_regclass(%s) IS NOT NULL"


def exists(conn, names: ContractNames, name: str) -> bool:
    """Whether the bookkeeping table ``name`` is there yet (synchronous connection)."""
    table(names, name)
    return conn.execute(EXISTS, (f"{names.tool_schema}.{name}",)).fetchone()[0]


async def exists_async(conn, names: ContractNames, name: str) -> bool:
    table(names, name)
    return (await (await conn.execute(EXISTS, (f"{names.tool_schema}.{name}",))).fetchone())[0]


def ensure(conn, names: ContractNames) -> None:
    """Create the schema and its tables when missing (synchronous connection)."""
    for stmt in _statements(names):
        conn.execute(stmt)


async def ensure_async(conn, names: ContractNames) -> None:
    for stmt in _statements(names):
        await conn.execute(stmt)


def _statements(names: ContractNames) -> list[sql.Composed]:
    out = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.tool_schema))]
    for name, columns in TABLES.items():
        out.append(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + columns + "\n)").format(table(names, name)))
    return out
