"""The drill's relay drain: every pending outbox row reaches JetStream exactly once, also across a
NATS outage in the middle of the drain."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from weltgewebe_ops import workload
from weltgewebe_ops.relay import Relay, RelayConfig

pytestmark = pytest.mark.integration


@pytest.fixture()
def relay_paused(sandbox):
    """The sandbox's own relay stopped, so the drain under test is the only publisher."""
    sandbox.services["relay"].stop()
    yield sandbox
    sandbox.up("relay")


def pending_ids(box) -> list[int]:
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM domain_outbox WHERE published_at IS NULL ORDER BY id")]


def write_faeden(box, count: int) -> None:
    workload.run(
        workload.WorkloadConfig(
            dsn=box.s.dsn(), names=box.s.names, rate_per_second=0, seconds=60, max_writes=count, update_every=0
        )
    )


async def stream_msg_ids(box, first_seq: int) -> list[str]:
    """Nats-Msg-Id of every stream message from ``first_seq`` on."""
    from weltgewebe_ops import natsio

    nc = await natsio.connect(box.s.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(box.s.names.stream)
        ids = []
        for seq in range(first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(box.s.names.stream, seq)
            ids.append(msg.headers["Nats-Msg-Id"])
        return ids
    finally:
        await nc.close()


async def last_seq(box) -> int:
    from weltgewebe_ops import natsio

    return (await natsio.stream_state(box.s.nats_url, box.s.names))["last_seq"]


def drain(box, timeout: float = 60) -> dict:
    relay = Relay(
        RelayConfig(
            dsn=box.s.dsn(),
            nats_url=box.s.nats_url,
            names=box.s.names,
            publish_timeout_seconds=2,
            backoff_base_seconds=0.5,
            backoff_max_seconds=2,
        )
    )
    return asyncio.run(relay.drain(timeout))


def test_drain_publishes_every_pending_row_exactly_once(relay_paused):
    box = relay_paused
    write_faeden(box, 200)
    waiting = pending_ids(box)
    assert len(waiting) >= 600  # two nodes and an edge per Faden
    start = asyncio.run(last_seq(box)) + 1
    result = drain(box)
    assert result["remaining"] == 0 and not result["timed_out"]
    assert result["published"] + result["duplicates"] == len(waiting)
    assert pending_ids(box) == []
    ids = asyncio.run(stream_msg_ids(box, start))
    assert sorted(ids) == sorted(f"domain-outbox-{i}" for i in waiting), "each row once, none missing"
    again = drain(box, 5)
    assert again["published"] == again["duplicates"] == 0


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


def test_outbox_relay_module_check_mode_then_drain(relay_paused):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    box = relay_paused
    write_faeden(box, 20)
    waiting = len(pending_ids(box))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def module(*extra: str) -> tuple[int, dict, str]:
        args = json.dumps({"dsn": box.s.dsn(), "nats_url": box.s.nats_url, "timeout_seconds": 30})
        proc = subprocess.run(
            ["ansible", "sandbox-local", "-m", "weltgewebe.ops.outbox_relay", "-a", args, *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        doc, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
        return proc.returncode, doc["plays"][0]["tasks"][0]["hosts"]["sandbox-local"], proc.stdout

    rc, planned, out = module("--check")
    assert rc == 0 and planned["pending"] == waiting and not planned["changed"]
    assert len(pending_ids(box)) == waiting, "check mode publishes nothing"
    rc, drained, out = module()
    assert rc == 0 and drained["changed"] and drained["remaining"] == 0
    assert drained["published"] + drained["duplicates"] == waiting
    assert box.s.pg_password not in out, "the DSN's password never appears"
    rc, again, _ = module()
    assert rc == 0 and not again["changed"]
