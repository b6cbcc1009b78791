#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.sandbox."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sandbox
short_description: Start, stop or remove the embedded Weltgewebe "production" sandbox on 127.0.0.1
version_added: "0.1.0"
description:
  - Manages the sandbox the DR drill destroys and recovers; everything binds 127.0.0.1 and comes
    from Python wheels (SeaweedFS, PostgreSQL, nats-server). No root, Docker or cloud account needed.
  - C(s3) starts SeaweedFS with a persistent loopback KMS and a WAL bucket with versioning,
    Object Lock (COMPLIANCE, default retention) and default SSE-KMS.
  - C(postgres) starts the primary with C(archive_mode=on) and C(archive_command) = C(wgops wal-push);
    when Ansible runs as root, PostgreSQL runs as the unprivileged user in key C(pg_os_user) of O(settings).
  - C(schema) creates Weltgewebe's data contract (domain tables, trigger-written outbox, receipts,
    projection state, recorded in C(_sqlx_migrations)), or applies key C(migrations_dir) of O(settings), a
    directory of sqlx-style C(<version>_<name>.up.sql) migrations (your own schema), and this tool's
    C(wgops) schema.
  - C(basebackup) takes a base backup into S3 when the cluster has none.
  - C(coverage) starts the service that records, while the archive holds all the WAL the server
    wrote, that it does (classic and streaming archiving; what a drill's RPO uses after a quiet spell).
  - C(nats) starts nats-server with JetStream and the domain stream.
  - C(relay), C(projector) and C(api) start the long-running services.
  - Each component changes nothing when it is already as asked, so a second run reports no change.
options:
  state:
    description:
      - V(started) brings O(component) up; V(stopped) stops every service the sandbox started
        (recorded PIDs only); V(absent) stops them and removes O(state_dir).
      - V(prepared) chooses the ports and saves the settings without starting anything (the DR
        drill's recovery environment, whose PostgreSQL comes from the restore).
    type: str
    choices: [prepared, started, stopped, absent]
    default: started
  component:
    description: The part to bring up with O(state=started); V(all) for every part in order.
    type: str
    choices: [all, s3, postgres, walstream, schema, basebackup, coverage, nats, relay, projector, api]
    default: all
  components:
    description:
      - Several parts to bring up with O(state=started), in this order; wins over O(component).
      - The first part that fails stops the run - the later ones are not started, and the error
        names the failed part, why (e.g. which process holds its port) and what was not started.
    type: list
    elements: str
    choices: [s3, postgres, walstream, schema, basebackup, coverage, nats, relay, projector, api]
    default: []
  state_dir:
    description: Where the sandbox keeps its data, logs, PIDs and settings (mode 0600 for secrets).
    type: path
    required: true
  settings:
    description:
      - Sandbox settings used when the sandbox is first created (ports, bucket, archive_prefix,
        object_lock_days, archive_timeout_seconds, wal_push_deadline_seconds, pg_bindir,
        pg_os_user, database, kms_key_id, migrations_dir, projections (those the projector service
        follows), and C(names) for the data contract).
        Ports given as 0 are chosen free.
      - An existing sandbox keeps the settings it was created with; differences are reported in
        RV(drifted_settings).
    type: dict
    default: {}
  pg_password:
    description:
      - Password of the C(postgres) role when the sandbox is created (generated when empty). The
        drill's recovery environment passes the source's, since the restore brings its roles back.
    type: str
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Bring the whole sandbox up
  weltgewebe.ops.sandbox:
    state_dir: "{{ playbook_dir }}/../.sandbox"
    settings:
      object_lock_days: 1
      archive_timeout_seconds: 60

- name: Only the S3 archive
  weltgewebe.ops.sandbox:
    state_dir: /srv/wg-sandbox
    component: s3

- name: Stop everything the sandbox started and remove its state
  weltgewebe.ops.sandbox:
    state_dir: /srv/wg-sandbox
    state: absent
"""

RETURN = r"""
results:
  description: One entry per component acted on.
  returned: always
  type: list
  elements: dict
  sample:
    - {component: postgres, changed: true, seconds: 1.3, detail: "PostgreSQL 18 on 127.0.0.1:15432"}
endpoints:
  description: Where the sandbox answers (no credentials; C(wgops sandbox env) prints those).
  returned: when the sandbox exists
  type: dict
  sample: {s3_endpoint: "http://127.0.0.1:18333", nats_url: "nats://127.0.0.1:14222", api_url: "http://127.0.0.1:18081"}
summary:
  description: One line per component, what it did and how long it took.
  returned: always
  type: list
  elements: str
  sample:
    - s3          changed    1.00s  started SeaweedFS on 127.0.0.1:8333
    - postgres    changed    1.23s  PostgreSQL 18 on 127.0.0.1:5433 as OS user wgsandbox
drifted_settings:
  description: Requested settings that differ from those the existing sandbox was created with.
  returned: always
  type: list
  elements: str
  sample: ['archive_timeout_seconds: asked 10, the sandbox has 60 (purge it to change)']
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import WgopsModule

COMPONENT_CHOICES = [
    "s3",
    "postgres",
    "walstream",
    "schema",
    "basebackup",
    "coverage",
    "nats",
    "relay",
    "projector",
    "api",
]


def main():
    module = WgopsModule(
        argument_spec={
            "state": {"type": "str", "choices": ["prepared", "started", "stopped", "absent"], "default": "started"},
            "component": {
                "type": "str",
                "default": "all",
                "choices": ["all", *COMPONENT_CHOICES],
            },
            "components": {
                "type": "list",
                "elements": "str",
                "default": [],
                "choices": COMPONENT_CHOICES,
            },
            "state_dir": {"type": "path", "required": True},
            "settings": {"type": "dict", "default": {}},
            "pg_password": {"type": "str", "default": "", "no_log": True},
        },
        supports_check_mode=True,
    )
    from weltgewebe_ops import sandbox as sb
    from weltgewebe_ops.core.settings import SettingsError

    params = module.params
    requested = {**params["settings"], "state_dir": params["state_dir"]}
    if params["pg_password"]:
        requested["pg_password"] = params["pg_password"]
    try:
        settings = sb.prepare(requested)
        box = sb.Sandbox(settings)
        drift = sb.drifted_settings(requested, settings) if settings.settings_file.exists() else []
        if params["state"] == "prepared":
            exists = settings.settings_file.exists()
            if not exists and not module.check_mode:
                settings.save()
            results = [sb.Result("settings", not exists, f"settings in {settings.settings_file}")]
        elif params["state"] == "started":
            components = params["components"] or (
                sb.COMPONENTS if params["component"] == "all" else (params["component"],)
            )
            results = []
            for component in components:  # in order, stopping at the first that fails
                try:
                    results.append(box.up(component, check_mode=module.check_mode))
                except (sb.SandboxError, SettingsError, RuntimeError, OSError) as exc:
                    later = list(components[components.index(component) + 1 :])
                    module.fail_json(
                        msg=f"sandbox part {component} failed: {exc}"
                        + (f" Not started: {', '.join(later)}." if later else ""),
                        summary=[r.line for r in results],
                        failed_component=component,
                        not_started=later,
                    )
        else:
            results = box.down(purge=params["state"] == "absent", check_mode=module.check_mode)
    except (sb.SandboxError, SettingsError, RuntimeError, OSError) as exc:
        module.fail_json(msg=f"sandbox {params['state']} failed: {exc}")
    endpoints = {
        "s3_endpoint": settings.s3_endpoint,
        "nats_url": settings.nats_url,
        "api_url": settings.api_url,
        "postgres": f"127.0.0.1:{settings.ports.postgres}",
        "postgres_port": settings.ports.postgres,
        "pg_data_dir": str(settings.pg_data_dir),
        "database": settings.database,
        "kms_key_arn": box.kms_key_arn(),
        "state_dir": str(settings.root),
        "archive_method": settings.archive_method,
    }
    module.exit_json(
        changed=any(r.changed for r in results),
        results=[r.as_dict() for r in results],
        summary=[r.line for r in results],
        endpoints=endpoints,
        drifted_settings=drift,
    )


if __name__ == "__main__":
    main()
