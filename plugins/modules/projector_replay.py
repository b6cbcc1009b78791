#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.projector_replay."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: projector_replay
short_description: Rebuild or catch up what Weltgewebe derives from its events, from NATS JetStream
version_added: "0.1.0"
description:
  - Projections are declared as data (name, SQL per event type or pattern, optionally a table of
    their own and SQL run once at the end). Declared are V(receipts), Weltgewebe's receipts consumer
    (C(weltgewebe-api-domain-receipts-v1)), one row per event in C(domain_event_consumptions), each
    once; V(projection_state), a bump of C(domain_projection_state.version) so the API's caches
    reload; V(faden_view), the runbook's example read model built from C(domain_edges). Give your
    own in O(declarations).
  - Bookkeeping (checkpoints, applied event ids, quarantine, the ids a restore lost) lives in this
    tool's own schema (key C(tool_schema) of O(names), default C(wgops)), created on first use; the
    application's migrations need nothing of it.
  - For each projection, O(mode=rebuild) empties what it owns, its checkpoint and its applied
    event ids, then applies the stream from its first message, all in one transaction (a rebuild
    that fails leaves it as it was, never emptier; receipts are never deleted, only added);
    O(mode=catch_up) applies what came
    after the checkpoint. Both stop at the stream's last message as of the start, or fail naming
    the sequence where they stopped (a stream that delivers nothing for 30 s before that message
    has not ended).
  - An event a projection cannot apply (a data or constraint error from its content) is tried
    O(max_attempts) times, then quarantined (recorded with its error in C(projection_quarantine))
    and passed over, so later events still flow. Quarantined events are returned, warned about, and
    fail C(/health/ready) and the drill's checks.
  - Each batch's read-model changes, consumed event ids and stream checkpoint commit in one
    transaction, so a replay killed midway resumes with O(mode=catch_up) to the same result.
  - Check mode reports each checkpoint and the stream's last sequence, and changes nothing.
extends_documentation_fragment:
  - weltgewebe.ops.events
  - weltgewebe.ops.progress
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
options:
  projections:
    description: The projections to replay, in this order (declared ones or keys of O(declarations)).
    type: list
    elements: str
    default: [receipts, projection_state]
  declarations:
    description:
      - Your own projections, by key. Each has C(handlers) (event type or pattern such as
        C(domain.edge.*) -> SQL), and optionally C(name), C(table), C(create) (DDL of its table),
        C(finish) (SQL run once after the replay) and C(reset) (SQL that empties it on a rebuild;
        default C(TRUNCATE) of C(table)).
      - In the SQL, C(%(batch)s) is a JSON array of C({ord, event_id, envelope}) for a run of
        events, C(%(projection)s) the projection's name; C({table}) its table and C({edges}),
        C({nodes}), C({accounts}), C({outbox}), C({consumptions}), C({projection_state}) the
        contract's tables.
    type: dict
    default: {}
  mode:
    description: V(rebuild) from the stream's first message, or V(catch_up) from the checkpoint.
    type: str
    choices: [rebuild, catch_up]
    default: catch_up
  batch_size:
    description: Messages applied per transaction.
    type: int
    default: 2000
  max_attempts:
    description: Tries of an event that cannot be applied before it is quarantined.
    type: int
    default: 3
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: V(catch_up) with nothing new changes nothing; V(rebuild) always rebuilds.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Rebuild Weltgewebe's receipts and cache version from the recovery site's stream
  weltgewebe.ops.projector_replay:
    dsn: "host=127.0.0.1 port={{ restored.port }} dbname=weltgewebe user=postgres"
    nats_url: nats://127.0.0.1:4222
    projections: [receipts, projection_state]
    mode: rebuild

- name: Also a read model of your own, declared as data
  weltgewebe.ops.projector_replay:
    dsn: "{{ recovery_dsn }}"
    nats_url: nats://127.0.0.1:4222
    projections: [node_titles]
    declarations:
      node_titles:
        table: node_titles
        create: CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, title text NOT NULL)
        handlers:
          domain.node.created: >-
            INSERT INTO {table} SELECT n.id, n.title FROM jsonb_to_recordset(%(batch)s::jsonb) AS e(envelope jsonb)
            JOIN {nodes} n ON n.id = e.envelope ->> 'aggregate_id' ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title
    mode: rebuild
"""

RETURN = r"""
projections:
  description:
    - Per projection, applied, skipped (already consumed), ignored (no handler), excluded (lost in a
      restore), quarantined (in this replay), last_sequence, seconds, events_per_second, and
      quarantined_events (every event of the projection in quarantine, with its error), finished
      (its C(finish) statement ran).
  returned: success and not check mode
  type: list
  elements: dict
  sample:
    - name: faden_view
      applied: 1962
      skipped: 0
      ignored: 38
      excluded: 38
      quarantined: 0
      seconds: 1.42
applied:
  description: Events applied over all projections.
  returned: success and not check mode
  type: int
  sample: 1962
quarantined:
  description:
    - Events in quarantine over all projections (each also a warning, and listed in its projection's
      C(quarantined_events)); they are missing from the read models and fail the drill's checks.
  returned: success and not check mode
  type: int
  sample: 0
checkpoints:
  description: In check mode, each projection's checkpoint and the stream's last sequence.
  returned: check mode
  type: dict
  sample: {faden_view: {checkpoint: 1200, stream_last_seq: 2000}}
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
            "projections": {"type": "list", "elements": "str", "default": ["receipts", "projection_state"]},
            "declarations": {"type": "dict", "default": {}},
            "mode": {"type": "str", "choices": ["rebuild", "catch_up"], "default": "catch_up"},
            "batch_size": {"type": "int", "default": 2000},
            "max_attempts": {"type": "int", "default": 3},
            **progress_argument_spec(),
        },
        supports_check_mode=True,
    )
    import asyncio

    import psycopg

    from weltgewebe_ops.events.natsio import stream_state
    from weltgewebe_ops.events.projections import projections
    from weltgewebe_ops.events.projector import ContractError, Projector, ProjectorConfig

    p = module.params
    names = contract_names(module)
    try:
        selected = projections(p["projections"], names, p["declarations"])
    except (ValueError, KeyError) as exc:
        module.fail_json(msg=f"projections: {exc}")
    projectors = [
        Projector(
            ProjectorConfig(
                dsn=p["dsn"],
                nats_url=p["nats_url"],
                names=names,
                projection=projection,
                batch_size=p["batch_size"],
                max_attempts=p["max_attempts"],
            )
        )
        for projection in selected
    ]

    async def checkpoints() -> dict:
        last = (await stream_state(p["nats_url"], names))["last_seq"]
        async with await psycopg.AsyncConnection.connect(p["dsn"], autocommit=True) as conn:
            out = {}
            for pr in projectors:
                name = pr.config.projection.name
                out[name] = {"checkpoint": await pr.checkpoints.read(conn, name), "stream_last_sequence": last}
            return out

    try:
        if module.check_mode:
            found = asyncio.run(checkpoints())
            behind = any(v["checkpoint"] < v["stream_last_sequence"] for v in found.values())
            module.exit_json(changed=p["mode"] == "rebuild" or behind, checkpoints=found)
        progress = progress_file(module)
        results = [asyncio.run(pr.replay(p["mode"], progress)) for pr in projectors]
    except ContractError as exc:
        module.fail_json(msg=str(exc))
    except psycopg.OperationalError as exc:
        module.fail_json(msg=f"cannot reach the projections' database: {str(exc).strip()}")
    except psycopg.Error as exc:
        module.fail_json(
            msg=f"the read models' database refused the replay ({exc.sqlstate}): {str(exc).strip()}. "
            f"A rebuild that fails leaves the read model as it was."
        )
    except Exception as exc:  # noqa: BLE001 - NATS errors, reported in one line
        module.fail_json(msg=f"replay failed: {type(exc).__name__}: {exc} (is NATS at {p['nats_url']} up?)")
    applied = sum(r["applied"] for r in results)
    quarantined = [event for r in results for event in r["quarantined_events"]]
    for event in quarantined[:10]:
        module.warn(
            f"{event['projection']}: event {event['event_id']} (stream sequence {event['stream_sequence']}, "
            f"{event['event_type']}) is quarantined: {event['error']}"
        )
    module.exit_json(
        changed=p["mode"] == "rebuild" or applied > 0 or bool(quarantined),
        projections=results,
        applied=applied,
        quarantined=len(quarantined),
    )


if __name__ == "__main__":
    main()
