#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.drill_verify."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_verify
short_description: Check the recovered Weltgewebe service (SQL, migrations, HTTP, projections, event log)
version_added: "0.2.0"
description:
  - Runs the DR drill's checks against the recovered service; each is a named result with detail
    and seconds, and the module fails only when asked (O(fail_on_failed_checks)), so the drill's
    report can say what failed.
  - The checks of Weltgewebe's own recovery runbook, and the event chain's.
    C(sql_smoke) the database is out of recovery and accepts writes;
    C(migrations_applied) every migration in C(_sqlx_migrations) succeeded (and, with
    O(migrations_dir), every file there is applied with its checksum);
    C(row_counts) counts of C(domain_accounts), C(domain_nodes), C(domain_edges) (and C(sessions),
    C(passkey_credentials) where they exist);
    C(api_live) and C(api_ready) the front door's health paths, readiness with its named checks;
    C(no_quarantined_events) no outbox row and no event of a projection is quarantined (each named);
    with V(faden_view) in O(projections), C(api_create_and_read_faden) (O(faden_smoke), the
    sandbox API) and C(faden_view_matches_domain_edges) (count and checksum);
    with V(receipts), C(receipts_complete) every published event has a receipt of the receipts
    consumer; C(stream_matches_outbox) every outbox row is published and in the stream, no reused
    ids, lost events excluded, foreign messages (not the envelope) counted and named.
  - With O(app_url) (the application's own stack, see M(weltgewebe.ops.app_stack)) also
    C(app_stack_live) and C(app_stack_ready) through its front door (when it is not O(api_url)) and
    C(app_stack_reads) (each of O(app_read_paths) answers 200 with JSON, as Weltgewebe's own smoke test reads).
  - Checks that wait for the service (readiness, receipts, the read model) retry for up to
    O(smoke_timeout_seconds).
  - With O(ground_truth_dir) (sandbox mode) also compares with the ground truth the workload and the
    relay wrote outside the destroyed database.
extends_documentation_fragment:
  - weltgewebe.ops.events
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
options:
  api_url:
    description: The recovered service's front door (or its API).
    type: str
    required: true
  live_path:
    description: The liveness path (Weltgewebe through Caddy C(/api/health/live)).
    type: str
    default: /health/live
  ready_path:
    description: The readiness path (Weltgewebe through Caddy C(/api/health/ready)).
    type: str
    default: /health/ready
  projections:
    description: The projections the replay rebuilt (their checks run).
    type: list
    elements: str
    default: [receipts, projection_state, faden_view]
  faden_smoke:
    description: Create a Faden through C(POST /faeden) (the sandbox API) and read it from C(faden_view).
    type: bool
    default: true
  migrations_dir:
    description: The application's migrations directory to compare C(_sqlx_migrations) with.
    type: path
  smoke_timeout_seconds:
    description: >-
      How long the checks that wait for the service may take (readiness, a Faden from the API to
      C(faden_view), the read model, the receipts).
    type: float
    default: 30
  app_url:
    description: The application stack's front door ("" = no application stack).
    type: str
    default: ""
  app_live_path:
    description: Its liveness path.
    type: str
    default: /api/health/live
  app_ready_path:
    description: Its readiness path.
    type: str
    default: /api/health/ready
  app_read_paths:
    description: Paths that must answer 200 with JSON through it.
    type: list
    elements: str
    default: [/api/nodes, /api/edges]
  app_host:
    description:
      - The front door's site (for example C(weltgewebe.home.arpa)), sent as the Host header and,
        over HTTPS, as TLS SNI to the address of O(app_url); "" sends the URL's own host.
      - Its certificate is not verified (C(tls internal) signs with the recovery's own new CA); a
        Caddy site has no certificate for another name, so an answer proves the named site served it.
    type: str
    default: ""
  ground_truth_dir:
    description: The sandbox's ground-truth directory (sandbox mode).
    type: path
  failure_at:
    description: The failure instant (with timezone); ground truth after it is not counted.
    type: str
  restored_to:
    description: >-
      The point the restore reached (with timezone), for the ground truth's RPO when no recorded
      write survived.
    type: str
  target_time:
    description:
      - A drill to a point in time (with timezone). Adds the check C(restored_to_target) (the last restored commit is
        not after it) and, with O(ground_truth_dir), C(ground_truth_at_target) (exactly the writes committed before it
        came back); the ground truth then counts what is missing before the target, and gives no RPO.
    type: str
  target_after_last_commit:
    description: The restore found no commit after O(target_time) in the archive and recovered to the archive's end.
    type: bool
    default: false
  fail_on_failed_checks:
    description: Fail when a check fails.
    type: bool
    default: false
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  idempotent:
    support: none
    details: The end-to-end check creates one Faden through the API.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Verify the recovered service
  weltgewebe.ops.drill_verify:
    dsn: "{{ drill_recovery_dsn }}"
    nats_url: nats://127.0.0.1:4222
    api_url: http://127.0.0.1:8081
"""

RETURN = r"""
checks:
  description: One entry per check (name, status passed/failed, detail, seconds).
  returned: always
  type: list
  elements: dict
  sample: [{name: sql_smoke, status: passed, detail: SELECT 1 answered, seconds: 0.012}]
failed:
  description: Whether a check failed (only with O(fail_on_failed_checks)).
  returned: always
  type: bool
  sample: false
ground_truth:
  description: >-
    Sandbox mode: writes before the failure, lost writes, last commit before the failure, last
    surviving commit, lost events (published before the failure, absent after the restore), RPO.
  returned: when ground_truth_dir is given
  type: dict
  sample:
    writes_before_failure: 300
    lost_writes: 2
    last_commit_at: '2026-12-03T03:00:14.880+00:00'
    last_surviving_commit_at: '2026-12-03T03:00:08.410+00:00'
    lost_events: 2
    rpo_seconds: 6.47
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
            "api_url": {"type": "str", "required": True},
            "live_path": {"type": "str", "default": "/health/live"},
            "ready_path": {"type": "str", "default": "/health/ready"},
            "projections": {
                "type": "list",
                "elements": "str",
                "default": ["receipts", "projection_state", "faden_view"],
            },
            "faden_smoke": {"type": "bool", "default": True},
            "migrations_dir": {"type": "path"},
            "smoke_timeout_seconds": {"type": "float", "default": 30},
            "app_url": {"type": "str", "default": ""},
            "app_live_path": {"type": "str", "default": "/api/health/live"},
            "app_ready_path": {"type": "str", "default": "/api/health/ready"},
            "app_read_paths": {"type": "list", "elements": "str", "default": ["/api/nodes", "/api/edges"]},
            "app_host": {"type": "str", "default": ""},
            "ground_truth_dir": {"type": "path"},
            "failure_at": {"type": "str"},
            "restored_to": {"type": "str"},
            "target_time": {"type": "str"},
            "target_after_last_commit": {"type": "bool", "default": False},
            "fail_on_failed_checks": {"type": "bool", "default": False},
        },
        required_by={"ground_truth_dir": ["failure_at"]},
    )
    from pathlib import Path

    from weltgewebe_ops import drill

    p = module.params
    names = contract_names(module)
    options = drill.VerifyOptions(
        api_url=p["api_url"],
        live_path=p["live_path"],
        ready_path=p["ready_path"],
        projections=tuple(p["projections"]),
        faden_smoke=p["faden_smoke"],
        migrations_dir=p["migrations_dir"] or "",
        smoke_timeout_seconds=p["smoke_timeout_seconds"],
        app_url=p["app_url"],
        app_live_path=p["app_live_path"],
        app_ready_path=p["app_ready_path"],
        app_read_paths=tuple(p["app_read_paths"]),
        app_host=p["app_host"],
    )
    try:
        restored_to, target_at = drill.parse_iso(p["restored_to"]), drill.parse_iso(p["target_time"])
    except (ValueError, drill.DrillError) as exc:
        module.fail_json(msg=f"restored_to and target_time must be ISO 8601 times with a timezone: {exc}")
    checks = drill.verify(p["dsn"], p["nats_url"], names, options)
    result = {"checks": [c.as_dict() for c in checks]}
    if p["ground_truth_dir"]:
        try:
            result["ground_truth"] = drill.ground_truth(
                Path(p["ground_truth_dir"]),
                p["dsn"],
                names,
                drill.parse_iso(p["failure_at"]),
                restored_to,
                target_at=target_at,
                to_archive_end=p["target_after_last_commit"],
            )
        except (drill.DrillError, OSError, ValueError) as exc:
            module.fail_json(msg=f"ground truth unreadable: {exc}", **result)
    if target_at is not None:
        checks += drill.target_checks(restored_to, target_at, p["target_after_last_commit"], result.get("ground_truth"))
        result["checks"] = [c.as_dict() for c in checks]
    checks = result["checks"]
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    if failed and p["fail_on_failed_checks"]:
        module.fail_json(msg=f"checks failed: {', '.join(failed)}", **result)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
