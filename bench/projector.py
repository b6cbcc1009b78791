"""Benchmark: the projector vs a raw read of the same stream, one run.

    (a) raw:       nats-py pull consumer reading every message of the stream, no database
    (b) projector: weltgewebe_ops.events.projector rebuild of faden_view (handlers, consumed ids and the
                   checkpoint in one transaction per batch)

Usage: .venv/bin/python bench/projector.py [--events 200000]
Targets: projector >= 30 % of raw and >= 10,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _events import print_table, sandbox_with_events, say

from weltgewebe_ops.events import natsio
from weltgewebe_ops.events.projections import Projection
from weltgewebe_ops.events.projector import Projector, ProjectorConfig
from weltgewebe_ops.events.relay import Relay, RelayConfig


async def raw_read(box, expected: int, batch: int = 2000) -> float:  # the projector fetches 2000 too
    import nats.errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await natsio.connect(box.settings.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            box.settings.names.stream_subjects,
            stream=box.settings.names.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        started, seen = time.monotonic(), 0
        while seen < expected:
            try:
                seen += len(await sub.fetch(batch, timeout=2))
            except (nats.errors.TimeoutError, TimeoutError):
                break
        return time.monotonic() - started
    finally:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with sandbox_with_events(args.events) as box:
        relayed = asyncio.run(
            Relay(RelayConfig(dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=box.settings.names)).drain(
                1800
            )
        )
        say(f"stream filled by the relay: {relayed['published']} events")
        raw_seconds = asyncio.run(raw_read(box, args.events))
        projector = Projector(
            ProjectorConfig(
                dsn=box.settings.dsn(),
                nats_url=box.settings.nats_url,
                names=box.settings.names,
                projection=Projection.declared("faden_view", box.settings.names),
            )
        )
        result = asyncio.run(projector.replay("rebuild"))
        assert result["applied"] == args.events, result
        print_table(
            args.events,
            "(a) raw stream read (nats-py)",
            raw_seconds,
            "(b) projector rebuild (faden_view)",
            result["seconds"],
            result["events_per_second"],
            "projector >= 0.30x raw and >= 10,000 events/s",
        )
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
