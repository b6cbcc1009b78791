"""The drill's relay drain: every pending outbox row reaches JetStream exactly once, in Weltgewebe's
envelope, beside other relays and across a relay's death (NATS outages and a message NATS never
takes: tests/faults/test_event_faults.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from tests.conftest import machine_slowness, other_relays
from weltgewebe_ops.core import progress
from weltgewebe_ops.core.progress import ProgressFile
from weltgewebe_ops.events.relay import Relay, RelayConfig
from weltgewebe_ops.sandbox import workload

pytestmark = pytest.mark.integration


def pending_ids(box) -> list[int]:
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM domain_outbox WHERE published_at IS NULL ORDER BY id")]


def row_states(box, ids: list[int]) -> list[tuple]:
    """How many of the rows are published, quarantined, tried, with which error: what a drain that
    relayed fewer than it should have met."""
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        return conn.execute(
            "SELECT published_at IS NOT NULL, quarantined_at IS NOT NULL, attempt_count, last_error, count(*) "
            "FROM domain_outbox WHERE id = ANY(%s) GROUP BY 1, 2, 3, 4",
            (ids,),
        ).fetchall()


def write_faeden(box, count: int) -> None:
    workload.run(
        workload.WorkloadConfig(
            dsn=box.settings.dsn(),
            names=box.settings.names,
            rate_per_second=0,
            seconds=60,
            max_writes=count,
            update_every=0,
        )
    )


async def stream_msg_ids(box, first_seq: int) -> list[str]:
    """Nats-Msg-Id of every stream message from ``first_seq`` on."""
    from weltgewebe_ops.events import natsio

    nc = await natsio.connect(box.settings.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(box.settings.names.stream)
        ids = []
        for seq in range(first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(box.settings.names.stream, seq)
            ids.append(msg.headers["Nats-Msg-Id"])
        return ids
    finally:
        await nc.close()


async def last_seq(box) -> int:
    from weltgewebe_ops.events import natsio

    return (await natsio.stream_state(box.settings.nats_url, box.settings.names))["last_seq"]


def drain(box, timeout: float = 60, batch_size: int = 1000, progress: ProgressFile | None = None) -> dict:
    relay = Relay(
        RelayConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            names=box.settings.names,
            batch_size=batch_size,
            publish_timeout_seconds=2,
            backoff_base_seconds=0.5,
            backoff_max_seconds=2,
        )
    )
    return asyncio.run(relay.drain(timeout, progress))


def test_drain_publishes_every_pending_row_exactly_once(relay_paused, tmp_path):
    box = relay_paused
    write_faeden(box, 200)
    waiting = pending_ids(box)
    assert len(waiting) >= 600  # two nodes and an edge per Faden
    start = asyncio.run(last_seq(box)) + 1
    result = drain(box, batch_size=64, progress=ProgressFile(tmp_path / "drain.json"))  # many batches, two workers
    said = progress.read(tmp_path / "drain.json")
    assert (said["phase"], said["unit"], said["done"], said["total"]) == ("outbox drain", "events", *[len(waiting)] * 2)
    assert result["remaining"] == 0 and not result["timed_out"] and result["batches"] >= 10
    assert result["published"] + result["duplicates"] == len(waiting)
    assert pending_ids(box) == []
    ids = asyncio.run(stream_msg_ids(box, start))
    assert sorted(ids) == sorted(f"domain-outbox-{i}" for i in waiting), "each row once, none missing"
    assert ids == [f"domain-outbox-{i}" for i in waiting], "in id order, across batches and workers"
    again = drain(box, 5)
    assert again["published"] == again["duplicates"] == 0


def test_messages_are_weltgewebes_envelope(relay_paused):
    """The body upstream's receipts consumer parses (docs/upstream.md): schema_version 1, the
    outbox id as event_id, the row's fields, its payload column as payload, created_at in RFC 3339
    UTC; subject weltgewebe.<event_type>."""
    import datetime as dt

    from weltgewebe_ops.events import envelope, natsio

    box = relay_paused
    write_faeden(box, 3)
    start = asyncio.run(last_seq(box)) + 1
    drain(box)

    async def messages() -> list:
        nc = await natsio.connect(box.settings.nats_url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(box.settings.names.stream)).state.last_seq
            return [await js.get_msg(box.settings.names.stream, seq) for seq in range(start, last + 1)]
        finally:
            await nc.close()

    published = asyncio.run(messages())
    assert len(published) == 15  # per Faden: two nodes (each its conversation's event first) and the edge
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        for msg in published:
            body = envelope.parse(msg.data)
            assert set(body) == set(envelope.FIELDS) and body["schema_version"] == 1
            assert msg.headers["Nats-Msg-Id"] == f"domain-outbox-{body['event_id']}"
            assert msg.subject == f"weltgewebe.{body['event_type']}"
            row = conn.execute(
                "SELECT aggregate_type, aggregate_id::text, event_type, payload, created_at FROM domain_outbox "
                "WHERE id = %s",
                (body["event_id"],),
            ).fetchone()
            assert (body["aggregate_type"], body["aggregate_id"], body["event_type"], body["payload"]) == row[:4]
            assert body["created_at"].endswith("Z")
            assert dt.datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")) == row[4]


def test_outbox_relay_module_check_mode_then_drain(relay_paused):
    from tests.conftest import ansible_module

    box = relay_paused
    write_faeden(box, 20)
    waiting = len(pending_ids(box))

    def module(*extra: str) -> tuple[int, dict, str]:
        args = {"dsn": box.settings.dsn(), "nats_url": box.settings.nats_url, "timeout_seconds": 30}
        return ansible_module("weltgewebe.ops.outbox_relay", args, *extra)

    rc, planned, out = module("--check")
    assert rc == 0 and planned["pending"] == waiting and not planned["changed"]
    assert len(pending_ids(box)) == waiting, "check mode publishes nothing"
    rc, drained, out = module()
    assert rc == 0 and drained["changed"] and drained["remaining"] == 0
    assert drained["published"] + drained["duplicates"] == waiting
    assert box.settings.pg_password not in out, "the DSN's password never appears"
    rc, again, _ = module()
    assert rc == 0 and not again["changed"]


def test_a_relay_dying_between_publish_and_mark_republishes_and_the_read_model_stays_right(relay_paused):
    from psycopg import sql

    box = relay_paused
    write_faeden(box, 20)
    waiting = pending_ids(box)
    start = asyncio.run(last_seq(box)) + 1
    crashing = Relay(RelayConfig(dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=box.settings.names))
    crashing._mark_published = sql.SQL("SELECT 1/0 WHERE %s IS NOT NULL")  # dies after the acks, before the mark
    # long enough to publish a batch on a busy machine (the drain runs to its end: the marks fail)
    died = asyncio.run(crashing.drain(4 * machine_slowness()))
    assert died["remaining"] == len(waiting) and died["published"] > 0, "published, never marked"
    again = drain(box)
    assert again["remaining"] == 0
    assert again["published"] == 0 and again["duplicates"] == len(waiting), "JetStream knew every message"
    ids = asyncio.run(stream_msg_ids(box, start))
    assert sorted(ids) == sorted(f"domain-outbox-{i}" for i in waiting), "each event once in the stream"
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        edges = conn.execute(
            "SELECT e.id, e.payload FROM domain_edges e JOIN domain_outbox o ON o.aggregate_id = e.id "
            "WHERE o.id = ANY(%s) AND o.event_type = 'domain.edge.created' ORDER BY e.id",
            (waiting,),
        ).fetchall()
        deadline = time.monotonic() + 30
        while True:
            view = conn.execute(
                "SELECT id, payload FROM faden_view WHERE id = ANY(%s) ORDER BY id", ([e[0] for e in edges],)
            ).fetchall()
            if view == edges or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert view == edges and len(edges) == 20


def test_replay_roles_audit_drain_and_rebuild(relay_paused):
    import json
    import subprocess

    from tests.conftest import REPO, ansible_env
    from tests.integration.test_pitr_playbook import report

    box = relay_paused
    box.services["projector"].stop()
    try:
        write_faeden(box, 10)
        rows = pending_ids(box)
        waiting = len(rows)
        extra = {
            "outbox_relay_dsn": box.settings.dsn(),
            "outbox_relay_nats_url": box.settings.nats_url,
            "projectors_dsn": box.settings.dsn(),
            "projectors_nats_url": box.settings.nats_url,
        }
        proc = subprocess.run(
            ["ansible-playbook", "tests/playbooks/replay.yml", "-e", json.dumps(extra)],
            cwd=REPO,
            env=ansible_env(json_output=True),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert box.settings.pg_password not in proc.stdout
        result = report(proc.stdout)
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            excluded = conn.execute("SELECT count(*) FROM wgops.excluded_events").fetchone()[0]
        assert result["reused"] == 0, "no outbox id means two different events"
        # lost now, or lost in an earlier restore and excluded then
        assert result["lost"] + result["excluded_before"] == excluded, (
            "every event the outbox lacks is known and kept out of read models"
        )
        assert result["remaining"] == 0 and result["relayed"] == waiting, (
            result,
            row_states(box, rows),
            other_relays(box),
        )
        assert result["applied"] > 0
    finally:
        box.up("projector")


def test_a_row_that_cannot_be_published_is_retried_then_quarantined(relay_paused):
    box = relay_paused
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        # no stream takes this subject: every publish of it fails (no responders)
        bad = conn.execute(
            "INSERT INTO domain_outbox (aggregate_type, aggregate_id, event_type, payload) "
            "VALUES ('edge', gen_random_uuid()::text, 'bogus.event', '{}') RETURNING id"
        ).fetchone()[0]
    write_faeden(box, 5)
    relay = Relay(
        RelayConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            names=box.settings.names,
            publish_timeout_seconds=1,
            backoff_base_seconds=0.2,
            backoff_max_seconds=0.5,
            max_attempts=3,
        )
    )
    result = asyncio.run(relay.drain(60))
    assert result["quarantined"] == 1 and result["failed_attempts"] == 3
    assert result["remaining"] == 0 and result["published"] >= 5 * 3
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        attempts, quarantined, error, published = conn.execute(
            "SELECT attempt_count, quarantined_at IS NOT NULL, last_error, published_at IS NOT NULL "
            "FROM domain_outbox WHERE id = %s",
            (bad,),
        ).fetchone()
    assert (attempts, quarantined, published) == (3, True, False) and error
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:  # the test's bogus row goes again
        conn.execute("DELETE FROM domain_outbox WHERE id = %s", (bad,))


def test_outbox_relay_service_started_status_stopped(relay_paused, tmp_path):
    import stat

    from tests.conftest import ansible_module

    box = relay_paused
    service_dir = tmp_path / "relay-service"

    def module(state: str) -> dict:
        args = {
            "state": state,
            "service_dir": str(service_dir),
            "dsn": box.settings.dsn(),
            "nats_url": box.settings.nats_url,
        }
        _, result, out = ansible_module("weltgewebe.ops.outbox_relay", args)
        assert box.settings.pg_password not in out
        return result

    try:
        started = module("started")
        assert started["changed"] and started["running"], started
        config = service_dir / "relay.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600, "the DSN's password is in there"
        write_faeden(box, 10)
        deadline = time.monotonic() + 30
        while pending_ids(box):
            assert time.monotonic() < deadline, "the relay service did not publish"
            time.sleep(0.2)
        again = module("started")
        assert not again["changed"] and again["running"]
        assert module("status")["running"]
        stopped = module("stopped")
        assert stopped["changed"] and not stopped["running"]
        assert not module("status")["running"] and not module("stopped")["changed"]
    finally:
        from weltgewebe_ops.events.relay import stop_service

        stop_service(service_dir)


def lease_relay(box, stop: threading.Event, counts: dict) -> None:
    """Another relay on the same outbox, claiming the way Weltgewebe's API does (docs: up to 32 due
    rows, FOR UPDATE SKIP LOCKED, a 30 s lease that moves available_at forward, publish and wait
    for the ack, then mark published). Written here from those facts, for the test only."""
    from weltgewebe_ops.events import envelope, natsio

    async def run() -> None:
        nc = await natsio.connect(box.settings.nats_url)
        js = nc.jetstream()
        try:
            with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        rows = conn.execute(
                            "UPDATE domain_outbox SET available_at = now() + interval '30 seconds' WHERE id IN ("
                            " SELECT id FROM domain_outbox WHERE published_at IS NULL AND quarantined_at IS NULL"
                            " AND available_at <= now() ORDER BY available_at, id LIMIT 32 FOR UPDATE SKIP LOCKED)"
                            f" RETURNING id, event_type, {envelope.SQL_EXPRESSION}"
                        ).fetchall()
                    if not rows:
                        await asyncio.sleep(0.05)
                        continue
                    for row_id, event_type, body in rows:
                        ack = await js.publish(
                            f"weltgewebe.{event_type}",
                            body.encode(),
                            headers={"Nats-Msg-Id": f"domain-outbox-{row_id}"},
                        )
                        counts["duplicates" if ack.duplicate else "published"] += 1
                    conn.execute(
                        "UPDATE domain_outbox SET published_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],)
                    )
        finally:
            await nc.close()

    asyncio.run(run())


def test_two_relays_claiming_with_skip_locked_publish_each_row_once(relay_paused):
    """The drill's relay and the application's own (which relays by itself once its stack runs)
    drain one outbox at the same time: every row reaches the stream once, none twice, none lost."""
    box = relay_paused
    write_faeden(box, 400)
    waiting = pending_ids(box)
    start = asyncio.run(last_seq(box)) + 1
    stop, counts = threading.Event(), {"published": 0, "duplicates": 0}
    other = threading.Thread(target=lease_relay, args=(box, stop, counts))
    other.start()
    try:
        ours = drain(box, batch_size=32)
    finally:
        deadline = time.monotonic() + 30
        while pending_ids(box) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        other.join(30)
    assert pending_ids(box) == []
    assert ours["published"] > 0 and counts["published"] > 0, ("both relays took part", ours, counts)
    assert ours["duplicates"] == counts["duplicates"] == 0, "no row was published by both"
    assert ours["published"] + counts["published"] == len(waiting)
    ids = asyncio.run(stream_msg_ids(box, start))
    assert sorted(ids) == sorted(f"domain-outbox-{i}" for i in waiting), "each row once, none missing"
