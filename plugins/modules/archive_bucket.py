#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.archive_bucket."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: archive_bucket
short_description: Make sure the WAL archive's bucket protects what it holds (versioning, Object Lock, SSE-KMS)
version_added: "0.2.0"
description:
  - Before PostgreSQL archives into a bucket, the bucket must keep every version (versioning), hold
    each object under a COMPLIANCE default retention (Object Lock), and encrypt with a KMS key by
    default (SSE-KMS) - the three things the DR drill's preflight proves object by object.
  - V(checked) reads them and fails naming each one that is missing, and what to do; it changes nothing.
  - V(bootstrapped) creates the bucket with Object Lock when it does not exist and sets what is
    missing - versioning, a COMPLIANCE default retention of O(lock_days), default SSE-KMS with
    O(kms_key_id). A retention that exists is never shortened nor weakened.
extends_documentation_fragment:
  - weltgewebe.ops.s3
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
options:
  state:
    description: Check only, or create and set what is missing.
    type: str
    choices: [checked, bootstrapped]
    default: checked
  kms_key_id:
    description: The KMS key the bucket's default encryption must use (its ARN or id); required to bootstrap.
    type: str
    default: ""
  lock_days:
    description: The COMPLIANCE default retention to set when bootstrapping (days).
    type: int
    default: 30
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.s3]
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The bucket's protection (versioning, Object Lock default retention, default encryption) before and after.
  idempotent:
    support: full
    details: A protected bucket is left as it is.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: The archive's bucket must protect what it holds
  weltgewebe.ops.archive_bucket:
    s3_endpoint_url: https://s3.example.org
    s3_bucket: weltgewebe-wal
    kms_key_id: arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
"""

RETURN = r"""
protection:
  description: What the bucket has (exists, versioning, lock_mode, lock_days, sse_algorithm, kms_key_id) after the call.
  returned: always
  type: dict
  sample:
    exists: true
    versioning: Enabled
    lock_mode: COMPLIANCE
    lock_days: 30
    sse_algorithm: aws:kms
    kms_key_id: arn:aws:kms:eu-central-1:111122223333:key/weltgewebe-wal
problems:
  description: What it lacks, one sentence each (empty when protected).
  returned: always
  type: list
  elements: str
  sample: []
detail:
  description: What bootstrapping did.
  returned: state=bootstrapped
  type: str
  sample: "versioning enabled, Object Lock COMPLIANCE 30 d, default SSE-KMS"
"""

import dataclasses

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
    WgopsModule,
    s3_argument_spec,
    s3_error_message,
    s3_location,
)


def main():
    module = WgopsModule(
        argument_spec={
            **s3_argument_spec(),
            "state": {"type": "str", "choices": ["checked", "bootstrapped"], "default": "checked"},
            "kms_key_id": {"type": "str", "default": ""},
            "lock_days": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
        required_if=[("state", "bootstrapped", ["kms_key_id"])],
    )
    from botocore.exceptions import BotoCoreError, ClientError

    from weltgewebe_ops.archive import bucket
    from weltgewebe_ops.core import s3

    p = module.params
    loc = s3_location(p, p["kms_key_id"])
    try:
        client = s3.client(loc)
        detail, changed = "", False
        before = bucket.bucket_protection(client, loc.bucket)
        if p["state"] == "bootstrapped":
            changed, detail = bucket.ensure_bucket_protection(client, loc.bucket, p["kms_key_id"], p["lock_days"],
                                                              module.check_mode)  # fmt: skip
        state = bucket.bucket_protection(client, loc.bucket)
        # check mode: what bootstrapping would set
        after = (
            bucket.wanted_protection(before, p["kms_key_id"], p["lock_days"])
            if module.check_mode and changed
            else state
        )
    except (ClientError, BotoCoreError) as exc:
        module.fail_json(msg=f"cannot {'set up' if p['state'] == 'bootstrapped' else 'read'} bucket {loc.bucket}: "
                         f"{s3_error_message(exc)}")  # fmt: skip
    problems = [] if module.check_mode and changed else state.problems(p["kms_key_id"])
    result = {"changed": changed, "protection": dataclasses.asdict(state), "problems": problems, "detail": detail,
              "diff": {"before": dataclasses.asdict(before), "after": dataclasses.asdict(after)}}  # fmt: skip
    if problems:
        module.fail_json(
            msg=f"bucket {loc.bucket} does not protect the archive: {'; '.join(problems)}. Set this up in your S3 "
            "(versioning on, Object Lock with a COMPLIANCE default retention, default SSE-KMS), or let this "
            "module do it with state=bootstrapped (pg_archive_bucket_bootstrap: true).",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
