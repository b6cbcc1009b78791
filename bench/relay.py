"""Benchmark: the outbox relay vs a raw nats-py async publish of the same messages, one run.

    (a) raw:   nats-py publish_async of the N messages (with Nats-Msg-Id) into a stream, no database
    (b) relay: weltgewebe_ops.events.relay drain (claim FOR UPDATE SKIP LOCKED, publish, mark after the ack)
    (c) the same relay with the payload column as the body instead of Weltgewebe's envelope (what it
        published before #11), into a stream of its own: the envelope's cost is (b) against (c)

Usage: .venv/bin/python bench/relay.py [--events 200000]
Targets: relay >= 50 % of raw and >= 10,000 events/s; the envelope costs at most 10 % of (c).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _events import print_row, print_table, sandbox_with_events, say
from psycopg import sql

from weltgewebe_ops.events import natsio
from weltgewebe_ops.events.relay import CLAIM, Relay, RelayConfig


async def raw_publish(box, rows, in_flight: int = 1024) -> float:
    from nats.js.api import StreamConfig

    nc = await natsio.connect(box.settings.nats_url)
    try:
        js = nc.jetstream(publish_async_max_pending=in_flight)
        await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"], duplicate_window=120.0))
        started = time.monotonic()
        futures = [
            await js.publish_async(f"bench.raw.{etype}", payload.encode(), headers={"Nats-Msg-Id": f"raw-{oid}"})
            for oid, etype, payload in rows
        ]
        await asyncio.gather(*futures)
        return time.monotonic() - started
    finally:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with sandbox_with_events(args.events) as box:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            rows = conn.execute("SELECT id, event_type, payload::text FROM domain_outbox ORDER BY id").fetchall()
        raw_seconds = asyncio.run(raw_publish(box, rows))
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) domain_outbox")  # as (c) gets it: both start from the same state
        relay = Relay(RelayConfig(dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=box.settings.names))
        result = asyncio.run(relay.drain(timeout_seconds=1800))
        assert result["remaining"] == 0, result
        # (c): the same rows again, unpublished and vacuumed, the body only the payload column
        plain_names = dataclasses.replace(
            box.settings.names, stream="BENCH_PAYLOAD_ONLY", subject_prefix="benchpayload"
        )
        asyncio.run(natsio.ensure_stream(box.settings.nats_url, plain_names))
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            conn.execute("UPDATE domain_outbox SET published_at = NULL")
            conn.execute("VACUUM (ANALYZE) domain_outbox")
        plain = Relay(RelayConfig(dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=plain_names))
        plain._claim = sql.SQL(CLAIM).format(outbox=sql.Identifier("domain_outbox"), envelope=sql.SQL("payload::text"))
        plain_result = asyncio.run(plain.drain(timeout_seconds=1800))
        assert plain_result["remaining"] == 0, plain_result
        print_table(
            args.events,
            "(a) raw nats-py publish_async",
            raw_seconds,
            "(b) relay drain (outbox -> stream)",
            result["seconds"],
            result["events_per_second"],
            "relay >= 0.50x raw and >= 10,000 events/s; envelope cost <= 10 % of (c)",
        )
        print_row(
            "(c) relay, payload column as body",
            plain_result["seconds"],
            plain_result["events_per_second"],
            args.events / raw_seconds,
        )
        cost = 1 - result["events_per_second"] / plain_result["events_per_second"]
        print(f"the envelope costs {cost * 100:.1f} % of the payload-only relay's throughput")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
