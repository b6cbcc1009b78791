#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.event_audit."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: event_audit
short_description: Compare the event stream with a restored outbox, and apply the remedy before the relay starts
version_added: "0.1.0"
description:
  - After a point-in-time restore the database is rewound, the stream is not. Reports the events in
    the stream that the restored outbox lacks (the data loss in events - count, id ranges, time
    range) and outbox ids whose stream message differs (ids reused after the sequence rewound).
  - Like is compared with like - each message is decoded as Weltgewebe's envelope and its event id,
    type, aggregate and payload are compared with the outbox row of that id. A message that is not
    the envelope is counted and named as foreign (RV(foreign_count)), never as a reused id.
  - With O(remedy=true) (before the relay and the apps start) moves the outbox id sequence past
    every id the stream has seen, so new rows never reuse a C(Nats-Msg-Id) that JetStream would drop
    as a duplicate, and records the lost ids in C(<tool_schema>.excluded_events) (this tool's own
    schema, default C(wgops)), which the projector honours, so rebuilt projections leave them out.
  - Check mode reports and changes nothing.
extends_documentation_fragment:
  - weltgewebe.ops.events
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
options:
  remedy:
    description: >-
      Apply the remedy (sequence past the stream's highest id, lost ids excluded from read models,
      published rows the stream lacks marked pending again).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A second remedy finds the sequence already moved and the lost ids already excluded.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Audit the event log against the restored outbox and fix the sequence before the relay starts
  weltgewebe.ops.event_audit:
    dsn: "host={{ restored.work_dir }}/socket port={{ restored.port }} dbname=weltgewebe user=postgres"
    nats_url: nats://127.0.0.1:4222
    remedy: true
  register: event_log
"""

RETURN = r"""
lost_events:
  description: Events in the stream whose outbox rows the restored database does not have (the data loss).
  returned: always
  type: int
  sample: 38
lost_ids:
  description: Their outbox ids as ranges.
  returned: always
  type: list
  elements: str
  sample: [1963-2000]
lost_first_time:
  description: Stream time of the first lost event.
  returned: always
  type: str
  sample: "2026-12-03T02:59:43.118+00:00"
lost_last_time:
  description: Stream time of the last lost event.
  returned: always
  type: str
  sample: "2026-12-03T02:59:48.902+00:00"
reused_ids:
  description: Outbox ids whose stream message has a different event (reused after the sequence rewound).
  returned: always
  type: list
  elements: int
  sample: []
foreign_count:
  description: Messages that are not Weltgewebe's envelope (or whose event_id differs from their message id).
  returned: always
  type: int
  sample: 0
foreign_ids:
  description: Their outbox ids (from C(Nats-Msg-Id)), as ranges.
  returned: always
  type: list
  elements: str
  sample: []
foreign_examples:
  description: Up to five of them, each with what is wrong.
  returned: always
  type: list
  elements: str
  sample: ["1203: not Weltgewebe's envelope (no event_type)"]
unstreamed_events:
  description: >-
    Outbox rows marked published that the stream does not have (the stream was lost, or the
    recovery site has its own); the remedy marks them pending so the relay publishes them again.
  returned: always
  type: int
  sample: 0
unstreamed_ids:
  description: Their ids, as ranges.
  returned: always
  type: list
  elements: str
  sample: []
stream_max_id:
  description: The highest outbox id the stream has seen.
  returned: always
  type: int
  sample: 2000
remedy:
  description: What the remedy did (sequence moved to, events excluded).
  returned: when remedy is true and not check mode
  type: dict
  sample: {sequence_moved_to: 2001, sequence_moved: true, excluded_events: 38, republished_events: 0}
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
    WgopsModule,
    contract_names,
    events_argument_spec,
)


def main():
    module = WgopsModule(
        argument_spec={
            **events_argument_spec(),
            "remedy": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    import asyncio

    import psycopg

    from weltgewebe_ops.events import audit
    from weltgewebe_ops.sandbox.contract import missing_object

    p = module.params
    names = contract_names(module)
    try:
        report = asyncio.run(audit.audit(p["dsn"], p["nats_url"], names))
        fix = None
        if p["remedy"] and not module.check_mode:
            fix = asyncio.run(audit.remedy(p["dsn"], names, report))
    except psycopg.Error as exc:
        module.fail_json(
            msg=missing_object(exc, "event audit") or f"cannot read the restored outbox: {str(exc).strip()}"
        )
    except Exception as exc:  # noqa: BLE001 - NATS errors, reported in one line
        module.fail_json(msg=f"cannot read the stream {names.stream} at {p['nats_url']}: {type(exc).__name__}: {exc}")
    changed = bool(fix and (fix["sequence_moved"] or fix["excluded_events"] or fix["republished_events"]))
    module.exit_json(changed=changed, remedy=fix, **report.public())


if __name__ == "__main__":
    main()
