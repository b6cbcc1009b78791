"""The event-log audit after a point-in-time restore, and its remedy.

A restore rewinds the database, not the stream. Two things follow (docs/upstream.md):
- events in the stream whose outbox rows the restored database does not have: they are the data
  loss (the RPO in events), and a rebuilt read model must not show them;
- the outbox id sequence rewinds, so new rows reuse ids whose ``Nats-Msg-Id`` is already in the
  stream: JetStream drops them as duplicates inside its window, or projectors misapply them.

And when the stream itself was lost (or the recovery site has a stream of its own), outbox rows
marked published are in no stream at all: rebuilt read models would miss them.

``audit`` compares the stream with the restored outbox, like with like: each message is decoded as
Weltgewebe's envelope and its event id, type, aggregate and payload are compared with the outbox
row of that id. A message that is no envelope (or whose event id differs from its message id) is
counted and named as *foreign*, never as a reused id. ``remedy`` (run before the relay and the
API start) moves the outbox sequence past the highest id the stream has seen, records the lost
ids in an exclusion table the projector honours, so rebuilt read models leave them out, and marks
published rows the stream lacks as pending again, so the relay publishes them (once: Nats-Msg-Id).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, sql

from ..core.settings import ContractNames
from . import bookkeeping as toolschema
from . import envelope
from .natsio import connect


async def read_exclusions(conn: AsyncConnection, names: ContractNames) -> set[int]:
    """Event ids a remedy excluded from read models (empty before this tool's schema exists)."""
    if not await toolschema.exists_async(conn, names, "excluded_events"):
        return set()
    table = toolschema.table(names, "excluded_events")
    rows = await (await conn.execute(sql.SQL("SELECT event_id FROM {t}").format(t=table))).fetchall()
    return {row[0] for row in rows}


def _digest(event_type: str, aggregate_type: str, aggregate_id: Any, payload: Any) -> str:
    """What an event says: its type, aggregate and payload (key order and spacing do not count)."""
    data = payload if isinstance(payload, (dict, list)) or payload is None else json.loads(payload)
    text = json.dumps([event_type, aggregate_type, str(aggregate_id), data], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stream_event(event_id: int, data: bytes) -> tuple[str | None, str]:
    """(digest, "") of a message's envelope, or (None, why it is foreign)."""
    try:
        body = envelope.parse(data)
    except envelope.EnvelopeError as exc:
        return None, str(exc)
    if body["event_id"] != event_id:
        return None, f"envelope event_id {body['event_id']!r} differs from its Nats-Msg-Id ({event_id})"
    return _digest(body["event_type"], body["aggregate_type"], body["aggregate_id"], body["payload"]), ""


async def read_stream(nats_url: str, names: ContractNames, batch: int = 1000) -> dict[int, dict]:
    """outbox id -> {seq, time, digest, foreign} for every message of the stream (ephemeral consumer);
    ``digest`` is None for a foreign message, ``foreign`` says why."""
    import nats.errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await connect(nats_url)
    out: dict[int, dict] = {}
    try:
        js = nc.jetstream()
        last = (await js.stream_info(names.stream)).state.last_seq
        if last == 0:
            return out
        sub = await js.pull_subscribe(
            names.stream_subjects,
            stream=names.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0),
        )
        seen = 0
        while seen < last:
            try:
                msgs = await sub.fetch(batch, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in msgs:
                meta = msg.metadata
                seen = max(seen, meta.sequence.stream)
                msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                if not msg_id.startswith(names.msg_id_prefix):
                    continue
                event_id = int(msg_id[len(names.msg_id_prefix) :])
                digest, foreign = _stream_event(event_id, msg.data)
                out[event_id] = {
                    "seq": meta.sequence.stream,
                    "time": meta.timestamp,
                    "digest": digest,
                    "foreign": foreign,
                }
    finally:
        await nc.close()
    return out


@dataclass
class AuditReport:
    """What the audit found; ``public()`` is what a module returns and a report shows (ids as
    ranges), the two lists after it are what the remedy acts on."""

    stream_events: int
    outbox_rows: int
    stream_max_id: int
    outbox_max_id: int
    outbox_sequence_last_value: int | None
    lost_events: int
    excluded_before: int
    lost_ids: list[str]
    lost_first_time: str | None
    lost_last_time: str | None
    reused_ids: list[int]
    reused_count: int
    foreign_count: int
    foreign_ids: list[str]
    foreign_examples: list[str]
    unstreamed_events: int
    unstreamed_ids: list[str]
    # for the remedy: each lost event's stream sequence, the published rows no stream has
    lost_sequences: dict[int, int] = field(default_factory=dict, repr=False)
    unstreamed: list[int] = field(default_factory=list, repr=False)

    def public(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["lost_sequences"], out["unstreamed"]
        return out


async def audit(dsn: str, nats_url: str, names: ContractNames) -> AuditReport:
    stream = await read_stream(nats_url, names)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(
                sql.SQL(
                    "SELECT id, event_type, aggregate_type, aggregate_id, payload, published_at IS NOT NULL FROM {t}"
                ).format(t=sql.Identifier(names.outbox_table))
            )
        ).fetchall()
        seq_value = (
            await (
                await conn.execute(
                    "SELECT last_value FROM pg_sequences WHERE sequencename = %s", (f"{names.outbox_table}_id_seq",)
                )
            ).fetchone()
            or [None]
        )[0]
        excluded_before = await read_exclusions(conn, names)
    db = {row[0]: _digest(row[1], row[2], row[3], row[4]) for row in rows}
    # ids excluded before this restore (an earlier database's events) are not lost by it
    foreign = sorted(i for i in stream if stream[i]["digest"] is None)
    # a foreign message is no event of this outbox: named as foreign, never counted as lost
    lost = sorted(set(stream) - set(db) - excluded_before - set(foreign))
    reused = sorted(i for i in set(stream) & set(db) if stream[i]["digest"] not in (None, db[i]))
    unstreamed = sorted(row[0] for row in rows if row[5] and row[0] not in stream)
    lost_times = [stream[i]["time"] for i in lost if stream[i]["time"]]
    return AuditReport(
        stream_events=len(stream),
        outbox_rows=len(db),
        stream_max_id=max(stream, default=0),
        outbox_max_id=max(db, default=0),
        outbox_sequence_last_value=seq_value,
        lost_events=len(lost),
        excluded_before=len(excluded_before),
        lost_ids=_ranges(lost),
        lost_first_time=_iso(min(lost_times)) if lost_times else None,
        lost_last_time=_iso(max(lost_times)) if lost_times else None,
        reused_ids=reused,
        reused_count=len(reused),
        foreign_count=len(foreign),
        foreign_ids=_ranges(foreign),
        foreign_examples=[f"{i}: {stream[i]['foreign']}" for i in foreign[:5]],
        unstreamed_events=len(unstreamed),
        unstreamed_ids=_ranges(unstreamed),
        lost_sequences={i: stream[i]["seq"] for i in lost},
        unstreamed=unstreamed,
    )


async def remedy(dsn: str, names: ContractNames, report: AuditReport) -> dict[str, Any]:
    """Move the outbox sequence past every id the stream has seen; exclude lost events from read
    models; mark published rows no stream has as pending again."""
    table = toolschema.table(names, "excluded_events")
    target = max(report.stream_max_id, report.outbox_max_id)
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn, conn.transaction():
        await toolschema.ensure_async(conn, names)
        before = (
            await (
                await conn.execute(
                    "SELECT last_value FROM pg_sequences WHERE sequencename = %s", (f"{names.outbox_table}_id_seq",)
                )
            ).fetchone()
            or [0]
        )[0] or 0
        moved = target > before
        if moved:
            await conn.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (names.outbox_table, target))
        excluded = 0
        for event_id, seq in report.lost_sequences.items():
            cur = await conn.execute(
                sql.SQL(
                    "INSERT INTO {t} (event_id, reason, stream_sequence) VALUES (%s, 'lost in restore', %s) "
                    "ON CONFLICT DO NOTHING"
                ).format(t=table),
                (event_id, seq),
            )
            excluded += cur.rowcount
        republish = report.unstreamed
        if republish:
            await conn.execute(
                sql.SQL(
                    "UPDATE {t} SET published_at = NULL, attempt_count = 0, available_at = now() WHERE id = ANY(%s)"
                ).format(t=sql.Identifier(names.outbox_table)),
                (republish,),
            )
    return {
        "sequence_moved_to": target if moved else before,
        "sequence_moved": moved,
        "excluded_events": excluded,
        "republished_events": len(republish),
    }


async def reconcile_with_stream(dsn: str, nats_url: str, names: ContractNames) -> str:
    """A new database next to an older stream (the primary re-created after a drill): audit, and
    the remedy when they disagree, so new rows never reuse ids the stream has seen and the old
    events stay out of its read models. Says what it did ("" when nothing was needed)."""
    report = await audit(dsn, nats_url, names)
    behind = report.stream_max_id > (report.outbox_sequence_last_value or 0)
    if not (behind or report.lost_events or report.unstreamed_events):
        return ""
    fix = await remedy(dsn, names, report)
    return (
        f"outbox reconciled with the stream: sequence at {fix['sequence_moved_to']}, "
        f"{fix['excluded_events']} events of an earlier database excluded, {fix['republished_events']} to republish"
    )


def _ranges(ids: list[int]) -> list[str]:
    out: list[str] = []
    start = prev = None
    for i in ids:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return out


def _iso(value) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)
