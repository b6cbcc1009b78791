"""The event pipeline under the faults of #28, met as in life: a row whose message NATS can never
take (a 2 MB payload, real server, real client) is quarantined by the relay's rules and blocks
nothing; NATS stopped before a drain, or SIGKILLed in the middle of the outbox_relay module's
drain and back seconds later, is waited out, and the drain is judged by its outcome: every row in
the stream once, none missing."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from tests.integration.test_relay_drain import drain, last_seq, pending_ids, stream_msg_ids, write_faeden
from weltgewebe_ops.events.relay import Relay, RelayConfig

pytestmark = pytest.mark.integration


def test_drain_waits_out_a_nats_outage(relay_paused):
    box = relay_paused
    write_faeden(box, 100)
    waiting = pending_ids(box)
    start = asyncio.run(last_seq(box)) + 1
    box.services["nats"].stop()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(drain(box, 90)))
    worker.start()
    time.sleep(4)
    assert worker.is_alive(), "the drain waits while NATS is away"
    box.up("nats")
    worker.join(120)
    assert result["remaining"] == 0, result
    assert result["published"] + result["duplicates"] == len(waiting)
    ids = asyncio.run(stream_msg_ids(box, start))
    assert len(ids) == len(set(ids)), "nothing doubled in the stream"
    assert set(ids) == {f"domain-outbox-{i}" for i in waiting}, "nothing lost"


def test_nats_killed_during_the_module_drain_is_waited_out_and_judged_by_the_outcome(relay_paused):
    """NATS SIGKILLed while the module drains and back 5 s later: the drain finishes, every row in
    the stream once, and the module succeeds (its failed tries were a result key named ``failed``,
    which Ansible took for the task's failure: "Module failed: Unknown error")."""
    import os
    import signal

    from tests.conftest import ansible_module

    box = relay_paused
    write_faeden(box, 1000)
    waiting = pending_ids(box)
    start = asyncio.run(last_seq(box)) + 1
    killed: list[int] = []

    def kill_nats_midway() -> None:
        deadline = time.monotonic() + 60
        while len(killed) == 0 and time.monotonic() < deadline:
            with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
                done = conn.execute(
                    "SELECT count(*) FROM domain_outbox WHERE id = ANY(%s) AND published_at IS NOT NULL", (waiting,)
                ).fetchone()[0]
            if done >= 500:
                os.kill(box.services["nats"].pid(), signal.SIGKILL)
                killed.append(done)
                time.sleep(5)
                box.up("nats")
            time.sleep(0.02)

    killer = threading.Thread(target=kill_nats_midway)
    killer.start()
    args = {"dsn": box.settings.dsn(), "nats_url": box.settings.nats_url, "timeout_seconds": 120}
    rc, drained, out = ansible_module("weltgewebe.ops.outbox_relay", args)
    killer.join(70)
    assert killed and killed[0] < len(waiting), "NATS went away in the middle of the drain"
    assert rc == 0 and drained["changed"] and drained["remaining"] == 0, out[-3000:]
    assert drained["published"] + drained["duplicates"] == len(waiting)
    ids = asyncio.run(stream_msg_ids(box, start))
    assert len(ids) == len(set(ids)) and set(ids) == {f"domain-outbox-{i}" for i in waiting}


def test_an_oversized_row_is_retried_then_quarantined_and_blocks_nothing(relay_paused):
    """A row whose message is larger than NATS takes (a 2 MB payload, the server's max_payload is
    1 MB): the client refuses it before sending. It counts as a failed attempt of that row alone,
    named in last_error, and is quarantined by the relay's rules; the rows behind it are published."""
    box = relay_paused
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        big = conn.execute(
            "INSERT INTO domain_outbox (aggregate_type, aggregate_id, event_type, payload) "
            "VALUES ('edge', gen_random_uuid()::text, 'domain.edge.updated', "
            "jsonb_build_object('blob', repeat('x', 2 * 1024 * 1024))) RETURNING id"
        ).fetchone()[0]
    write_faeden(box, 5)
    behind = [i for i in pending_ids(box) if i > big]
    relay = Relay(
        RelayConfig(
            dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=box.settings.names,
            backoff_base_seconds=0.2, backoff_max_seconds=0.5, max_attempts=3,
        )
    )  # fmt: skip
    try:
        result = asyncio.run(relay.drain(60))
        assert result["remaining"] == 0 and not result["timed_out"], result
        assert result["quarantined"] == 1 and result["failed_attempts"] == 3
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            attempts, quarantined, error = conn.execute(
                "SELECT attempt_count, quarantined_at IS NOT NULL, last_error FROM domain_outbox WHERE id = %s", (big,)
            ).fetchone()
            unpublished_behind = conn.execute(
                "SELECT count(*) FROM domain_outbox WHERE id = ANY(%s) AND published_at IS NULL", (behind,)
            ).fetchone()[0]
        assert (attempts, quarantined) == (3, True)
        assert error.startswith(f"UnpublishableError: the message of outbox row {big} is ") and "max_payload" in error
        assert len(behind) >= 5 * 5 and unpublished_behind == 0, "the rows behind it flowed"
    finally:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:  # the test's row goes again
            conn.execute("DELETE FROM domain_outbox WHERE id = %s", (big,))
