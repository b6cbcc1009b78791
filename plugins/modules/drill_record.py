#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.drill_record."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_record
short_description: Keep the DR drill's record (phases with their times, and what each phase found)
version_added: "0.2.0"
description:
  - Each drill has a directory C(<reports_dir>/<drill_id>/) whose C(record.json) this module
    updates, so a phase can run alone later (C(--tags)) and the report can be written again.
  - V(begin) starts the record (a begun drill keeps its start); V(phase) records a phase's start
    (O(phase_status=started)) or its end (V(passed) or V(failed), with its seconds);
    V(facts) merges O(facts) into the record; V(finish) says the report was written and releases
    the drill lock; V(reclaim) only stops what interrupted drills left running (no O(drill_id)).
  - One drill at a time per O(reports_dir) - V(begin), V(phase) and V(facts) take the lock
    C(<reports_dir>/.drill.lock) for the running C(ansible-playbook); a second drill fails with
    the holder's drill id, PID and command. A lock whose holder is gone (Ctrl-C, a killed job) is
    taken over, and a new drill (V(begin)) first stops what interrupted drills left running, from
    their records (restore job, the recovery's PostgreSQL and services, a recovery container), and
    records them as interrupted.
  - O(drill_id=latest) names the newest drill in O(reports_dir).
options:
  reports_dir:
    description: Where drills are recorded (C(reports/drills)).
    type: path
    required: true
  drill_id:
    description: The drill's id (letters, digits, C(.), C(_), C(-)), or V(latest). Required except with V(reclaim).
    type: str
    default: ""
  action:
    description: What to record.
    type: str
    choices: [begin, phase, facts, finish, reclaim]
    required: true
  mode:
    description: With V(begin), V(sandbox) or V(live).
    type: str
    choices: [sandbox, live]
    default: sandbox
  rto_objective_seconds:
    description: With V(begin), the recovery time objective.
    type: float
    default: 14400
  rpo_objective_seconds:
    description: With V(begin), the recovery point objective.
    type: float
    default: 300
  settings:
    description: With V(begin), the drill's settings worth keeping in the report (no secrets).
    type: dict
    default: {}
  phase:
    description: With V(phase), its name.
    type: str
    choices: [disaster, preflight, provision, restore, replay, verify, report]
  phase_status:
    description: With V(phase), V(started) at its start, V(passed) or V(failed) at its end.
    type: str
    choices: [started, passed, failed]
    default: started
  detail:
    description: With V(phase), a line on how it ended (the error, when it failed).
    type: str
    default: ""
  facts:
    description: With V(facts), what to merge into the record (no secrets).
    type: dict
    default: {}
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.drill]
  check_mode:
    support: none
  diff_mode:
    support: none
  idempotent:
    support: none
    details: >-
      Records times; every call is a new entry. Bookkeeping (V(facts), V(phase), V(finish)) reports
      unchanged: it writes only the drill's own record, never the systems the drill works on.
      V(begin) reports changed when a new drill began, V(reclaim) when it stopped something.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Begin a drill
  weltgewebe.ops.drill_record:
    reports_dir: reports/drills
    drill_id: 20261127T030000Z
    action: begin
    mode: sandbox

- name: The restore phase starts
  weltgewebe.ops.drill_record:
    reports_dir: reports/drills
    drill_id: latest
    action: phase
    phase: restore
    phase_status: started
"""

RETURN = r"""
drill_id:
  description: The drill's id (resolved when V(latest) was given).
  returned: always
  type: str
  sample: "20261203T030000Z"
directory:
  description: The drill's directory.
  returned: always
  type: str
  sample: "/var/lib/wgops/drills/20261203T030000Z"
phase:
  description: With V(phase), the phase's entry (name, started_at, ended_at, seconds, status, detail).
  returned: when action is phase
  type: dict
  sample:
    name: restore
    started_at: '2026-12-03T03:00:41.220+00:00'
    ended_at: '2026-12-03T03:01:02.905+00:00'
    seconds: 21.685
    status: passed
    detail: ''
record:
  description: The whole record after the update.
  returned: always
  type: dict
  sample: {drill_id: 20261203T030000Z, mode: live, phases: [], facts: {}}
reclaimed:
  description: Per interrupted earlier drill, what was stopped.
  returned: with V(begin) of a new drill, and V(reclaim)
  type: list
  elements: str
  sample: ['drill 20261202T030000Z: stopped PostgreSQL of /var/lib/wgops-recovery/20261202T030000Z/pg']
took_over_lock_of:
  description: The holder of a stale drill lock this drill took over.
  returned: when it happened
  type: str
  sample: "drill 20261202T030000Z (pid 40112, no longer running)"
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import WgopsModule


def _warn_unstopped(module, reclaimed: list[str]) -> None:
    """What an interrupted drill left running and could not be stopped is a warning, by name."""
    for line in reclaimed:
        if "NOT " in line:
            module.warn(line)


def main():
    module = WgopsModule(
        argument_spec={
            "reports_dir": {"type": "path", "required": True},
            "drill_id": {"type": "str", "default": ""},
            "action": {"type": "str", "required": True, "choices": ["begin", "phase", "facts", "finish", "reclaim"]},
            "mode": {"type": "str", "default": "sandbox", "choices": ["sandbox", "live"]},
            "rto_objective_seconds": {"type": "float", "default": 14400},
            "rpo_objective_seconds": {"type": "float", "default": 300},
            "settings": {"type": "dict", "default": {}},
            "phase": {
                "type": "str",
                "choices": ["disaster", "preflight", "provision", "restore", "replay", "verify", "report"],
            },
            "phase_status": {"type": "str", "default": "started", "choices": ["started", "passed", "failed"]},
            "detail": {"type": "str", "default": ""},
            "facts": {"type": "dict", "default": {}},
        },
        required_if=[
            ("action", "phase", ["phase", "drill_id"]),
            ("action", "begin", ["drill_id"]),
            ("action", "facts", ["drill_id"]),
            ("action", "finish", ["drill_id"]),
        ],
    )
    from weltgewebe_ops import drill
    from weltgewebe_ops.drill import lock as drill_lock

    p = module.params
    result = {}
    if p["action"] == "reclaim":
        try:
            reclaimed = drill_lock.reclaim(p["reports_dir"])
        except (drill.DrillError, OSError, ValueError) as exc:
            module.fail_json(msg=f"drill record: {exc}")
        _warn_unstopped(module, reclaimed)
        module.exit_json(changed=bool(reclaimed), reclaimed=reclaimed)
    try:
        record = drill.Record.open(p["reports_dir"], p["drill_id"])
        lock = drill_lock.DrillLock(p["reports_dir"])
        if p["action"] in ("begin", "facts", "phase"):
            stale = lock.acquire(record.drill_id)
            if stale is not None:
                result["took_over_lock_of"] = stale.describe()
        if p["action"] == "begin":
            changed = record.begin(
                p["mode"], {"rto": p["rto_objective_seconds"], "rpo": p["rpo_objective_seconds"]}, p["settings"]
            )
            if changed:  # a new drill: stop what interrupted ones left running
                result["reclaimed"] = drill_lock.reclaim(p["reports_dir"], record.drill_id)
                _warn_unstopped(module, result["reclaimed"])
        elif p["action"] == "finish":
            record.finish()
            lock.release(record.drill_id)
            changed = False  # bookkeeping: the drill's own record (see attributes)
        elif p["action"] == "phase":
            if p["phase_status"] == "started":
                result["phase"] = record.phase_started(p["phase"])
            else:
                result["phase"] = record.phase_finished(p["phase"], p["phase_status"], p["detail"])
            changed = False
        else:
            record.put(p["facts"])
            changed = False
    except drill_lock.DrillLockError as exc:
        module.fail_json(msg=str(exc))
    except (drill.DrillError, OSError, ValueError) as exc:
        module.fail_json(msg=f"drill record: {exc}")
    module.exit_json(changed=changed, drill_id=record.drill_id, directory=str(record.dir), record=record.data, **result)


if __name__ == "__main__":
    main()
