#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.outbox_relay."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: outbox_relay
short_description: Drain the Weltgewebe outbox into NATS JetStream, run the relay as a service, or report
version_added: "0.1.0"
description:
  - O(state=drained) runs the outbox relay until nothing is pending or O(timeout_seconds) passed -
    rows are claimed C(FOR UPDATE SKIP LOCKED) in batches, published with the message id
    C(<msg_id_prefix><id>), and marked C(published_at) only after JetStream's ack; a
    duplicate ack counts as published; failures are retried after a backoff and quarantined after
    O(max_attempts). It waits out a NATS outage within the timeout.
  - O(state=started) runs the same relay as a long-running service in O(service_dir) (PID file,
    log, and its settings in a 0600 file, since the DSN may hold a password); a running service
    with the same settings is left alone, one with other settings is restarted.
    O(state=stopped) stops it.
  - O(state=status) reports the pending rows and whether the service runs.
  - Check mode reports the pending rows and what would change, and changes nothing.
extends_documentation_fragment:
  - weltgewebe.ops.events
  - weltgewebe.ops.progress
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
options:
  state:
    description: >-
      V(drained) relays until nothing is pending; V(started)/V(stopped) control the service;
      V(status) only reports.
    type: str
    choices: [drained, started, stopped, status]
    default: drained
  service_dir:
    description: Where the service keeps its PID file, log and settings (required for V(started) and V(stopped)).
    type: path
  timeout_seconds:
    description: Stop draining after this long (rows left are returned as RV(remaining)).
    type: float
    default: 300
  batch_size:
    description: Rows claimed per transaction.
    type: int
    default: 1000
  max_in_flight:
    description: Unacknowledged publishes at most.
    type: int
    default: 1024
  max_attempts:
    description: Quarantine a row after this many failed publishes.
    type: int
    default: 10
  fail_on_remaining:
    description: Fail when rows are still pending at the timeout.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A second drain finds nothing pending and reports no change.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Publish the restored outbox's unsent events to the recovery site's JetStream
  weltgewebe.ops.outbox_relay:
    dsn: "host=127.0.0.1 port={{ restored.port }} dbname=weltgewebe user=postgres"
    nats_url: nats://127.0.0.1:4222
    timeout_seconds: 600
  register: relayed

- name: Keep relaying as a service (the apps write again)
  weltgewebe.ops.outbox_relay:
    state: started
    service_dir: /var/lib/wgops/recovery
    dsn: "{{ recovered_dsn }}"
    nats_url: nats://127.0.0.1:4222
"""

RETURN = r"""
pending:
  description: Rows pending when the module started.
  returned: always
  type: int
  sample: 412
published:
  description: Rows JetStream acknowledged as new messages.
  returned: state=drained and not check mode
  type: int
  sample: 410
duplicates:
  description: Rows JetStream acknowledged as duplicates of messages it already had (counted as published).
  returned: state=drained and not check mode
  type: int
  sample: 2
failed_attempts:
  description: >-
    Publish tries that failed and were retried after their backoff (a NATS outage during the
    drain shows here; the outcome is RV(remaining)).
  returned: state=drained and not check mode
  type: int
  sample: 0
quarantined:
  description: Rows quarantined after max_attempts failures.
  returned: state=drained and not check mode
  type: int
  sample: 0
remaining:
  description: Rows still pending at the end.
  returned: always
  type: int
  sample: 0
seconds:
  description: Duration of the drain.
  returned: state=drained and not check mode
  type: float
  sample: 0.84
running:
  description: Whether the relay service of O(service_dir) runs (V(started), V(stopped), V(status)).
  returned: when service_dir is given or state is started/stopped
  type: bool
  sample: true
service:
  description: What V(started)/V(stopped) did (started with pid, running, stopped, not running).
  returned: when state is started or stopped
  type: str
  sample: "started with pid 48213"
events_per_second:
  description: Published and duplicate rows per second.
  returned: state=drained and not check mode
  type: float
  sample: 490.5
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
    WgopsModule,
    contract_names,
    events_argument_spec,
    progress_argument_spec,
    progress_file,
)


def main():
    module = WgopsModule(
        argument_spec={
            **events_argument_spec(),
            "state": {"type": "str", "choices": ["drained", "started", "stopped", "status"], "default": "drained"},
            "service_dir": {"type": "path"},
            "timeout_seconds": {"type": "float", "default": 300},
            "batch_size": {"type": "int", "default": 1000},
            "max_in_flight": {"type": "int", "default": 1024},
            "max_attempts": {"type": "int", "default": 10},
            "fail_on_remaining": {"type": "bool", "default": True},
            **progress_argument_spec(),
        },
        supports_check_mode=True,
        required_if=[("state", "started", ["service_dir"]), ("state", "stopped", ["service_dir"])],
    )
    import asyncio
    from pathlib import Path

    import psycopg

    from weltgewebe_ops.events import relay as relaymod
    from weltgewebe_ops.events.relay import Relay, RelayConfig
    from weltgewebe_ops.sandbox.contract import missing_object

    p = module.params
    names = contract_names(module)
    relay = Relay(
        RelayConfig(
            dsn=p["dsn"],
            nats_url=p["nats_url"],
            names=names,
            batch_size=p["batch_size"],
            max_in_flight=p["max_in_flight"],
            max_attempts=p["max_attempts"],
        )
    )

    async def pending() -> int:
        async with await psycopg.AsyncConnection.connect(p["dsn"], autocommit=True) as conn:
            return await relay.pending(conn)

    service_dir = Path(p["service_dir"]) if p["service_dir"] else None
    if p["state"] == "stopped":
        changed, detail = relaymod.stop_service(service_dir, module.check_mode)
        module.exit_json(changed=changed, service=detail, running=False)
    try:
        before = asyncio.run(pending())
        running = bool(service_dir) and relaymod.service(service_dir).running()
        if p["state"] == "started":
            changed, detail = relaymod.start_service(service_dir, relay.config, module.check_mode)
            module.exit_json(changed=changed, service=detail, running=not module.check_mode or running, pending=before)
        if p["state"] == "status" or module.check_mode:
            module.exit_json(changed=False, pending=before, remaining=before, running=running)
        result = asyncio.run(relay.drain(p["timeout_seconds"], progress_file(module)))
    except psycopg.Error as exc:
        module.fail_json(msg=missing_object(exc, "outbox relay") or f"cannot reach the outbox: {str(exc).strip()}")
    moved = result["published"] + result["duplicates"] + result["quarantined"]
    if result["remaining"] and p["fail_on_remaining"]:
        module.fail_json(
            msg=f"{result['remaining']} outbox rows still pending after {p['timeout_seconds']:g}s "
            f"(is NATS at {p['nats_url']} up? see last_error in {names.outbox_table})",
            changed=moved > 0,
            pending=before,
            **result,
        )
    module.exit_json(changed=moved > 0, pending=before, **result)


if __name__ == "__main__":
    main()
