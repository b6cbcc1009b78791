#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.drill_disaster."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_disaster
short_description: Destroy the sandbox's primary site for a DR drill (sandbox mode only)
version_added: "0.2.0"
description:
  - Records the failure instant, kills the sandbox's API, projector, relay and PostgreSQL with
    SIGKILL and wipes the primary's data directory; WAL not yet archived is lost, as in a real
    disaster. With O(lose_jetstream) NATS and its JetStream store go too.
  - The S3 archive (the off-site backup) is not touched. Refuses any state directory that is not
    a sandbox's (no C(sandbox.json)).
  - Check mode says what would be destroyed and destroys nothing.
options:
  state_dir:
    description: The sandbox's state directory.
    type: path
    required: true
  lose_jetstream:
    description: Lose the event stream as well (the recovery site then starts with an empty stream).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: none
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: The primary site is gone
  weltgewebe.ops.drill_disaster:
    state_dir: .sandbox
    lose_jetstream: false
"""

RETURN = r"""
failure_at:
  description: The failure instant (UTC, ISO 8601), taken right before PostgreSQL was killed.
  returned: always
  type: str
  sample: "2026-12-03T03:00:15.004+00:00"
failure_monotonic:
  description: The failure instant on this machine's monotonic clock (RTO is measured with it).
  returned: always
  type: float
  sample: 81234.512
killed:
  description: What was killed.
  returned: always
  type: list
  elements: str
  sample: [api (pid 4811), projector (pid 4809), relay (pid 4808), postgres (pid 4790)]
wiped:
  description: Directories removed.
  returned: always
  type: list
  elements: str
  sample: [/var/tmp/wgops/.sandbox/pg]
source_clock:
  description:
    - The primary's clock against this host's, measured right before the kill (C(SELECT clock_timestamp()), the
      shortest of 3 round trips) - C(offset_seconds) (its clock minus this host's), C(uncertainty_seconds) (half
      the round trip), C(measured_at); or C(offset_seconds=null) with C(why_not).
    - The RPO moves the restored commit's time (the primary's clock) onto this host's clock with it.
  returned: when not in check mode
  type: dict
  sample: {offset_seconds: 0.000412, uncertainty_seconds: 0.000213, measured_at: "2026-12-03T03:00:14.991+00:00"}
archive:
  description: Where the lost primary archived (bucket, prefix, endpoint_url).
  returned: always
  type: dict
  sample: {bucket: weltgewebe-wal, prefix: weltgewebe/pg-primary, endpoint_url: 'http://127.0.0.1:8333'}
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import WgopsModule


def main():
    module = WgopsModule(
        argument_spec={
            "state_dir": {"type": "path", "required": True},
            "lose_jetstream": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    from weltgewebe_ops import drill, sandbox

    p = module.params
    try:
        box = sandbox.load(p["state_dir"])
        if module.check_mode:
            module.exit_json(
                changed=True,
                failure_at=None,
                killed=[
                    name
                    for name, running in box.status()["running"].items()
                    if running and name not in ("s3", "kms") and (name != "nats" or p["lose_jetstream"])
                ],
                wiped=[str(box.settings.pg_data_dir)],
                archive={
                    "bucket": box.settings.bucket,
                    "prefix": box.settings.archive_prefix,
                    "endpoint_url": box.settings.s3_endpoint,
                },
            )
        result = drill.inject_disaster(box, p["lose_jetstream"])
    except (sandbox.SandboxError, drill.DrillError, OSError, RuntimeError) as exc:
        module.fail_json(msg=f"disaster not injected: {exc}")
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
