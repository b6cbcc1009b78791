"""Events a projection could not apply: what counts as one (``is_poison``) and the quarantine
table that records them (this tool's bookkeeping, ``toolschema``), read by the projector, the
API's readiness and the drill's checks."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..core.settings import ContractNames
from . import bookkeeping as toolschema


def is_poison(exc: BaseException) -> bool:
    """An error caused by one event's content (SQLSTATE class 22 data exception, 23 integrity
    constraint violation), not by the database or the projection itself."""
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state[:2] in ("22", "23")


QUARANTINE_COLUMNS = ("projection", "stream_sequence", "event_id", "event_type", "attempts", "error")


def _quarantine_select(names: ContractNames) -> sql.Composed:
    return sql.SQL(
        "SELECT {columns} FROM {t} WHERE %(p)s::text IS NULL OR projection = %(p)s ORDER BY stream_sequence"
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, QUARANTINE_COLUMNS)),
        t=toolschema.table(names, "projection_quarantine"),
    )


async def read_quarantine(conn, names: ContractNames, projection: str | None = None) -> list[dict]:
    """Quarantined events, oldest first (empty before this tool's schema exists)."""
    if not await toolschema.exists_async(conn, names, "projection_quarantine"):
        return []
    rows = await (await conn.execute(_quarantine_select(names), {"p": projection})).fetchall()
    return [dict(zip(QUARANTINE_COLUMNS, row, strict=True)) for row in rows]


def quarantined_events(conn, names: ContractNames) -> list[dict]:
    """``read_quarantine`` on a synchronous connection (the API's readiness, the drill's checks)."""
    if not toolschema.exists(conn, names, "projection_quarantine"):
        return []
    rows = conn.execute(_quarantine_select(names), {"p": None}).fetchall()
    return [dict(zip(QUARANTINE_COLUMNS, row, strict=True)) for row in rows]


async def record(conn, names: ContractNames, projection: str, event: tuple, attempts: int, error: psycopg.Error):
    """Put ``event`` (event id, type, data, stream sequence) in quarantine with its error (again:
    its attempts add up)."""
    event_id, event_type, _data, seq = event
    await conn.execute(
        sql.SQL(
            "INSERT INTO {t} (projection, stream_sequence, event_id, event_type, attempts, error) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (projection, stream_sequence) DO UPDATE "
            "SET attempts = {t}.attempts + EXCLUDED.attempts, error = EXCLUDED.error, quarantined_at = now()"
        ).format(t=toolschema.table(names, "projection_quarantine")),
        (projection, seq, event_id, event_type, attempts, f"{error.sqlstate}: {str(error).strip()}"),
    )
