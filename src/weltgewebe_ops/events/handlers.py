"""Applying a batch of stream messages to one projection: its handlers run set-based, one
statement per run of events with the same handler, in stream order; each event id takes effect once
(``projection_consumed``); an event whose content breaks its handler is tried ``max_attempts``
times on its own, then quarantined (``quarantine.record``) and passed over. The projector wraps each
batch in a transaction with its checkpoint."""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection, sql

from ..core.settings import ContractNames
from . import bookkeeping as toolschema
from .projections import Projection
from .quarantine import is_poison, record


class BatchApplier:
    def __init__(self, projection: Projection, names: ContractNames, max_attempts: int):
        self.projection, self.names, self.max_attempts = projection, names, max_attempts
        self._handlers = {key: projection.compose(text, names) for key, text in projection.handlers.items()}
        self._handler_of: dict[str, str | None] = {}
        self._consume_many = sql.SQL(
            "INSERT INTO {t} (projection, event_id) SELECT %s, unnest(%s::bigint[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id"
        ).format(t=toolschema.table(names, "projection_consumed"))

    def event_id(self, msg) -> int | None:
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        prefix = self.names.msg_id_prefix
        if msg_id.startswith(prefix) and msg_id[len(prefix) :].isdigit():
            return int(msg_id[len(prefix) :])
        return None

    def _handler_key(self, event_type: str) -> str | None:
        if event_type not in self._handler_of:
            self._handler_of[event_type] = self.projection.handler_for(event_type)
        return self._handler_of[event_type]

    async def apply(self, conn: AsyncConnection, events: list) -> dict[str, int]:
        """The applied ids and the handlers' statements for ``events``; counts of what happened."""
        counts = {"applied": 0, "skipped": 0, "ignored": 0}
        ids = [e[0] for e in events if e[0] is not None]
        fresh: set[int] = set()
        if ids:
            cur = await conn.execute(self._consume_many, (self.projection.name, ids))
            fresh = {row[0] for row in await cur.fetchall()}
        runs: list[tuple[str, list[bytes]]] = []
        for event_id, event_type, data, seq in events:
            if event_id is not None:
                if event_id not in fresh:
                    counts["skipped"] += 1
                    continue
                fresh.discard(event_id)  # a second copy in the same batch is skipped too
            key = self._handler_key(event_type)
            if key is None:
                counts["ignored"] += 1
                continue
            # the envelope is JSON already: the run's array is put together without parsing it
            item = b'{"ord":%d,"event_id":%d,"envelope":%s}' % (seq, event_id or seq, data)
            if runs and runs[-1][0] == key:
                runs[-1][1].append(item)
            else:
                runs.append((key, [item]))
            counts["applied"] += 1
        for key, items in runs:
            await conn.execute(
                self._handlers[key],
                {"batch": (b"[" + b",".join(items) + b"]").decode(), "projection": self.projection.name},
            )
        return counts

    async def apply_one_by_one(self, conn: AsyncConnection, events: list) -> dict[str, int]:
        """Each event in a savepoint of its own; one that fails ``max_attempts`` times with an error
        of its content is quarantined and passed over."""
        counts = {"applied": 0, "skipped": 0, "ignored": 0, "quarantined": 0}
        for event in events:
            error: psycopg.Error | None = None
            for _attempt in range(self.max_attempts):
                try:
                    async with conn.transaction():
                        result = await self.apply(conn, [event])
                    error = None
                    break
                except psycopg.Error as exc:
                    if not is_poison(exc):
                        raise
                    error = exc
            if error is None:
                for key, value in result.items():
                    counts[key] += value
                continue
            event_id, event_type, _data, seq = event
            await record(conn, self.names, self.projection.name, event, self.max_attempts, error)
            counts["quarantined"] += 1
            print(
                f"projector {self.projection.name}: QUARANTINED event {event_id} (stream sequence {seq}, "
                f"{event_type}) after {self.max_attempts} attempts: {str(error).strip()}",
                flush=True,
            )
        return counts
