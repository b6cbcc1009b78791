#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.backup_info."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_info
short_description: Check that the WAL archive in S3 can be trusted before a restore (read-only)
version_added: "0.1.0"
description:
  - The DR drill's preflight. Reads the bucket's versioning, Object Lock and default encryption;
    every base backup's label; the WAL segments per timeline, C(.history) and C(.partial) files;
    the continuity from each base backup to the newest archived segment (gaps named); the newest
    segment and the RPO exposure now.
  - Lists object versions, not only the latest ones. The archive writes every file once, so a file
    with a version written after it, or hidden by a delete marker, is a problem that names the
    key and the archived version a restore uses instead (Object Lock keeps it). A delete marker
    therefore never shortens the archive or opens a gap.
  - For the chosen base backup (the newest, or O(backup_id)) and the WAL a restore from it reads,
    checks every object for SSE-KMS (with O(expected_kms_key_id) when given), Object Lock mode and a
    retain-until at least O(min_retention_days) ahead.
  - Returns the facts and a list of problems; fails on problems when O(fail_on_problems).
  - Never writes to S3. Read-only credentials are enough.
extends_documentation_fragment:
  - weltgewebe.ops.s3
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
options:
  expected_kms_key_id:
    description:
      - The KMS key every object must be encrypted with - its ARN, key id or an alias (V(alias/...)); empty accepts
        any SSE-KMS key.
      - An alias is resolved to its key with KMS DescribeKey (the credentials need kms:DescribeKey); when that
        fails, the problem C(kms_alias_unresolved) says so.
    type: str
    default: ""
  kms_endpoint_url:
    description:
      - The KMS endpoint used to resolve an alias; empty uses E(WGOPS_KMS_ENDPOINT_URL), E(AWS_ENDPOINT_URL_KMS)
        or AWS's own.
    type: str
    default: ""
  min_retention_days:
    description: Objects must stay locked at least this many days from now.
    type: float
    default: 1
  backup_id:
    description: The base backup to check objects for; empty means the newest (or the drawn one, O(draw_window_hours)).
    type: str
    default: ""
  draw_window_hours:
    description:
      - Random within window. Draw the base backup from those with a complete WAL chain that ended within the last
        this many hours (each equally likely), and a point in time uniformly between its end and the newest archived
        WAL; returned as RV(drawn), and the drawn backup's objects are the ones checked.
      - Over many runs this exercises old base backups, long WAL chains and timeline switches, not only the newest.
      - When no backup can be drawn, the problem C(nothing_to_draw) says why and what to change.
    type: float
  draw_seed:
    description:
      - The draw's seed; the same seed on the same archive draws the same backup and instant (to repeat a drill).
        Unset draws a new seed, which RV(drawn) reports.
    type: int
  check_objects:
    description: HEAD every object of the chosen backup and its WAL range (SSE-KMS, lock, retention).
    type: bool
    default: true
  fail_on_problems:
    description: Fail when any problem is found (the facts are returned either way).
    type: bool
    default: true
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.s3]
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
- name: Preflight of the production archive with read-only credentials
  weltgewebe.ops.backup_info:
    s3_endpoint_url: "{{ drill_s3_endpoint_url }}"
    s3_bucket: weltgewebe-wal
    s3_access_key: "{{ drill_s3_access_key }}"
    s3_secret_key: "{{ drill_s3_secret_key }}"
    expected_kms_key_id: "{{ drill_s3_kms_key_id }}"
    min_retention_days: 7
  register: archive

- name: Show the RPO exposure
  ansible.builtin.debug:
    msg: "newest WAL {{ archive.newest_segment }} is {{ archive.rpo_exposure_seconds }} s old"
"""

RETURN = r"""
versioning:
  description: The bucket's versioning status (null when it cannot be read).
  returned: always
  type: str
  sample: Enabled
object_lock:
  description: Object Lock of the bucket and its default retention.
  returned: always
  type: dict
  sample: {enabled: true, default_mode: COMPLIANCE, default_days: 7, default_years: null}
encryption:
  description: The bucket's default encryption.
  returned: always
  type: dict
  sample: {algorithm: "aws:kms", kms_key_id: "alias/weltgewebe-wal"}
base_backups:
  description:
    - Every base backup's label (start/stop LSN and time, timeline, server version, system
      identifier, size) and its WAL continuity.
  returned: always
  type: list
  elements: dict
  sample:
    - backup_id: 20261203T020000Z
      start_lsn: 0/2000028
      stop_lsn: 0/2000138
      stop_time: '2026-12-03T02:00:09+00:00'
      timeline: 1
      server_version_num: 160004
      size: 31714816
      continuity:
        segments: 12
        missing: []
        last_segment: 00000001000000000000000D
chosen_backup:
  description: The base backup whose objects were checked.
  returned: always
  type: str
  sample: "20261203T020000Z"
timelines:
  description: WAL segments per timeline (count, first, last, whether a .history file exists).
  returned: always
  type: dict
  sample:
    '1':
      segments: 12
      first: '000000010000000000000002'
      last: 00000001000000000000000D
      history: false
newest_segment:
  description: The newest archived WAL segment.
  returned: always
  type: str
  sample: "00000001000000000000000D"
rpo_exposure_seconds:
  description: Seconds since the newest segment was archived, the data at risk if the primary died now.
  returned: always
  type: float
  sample: 8.4
compliance:
  description: Counts of objects checked, encrypted with SSE-KMS (right key) and locked long enough.
  returned: always
  type: dict
  sample: {backup_id: 20261127T090119391286Z, checked: 12, sse_kms: 12, locked: 12}
expected_kms_key:
  description: The key objects were checked against (an alias resolved to its ARN).
  returned: always
  type: str
  sample: "arn:aws:kms:eu-central-1:111122223333:key/weltgewebe-wal"
rewritten_files:
  description: Archive keys with versions or delete markers written after archiving (each also a problem).
  returned: always
  type: list
  elements: str
  sample: []
chosen_backup_server_version_num:
  description: The chosen base backup's PostgreSQL version number (e.g. 150010); a restore needs that major version.
  returned: always
  type: int
  sample: 160004
chosen_backup_superuser:
  description: >-
    The chosen base backup's bootstrap superuser (the official postgres image names it after
    POSTGRES_USER); the restore and the drill log in as it. C(postgres) for a backup that does not record it.
  returned: always
  type: str
  sample: "postgres"
chosen_backup_system_identifier:
  description: The PostgreSQL system identifier of the chosen base backup's cluster.
  returned: always
  type: str
  sample: "7444491820163510292"
coverage:
  description:
    - When the archive last held all the WAL its source had written, as recorded by C(wgops
      archive-metrics) (or the sandbox's coverage service) when it found the archive caught up -
      null when none was recorded. A drill's RPO counts from it after a quiet spell, when its
      restore replayed at least to its C(lsn).
  returned: always
  type: dict
  sample: {at: "2026-12-02T03:00:00.123+00:00", lsn: 0/5000000, timeline: 1, system_identifier: "7431...",
           method: classic, recorded_at: "2026-12-02T03:00:01+00:00"}
coverage_unread:
  description: Why the coverage could not be read ("" when it could); the RPO then does not use it.
  returned: always
  type: str
  sample: ""
archive_method:
  description: How the archive is written - C(streaming) (streamed chunks present), C(classic), or null (no WAL).
  returned: always
  type: str
  sample: "classic"
streamed_segment:
  description: >-
    Streaming archiving - the segment after the newest complete one as far as its streamed chunks
    hold it from the start (name, bytes, chunks, archived_at), or null (classic archiving).
  returned: always
  type: dict
  sample: {name: 00000001000000000000000E, bytes: 524288, chunks: 3, archived_at: '2026-12-03T02:59:52+00:00'}
drawn:
  description:
    - With O(draw_window_hours), what was drawn (null otherwise), the seed that repeats it, the candidates it was
      drawn from and the window.
  returned: always
  type: dict
  sample:
    seed: 161803398874
    window_hours: 168
    window_start: "2026-11-25T03:00:00+00:00"
    archive_end: "2026-12-02T02:59:41+00:00"
    candidates: [20261126T020000Z, 20261127T020000Z, 20261128T020000Z]
    backup_id: 20261127T020000Z
    backup_stop_time: "2026-11-27T02:03:12+00:00"
    backup_timeline: 1
    target_time: "2026-11-29T17:41:09.514+00:00"
not_checked:
  description: What could not be checked with these credentials (e.g. bucket configuration for a read-only identity).
  returned: always
  type: list
  elements: str
  sample:
    - these credentials may not read the bucket's object_lock; the per-object checks of encryption and lock
      decide
problems:
  description: What makes the archive untrustworthy, each with a code and a message naming the object or gap.
  returned: always
  type: list
  elements: dict
  sample: [{code: wal_gap, message: "WAL missing between base backup ... : 000000010000000000000007"}]
"""

from ansible.module_utils.basic import env_fallback
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
            "expected_kms_key_id": {"type": "str", "default": ""},
            "kms_endpoint_url": {
                "type": "str",
                "default": "",
                "fallback": (env_fallback, ["WGOPS_KMS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"]),
            },
            "min_retention_days": {"type": "float", "default": 1},
            "backup_id": {"type": "str", "default": ""},
            "draw_window_hours": {"type": "float"},
            "draw_seed": {"type": "int"},
            "check_objects": {"type": "bool", "default": True},
            "fail_on_problems": {"type": "bool", "default": True},
        },
        mutually_exclusive=[("backup_id", "draw_window_hours")],
        required_by={"draw_seed": ["draw_window_hours"]},
        supports_check_mode=True,
    )
    from weltgewebe_ops.archive import preflight as archive
    from weltgewebe_ops.core import s3 as s3mod
    from weltgewebe_ops.drill.draw import draw_target

    p = module.params
    loc = s3_location(p)
    draw = None
    if p["draw_window_hours"] is not None:
        if p["draw_window_hours"] <= 0:
            module.fail_json(msg=f"draw_window_hours must be positive hours, not {p['draw_window_hours']}")

        def draw(backups, archive_end):
            return draw_target(
                backups,
                archive_end=archive_end,
                window_hours=p["draw_window_hours"],
                seed=p["draw_seed"],
            )

    try:
        info = archive.backup_info(
            s3mod.client(loc),
            loc,
            expected_kms_key=p["expected_kms_key_id"],
            min_retention_days=p["min_retention_days"],
            backup_id=p["backup_id"],
            check_objects=p["check_objects"],
            kms_endpoint_url=p["kms_endpoint_url"],
            draw=draw,
        )
    except Exception as exc:  # noqa: BLE001 - boto3/botocore errors, reported with the fix
        module.fail_json(msg=f"could not read the archive s3://{loc.bucket}/{loc.prefix}: {s3_error_message(exc)}")
    if info["problems"] and p["fail_on_problems"]:
        module.fail_json(
            msg=f"the archive has {len(info['problems'])} problem(s): "
            + "; ".join(problem["message"] for problem in info["problems"][:5]),
            **info,
        )
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
